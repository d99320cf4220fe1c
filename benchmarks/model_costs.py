"""Parameters, FLOPs and CPU latency of every block family (dw5, dw3, dw7, rep3, qarep3) per model size.

The Rep families use the matched-cost widths of `config.REP_COST_MATCH` (what `get_config(name, block=...)` returns).

- Params (M): unique trainable parameters of the training form (the paper's convention: the SepBN head's shared convs
  counted once; Rep branches counted). "deploy" is the fused form that is exported and quantized: BN folded, Rep
  branches merged into one 3x3 conv, and the head convs un-shared (one fused conv per level, since each level has its
  own BN), which is why dw5's deploy count is higher than its training count.
- FLOPs (G): counted, not estimated, with torch.utils.flop_counter.FlopCounterMode on a 640x640 forward pass of the
  fused (deployed) model; the JSON also has the training form's count (`train_gflops`, higher for Rep: 1x1 branches).
  Reported as multiply-accumulates (MACs), the convention of mmcv/mmengine's complexity counter behind the paper's
  "FLOPs" (rtmdet-tiny counts 8.04 G here vs 8.1 G in RTMDET_FACTS.md 1.1); FlopCounterMode's raw count is
  2 x MACs and is stored in the JSON as `flops_2x_g`. Convolutions and matmuls only (BN/activations/pooling are
  not counted by either counter).
- CPU latency: fused model, eager PyTorch, fp32, batch 1, 640x640, 2 threads; median of >= 20 timed runs after
  warm-up. The families of one size are timed in interleaved rounds so that load from other users of a shared machine
  hits all of them alike; compare latencies within a size, on the same machine.

    python benchmarks/model_costs.py                  # tiny and s, writes benchmarks/results/model_costs.{json,md}
    python benchmarks/model_costs.py --sizes tiny s m --runs 30
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtmdet_edge import build_model, get_config  # noqa: E402
from rtmdet_edge.config import BLOCKS, ModelConfig  # noqa: E402
from targets.latency import summarize, time_calls  # noqa: E402

FAMILIES = ("dw5", "rep3", "qarep3", "dw3", "dw7")
assert set(FAMILIES) == set(BLOCKS)


def count_params(model: nn.Module) -> int:
    """Unique parameters (a parameter shared by several modules counts once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, imgsz: int) -> int:
    """Multiply-accumulates of one [1, 3, imgsz, imgsz] forward pass (FlopCounterMode counts 2 per MAC)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_cost(cfg: ModelConfig, imgsz: int = 640) -> dict[str, Any]:
    """Params of both forms and MACs at imgsz for one config (random weights; costs do not depend on them)."""
    model = build_model(cfg).eval()
    params = count_params(model)
    train_macs = count_macs(model, imgsz)  # the Rep training form also runs its 1x1 branches
    model.fuse()
    return {
        "params_m": params / 1e6,
        "deploy_params_m": count_params(model) / 1e6,
        "gflops": count_macs(model, imgsz) / 1e9,
        "train_gflops": train_macs / 1e9,
        "model": model,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "s"], choices=["tiny", "s", "m", "l", "x"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per family (>= 20)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds the runs are split into")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be >= 20")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        name = f"rtmdet-{size}"
        costs: dict[str, dict[str, Any]] = {}
        for family in tqdm(FAMILIES, desc=f"{name} costs", leave=False):
            cfg = get_config(name, block=family)
            costs[family] = model_cost(cfg, args.imgsz) | {"config": cfg}
        # Latency: interleaved rounds over the families of this size (see module docstring).
        x = torch.randn(1, 3, args.imgsz, args.imgsz)
        times: dict[str, list[float]] = {f: [] for f in FAMILIES}
        per_round = -(-args.runs // args.rounds)
        with torch.inference_mode():
            for family in FAMILIES:
                for _ in range(args.warmup):
                    costs[family]["model"](x)
            for _ in tqdm(range(args.rounds), desc=f"{name} latency", leave=False):
                for family in FAMILIES:
                    times[family] += time_calls(costs[family]["model"], per_round, args=(x,))
        base = costs["dw5"]
        for family in FAMILIES:
            c, cfg = costs[family], costs[family]["config"]
            lat = summarize(times[family], warmup=args.warmup)
            rows.append(
                {
                    "model": name,
                    "block": family,
                    "block_widen": cfg.block_widen,
                    "block_deepen": cfg.block_deepen,
                    "stage_channels": _stage_channels(cfg),
                    "params_m": round(c["params_m"], 4),
                    "deploy_params_m": round(c["deploy_params_m"], 4),
                    "gflops": round(c["gflops"], 4),
                    "flops_2x_g": round(2 * c["gflops"], 4),
                    "train_gflops": round(c["train_gflops"], 4),
                    "train_gflops_vs_dw5": round(c["train_gflops"] / base["train_gflops"] - 1, 4),
                    "params_vs_dw5": round(c["params_m"] / base["params_m"] - 1, 4),
                    "deploy_params_vs_dw5": round(c["deploy_params_m"] / base["deploy_params_m"] - 1, 4),
                    "gflops_vs_dw5": round(c["gflops"] / base["gflops"] - 1, 4),
                    "cpu_latency_ms": round(lat.median_ms, 2),
                    "cpu_latency_p90_ms": round(lat.p90_ms, 2),
                    "latency_runs": lat.runs,
                }
            )

    meta = {
        "imgsz": args.imgsz,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "flops_convention": "MACs (mmcv/paper convention); flops_2x_g = 2 x MACs",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_costs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    table = render_markdown(rows, meta)
    (args.out / "model_costs.md").write_text(table)
    print(table)
    return 0


def _stage_channels(cfg: ModelConfig) -> list[int]:
    from rtmdet_edge.models.backbone import stage_channels

    return stage_channels(cfg.widen if cfg.block_widen is None else cfg.block_widen)[1:]


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Model cost per block family at {meta['imgsz']}x{meta['imgsz']} (`benchmarks/model_costs.py`; torch "
        f"{meta['torch']}, CPU {meta['threads']} threads, fused fp32 eager, batch 1, median latency).",
        "",
        "| model | block | stage widths | params (M) | vs dw5 | deploy params (M) | vs dw5 | FLOPs (G, MACs) | vs dw5 "
        "| train-form FLOPs vs dw5 | CPU latency (ms) | p90 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['block']} | {'/'.join(map(str, r['stage_channels']))} | {r['params_m']:.3f} "
            f"| {r['params_vs_dw5']:+.1%} | {r['deploy_params_m']:.3f} | {r['deploy_params_vs_dw5']:+.1%} "
            f"| {r['gflops']:.2f} | {r['gflops_vs_dw5']:+.1%} | {r['train_gflops_vs_dw5']:+.1%} "
            f"| {r['cpu_latency_ms']:.1f} | {r['cpu_latency_p90_ms']:.1f} |"
        )
    lines += [
        "",
        "params: training form, unique parameters (paper convention). deploy params: fused form (BN folded, Rep "
        "branches merged, SepBN head convs un-shared per level). FLOPs: counted with FlopCounterMode on the deployed "
        "model, reported as MACs like the paper (rtmdet-tiny 8.1 G). Rep families: two RepVGG/QARepVGG 3x3 units per "
        "block, same depths as dw5, whole network narrowed by `block_widen` (config.REP_COST_MATCH) to stay within "
        "+-10% of dw5. CPU latency: a shared, loaded 2-core machine; families of one size timed in interleaved rounds.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
