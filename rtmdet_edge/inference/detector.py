"""Detector: BGR uint8 image(s) in, detections in original-image pixels out, on any backend.

    det = Detector("rtmdet_tiny.pth", imgsz=640)            # PyTorch, official test settings
    det = Detector("model.onnx", backend="onnxruntime", postprocess="deploy")
    result = det(cv2.imread("street.jpg"))                  # Detections(boxes [N,4] xyxy, scores [N], labels [N])
                                                            # + masks [N,H,W] bool for rtmdet-ins-* models
    det = Detector("rtmdet-r_tiny.pth", imgsz=1024)         # RTMDet-R: boxes [N,5] (cx, cy, w, h, angle) le90
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rtmdet_edge.checkpoint import load_checkpoint
from rtmdet_edge.classes import default_class_names
from rtmdet_edge.errors import UserError
from rtmdet_edge.models.model import RTMDet, build_model
from rtmdet_edge.inference.postprocess import PRESETS, Detections, PostprocessConfig
from rtmdet_edge.inference.preprocess import LetterboxMeta, normalize, normalize_numpy, preprocess
from rtmdet_edge.models.outputs import group_outputs
from rtmdet_edge.inference import rotated_postprocess
from rtmdet_edge.inference.kinds import model_kind, postprocess_outputs
from rtmdet_edge.inference.postprocess_ins import INS_PRESETS

BACKENDS = ("torch", "torch-compile", "onnxruntime", "openvino", "tensorrt")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; a clear error for a CUDA request on a machine without one."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


class Detector:
    """Pre-processing + network + post-processing with the official defaults.

    Args:
        weights_or_model: an RTMDet module, a checkpoint path (.pth: this project's, official or bare state dict),
            an exported model (.onnx, .xml, .engine) for the matching backend, or a ready targets.Backend (e.g. one
            `benchmark` already built; `backend` is then ignored).
        imgsz: network input size (square letterbox, long side resized to it).
        backend: "torch", "torch-compile", "onnxruntime", "openvino" or "tensorrt".
        postprocess: "official" (score 0.001, nms_pre 30000, IoU 0.65, 300 boxes), "deploy" (0.3, 1000, 0.65, 100)
            or a PostprocessConfig.
        model: preset name, needed for a bare state dict whose architecture cannot be inferred.
        num_classes / class_names: override what the checkpoint says.
        backend_options: passed to the backend loader (e.g. precision="bf16" for OpenVINO).

    Post-processing next to another runtime (ONNX Runtime, OpenVINO, TensorRT) runs on one torch thread
    (`post_threads`). With torch's default pool its OpenMP workers keep spinning for milliseconds after each
    decode/NMS, on the cores the runtime's own threads need for the next image, and the runtime's threads do the
    same to decode/NMS: on 2 threads that cost more than pre + post themselves (benchmarks/e2e_overhead.py).
    """

    def __init__(
        self,
        weights_or_model: nn.Module | str | os.PathLike,
        imgsz: int = 640,
        backend: str = "torch",
        device: str | torch.device = "auto",
        postprocess: str | PostprocessConfig = "official",
        model: str | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        **backend_options: object,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        # A preset name resolves per model kind at call time (RTMDet-Ins has its own official test_cfg).
        self.post_preset = postprocess if isinstance(postprocess, str) else None
        if isinstance(postprocess, str):
            if postprocess not in PRESETS:
                raise UserError(f"unknown post-processing preset {postprocess!r}; choose one of {', '.join(PRESETS)}")
            postprocess = PRESETS[postprocess]
        self.post_cfg = postprocess
        self.imgsz = imgsz
        self.backend_name = backend
        self.device = resolve_device(device)
        self.model: nn.Module | None = None
        self.backend = None
        self.post_threads: int | None = None  # torch threads for decode/NMS (None: leave torch's setting)
        names = list(class_names) if class_names is not None else None

        if _is_backend(weights_or_model):
            self.backend = weights_or_model
            self.backend_name = weights_or_model.name
            self.class_names = names or default_class_names(num_classes or 80)
            self.strides = tuple(getattr(weights_or_model, "strides", (8, 16, 32)))
            self.post_threads = None if self.backend_name.startswith("torch") else 1
            self._set_kind(weights_or_model)
            return
        if isinstance(weights_or_model, nn.Module):
            self.model = weights_or_model
        else:
            path = Path(weights_or_model)
            if path.suffix in (".pth", ".pt"):
                self.model = self._load_torch(path, model, num_classes)
                names = names or getattr(self.model, "class_names", None)
            elif backend == "torch":
                raise UserError(f"backend 'torch' needs a .pth checkpoint, got {path}")
        if self.model is not None:
            self.model.eval().to(self.device)
            num = int(getattr(self.model, "num_classes", num_classes or 80))
        else:
            num = num_classes or 80
        if backend == "torch-compile" and self.model is not None:
            self.model = torch.compile(self.model)
        elif backend != "torch":
            from targets import load_backend

            source = self.model if self.model is not None else weights_or_model
            self.backend = load_backend(source, name=backend, imgsz=imgsz, device=str(self.device), **backend_options)
            shape = tuple(getattr(self.backend, "input_shape", ()) or ())
            if len(shape) == 4 and shape[2] > 0 and shape[3] > 0:  # a static model file knows its own input size
                self.imgsz = (int(shape[2]), int(shape[3])) if shape[2] != shape[3] else int(shape[2])
            self.post_threads = None if backend.startswith("torch") else 1
        self.class_names = names or default_class_names(num)
        self.strides = tuple(getattr(self.model, "strides", (8, 16, 32)))
        self._set_kind(self.model if self.model is not None else self.backend)

    def _set_kind(self, source: object) -> None:
        """kind "det" / "ins" / "rot" from the model's config or a model file's output names (a backend built from
        an RTMDet-R ONNX has no config). RTMDet-R: rotated boxes [N, 5] (cx, cy, w, h, angle) and mmrotate's test
        settings under the same preset names."""
        self.kind = model_kind(source)
        self.rotated = self.kind == "rot"
        if self.rotated and self.post_preset is not None:
            self.post_cfg = rotated_postprocess.PRESETS[self.post_preset]

    @staticmethod
    def _load_torch(path: Path, model_name: str | None, num_classes: int | None) -> nn.Module:
        model = build_model(model_name, num_classes=num_classes) if model_name else None
        return load_checkpoint(path, model)

    @torch.inference_mode()
    def infer_raw(self, batch_uint8: np.ndarray) -> dict[str, list[torch.Tensor]]:
        """Letterboxed uint8 batch [B,S,S,3] -> raw outputs (torch tensors on the CPU or the model's device)."""
        if self.backend is not None:
            return group_outputs(self._run_backend(batch_uint8))
        assert self.model is not None
        x = normalize(torch.from_numpy(batch_uint8).to(self.device))
        return self.model(x)

    def __call__(self, images_bgr: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        """One BGR uint8 image -> Detections (numpy arrays); a list of images -> a list of Detections."""
        single = isinstance(images_bgr, np.ndarray) and images_bgr.ndim == 3
        images = [images_bgr] if single else list(images_bgr)
        if not images:
            return []
        batch, metas = preprocess(images, self.imgsz)
        if getattr(self.backend, "has_nms", False):  # exported with --nms: the graph already decoded and filtered
            from targets.export import nms_outputs_to_detections

            dets = [d.numpy() for d in nms_outputs_to_detections(self._run_backend(batch), metas)]
            return dets[0] if single else dets
        dets = [d.numpy() for d in self.postprocess_raw(self.infer_raw(batch), metas)]
        return dets[0] if single else dets

    def _run_backend(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """A letterboxed uint8 batch through the backend: normalised inside the runtime where it can (OpenVINO's
        `run_letterboxed`, cheaper than numpy next to the runtime's own threads), else normalised here."""
        run_letterboxed = getattr(self.backend, "run_letterboxed", None)
        if run_letterboxed is not None:
            return run_letterboxed(batch_uint8)
        return self.backend(normalize_numpy(batch_uint8))

    def postprocess_raw(self, outputs: dict[str, list[torch.Tensor]], metas: Sequence[LetterboxMeta]) -> list[Detections]:
        """Grouped raw outputs -> Detections per image, with this detector's settings and post_threads."""
        # RTMDet-Ins has its own presets under the same names; RTMDet-R's were set in _set_kind.
        cfg = INS_PRESETS[self.post_preset] if "mask_feat" in outputs and self.post_preset else self.post_cfg
        with _torch_threads(self.post_threads):
            return postprocess_outputs(outputs, metas, cfg, self.strides)


@contextlib.contextmanager
def _torch_threads(num: int | None) -> Iterator[None]:
    """Run a block on `num` torch threads (None: unchanged), restoring the previous count."""
    before = torch.get_num_threads()
    if num is None or num == before:
        yield
        return
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_backend(obj: object) -> bool:
    """A targets.Backend instance (duck-typed: this package does not import targets unless a backend is asked for)."""
    return not isinstance(obj, (nn.Module, str, os.PathLike)) and callable(obj) and hasattr(obj, "input_shape")


__all__ = ["BACKENDS", "Detector", "RTMDet", "resolve_device"]
