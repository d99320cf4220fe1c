"""Deployment targets: export and one small Backend protocol that every runtime implements (one file each).

A backend runs the *raw* network: a normalised float32 batch [B,3,H,W] in, a mapping name -> array out, keyed by the
names of rtmdet_edge.models.outputs (`cls_score_0..2`, `bbox_pred_0..2`, and `kernel_pred_*`, `mask_feat`,
`angle_pred_*` for the Ins / R heads), which are also the ONNX output names. Consumers group outputs back by name
(`group_outputs`), never by position. Decoding and NMS stay in rtmdet_edge.inference.postprocess so every backend shares
one post-processing path (unless a model was exported with in-graph NMS: then the names are NMS_OUTPUT_NAMES).

Each backend file also answers `available(precision) -> str | None`: None when it can run that precision on this
machine, else the reason why not (what `benchmark` prints for rows it skips).
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np
import torch

INPUT_NAME = "images"


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch", "onnxruntime", "openvino", "tensorrt"
    precision: str  # "fp32", "fp16", "bf16", "int8"
    input_shape: tuple[int, ...]  # (B, 3, H, W); B is -1 when the batch is dynamic
    output_names: tuple[str, ...]  # the keys __call__ returns, in the file's output order

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [B,3,H,W] normalised BGR -> {output name: array} (rtmdet_edge.models.outputs names)."""
        ...


# Backend choice by file suffix (STYLE.md rule 9): a small dict, the runtime imported only when chosen.
BACKEND_BY_SUFFIX = {
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".pth": "torch",
    ".pt": "torch",
}
BACKEND_NAMES = ("torch", "torch-compile", "onnxruntime", "openvino", "tensorrt")
# backend name -> the module that implements it (and its `available(precision)`)
BACKEND_MODULES = {
    "torch": "targets.torch_backend",
    "torch-compile": "targets.torch_backend",
    "onnxruntime": "targets.onnxruntime",
    "openvino": "targets.openvino",
    "tensorrt": "targets.tensorrt",
}


def backend_available(name: str, precision: str) -> str | None:
    """None when backend `name` can run `precision` on this machine, else why not (asked of the backend's own file)."""
    if name not in BACKEND_MODULES:
        return f"unknown target {name!r}"
    return importlib.import_module(BACKEND_MODULES[name]).available(precision)


def load_backend(path_or_model, name: str | None = None, **kwargs) -> Backend:
    """A Backend for a model file or an nn.Module.

    name=None picks by suffix (BACKEND_BY_SUFFIX). A PyTorch model or checkpoint with name "onnxruntime", "openvino"
    or "tensorrt" is exported first (fused ONNX in a temporary folder, `imgsz` from kwargs, default 640); an .onnx
    file also opens in OpenVINO (which reads ONNX) and builds a TensorRT engine next to it. Extra kwargs go to the
    backend class (e.g. providers=, precision=, hint=, num_threads=, device=).
    """
    from pathlib import Path

    from rtmdet_edge.errors import UserError

    if name is not None and name not in BACKEND_NAMES:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if isinstance(path_or_model, torch.nn.Module) or Path(path_or_model).suffix.lower() in (".pth", ".pt"):
        model = path_or_model
        if not isinstance(model, torch.nn.Module):
            from rtmdet_edge.checkpoint import load_checkpoint

            model = load_checkpoint(model)
        name = name or "torch"
        if name in ("torch", "torch-compile"):
            from targets.torch_backend import TorchBackend

            return TorchBackend(model, compile=name == "torch-compile", **kwargs)
        import tempfile

        from targets.export import export_onnx

        # The exported file only has to live until the runtime has loaded it (ORT, OpenVINO and TensorRT keep
        # their own copy in memory), so it goes into a folder removed right after.
        with tempfile.TemporaryDirectory(prefix="rtmdet_edge_") as tmp:
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", imgsz=kwargs.pop("imgsz", 640), dynamic=True)
            return load_backend(onnx_path, name, **kwargs)
    path = Path(path_or_model)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in BACKEND_BY_SUFFIX:
        raise UserError(f"cannot tell the runtime of {path.name}; expected one of {', '.join(BACKEND_BY_SUFFIX)}")
    name = name or BACKEND_BY_SUFFIX[suffix]
    kwargs.pop("imgsz", None)  # runtime files carry their input size
    device = str(kwargs.pop("device", "cpu"))  # torch-style device names, as the Detector passes them
    if name == "onnxruntime" and suffix == ".onnx":
        from targets.onnxruntime import OrtBackend

        if "providers" not in kwargs and device.startswith("cpu"):
            kwargs["providers"] = ["CPUExecutionProvider"]
        return OrtBackend(path, **kwargs)
    if name == "openvino" and suffix in (".xml", ".onnx"):
        from targets.openvino import OpenVinoBackend

        # OpenVINO has no CUDA device: torch names map to its CPU plugin, its own names (GPU, NPU, AUTO) pass
        ov_device = "CPU" if device.split(":")[0] in ("cpu", "cuda", "auto") else device
        return OpenVinoBackend(path, device=ov_device, **kwargs)
    if name == "tensorrt" and suffix in (".engine", ".plan", ".onnx"):
        from targets.tensorrt import TrtBackend, build_engine

        if suffix == ".onnx":
            from rtmdet_edge.io import content_key

            precision = kwargs.pop("precision", "fp32")
            # cached by content, not by name: an ONNX re-exported with other weights gets a new engine
            key = content_key([path], {"precision": precision, "device": device, "tensorrt": _tensorrt_version()})
            engine = path.with_name(f"{path.stem}.{precision}.{key}.engine")
            path = engine if engine.is_file() else build_engine(path, engine, precision=precision)
        if not device.startswith("cuda"):
            raise UserError(f"the tensorrt backend runs on a CUDA device, not {device!r}")
        return TrtBackend(path, device=device, **kwargs)
    raise UserError(f"the {name} backend cannot run a {suffix} file")


def _tensorrt_version() -> str:
    from targets.tensorrt import import_tensorrt

    return str(import_tensorrt().__version__)
