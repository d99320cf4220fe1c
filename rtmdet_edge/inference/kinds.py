"""The three model kinds at inference time: which outputs tell them apart, which post-processing and presets they use.

"det" (RTMDet), "ins" (RTMDet-Ins: adds kernel_pred_i and mask_feat) and "rot" (RTMDet-R: adds angle_pred_i). A model
file (ONNX, OpenVINO IR, TensorRT engine) carries no config, only its output names (rtmdet_edge.models.outputs), so
the kind of a deployed model is read from those names; a PyTorch model says it in config.kind. The same preset name
("official", "deploy") means each kind's own official test_cfg: RTMDet-Ins and RTMDet-R use other thresholds than the
detector (postprocess_ins.INS_PRESETS, rotated_postprocess.PRESETS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from rtmdet_edge.inference import rotated_postprocess
from rtmdet_edge.inference.postprocess import PRESETS, Detections, PostprocessConfig, postprocess
from rtmdet_edge.inference.postprocess_ins import INS_PRESETS, postprocess_ins
from rtmdet_edge.inference.preprocess import LetterboxMeta

KINDS = ("det", "ins", "rot")
_PRESETS_BY_KIND = {"det": PRESETS, "ins": INS_PRESETS, "rot": rotated_postprocess.PRESETS}


def kind_from_names(names: Iterable[str]) -> str:
    """Kind from raw output names (flat "mask_feat", "angle_pred_0", ... or grouped "angle_preds")."""
    names = set(names)
    if "mask_feat" in names:
        return "ins"
    if any(n.startswith("angle_pred") for n in names):
        return "rot"
    return "det"


def model_kind(model: Any) -> str:
    """Kind of a PyTorch model (config.kind) or of a backend (its output names); "det" when neither says."""
    for holder in (model, getattr(model, "model", None)):  # a torch backend holds its module in .model
        kind = getattr(getattr(holder, "config", None), "kind", None)
        if kind in KINDS:
            return kind
    if not isinstance(model, nn.Module):
        try:
            names = getattr(model, "output_names", None)
        except Exception:  # noqa: BLE001 - a backend that cannot list its outputs yet is taken for a detector
            names = None
        if names:
            return kind_from_names(names)
    return "det"


def kind_config(kind: str, cfg: PostprocessConfig) -> PostprocessConfig:
    """The detector's "official" / "deploy" preset -> the same preset of `kind`; any other config is kept as given."""
    for name, preset in PRESETS.items():
        if cfg == preset:
            return _PRESETS_BY_KIND[kind][name]
    return cfg


def postprocess_outputs(
    outputs: Mapping[str, Any], metas: Sequence[LetterboxMeta], cfg: PostprocessConfig, strides: Sequence[int]
) -> list[Detections]:
    """Grouped raw outputs of any kind -> Detections per image (masks for Ins, [N,5] rotated boxes for R)."""
    if "mask_feat" in outputs:
        return postprocess_ins(outputs, metas, cfg, strides)
    if "angle_preds" in outputs:
        return rotated_postprocess.postprocess_rotated(outputs, metas, cfg, strides)
    return postprocess(outputs, metas, cfg, strides)


__all__ = ["KINDS", "kind_config", "kind_from_names", "model_kind", "postprocess_outputs"]
