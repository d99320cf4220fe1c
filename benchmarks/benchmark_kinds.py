"""The README's RTMDet-Ins and RTMDet-R target tables: `rtmdet-edge benchmark` on the learning curves' trained models.

Runs the real CLI once per kind (one process each) with the checkpoints benchmarks/ins_learning_curve.py and
benchmarks/rotated_learning_curve.py keep in ~/.cache/rtmdet_edge/ (run those first), at their training size (128) on
their held-out data (the val split of `easy`, the same images the curves evaluate on), FP32 and INT8 (each target's
default recipe, quant.ptq.DEFAULT_RECIPE: nncf for OpenVINO, the onnxruntime recipe for ONNX Runtime, calibrated on
training images) on torch, ONNX Runtime and OpenVINO. Ins rows report box and mask (segm) mAP, R rows DOTA mAP; INT8
rows their drop from the FP32 row of the same target. Writes benchmarks/results/targets_{ins,rot}.md (README tables)
and .json (the full reports). Exported and quantized files go to a temporary folder.

    python benchmarks/benchmark_kinds.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from targets.latency import load_note  # noqa: E402
from targets.report import markdown_table  # noqa: E402

CACHE = Path.home() / ".cache" / "rtmdet_edge"
KINDS = {
    "ins": ("RTMDet-Ins", CACHE / "ins_learning_curve" / "last.pth", "benchmarks/ins_learning_curve.py"),
    "rot": ("RTMDet-R", CACHE / "rotated_learning_curve" / "last.pth", "benchmarks/rotated_learning_curve.py"),
}


def run_one(kind: str, args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    weights = KINDS[kind][1]
    if not weights.is_file():
        raise SystemExit(f"{weights} not found: run python {KINDS[kind][2]} first")
    out = tmp / kind
    cmd = ["rtmdet-edge", "benchmark", "--weights", str(weights), "--targets", "torch,onnxruntime,openvino",
           "--precision", "fp32,int8", "--data", f"easy:{args.images}", "--imgsz", str(args.imgsz),
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--runs", str(args.runs), "--batch", "1",
           "--calib-size", str(args.calib_size), "--no-memory", "--out", str(out)]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmark_targets.py: no spin-waiting on a shared machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's code
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rtmdet_edge.cli", *cmd[1:]], text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    print(f"{kind}: {time.time() - t0:.0f} s")
    return json.loads((out / "report.json").read_text()), cmd


def section(kind: str, report: dict[str, Any], command: str) -> str:
    meta = report["meta"]
    loads = meta.get("load_average_at_end") or []
    load = ", ".join(f"{v:.1f}" for v in loads)
    metric = {
        "ins": "box and mask (segm) COCO mAP",
        "rot": "DOTA mAP (rotated IoU; .5:.95 and AP50 are area AP, VOC07 the 11-point AP50 of the paper)",
    }[kind]
    name, _, script = KINDS[kind]
    return (
        f"{name} ({meta['model']}, trained by `python {script}`) at {meta['imgsz']} px on {meta['num_images']} held-out "
        f"images ({meta['data']}, val split). Accuracy: {metric}, official test settings; INT8 rows: each target's "
        "default recipe (nncf for OpenVINO, the onnxruntime recipe for ONNX Runtime), and their drop from the FP32 "
        "row of the same target. Parity against PyTorch FP32 on 4 images with the deploy post-processing"
        + (" (the last number: mean mask IoU)" if kind == "ins" else " (rotated boxes matched by rotated IoU)")
        + f". {meta['threads']} threads, {meta['warmup']} warm-up + {meta['runs']} timed runs, CPU {meta['cpu']}, "
        f"load average at the end {load or 'n/a'}{load_note(loads[0], meta['threads']) if loads else ''}.\n\n"
        + markdown_table(report["rows"], kind)
        + f"\n\nCommand: `{command}` (via `python benchmarks/benchmark_kinds.py`).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="ins,rot", help="comma-separated (default: %(default)s)")
    parser.add_argument("--images", type=int, default=96, help="held-out images (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=128, help="the curves' training size (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--runs", type=int, default=20, help="(default: %(default)s)")
    parser.add_argument("--calib-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="benchmark_kinds_") as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            if kind not in KINDS:
                raise SystemExit(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
            report, cmd = run_one(kind, args, Path(tmp))
            command = " ".join(cmd).replace(str(Path(tmp) / kind), "<out>").replace(str(Path.home()), "~")
            report["meta"]["command"] = command
            (args.out / f"targets_{kind}.json").write_text(json.dumps(report, indent=1, default=str))
            text = section(kind, report, command)
            (args.out / f"targets_{kind}.md").write_text(text)
            print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
