"""Mixed precision to an accuracy budget: keep the fewest, most sensitive convolutions in float until the INT8 model
loses at most `max_drop` mAP points against FP32 on the given validation set.

The ranking is quant.evidence.layer_sensitivity (output SQNR with one layer at a time in INT8, measured on the
calibration images in PyTorch); the search then quantizes for real with the chosen recipe, keeping the top-k layers
float (the recipe's ignored nodes), and evaluates on the target: k = 0, 1, 2, 4, ... until the budget holds, then a
bisection between the last two k for the fewest layers. Each step is one PTQ + one evaluation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from rtmdet_edge.errors import UserError


def onnx_conv_names(model: onnx.ModelProto) -> dict[str, str]:
    """Torch module name of each Conv node of an exported model -> the node's name.

    The exporter scopes nodes by the modules that were called: "/model/backbone/stage1/stage1.1/short_conv/conv/Conv"
    for `backbone.stage1.1.short_conv.conv` (a Sequential child appears as "<parent>.<index>", a ModuleList is not
    called and so adds no scope of its own).
    """
    names = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or not node.name.startswith("/"):
            continue
        tokens = node.name.strip("/").split("/")[:-1]  # drop the op name
        if tokens and tokens[0] == "model":  # export wraps the network in a module called `model`
            tokens = tokens[1:]
        parts: list[str] = []
        last = None
        for tok in tokens:
            parts.append(tok[len(last) + 1 :] if last is not None and tok.startswith(last + ".") else tok)
            last = tok
        names[".".join(parts)] = node.name
    return names


def ignore_patterns(node_names: list[str]) -> tuple[str, ...]:
    """Exact-match regular expressions for QuantSettings.ignore."""
    return tuple(f"^{re.escape(n)}$" for n in node_names)


@dataclass
class MixedResult:
    max_drop: float
    fp32_map: float
    int8_map: float  # all layers in INT8
    mixed_map: float
    kept_float: list[dict[str, Any]]  # layer, block, sqnr_db, node
    latency_ms: dict[str, float]  # fp32, int8, mixed
    steps: list[dict[str, Any]] = field(default_factory=list)  # k, drop
    model_file: str = ""
    met: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def search_mixed_precision(
    model: nn.Module,
    calib,
    dataset,
    max_drop: float,
    recipe: str = "onnxruntime",
    settings=None,
    target: str = "onnxruntime",
    imgsz: int = 640,
    out_dir: str | os.PathLike = "runs/quantize/mixed",
    threads: int = 2,
    max_layers: int | None = None,
) -> MixedResult:
    """Fewest float layers (by sensitivity rank) whose INT8 model drops at most `max_drop` mAP points on `dataset`."""
    from quant import QuantSettings, ptq
    from quant.evidence import activation_stats, layer_sensitivity
    from quant.gap import GapSettings, measure_model_file
    from quant.ptq import fp32_onnx_for
    from targets.export import deployment_model

    if dataset is None:
        raise UserError("--max-drop needs labelled validation data (--data) to measure the drop")
    settings = settings or QuantSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gs = GapSettings(imgsz=imgsz, threads=threads, warmup=2, runs=10)
    meta = {"class_names": list(dataset.class_names)}
    fp32_onnx = fp32_onnx_for(model, out, imgsz)
    fp32 = measure_model_file(target, fp32_onnx, dataset, gs, meta)

    fused = deployment_model(model)
    batch = calib.batch if hasattr(calib, "batch") else np.asarray(calib)
    batches = [torch.from_numpy(batch[i : i + 4]) for i in range(0, min(len(batch), 16), 4)]
    acts = activation_stats(fused, batches)
    ranking = layer_sensitivity(fused, batches, acts, per_channel=settings.granularity == "per-channel",
                                symmetric=recipe == "tensorrt")  # fmt: skip
    node_of = onnx_conv_names(onnx.load(str(fp32_onnx), load_external_data=False))
    ranking = [s for s in ranking if s.layer in node_of]
    limit = len(ranking) if max_layers is None else min(max_layers, len(ranking))
    cache: dict[int, dict[str, Any]] = {}

    def trial(k: int) -> dict[str, Any]:
        if k not in cache:
            keep = [node_of[s.layer] for s in ranking[:k]]
            qs = QuantSettings(**{**settings.to_dict(), "ignore": tuple(settings.ignore) + ignore_patterns(keep)})
            result = ptq(fp32_onnx, calib, recipe=recipe, settings=qs, out_dir=out / f"keep_{k}", imgsz=imgsz,
                         check_kernels=False)  # fmt: skip
            file = result.openvino_xml if target == "openvino" and result.openvino_xml else result.qdq_onnx
            got = measure_model_file(target, file, dataset, gs, meta)
            cache[k] = {"k": k, "drop": fp32["mAP"] - got["mAP"], "mAP": got["mAP"],
                        "latency_ms": got["latency_ms"], "file": str(file)}  # fmt: skip
        return cache[k]

    steps = [trial(0)]
    lo, hi = 0, None
    k = 1
    while steps[-1]["drop"] > max_drop and k <= limit:
        steps.append(trial(k))
        if steps[-1]["drop"] <= max_drop:
            hi = k
            break
        lo = k
        k = min(2 * k, limit) if k < limit else limit + 1
    if steps[0]["drop"] <= max_drop:
        hi = 0
    if hi is not None:  # bisection: the fewest layers that still meet the budget
        while hi - lo > 1:
            mid = (lo + hi) // 2
            step = trial(mid)
            steps.append(step)
            lo, hi = (lo, mid) if step["drop"] <= max_drop else (mid, hi)
    best = cache[hi] if hi is not None else min(cache.values(), key=lambda s: s["drop"])
    kept = [{"layer": s.layer, "block": s.block, "sqnr_db": s.sqnr_db, "node": node_of[s.layer]}
            for s in ranking[: best["k"]]]  # fmt: skip
    return MixedResult(
        max_drop=max_drop, fp32_map=fp32["mAP"], int8_map=cache[0]["mAP"], mixed_map=best["mAP"], kept_float=kept,
        latency_ms={"fp32": fp32["latency_ms"], "int8": cache[0]["latency_ms"], "mixed": best["latency_ms"]},
        steps=sorted(steps, key=lambda s: s["k"]), model_file=best["file"], met=hi is not None,
    )  # fmt: skip
