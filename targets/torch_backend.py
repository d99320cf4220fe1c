"""PyTorch backend: the model itself, eager or through torch.compile, behind the same Backend call as the runtimes."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from rtmdet_edge.errors import UserError
from rtmdet_edge.models.outputs import flatten_outputs
from targets import INPUT_NAME

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def available(precision: str) -> str | None:
    """None when PyTorch can run `precision` here as a deployment path, else why not."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if torch.cuda.is_available():
            return None
        return "fp16 needs a CUDA device (PyTorch CPU fp16 convolutions are a slow fallback, not a deploy path)"
    if precision == "bf16":
        return "not measured for PyTorch; bf16 is measured on OpenVINO, the CPU deployment runtime"
    if precision == "int8":
        return "PyTorch eager has no INT8 CPU path for this model; the Q/DQ ONNX runs on onnxruntime/openvino"
    return f"unknown precision {precision!r}"


class TorchBackend:
    """Runs an RTMDet (or any module returning the model's output dict) on a device.

    Args:
        precision: "fp32", or "fp16"/"bf16" to run a converted copy (inputs cast on the way in, outputs back to fp32).
        compile: wrap the model in torch.compile (the first call compiles; warm it up before timing);
            compile_backend "inductor" generates kernels, "eager" only traces (fast, for tests).
        fuse: run the deployment form (BN folded, Rep branches merged); what every exported target runs.
        imgsz: recorded as input_shape for reports; the model itself accepts any multiple of 32.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        compile: bool = False,
        fuse: bool = False,
        imgsz: int = 640,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        if precision not in _DTYPES:
            raise UserError(f"unknown torch precision {precision!r}; choose one of {', '.join(_DTYPES)}")
        self.device = torch.device(device)
        self.dtype = _DTYPES[precision]
        if fuse or precision != "fp32":  # never modify the caller's model
            model = copy.deepcopy(model)
        if fuse:
            from targets.export import deployment_model

            model = deployment_model(model)
        self.model = model.to(self.device, self.dtype).eval()
        self.module = torch.compile(self.model, mode=compile_mode, backend=compile_backend) if compile else self.model
        self.name = "torch-compile" if compile else "torch"
        self.precision = precision
        self.input_shape = (-1, 3, imgsz, imgsz)
        self.input_name = INPUT_NAME
        self.has_nms = False
        self._output_names: tuple[str, ...] | None = None

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names __call__ returns; the head decides them, so ask the model once (a 64x64 forward)."""
        if self._output_names is None:
            probe = torch.zeros(1, 3, 64, 64, device=self.device, dtype=self.dtype)
            self._output_names = tuple(self.run_torch(probe))
        return self._output_names

    @torch.inference_mode()
    def run_torch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor in, {output name: tensor} out, on the backend's device (no host copies)."""
        return flatten_outputs(self.module(images.to(self.device, self.dtype, non_blocking=True)))

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.run_torch(torch.from_numpy(np.ascontiguousarray(batch)))
        return {name: o.float().cpu().numpy() for name, o in outs.items()}

    def __repr__(self) -> str:
        return f"TorchBackend({type(self.model).__name__}, {self.name}, {self.precision}, {self.device})"
