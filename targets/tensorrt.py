"""TensorRT 10/11: engines from ONNX as *strongly typed* networks, a v3-API backend, and the torch-tensorrt path.

TensorRT 11 removed the weak-typing API (BuilderFlag.FP16/INT8, calibrators, precision constraints) and 10.x
deprecated it, so precision is carried by the ONNX itself (QUANT_NOTES.md section 5):
- fp32: the exported ONNX as is;
- fp16: the ONNX converted to float16 tensors (targets.export.convert_onnx_to_fp16), float32 at the interface;
- int8: an explicitly quantized ONNX with QuantizeLinear/DequantizeLinear nodes (from the quantization pipeline);
  there is no implicit calibration path.
The in-graph NMS variant parses as is: the ONNX parser maps NonMaxSuppression onto TensorRT's INMSLayer.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from rtmdet_edge.errors import UserError
from rtmdet_edge.io import atomic_write_bytes, atomic_write_text
from rtmdet_edge.models.outputs import flatten_outputs
from targets import INPUT_NAME
from targets.export import convert_onnx_to_fp16, deployment_model, has_qdq, read_metadata

PRECISIONS = ("fp32", "fp16", "int8")


def available(precision: str) -> str | None:
    """None when TensorRT can build and run `precision` here, else why not (int8 also needs a Q/DQ ONNX file)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "not installed (pip install rtmdet-edge[tensorrt])" + ("" if torch.cuda.is_available() else " and no CUDA device")
    if not torch.cuda.is_available():
        return "no CUDA device"
    if precision not in PRECISIONS:
        return f"{precision} is not a TensorRT build precision here ({', '.join(PRECISIONS)})"
    return None


def import_tensorrt():
    """The tensorrt module, or a UserError saying how to get it (the other backends keep working without it)."""
    try:
        import tensorrt
    except ImportError as e:
        raise UserError(
            f"the tensorrt backend needs NVIDIA TensorRT 10 or 11 and a CUDA GPU ({e}); "
            "pip install 'rtmdet-edge[tensorrt]' on a machine with one"
        ) from None
    return tensorrt


def prepare_onnx(onnx_path: str | os.PathLike, precision: str) -> onnx.ModelProto:
    """The ONNX a strongly typed build consumes for `precision` (no TensorRT needed: testable in ONNX Runtime)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown TensorRT precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model = onnx.load(str(onnx_path))
    quantized = has_qdq(model)
    if precision == "int8" and not quantized:
        raise UserError(
            f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes. TensorRT 10/11 builds INT8 only from an "
            "explicitly quantized (Q/DQ) ONNX: run `rtmdet-edge quantize` first and build its output"
        )
    if precision != "int8" and quantized:
        raise UserError(f"{onnx_path} is a Q/DQ (INT8) model; build it with --precision int8")
    if precision == "fp16":
        model = convert_onnx_to_fp16(model)
    return model


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    precision: str = "fp16",
    batch: int = 1,
    max_batch: int | None = None,
    workspace_gib: float = 4.0,
) -> Path:
    """Parse the ONNX into a strongly typed network and serialize an engine.

    Dynamic-batch ONNX gets one optimization profile min 1 / opt `batch` / max `max_batch` (default batch).
    """
    trt = import_tensorrt()
    model = prepare_onnx(onnx_path, precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Required on 10.x for precision-from-graph; on 11.x networks are always strongly typed and the flag is ignored.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:  # parse_from_file resolves external data next to the file
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        if not parser.parse_from_file(str(src)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise UserError(f"TensorRT cannot parse {onnx_path} ({precision}): {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape[0] == -1:
        hi = max(max_batch or batch, batch)
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *shape[1:]), (batch, *shape[1:]), (hi, *shape[1:]))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} ({precision}); see the log above")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, bytes(serialized))  # a kill mid-write never leaves half an engine
    meta = read_metadata(model)
    atomic_write_text(
        engine_path.with_suffix(engine_path.suffix + ".json"),
        json.dumps({**meta, "precision": precision, "tensorrt": trt.__version__}, indent=1),
    )
    return engine_path


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, tdt in (("int64", torch.int64), ("bfloat16", torch.bfloat16), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    return table[dtype]


class TrtBackend:
    """Runs a serialized engine with the v3 API: tensor addresses of torch CUDA buffers + execute_async_v3.

    Buffers are allocated once per input shape and reused; a call copies the batch in, enqueues on the current
    torch CUDA stream, synchronizes and copies the outputs out (`run_torch` skips the host copies).
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str = "cuda:0") -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise UserError("the tensorrt backend needs a CUDA GPU; torch.cuda.is_available() is False")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"TensorRT engine not found: {path}")
        self._trt = trt
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"cannot deserialize {path}: built by another TensorRT version or for another GPU?")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        if len(self.input_names) != 1:
            raise UserError(f"{path}: expected one input tensor, found {list(self.input_names)}")
        self.input_name = self.input_names[0]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.input_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        sidecar = path.with_suffix(path.suffix + ".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self.precision = meta.get("precision", "fp32")
        self.has_nms = "num_dets" in self.output_names
        self.path = path
        self._shape: tuple[int, ...] | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    def _bind(self, shape: tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        if not self.context.set_input_shape(self.input_name, shape):
            raise UserError(f"input shape {shape} is outside the engine's profile (engine input {self.input_shape})")
        self._buffers = {self.input_name: torch.empty(shape, dtype=self.dtypes[self.input_name], device=self.device)}
        for n in self.output_names:
            out_shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in out_shape):
                raise UserError(f"output {n} has a data-dependent shape {out_shape}; not supported by this backend")
            self._buffers[n] = torch.empty(out_shape, dtype=self.dtypes[n], device=self.device)
        for n, buf in self._buffers.items():
            self.context.set_tensor_address(n, buf.data_ptr())
        self._shape = shape

    def run_torch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """CUDA tensor in, {output name: the engine's own output buffer} out (overwritten by the next call)."""
        self._bind(tuple(images.shape))
        self._buffers[self.input_name].copy_(images, non_blocking=True)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {n: self._buffers[n] for n in self.output_names}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.run_torch(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True))
        return {n: (o.float() if o.is_floating_point() else o).cpu().numpy() for n, o in outs.items()}

    def __repr__(self) -> str:
        return f"TrtBackend({self.path.name}, {self.precision})"


