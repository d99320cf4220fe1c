"""OpenVINO: ONNX -> IR conversion and a CPU backend with explicit precision and performance hints.

The bf16 trap: on CPUs with AVX512_BF16 or AMX, OpenVINO's CPU plugin *defaults* INFERENCE_PRECISION_HINT to bf16, so
an "f32" IR silently runs in bf16 (about 3 significant digits) unless the hint is set. This backend always sets it and
reports the precision the compiled model actually uses.

Precisions: "fp32" (f32 IR, f32 inference), "bf16" (same IR, bf16 inference hint) and "f16-weights" (IR saved with
compress_to_fp16=True: weights stored as f16 and decompressed to f32 at load on CPU, f32 inference).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from rtmdet_edge.errors import UserError

PRECISIONS = ("fp32", "bf16", "f16-weights")
_ALIASES = {"f32": "fp32", "fp32": "fp32", "bf16": "bf16", "f16-weights": "f16-weights", "fp16-weights": "f16-weights"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def _import_ov():
    try:
        import openvino
    except ImportError as e:
        raise UserError(f"the openvino backend needs the openvino package ({e}); pip install openvino") from None
    return openvino


def available(precision: str) -> str | None:
    """None when OpenVINO's CPU plugin can run `precision` here, else why not (int8 also needs a Q/DQ ONNX file)."""
    try:
        caps = list(_import_ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except UserError:
        return "not installed (pip install openvino)"
    need = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
    if need and need not in caps:
        return f"this CPU has no native {precision} support (OpenVINO CPU capabilities: {', '.join(caps)})"
    if precision not in ("fp32", "fp16", "bf16", "int8"):
        return f"unknown precision {precision!r}"
    return None


def convert_to_openvino(
    onnx_path: str | os.PathLike, xml_path: str | os.PathLike, compress_to_fp16: bool = False
) -> Path:
    """ONNX -> OpenVINO IR (.xml + .bin). compress_to_fp16 stores weights as f16 (half the file, same f32 compute).

    openvino.save_model compresses by default; here f32 is the default so an "fp32" IR holds the exact weights.
    """
    ov = _import_ov()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    _copy_onnx_metadata(onnx_path, model)
    model.set_rt_info("f16-weights" if compress_to_fp16 else "fp32", ["rtmdet_edge", "weights"])
    return _save_ir(model, xml_path, compress_to_fp16)


def _save_ir(model, xml_path: Path, compress_to_fp16: bool = False) -> Path:
    """Write an IR pair. Into a temporary folder beside the target, then moved: .bin first, .xml last, so an .xml that
    exists always has its whole .bin (a kill mid-save leaves the previous pair or nothing, never half a file)."""
    ov = _import_ov()
    with tempfile.TemporaryDirectory(prefix=f".{xml_path.stem}.", dir=xml_path.parent) as tmp:
        staged = Path(tmp) / xml_path.name
        ov.save_model(model, str(staged), compress_to_fp16=compress_to_fp16)
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)
    return xml_path


def rebatch_openvino(src: str | os.PathLike, dst: str | os.PathLike, batch: int) -> Path:
    """A copy of an IR (or an ONNX file, read by OpenVINO) reshaped to batch `batch` on its image input, as an IR:
    e.g. the batch-1 INT8 IR of `quantize`, timed at the throughput batch. Weights are copied as stored (an INT8 IR
    keeps its INT8 weights; nothing is compressed)."""
    ov = _import_ov()
    model = ov.Core().read_model(str(src))
    shape = list(model.inputs[0].get_partial_shape())
    try:
        model.reshape({model.inputs[0]: [batch, *shape[1:]]})
    except RuntimeError as e:
        raise UserError(f"{Path(src).name} cannot run at batch {batch}: {str(e).splitlines()[0]}") from None
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    return _save_ir(model, dst)


