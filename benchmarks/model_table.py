"""The detection presets side by side: architecture options, parameters (ours and mmdet 3.3.0's) and FLOPs.

- params: unique parameters of the training form (shared SepBN head convs counted once), counted on `build_model`.
- mmdet 3.3.0 params: `num_params` that the official code reported when the parity fixtures were generated
  (tests/fixtures/independent/*/info.json, and ../shared/fixtures/official/rtmdet_tiny/config.json for tiny), taken
  from a fixture of the same preset, options and class count; "-" when no such fixture exists. The "=" column says
  whether both counts are equal (tests/test_model.py asserts it too).
- deploy params / FLOPs: fused form (BN folded, head convs one per level), FLOPs counted with FlopCounterMode at the
  preset's input size and reported as MACs (see benchmarks/model_costs.py). No latency here: see model_costs.md.

    python benchmarks/model_table.py      # writes benchmarks/results/model_table.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.model_costs import model_cost  # noqa: E402
from rtmdet_edge.config import PRESETS, ModelConfig  # noqa: E402
from rtmdet_edge.models.backbone import stage_channels  # noqa: E402

MODELS = ("rtmdet-nano", "rtmdet-tiny", "rtmdet-s", "rtmdet-m", "rtmdet-l", "rtmdet-x")
SHARED_TINY = ROOT.parent / "shared" / "fixtures" / "official" / "rtmdet_tiny" / "config.json"


def official_counts() -> dict[tuple[str, int], int]:
    """(preset, num_classes) -> mmdet's parameter count, from fixtures built with the preset's own options."""
    counts: dict[tuple[str, int], int] = {}
    for info_path in sorted((ROOT / "tests" / "fixtures" / "independent").glob("*/info.json")):
        info = json.loads(info_path.read_text())
        if info.get("kind", "det") == "det" and not info.get("config_overrides"):
            counts[(info["model"], int(info["num_classes"]))] = int(info["num_params"])
    if SHARED_TINY.is_file():
        hp = json.loads(SHARED_TINY.read_text())["hparams"]
        counts[("rtmdet-tiny", int(hp["head"]["num_classes"]))] = int(hp["num_params"])
    return counts


def options(cfg: ModelConfig) -> str:
    opts = [f"exp_on_reg={cfg.exp_on_reg}"]
    opts += ["use_depthwise"] if cfg.use_depthwise else []
    opts += [] if cfg.share_conv else ["share_conv=False"]
    return ", ".join(opts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    official = official_counts()
    rows: list[dict[str, Any]] = []
    for name in MODELS:
        cfg = PRESETS[name]
        cost = model_cost(cfg, cfg.imgsz)
        params = round(cost["params_m"] * 1e6)
        ref = official.get((name, cfg.num_classes))
        rows.append(
            {
                "model": name,
                "deepen": cfg.deepen,
                "widen": cfg.widen,
                "stage_channels": stage_channels(cfg.widen)[1:],
                "options": options(cfg),
                "num_classes": cfg.num_classes,
                "imgsz": cfg.imgsz,
                "params": params,
                "mmdet_params": ref,
                "equal": None if ref is None else ref == params,
                "deploy_params": round(cost["deploy_params_m"] * 1e6),
                "gflops": round(cost["gflops"], 4),
            }
        )
    meta = {"torch": torch.__version__, "flops_convention": "MACs at the preset's imgsz, fused model"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_table.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    table = render_markdown(rows)
    (args.out / "model_table.md").write_text(table)
    print(table)
    return 0


def render_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "Detection presets (`benchmarks/model_table.py`): parameters counted on this package's models and as the "
        "official mmdet 3.3.0 code reported them for the parity fixtures.",
        "",
        "| model | deepen / widen | stage widths | options | classes | input | params | mmdet 3.3.0 params | = "
        "| deploy params | FLOPs (G, MACs) at input |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ref = "-" if r["mmdet_params"] is None else f"{r['mmdet_params']:,}"
        eq = "-" if r["equal"] is None else ("yes" if r["equal"] else "NO")
        lines.append(
            f"| {r['model']} | {r['deepen']} / {r['widen']} | {'/'.join(map(str, r['stage_channels']))} "
            f"| {r['options']} | {r['num_classes']} | {r['imgsz']} | {r['params']:,} | {ref} | {eq} "
            f"| {r['deploy_params']:,} | {r['gflops']:.3f} |"
        )
    lines += [
        "",
        "rtmdet-nano is RTMPose's person/hand detector (mmpose `projects/rtmpose/rtmdet/*/rtmdet_nano_320-8xb32_*.py`): "
        "1 class, 320 input, depth-wise separable convs (`use_depthwise`) in backbone, neck and head, and per-level "
        "head convs (`share_conv=False`). params: training form, shared head convs counted once; deploy params: "
        "fused form (BN folded, head convs one per level).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
