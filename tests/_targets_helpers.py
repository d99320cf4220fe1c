"""Shared by test_export, test_backends and test_tensorrt: one tiny model, real images, one export per session."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from conftest import DATA, OFFICIAL, randomize_bn

IMGSZ = 256  # small enough for 2 CPU cores; the coarsest level still has 8x8 cells


def tiny_model() -> torch.nn.Module:
    """The official rtmdet-tiny fixture checkpoint when ../shared exists, else a seeded random tiny model whose
    classification bias is raised so the deploy threshold (0.3) still leaves detections to compare."""
    from rtmdet_edge import build_model, load_checkpoint

    ckpt = OFFICIAL / "rtmdet_tiny" / "checkpoint.pth"
    if ckpt.is_file():
        return load_checkpoint(ckpt).eval()
    torch.manual_seed(0)
    model = randomize_bn(build_model("rtmdet-tiny")).eval()
    with torch.no_grad():
        for conv in model.bbox_head.rtm_cls:
            conv.bias.normal_(0.0, 1.0)
    return model


def real_images(n: int = 2) -> list[np.ndarray]:
    """demo.jpg + coco128 images (a synthetic scene when ../shared/data is absent)."""
    from targets.parity import parity_images

    return parity_images(n, data_root=DATA)


@functools.lru_cache(maxsize=None)
def shared_model() -> torch.nn.Module:
    """One tiny model per test process (read-only: export and backends copy it)."""
    return tiny_model()


@functools.lru_cache(maxsize=None)
def exported(kind: str) -> Path:
    """One export per kind per test process, shared by the three target test files: "raw" (static batch 1) or
    "nms" (dynamic batch, deploy NMS)."""
    from targets.export import NMSConfig, export_onnx

    folder = Path(tempfile.mkdtemp(prefix="rtmdet_edge_test_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if kind == "raw":
        return export_onnx(shared_model(), folder / "tiny.onnx", IMGSZ)
    if kind == "nms":
        return export_onnx(shared_model(), folder / "tiny_nms.onnx", IMGSZ, dynamic=True, nms=NMSConfig())
    raise ValueError(kind)
