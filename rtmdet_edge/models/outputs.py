"""One naming of the raw network outputs, shared by the model, ONNX export, every backend and post-processing.

The model's forward returns grouped outputs (the PRODUCT.md contract): `cls_scores`, `bbox_preds` (and
`kernel_preds`, `angle_preds` as lists per level, `mask_feat` as one tensor). Flattened, each tensor gets a name:
`cls_score_0..2`, `bbox_pred_0..2`, `kernel_pred_0..2`, `angle_pred_0..2`, `mask_feat`. Those names are the ONNX
output names and the keys of what every backend returns; grouping back goes by name, never by position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T", Tensor, np.ndarray)

# group key (model output) -> per-level tensor name prefix; groups absent from a model are simply absent.
PER_LEVEL = {"cls_scores": "cls_score", "bbox_preds": "bbox_pred", "kernel_preds": "kernel_pred", "angle_preds": "angle_pred"}
SINGLE = ("mask_feat",)
_NAME = re.compile(r"^(?P<prefix>[a-z_]+?)_(?P<level>\d+)$")


def output_names(groups: Mapping[str, object] | Sequence[str], num_levels: int = 3) -> list[str]:
    """Flat names in export order for the given groups (a model output dict or its keys)."""
    names: list[str] = []
    for group, prefix in PER_LEVEL.items():
        if group in groups:
            names += [f"{prefix}_{i}" for i in range(num_levels)]
    names += [g for g in SINGLE if g in groups]
    return names


def flatten_outputs(outputs: Mapping[str, Sequence[T] | T]) -> dict[str, T]:
    """{"cls_scores": [a, b, c], "mask_feat": m, ...} -> {"cls_score_0": a, ..., "mask_feat": m} (export order)."""
    flat: dict[str, T] = {}
    for group, prefix in PER_LEVEL.items():
        if group in outputs:
            for i, t in enumerate(outputs[group]):
                flat[f"{prefix}_{i}"] = t
    for group in SINGLE:
        if group in outputs:
            flat[group] = outputs[group]
    unknown = set(outputs) - set(PER_LEVEL) - set(SINGLE)
    if unknown:
        raise KeyError(f"unknown raw output group(s) {sorted(unknown)}")
    return flat


def group_outputs(named: Mapping[str, T], as_torch: bool = True) -> dict[str, list[Tensor] | Tensor]:
    """Inverse of flatten_outputs, by name: {"cls_score_1": b, "cls_score_0": a, ...} -> {"cls_scores": [a, b], ...}.

    Names that are not raw outputs (e.g. in-graph NMS outputs) are ignored. Arrays become torch tensors unless
    as_torch=False.
    """
    convert = (lambda a: torch.as_tensor(np.asarray(a)) if not isinstance(a, Tensor) else a) if as_torch else (lambda a: a)
    prefix_to_group = {p: g for g, p in PER_LEVEL.items()}
    levels: dict[str, dict[int, object]] = {}
    grouped: dict[str, object] = {}
    for name, value in named.items():
        if name in SINGLE:
            grouped[name] = convert(value)
            continue
        m = _NAME.match(name)
        if m and m["prefix"] in prefix_to_group:
            levels.setdefault(prefix_to_group[m["prefix"]], {})[int(m["level"])] = convert(value)
    for group, by_level in levels.items():
        if sorted(by_level) != list(range(len(by_level))):
            raise KeyError(f"{group}: levels {sorted(by_level)} are not 0..{len(by_level) - 1}")
        grouped[group] = [by_level[i] for i in range(len(by_level))]
    return grouped