class _TupleOutputs(nn.Module):
    """The model with a flat tuple output, in the order of `names` (flatten_outputs' order)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = flatten_outputs(self.model(images))
        return tuple(flat[n] for n in self.names)


def compile_torch_tensorrt(
    model: nn.Module,
    imgsz: int | Sequence[int] = 640,
    batch: int = 1,
    precision: str = "fp16",
    device: str = "cuda:0",
) -> tuple[nn.Module, tuple[str, ...]]:
    """torch-tensorrt dynamo compile of the fused model; returns (module giving a tuple of outputs, their names).

    Explicit typing, like the ONNX path: for fp16 the module and its input are cast to half, and
    use_explicit_typing=True makes TensorRT respect those dtypes (older torch-tensorrt: enabled_precisions).
    INT8 needs a ModelOpt-quantized model and is not offered here; build the Q/DQ ONNX engine instead.
    """
    try:
        import torch_tensorrt
    except ImportError as e:
        raise UserError(f"torch-tensorrt is not installed ({e}); pip install 'rtmdet-edge[tensorrt]'") from None
    if precision not in ("fp32", "fp16"):
        raise UserError("torch-tensorrt compile supports fp32 and fp16 here; INT8 goes through the Q/DQ ONNX engine")
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    dtype = torch.float16 if precision == "fp16" else torch.float32
    fused = deployment_model(model)
    with torch.inference_mode():
        names = tuple(flatten_outputs(fused(torch.zeros(1, 3, 64, 64))))
    net = _TupleOutputs(fused, names).to(device, dtype).eval()
    inputs = [torch_tensorrt.Input((batch, 3, h, w), dtype=dtype)]
    params = inspect.signature(torch_tensorrt.dynamo.compile).parameters
    kwargs = {"use_explicit_typing": True} if "use_explicit_typing" in params else {"enabled_precisions": {dtype}}
    return torch_tensorrt.compile(net, ir="dynamo", inputs=inputs, **kwargs), names


class TorchTensorRTBackend:
    """Backend around a compile_torch_tensorrt module (name "torch-tensorrt")."""

    name = "torch-tensorrt"
    has_nms = False

    def __init__(
        self, model: nn.Module, imgsz: int = 640, batch: int = 1, precision: str = "fp16", device: str = "cuda:0"
    ) -> None:
        self.module, self.output_names = compile_torch_tensorrt(model, imgsz, batch, precision, device)
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.precision = precision
        self.input_shape = (batch, 3, imgsz, imgsz)
        self.input_name = INPUT_NAME

    @torch.inference_mode()
    def run_torch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.output_names, self.module(images.to(self.device, self.dtype, non_blocking=True))))

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.run_torch(torch.from_numpy(np.ascontiguousarray(batch)))
        return {n: o.float().cpu().numpy() for n, o in outs.items()}
