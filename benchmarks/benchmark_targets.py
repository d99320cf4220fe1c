"""The README's target table: `rtmdet-edge benchmark` for rtmdet-tiny and rtmdet-s at 640 on the synthetic val set.

Runs the real CLI once per model (each run is one process, so nothing carries over between them) and writes
benchmarks/results/targets_{tiny,s}/ (report.json, report.md, plots) plus benchmarks/results/targets.md, the combined
table for the README. Exported model files go to a temporary folder (they are large and reproducible).

Weights: pass trained checkpoints with --weights-tiny / --weights-s. Without them each model gets random weights with
calibrated BN statistics (benchmarks/inference.py realistic_init) for the synthetic data's classes: latency, parity,
size and memory are then real, but mAP is near zero and only its agreement across targets means anything.

    python benchmarks/benchmark_targets.py
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from rtmdet_edge import build_model, save_checkpoint  # noqa: E402
from targets.latency import load_note  # noqa: E402
from targets.report import markdown_table  # noqa: E402

MODELS = {"tiny": "rtmdet-tiny", "s": "rtmdet-s"}


def random_checkpoint(name: str, num_classes: int, path: Path) -> Path:
    from inference import realistic_init

    model = realistic_init(build_model(name, num_classes=num_classes), seed=0)
    save_checkpoint(path, {"model": model.state_dict(), "config": model.config.to_dict()})
    return path


def run_one(size: str, weights: Path, args: argparse.Namespace, models_dir: Path) -> tuple[dict[str, Any], str]:
    out = Path(args.out) / f"targets_{size}"
    cmd = [
        "rtmdet-edge",
        "benchmark",
        "--weights",
        str(weights),
        "--targets",
        "torch,onnxruntime,openvino,tensorrt",
        "--precision",
        "fp32,fp16,bf16,int8",
        "--data",
        args.data,
        "--imgsz",
        str(args.imgsz),
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--runs",
        str(args.runs),
        "--batch",
        str(args.batch),
        "--max-images",
        str(args.max_images),
        "--models-dir",
        str(models_dir / size),
        "--out",
        str(out),
    ]
    if args.int8_onnx:
        cmd += ["--int8-onnx", args.int8_onnx]
    t0 = time.time()
    # see benchmarks/inference.py: torch's OpenMP threads must not spin-wait on a machine shared with other users
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # this checkout's code (the installed console script may point at another checkout)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "rtmdet_edge.cli", *cmd[1:]], text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    print(f"{MODELS[size]}: {time.time() - t0:.0f} s")
    return json.loads((out / "report.json").read_text()), " ".join(cmd)


def section(report: dict[str, Any], name: str, weights: str | None, command: str) -> str:
    """One README section: how it was measured, the table, the command."""
    meta = report["meta"]
    loads = meta.get("load_average_at_end") or []
    load = ", ".join(f"{v:.1f}" for v in loads)
    return (
        f"### {name} at {meta['imgsz']}\n\n"
        f"Weights: {weights or 'random (calibrated BN statistics): mAP near zero, compare it across rows only'}. "
        f"Data: {meta['data']} val, first {meta['num_images']} images. {meta['threads']} threads "
        f"(OMP_WAIT_POLICY {meta.get('omp_wait_policy')}), {meta['warmup']} warm-up + {meta['runs']} timed runs, CPU "
        f"{meta['cpu']}, load average at the end {load or 'n/a'}{load_note(loads[0], meta['threads']) if loads else ''}"
        ". End-to-end latency uses the deploy post-processing; mAP the official one.\n\n"
        + markdown_table(report["rows"])
        + f"\n\nCommand: `{command}` (via `python benchmarks/benchmark_targets.py`).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,s", help="comma-separated (default: %(default)s)")
    parser.add_argument("--weights-tiny", help="a trained rtmdet-tiny checkpoint (default: random, see above)")
    parser.add_argument("--weights-s", help="a trained rtmdet-s checkpoint (default: random, see above)")
    parser.add_argument("--data", default="synthetic", help="validation data (default: %(default)s)")
    parser.add_argument("--num-classes", type=int, default=8, help="classes of the random models (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=640, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--runs", type=int, default=30, help="(default: %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="throughput batch (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=40, help="validation images for mAP (default: %(default)s)")
    parser.add_argument("--int8-onnx", help="a Q/DQ ONNX for the int8 rows (same for every size; rarely what you want)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"), help="(default: %(default)s)")
    args = parser.parse_args(argv)

    sections = []
    with tempfile.TemporaryDirectory(prefix="benchmark_targets_") as tmp:
        tmp_dir = Path(tmp)
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            if size not in MODELS:
                raise SystemExit(f"unknown size {size!r}; choose from {', '.join(MODELS)}")
            given = getattr(args, f"weights_{size}")
            weights = Path(given) if given else random_checkpoint(MODELS[size], args.num_classes, tmp_dir / f"{size}.pt")
            report, command = run_one(size, weights, args, tmp_dir / "models")
            if not given:
                command = command.replace(str(weights), f"<random {MODELS[size]}, {args.num_classes} classes>")
                command = command.replace(str(tmp_dir / "models" / size), "<tmp>")
            command = command.replace(str(ROOT) + os.sep, "")  # paths in this checkout, as a user would type them
            sections.append(section(report, MODELS[size], given, command))
    out = Path(args.out) / "targets.md"
    out.write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
