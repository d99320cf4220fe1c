"""Learning curves of rtmdet-tiny (dw5 and rep3) trained from scratch on the built-in synthetic data, on a CPU.

    python benchmarks/learning_curve.py            # trains both (in parallel, one thread each), then writes the table
    python benchmarks/learning_curve.py --no-train # only summarises runs/curve_<block>/metrics.csv

Writes benchmarks/results/learning_curve.{md,json,png}. The training command is printed in the table's caption, so
the numbers can be reproduced one run at a time as well.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ("dw5", "rep3")
TRAIN_ARGS = (
    "--model rtmdet-tiny --data synthetic:300 --val-data synthetic:100 --epochs 20 --stage2-epochs 3 --batch 8 "
    "--imgsz 256 --lr 0.004 --device cpu --workers 0 --eval-interval 2"
)


def command(block: str, runs: Path) -> list[str]:
    exe = Path(sys.executable).with_name("rtmdet-edge")
    return [str(exe), "train", *TRAIN_ARGS.split(), "--block", block, "--out", str(runs / f"curve_{block}")]


def train(runs: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    procs = []
    for block in BLOCKS:
        log = open(runs / f"curve_{block}.log", "w")
        procs.append(subprocess.Popen(command(block, runs), env=env, stdout=log, stderr=subprocess.STDOUT))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"training failed: {' '.join(p.args)} (see {runs}/curve_*.log)")


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the training runs go")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-train", action="store_true", help="summarise existing runs only")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    if not args.no_train:
        train(args.runs)
    curves = {b: read_metrics(args.runs / f"curve_{b}" / "metrics.csv") for b in BLOCKS}

    epochs = sorted({int(r["epoch"]) for rows in curves.values() for r in rows if "AP" in r})
    lines = [
        "rtmdet-tiny trained from scratch on the synthetic data (300 training images, 8 classes, Mosaic/MixUp, last 3 "
        "epochs without), evaluated on 100 held-out synthetic images with the official test settings (EMA weights). "
        f"CPU, one thread per run, both runs side by side. Command per block: `rtmdet-edge train {TRAIN_ARGS} "
        "--block <dw5|rep3> --out runs/curve_<block>` (via `python benchmarks/learning_curve.py`).",
        "",
        "| epoch | " + " | ".join(f"{b} loss | {b} mAP | {b} mAP50" for b in BLOCKS) + " |",
        "|---:|" + "---:|---:|---:|" * len(BLOCKS),
    ]
    for e in epochs:
        cells = []
        for b in BLOCKS:
            row = next((r for r in curves[b] if int(r["epoch"]) == e), {})
            cells += [f"{row.get('loss', float('nan')):.3f}", f"{row.get('AP', float('nan')):.3f}",
                      f"{row.get('AP50', float('nan')):.3f}"]  # fmt: skip
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    times = {b: sum(r.get("epoch_time_s", 0.0) for r in rows) / 60 for b, rows in curves.items()}
    lines += ["", "Training time (minutes, excluding evaluation): " + ", ".join(f"{b} {t:.1f}" for b, t in times.items())]
    lines += ["", "![learning curve](benchmarks/results/learning_curve.png)"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.md").write_text("\n".join(lines) + "\n")
    (args.out / "learning_curve.json").write_text(json.dumps({"command": TRAIN_ARGS, "curves": curves}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 3.8))
    for b, rows in curves.items():
        ax_loss.plot([r["epoch"] + 1 for r in rows], [r["loss"] for r in rows], marker="o", label=b)
        ev = [r for r in rows if "AP" in r]
        ax_ap.plot([r["epoch"] + 1 for r in ev], [r["AP50"] for r in ev], marker="o", label=f"{b} mAP50")
        ax_ap.plot([r["epoch"] + 1 for r in ev], [r["AP"] for r in ev], marker="s", ls="--", label=f"{b} mAP")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_ap.set(xlabel="epoch", ylabel="COCO AP (synthetic val)", title="accuracy")
    for ax in (ax_loss, ax_ap):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "learning_curve.png", dpi=110)
    print((args.out / "learning_curve.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
