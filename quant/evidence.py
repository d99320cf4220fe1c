"""Why a block family loses accuracy in INT8: per-layer evidence measured on the fused deployment model.

Three measurements, each per convolution of the fused model (what every runtime quantizes):
- weight statistics: the spread of per-output-channel ranges (max / median of max|w| per channel: large means one
  scale per tensor wastes most of the int8 grid on a few channels), excess kurtosis (heavy tails), the share of
  outlier weights (|w - mean| > 4 std), and the weight-only SQNR of per-tensor and per-channel int8 rounding;
- activation ranges seen on calibration images at each conv's input: min, max, the 99.99th percentile of |x| and
  max / p99.99 (how much a min-max range is stretched by rare values);
- sensitivity: the SQNR of the model's raw outputs when only that layer is quantized (its weights and its input),
  everything else in float. The layers with the lowest SQNR are where INT8 hurts.

The simulation is plain fake quantization in PyTorch (round to the int8 grid and back), symmetric per-channel or
per-tensor weights and per-tensor activations (asymmetric uint8 as ONNX Runtime's U8S8 default, or symmetric int8 as
TensorRT requires), so it isolates what the number format costs each layer independently of any runtime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rtmdet_edge.models.outputs import flatten_outputs


def block_type(name: str, conv: nn.Conv2d) -> str:
    """A readable kind for a conv of the fused model: where it sits and what it computes."""
    k = conv.kernel_size[0]
    if conv.groups > 1 and conv.groups == conv.in_channels:
        kind = f"depthwise {k}x{k}"
    elif k == 1:
        kind = "pointwise 1x1"
    else:
        kind = f"dense {k}x{k}"
    if name.startswith("backbone.stem"):
        where = "stem"
    elif name.startswith("backbone"):
        where = "backbone"
    elif name.startswith("neck"):
        where = "neck"
    elif ".rtm_cls" in name:
        where, kind = "head", "cls predictor 1x1"
    elif ".rtm_reg" in name or ".rtm_ang" in name:
        where, kind = "head", "box predictor 1x1"
    elif name.startswith("bbox_head"):
        where = "head"
    else:
        where = name.split(".")[0]
    if "attention" in name:
        kind = "channel attention 1x1"
    return f"{where} {kind}"


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d, in forward-definition order, each object once (shared convs appear under their first name)."""
    seen: set[int] = set()
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and id(m) not in seen:
            seen.add(id(m))
            layers.append((name, m))
    return layers


def sqnr_db(reference: Tensor, other: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(((reference.double() - other.double()) ** 2).sum())
    signal = float((reference.double() ** 2).sum())
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-300) / noise)


