"""Deployment targets: export and one small Backend protocol that every runtime implements (one file each).

A backend runs the *raw* network: a normalised float32 batch [B,3,H,W] in, the per-level outputs out, in the order
of `OUTPUT_NAMES` (cls_score_0..2, bbox_pred_0..2). Decoding and NMS stay in rtmdet_edge.postprocess so every backend
shares one post-processing path (unless a model was exported with in-graph NMS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

INPUT_NAME = "images"
OUTPUT_NAMES = ("cls_score_0", "cls_score_1", "cls_score_2", "bbox_pred_0", "bbox_pred_1", "bbox_pred_2")


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch", "onnxruntime", "openvino", "tensorrt"
    precision: str  # "fp32", "fp16", "bf16", "int8"
    input_shape: tuple[int, ...]  # (B, 3, H, W); B is -1 when the batch is dynamic

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """float32 [B,3,H,W] normalised BGR -> raw outputs in OUTPUT_NAMES order."""
        ...


def outputs_to_dict(arrays: Sequence[np.ndarray | torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Backend output list (OUTPUT_NAMES order) -> the model's output dict, as torch tensors."""
    tensors = [torch.as_tensor(a) for a in arrays]
    n = len(tensors) // 2
    return {"cls_scores": tensors[:n], "bbox_preds": tensors[n:]}


def dict_to_outputs(outputs: dict[str, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """The model's output dict -> a flat list in OUTPUT_NAMES order (what export and backends use)."""
    return [*outputs["cls_scores"], *outputs["bbox_preds"]]
