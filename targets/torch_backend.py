"""PyTorch backend: the model itself, eager or through torch.compile, behind the same Backend call as the runtimes."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from rtmdet_edge.errors import UserError
from targets import INPUT_NAME, OUTPUT_NAMES, dict_to_outputs

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        self.output_names = OUTPUT_NAMES
        self.has_nms = False

    @torch.inference_mode()
    def run_torch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Tensor in, tensors out, on the backend's device (no host copies)."""
        out = self.module(images.to(self.device, self.dtype, non_blocking=True))
        return dict_to_outputs(out) if isinstance(out, dict) else list(out)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = self.run_torch(torch.from_numpy(np.ascontiguousarray(batch)))
        return [o.float().cpu().numpy() for o in outs]

    def __repr__(self) -> str:
        return f"TorchBackend({type(self.model).__name__}, {self.name}, {self.precision}, {self.device})"