def fake_quant_weight(w: Tensor, per_channel: bool = True) -> Tensor:
    """Symmetric int8 ([-127, 127], zero point 0) per output channel (axis 0) or per tensor."""
    amax = w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) if per_channel else w.detach().abs().max()
    scale = torch.clamp(amax, min=1e-12) / 127.0
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def fake_quant_activation(x: Tensor, lo: float, hi: float, symmetric: bool = False) -> Tensor:
    """Per-tensor int8: asymmetric uint8 on [lo, hi] (0 always representable), or symmetric int8 on max(|lo|, |hi|)."""
    if symmetric:
        scale = max(abs(lo), abs(hi), 1e-12) / 127.0
        return torch.clamp(torch.round(x / scale), -127, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


@dataclass
class WeightStats:
    layer: str
    block: str
    shape: tuple[int, ...]
    channel_range_ratio: float  # max / median over output channels of max|w|
    kurtosis: float  # excess kurtosis of all weights (0 for a Gaussian)
    outlier_share: float  # share of weights with |w - mean| > 4 std
    sqnr_per_tensor_db: float  # weights alone, int8 with one scale
    sqnr_per_channel_db: float  # weights alone, int8 with one scale per output channel


def weight_stats(model: nn.Module) -> list[WeightStats]:
    stats = []
    for name, conv in conv_layers(model):
        w = conv.weight.detach().double()
        flat = w.flatten()
        per_ch = w.abs().amax(dim=(1, 2, 3))
        med = float(per_ch.median())
        centred = flat - flat.mean()
        std = float(centred.std()) if flat.numel() > 1 else 0.0
        kurt = float((centred**4).mean() / max(std**4, 1e-300) - 3.0) if std > 0 else 0.0
        stats.append(
            WeightStats(
                layer=name,
                block=block_type(name, conv),
                shape=tuple(w.shape),
                channel_range_ratio=float(per_ch.max()) / med if med > 0 else float("inf"),
                kurtosis=kurt,
                outlier_share=float((centred.abs() > 4 * std).double().mean()) if std > 0 else 0.0,
                sqnr_per_tensor_db=sqnr_db(w, fake_quant_weight(w, per_channel=False)),
                sqnr_per_channel_db=sqnr_db(w, fake_quant_weight(w, per_channel=True)),
            )
        )
    return stats


@dataclass
class ActivationStats:
    layer: str
    block: str
    min: float
    max: float
    p9999: float  # 99.99th percentile of |x|
    max_over_p9999: float


@torch.no_grad()
def activation_stats(model: nn.Module, batches: Sequence[Tensor], sample: int = 200_000) -> list[ActivationStats]:
    """Input ranges of every conv over the calibration batches (percentile on a random subsample per batch)."""
    layers = conv_layers(model)
    seen: dict[str, dict[str, list]] = {name: {"min": [], "max": [], "abs": []} for name, _ in layers}
    gen = torch.Generator().manual_seed(0)

    def hook(name: str):
        def fn(_m, inputs):
            x = inputs[0].detach().float().flatten()
            rec = seen[name]
            rec["min"].append(float(x.min()))
            rec["max"].append(float(x.max()))
            idx = torch.randint(0, x.numel(), (min(sample, x.numel()),), generator=gen)
            rec["abs"].append(x[idx].abs())

        return fn

    handles = [conv.register_forward_pre_hook(hook(name)) for name, conv in layers]
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, conv in layers:
        rec = seen[name]
        if not rec["min"]:
            continue
        p = float(torch.quantile(torch.cat(rec["abs"])[:1_000_000], 0.9999))
        lo, hi = min(rec["min"]), max(rec["max"])
        out.append(ActivationStats(name, block_type(name, conv), lo, hi, p, max(abs(lo), abs(hi)) / max(p, 1e-12)))
    return out


@contextmanager
def quantize_one(conv: nn.Conv2d, lo: float, hi: float, per_channel: bool, symmetric: bool) -> Iterator[None]:
    """Within the block, `conv` computes with int8-rounded weights and an int8-rounded input."""
    original = conv.weight.data
    conv.weight.data = fake_quant_weight(original, per_channel)
    handle = conv.register_forward_pre_hook(lambda _m, inputs: (fake_quant_activation(inputs[0], lo, hi, symmetric),))
    try:
        yield
    finally:
        handle.remove()
        conv.weight.data = original


@dataclass
class Sensitivity:
    layer: str
    block: str
    sqnr_db: float  # raw outputs (signal = variance of each named output), only this layer in int8
    sqnr_cls_db: float
    sqnr_box_db: float


def _grouped_sqnr(ref: dict[str, Tensor], got: dict[str, Tensor]) -> tuple[float, float, float]:
    signal = noise = 0.0
    parts = {"cls": [0.0, 0.0], "box": [0.0, 0.0]}
    for name, r in ref.items():
        # signal = variation around the output's mean: constant offsets (the logit prior, the stride in box
        # distances) would otherwise hide the noise; each output counts by its element count
        r, g = r.double(), got[name].double()
        var = float(r.var()) if r.numel() > 1 else 0.0
        var = var if var > 0 else 1.0
        s, n = float(((r - r.mean()) ** 2).sum()) / var, float(((r - g) ** 2).sum()) / var
        signal, noise = signal + s, noise + n
        key = "cls" if name.startswith("cls") else "box"
        parts[key][0] += s
        parts[key][1] += n

    def db(s: float, n: float) -> float:
        return float("inf") if n == 0 else 10 * np.log10(s / n)

    return db(signal, noise), db(*parts["cls"]), db(*parts["box"])


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    batches: Sequence[Tensor],
    activations: Sequence[ActivationStats] | None = None,
    per_channel: bool = True,
    symmetric: bool = False,
    layers: Sequence[str] | None = None,
    progress: bool = False,
) -> list[Sensitivity]:
    """Output SQNR with one conv at a time in int8 (min-max input range from `activations`), sorted worst first.

    layers: restrict to these conv names (default: every conv)."""
    from tqdm import tqdm

    model.eval()
    acts = {a.layer: a for a in (activations if activations is not None else activation_stats(model, batches))}
    refs = [{k: v.clone() for k, v in flatten_outputs(model(x)).items()} for x in batches]
    results = []
    for name, conv in tqdm(conv_layers(model), desc="sensitivity", unit="layer", disable=not progress):
        if name not in acts or (layers is not None and name not in layers):
            continue
        a = acts[name]
        with quantize_one(conv, a.min, a.max, per_channel, symmetric):
            gots = [flatten_outputs(model(x)) for x in batches]
        ref_all = {k: torch.cat([r[k].flatten() for r in refs]) for k in refs[0]}
        got_all = {k: torch.cat([g[k].flatten() for g in gots]) for k in refs[0]}
        total, cls, box = _grouped_sqnr(ref_all, got_all)
        results.append(Sensitivity(name, block_type(name, conv), total, cls, box))
    return sorted(results, key=lambda s: s.sqnr_db)


def summarize_by_block(rows: Sequence[object], value: str) -> dict[str, dict[str, float]]:
    """Per block type: count, median and worst (min for SQNR-like, max otherwise) of one field."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r.block, []).append(float(getattr(r, value)))
    worst = min if "sqnr" in value else max
    return {b: {"layers": len(v), "median": float(np.median(v)), "worst": float(worst(v))} for b, v in groups.items()}


def to_records(rows: Sequence[object]) -> list[dict]:
    return [asdict(r) for r in rows]


@contextmanager
def clipped_to_calibration(model: nn.Module, acts: Sequence[ActivationStats]):
    """Inside the block, every conv input is clamped to [min, max] seen on the calibration images, without rounding:
    the part of INT8's effect that comes from range clipping alone (activation quantizers saturate there)."""
    ranges = {a.layer: (a.min, a.max) for a in acts}

    def hook(lo: float, hi: float):
        return lambda _m, inputs: (inputs[0].clamp(lo, hi), *inputs[1:])

    handles = [conv.register_forward_pre_hook(hook(*ranges[name])) for name, conv in conv_layers(model) if name in ranges]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()

