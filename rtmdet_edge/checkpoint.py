"""Saving and loading checkpoints: this project's own, official OpenMMLab `.pth` files and bare state dicts.

A checkpoint is untrusted input: it is always read with `torch.load(..., weights_only=True)`, which refuses pickles
that would construct arbitrary objects (and so never runs their code).
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rtmdet_edge.models.backbone import stage_channels
from rtmdet_edge.config import PRESETS, ModelConfig
from rtmdet_edge.errors import UserError
from rtmdet_edge.io import atomic_open

# Keys the official checkpoints carry that are not model weights.
_DROP_PREFIXES = ("data_preprocessor.",)


class _WriteErrors:
    """File wrapper that remembers the OSError of a failed write: torch.save's zip writer turns a full disk into a
    RuntimeError ("unexpected pos ..."), and the real cause (ENOSPC) is what the user must see."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write atomically (rtmdet_edge.io): a kill or a full disk leaves the previous file intact and no partial file."""
    with atomic_open(path, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(payload, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with weights_only=True and clear errors for missing, corrupt or code-carrying files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    _check_checkpoint_format(path)
    try:
        with warnings.catch_warnings():
            # torch warns about a pickle protocol it may not read, then fails with its own error, said below in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _weights_only_detail(str(e))
        if detail == "Unsupported operand 149":  # FRAME: nothing read yet, so nothing known about its content
            raise UserError(
                f"refusing to load {path}: a pickle of protocol 4 or later, which the weights-only loader cannot read, "
                "so its content cannot be checked (nothing was executed); re-save it with torch.save's default protocol"
            ) from None
        raise UserError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, which could run "
            f"code when unpickled (weights_only=True): {detail}"
        ) from None
    except Exception as e:  # noqa: BLE001 - untrusted bytes: a damaged pickle fails with KeyError, struct.error, ...
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{path} does not hold a checkpoint dict (found {type(ckpt).__name__})")
    return dict(ckpt)


def _check_checkpoint_format(path: Path) -> None:
    """torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle of protocol 2 or more,
    which starts with the PROTO opcode 0x80. Anything else (a text file, an image, an ONNX) is not a checkpoint; without
    this check the weights-only unpickler reads its bytes as opcodes and reports a misleading "could run code"."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise UserError(f"cannot read checkpoint {path}: the file is empty")
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return
    kind = "a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else f"starts with {head!r}"
    raise UserError(
        f"cannot read checkpoint {path}: it is not a PyTorch checkpoint ({kind}; torch.save writes a zip archive or a "
        "pickle)"
    )


def _weights_only_detail(message: str) -> str:
    """The one useful sentence of PyTorch's weights_only error (e.g. "Unsupported global: GLOBAL os.system was not an
    allowed global by default"); the rest is advice to load with weights_only=False, which this project never does."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        rest = [line.strip() for line in message.split(marker, 1)[1].splitlines() if line.strip()]
        if rest:
            return rest[0].split(". ")[0].rstrip(".")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "unpickling failed"


def extract_state_dict(ckpt: Mapping[str, Any], prefer_ema: bool = True) -> dict[str, Tensor]:
    """The model weights of any supported checkpoint layout.

    - this project's: {"model": sd, "ema": sd?, "config": {...}}: the EMA weights when present (what was evaluated).
    - official OpenMMLab: {"state_dict": sd, "meta": ...}: mmengine's EMAHook swaps the EMA weights into state_dict.
    - a bare state dict.
    """
    if "config" in ckpt and "model" in ckpt:
        sd = ckpt["ema"] if prefer_ema and ckpt.get("ema") is not None else ckpt["model"]
    elif "state_dict" in ckpt:
        sd = ckpt["state_dict"]
    else:
        sd = ckpt
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UserError("checkpoint has no state dict of tensors (expected 'state_dict', 'model' or a bare state dict)")
    out = {}
    for k, v in sd.items():
        if k.startswith(_DROP_PREFIXES):
            continue
        if k.startswith("module."):  # saved from a DistributedDataParallel wrapper
            k = k[len("module.") :]
        out[k] = v
    return out


def infer_config(state_dict: Mapping[str, Tensor]) -> ModelConfig | None:
    """The preset a state dict looks like (size from the stem width, class count from rtm_cls), or None.

    use_depthwise shows in the keys (the stage down-sampling conv becomes `depthwise_conv`/`pointwise_conv`).
    share_conv=False shows only in the values: a shared head stores one tensor under every level's key (as official
    checkpoints do), so level 1's stacked conv equal to level 0's means shared. The size comes from the stem width,
    so `use_depthwise` on rtmdet-s is inferred as rtmdet-s with use_depthwise, not as a nano.
    """
    stem = state_dict.get("backbone.stem.2.conv.weight")
    cls = state_dict.get("bbox_head.rtm_cls.0.weight")
    if stem is None or cls is None:
        return None
    width = stem.shape[0]
    kind = "rot" if any(k.startswith("bbox_head.rtm_ang") for k in state_dict) else "det"
    if any(k.startswith("bbox_head.kernel_convs") for k in state_dict):
        kind = "ins"
    dw = state_dict.get("backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv.weight")
    block = f"dw{dw.shape[-1]}" if dw is not None else None
    use_depthwise = "backbone.stage1.0.depthwise_conv.conv.weight" in state_dict
    share_conv = _head_convs_shared(state_dict)
    for cfg in PRESETS.values():
        if cfg.kind == kind and stage_channels(cfg.widen)[0] == width:
            changes: dict[str, Any] = {"num_classes": int(cls.shape[0])}
            if block in ("dw3", "dw5", "dw7"):
                changes["block"] = block
            changes["use_depthwise"] = use_depthwise
            changes["share_conv"] = share_conv and not use_depthwise
            return _replace(cfg, **changes)
    return None


def _head_convs_shared(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the head's stacked convs hold one tensor for all levels (share_conv=True)."""
    first = state_dict.get("bbox_head.cls_convs.0.0.conv.weight")
    for level in (1, 2):
        other = state_dict.get(f"bbox_head.cls_convs.{level}.0.conv.weight")
        if first is None or other is None or other.shape != first.shape or not torch.equal(other, first):
            return False
    return True


def _replace(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


def _describe(cfg: ModelConfig | None) -> str:
    if cfg is None:
        return "no known RTMDet preset"
    options = (["use_depthwise"] if cfg.use_depthwise else []) + ([] if cfg.share_conv else ["share_conv=False"])
    return f"{cfg.name} ({', '.join([cfg.block, f'{cfg.num_classes} classes', *options])})"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Strict key and shape matching with one clear error naming the first differences."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(
                "shape mismatch: " + "; ".join(f"{k} checkpoint {a} vs model {b}" for k, a, b in shapes[:3])
                + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else "")
            )
        if missing:
            parts.append(f"missing {len(missing)} keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys, e.g. {', '.join(unexpected[:3])}")
        model_cfg = getattr(model, "config", None)
        target = _describe(model_cfg) if isinstance(model_cfg, ModelConfig) else type(model).__name__
        raise UserError(
            f"{source} does not fit {target}: {'; '.join(parts)}. The checkpoint looks like "
            f"{_describe(infer_config(state_dict))}."
        )
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, prefer_ema: bool = True) -> nn.Module:
    """Load weights into `model`, or build the model the checkpoint describes when `model` is None.

    Accepts this project's checkpoints (which record their config), official OpenMMLab `.pth` files and bare state
    dicts (their architecture is inferred from the tensor shapes: size, class count, kernel size).
    """
    from rtmdet_edge.models.model import build_model

    ckpt = read_checkpoint(path)
    state_dict = extract_state_dict(ckpt, prefer_ema=prefer_ema)
    if model is None:
        if "config" in ckpt:
            model = build_model(ModelConfig.from_dict(ckpt["config"]))
        else:
            cfg = infer_config(state_dict)
            if cfg is None:
                raise UserError(f"cannot tell which model {path} holds; pass --model (or build the model yourself)")
            model = build_model(cfg)
    if ckpt.get("fused") and not getattr(model, "fused", False):
        model.fuse()  # a fused checkpoint holds the deployment form's keys (BN folded, Rep merged, head un-shared)
    load_state_dict_strict(model, state_dict, source=str(path))
    names = ckpt.get("class_names")
    if isinstance(names, (list, tuple)) and len(names) == getattr(model, "num_classes", len(names)):
        model.class_names = list(names)
    return model