def _copy_onnx_metadata(onnx_path: str | os.PathLike, model) -> None:
    from targets.export import read_metadata

    for key, value in read_metadata(onnx_path).items():
        model.set_rt_info(value, ["rtmdet_edge", "onnx", key])


def _has_f16_weights(model) -> bool:
    ov = _import_ov()
    return any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())


class OpenVinoBackend:
    """Runs an IR (.xml) or .onnx file with one compiled model and one reused InferRequest.

    Args:
        precision: "fp32", "bf16" or "f16-weights" (None: "f16-weights" if the IR stores f16 weights, else "fp32").
        hint: "latency" (one stream, all cores on one request) or "throughput" (several streams).
        num_threads: INFERENCE_NUM_THREADS (None: OpenVINO's default, all cores).
        copy_outputs: return copies; False returns the request's own buffers, overwritten by the next call.
    """

    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str | None = None,
        hint: str = "latency",
        num_threads: int | None = None,
        device: str = "CPU",
        copy_outputs: bool = True,
    ) -> None:
        ov = _import_ov()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"OpenVINO model not found: {path}")
        if hint not in HINTS:
            raise UserError(f"unknown OpenVINO hint {hint!r}; choose latency or throughput")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise UserError(f"OpenVINO cannot read {path}: {str(e).splitlines()[0]}") from None
        f16_weights = _has_f16_weights(model)
        if precision is None:
            precision = "f16-weights" if f16_weights else "fp32"
        if precision not in _ALIASES:
            raise UserError(f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        precision = _ALIASES[precision]
        if precision == "f16-weights" and not f16_weights:
            raise UserError(f"{path} stores f32 weights; export with --precision fp16 for an f16-weights IR")
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": HINTS[hint],
        }
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self.compiled = core.compile_model(model, device, config)
        effective = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "bf16" and "bf16" not in effective and "bfloat16" not in effective:
            warnings.warn(f"OpenVINO {device} does not run bf16 here (runs {effective}); labelled fp32", stacklevel=2)
            precision = "fp32"
        self.request = self.compiled.create_infer_request()
        self.path = path
        self.precision = precision
        self.hint = hint
        self.effective_precision = effective
        self.device = device.lower()
        self.config = config
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)
        self.output_names = tuple(o.get_any_name() for o in model.outputs)
        self.has_nms = "num_dets" in self.output_names
        self._copy = copy_outputs
        self._core, self._model, self._device = core, model, device
        self._letterboxed_request = None

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._infer(self.request, batch)

    def _infer(self, request, batch: np.ndarray) -> dict[str, np.ndarray]:
        request.infer({0: batch}, share_inputs=True, share_outputs=True)
        outs = {name: request.get_output_tensor(i).data for i, name in enumerate(self.output_names)}
        return {name: o.copy() for name, o in outs.items()} if self._copy else outs

    def run_letterboxed(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Letterboxed BGR uint8 images [B,H,W,3] -> outputs, normalised inside OpenVINO.

        A second compiled model whose input is the uint8 NHWC image: OpenVINO's PrePostProcessor converts it to f32,
        applies the mean and std of `normalize_numpy` and changes the layout within the compiled graph, which costs
        less than the numpy normalisation the `Detector` would otherwise run before each call on the same cores.
        Compiled on first use, with the settings of this backend.
        """
        if self._letterboxed_request is None:
            from openvino.preprocess import PrePostProcessor

            from rtmdet_edge.inference.preprocess import MEAN_BGR, STD_BGR

            ov = _import_ov()
            ppp = PrePostProcessor(self._model.clone())
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(list(MEAN_BGR)).scale(list(STD_BGR))
            compiled = self._core.compile_model(ppp.build(), self._device, self.config)
            self._letterboxed_request = compiled.create_infer_request()
        return self._infer(self._letterboxed_request, np.ascontiguousarray(batch_uint8))

    def __repr__(self) -> str:
        return f"OpenVinoBackend({self.path.name}, {self.precision}, hint={self.hint})"
