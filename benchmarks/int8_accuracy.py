"""Accuracy of the INT8 recipes that the speed table times, on a trained model: each recipe's mAP drop against FP32
on the same runtime, with the 95% paired bootstrap interval over images (the `gap` machinery, `quant/gap.py`).

    PYTHONPATH=. python benchmarks/int8_accuracy.py          # -> benchmarks/results/int8_accuracy.{json,md}
    python benchmarks/update_readme.py

The model is the dw5 study model of benchmarks/gap_study.py (rtmdet-tiny trained from scratch with that script's
recipe; trained here when its cached checkpoint is absent, ~20-40 min on 2 CPU cores), scored on the study task's
held-out split at the recipe's input size. Recipes: the default of each target (nncf MIXED for OpenVINO, the onnxruntime
recipe U8S8 min-max per-channel for ONNX Runtime, which keeps float the convs ONNX Runtime runs slower in INT8), the
same with every conv INT8 (--int8-everywhere), NNCF's PERFORMANCE preset (the faster OpenVINO row of
benchmarks/int8_speed.py) and QAT. The budget is issue 9's: PTQ loses at most 1.0 mAP, QAT comes back to within 0.3.
benchmarks/int8_speed.py reads the JSON written here to put each timed recipe's measured drop beside its latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gap_study import CACHE, RECIPE, recipe_key, train  # noqa: E402

METHODS = ("nncf", "nncf-performance", "onnxruntime", "ort-minmax-pc", "qat")
BUDGET = {"ptq": 1.0, "qat": 0.3}  # issue 9: largest drop in mAP points
LABELS = {
    "nncf": "nncf (MIXED preset; OpenVINO's default)",
    "nncf-performance": "nncf (PERFORMANCE preset)",
    "onnxruntime": "onnxruntime (U8S8, min-max, per-channel, slow INT8 convs float; ONNX Runtime's default)",
    "ort-minmax-pc": "onnxruntime --int8-everywhere (the same, every conv INT8)",
    "qat": "qat (NNCF fake quantization, fine-tuned)",
}


def budget_of(method: str) -> float:
    return BUDGET["qat" if method == "qat" else "ptq"]


def table(report: dict, model_line: str) -> list[str]:
    rows = [r for r in report["rows"] if r["method"] != "fp32"]
    lines = [
        model_line,
        "",
        "| recipe | target | FP32 mAP | INT8 mAP | drop [95% CI] | budget | within budget |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        if not r.get("available"):
            lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['target']} | - | - | {r['reason']} | - | - |")
            continue
        budget = budget_of(r["method"])
        ok = "yes" if r["drop"] <= budget else "**no**"
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | {r['target']} | {r['fp32_mAP']:.2f} | {r['mAP']:.2f} | "
            f"{r['drop']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}] | {budget:.1f} | {ok} |"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--block", default="dw5", help="which study model (a block family of benchmarks/gap_study.py)")
    p.add_argument("--methods", default=",".join(METHODS), help="gap methods (quant/gap.py)")
    p.add_argument("--calib-size", type=int, default=32, help="calibration images (the gap study's setting)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--device", default="auto", help="for training the study model when it is not cached")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()

    from quant.gap import GapSettings, run_gap

    weights, train_s = train(RECIPE, args.block, args.device)
    start = time.perf_counter()
    settings = GapSettings(data=RECIPE["val_data"], imgsz=RECIPE["imgsz"], calib_size=args.calib_size,
                           methods=tuple(m for m in args.methods.split(",") if m), bootstrap=args.bootstrap,
                           evidence=False)  # fmt: skip
    out = Path(args.out)
    report = run_gap([str(weights)], settings, ROOT / "runs" / "int8_accuracy")  # INT8 models: outside git
    fp32 = next(r for r in report["rows"] if r["method"] == "fp32")
    seconds = time.perf_counter() - start
    model_line = (
        f"Model: the {args.block} study model ({RECIPE['model']} trained from scratch by `benchmarks/gap_study.py`, "
        f"cache key {recipe_key(RECIPE)}, {train_s / 60:.0f} min of training), FP32 mAP {fp32['mAP']:.2f} / mAP50 "
        f"{fp32['mAP50']:.2f} on `{RECIPE['val_data']}` (held-out val split) at {RECIPE['imgsz']} px; "
        f"{args.calib_size} calibration images from the train split; {args.bootstrap} paired bootstrap draws over "
        f"images; evaluation code of `eval`; OpenVINO with the f32 inference hint. CPU: {report['meta']['cpu']}; "
        f"onnxruntime {report['meta']['onnxruntime']}, openvino {report['meta']['openvino'].split('-')[0]}; "
        f"{seconds / 60:.1f} min. Command: `PYTHONPATH=. python benchmarks/int8_accuracy.py`."
    )
    lines = table(report, model_line)
    result = {
        "weights": str(weights).replace(str(CACHE), "<cache>"),
        "recipe": RECIPE,
        "seconds": seconds,
        "meta": report["meta"],
        "fp32": {r["target"]: {"mAP": r["mAP"], "mAP50": r["mAP50"]} for r in report["rows"] if r["method"] == "fp32"},
        "rows": [
            {k: r.get(k) for k in ("method", "target", "available", "fp32_mAP", "mAP", "drop", "drop_low", "drop_high")}
            | {"budget": budget_of(r["method"])}
            for r in report["rows"]
            if r["method"] != "fp32"
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_accuracy.json").write_text(json.dumps(result, indent=1))
    (out / "int8_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
