"""The INT8 gap study, end to end: train the study models when their checkpoints are absent, then `rtmdet-edge gap`.

    python benchmarks/gap_study.py                      # train what is missing (~30 min per model on 2 CPU cores)
    python benchmarks/gap_study.py --blocks dw5,rep3    # a subset
    python benchmarks/gap_study.py --skip-train         # only the study, on cached checkpoints

The study task (documented in README "INT8 gap study"): rtmdet-tiny trained from scratch on `--data study` (the
built-in synthetic shapes with the STUDY style: 4 classes, at most 8 objects, little clutter, objects of 16 px and
more), scored on its held-out val split. Every block family gets the same recipe and seed. Checkpoints are cached
outside git under ~/.cache/rtmdet_edge/gap_study/<recipe hash>/<block>/ and re-trained when absent or when the
recipe changes. With a CUDA device the same recipe trains at 640 on more images (`--gpu-scale`).

Writes benchmarks/results/gap_study/ (report.json, report.md, PNGs), benchmarks/results/gap_study.md (the README
section: recipe, learning curves, gap table, evidence, the exact command and how long it took) and updates README.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The recipe: the official one (AdamW, flat + cosine, EMA, cached Mosaic/MixUp then a weak-augmentation stage 2)
# at a CPU scale. A larger LR than linear scaling from 0.004 @ 256 gives (batch 16 would get 2.5e-4): from-scratch
# training on a few thousand images needs far more steps than 30 minutes give at that rate.
RECIPE = {
    "model": "rtmdet-tiny",
    "data": "study:2000",
    "val_data": "study:200",
    "imgsz": 160,
    "epochs": 10,
    "stage2_epochs": 2,
    "batch": 8,
    "lr": 0.004,
    "warmup_iters": 200,
    "seed": 0,
}
GPU_RECIPE = {**RECIPE, "data": "study:20000", "imgsz": 640, "epochs": 60, "stage2_epochs": 5, "batch": 64}
CACHE = Path(os.environ.get("RTMDET_EDGE_CACHE", Path.home() / ".cache" / "rtmdet_edge")) / "gap_study"
RESULTS = ROOT / "benchmarks" / "results"


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def train_command(recipe: dict, block: str, out: Path, device: str) -> list[str]:
    return [
        sys.executable, "-m", "rtmdet_edge.cli", "train", "--model", recipe["model"], "--block", block,
        "--data", recipe["data"], "--val-data", recipe["val_data"], "--imgsz", str(recipe["imgsz"]),
        "--epochs", str(recipe["epochs"]), "--stage2-epochs", str(recipe["stage2_epochs"]),
        "--batch", str(recipe["batch"]), "--lr", str(recipe["lr"]), "--warmup-iters", str(recipe["warmup_iters"]),
        "--seed", str(recipe["seed"]), "--device", device, "--workers", "1", "--eval-interval", "2",
        "--out", str(out), "--resume", "auto",
    ]  # fmt: skip


def train(recipe: dict, block: str, device: str, threads: int | None = None) -> tuple[Path, float]:
    folder = CACHE / recipe_key(recipe) / block
    done = folder / "done.json"
    if done.is_file() and (folder / "last.pth").is_file():
        return folder / "last.pth", json.loads(done.read_text())["seconds"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=2))
    cmd = train_command(recipe, block, folder, device)
    print(" ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    with open(folder / "train.log", "a") as log:
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # idle OpenMP threads must not spin on shared cores
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
            log.write(f"--- {block}: trained with {threads} thread(s), side by side with other families\n")
            log.flush()  # before the child writes to the same file
        code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"training {block} failed (exit {code}); see {folder / 'train.log'}")
    seconds = time.perf_counter() - start
    epochs_s = sum(r.get("epoch_time_s", 0.0) for r in learning_curve(folder))
    # a resumed run's wall clock misses the epochs before the resume; the per-epoch times in metrics.csv do not
    done.write_text(json.dumps({"seconds": max(seconds, epochs_s), "wall_s_this_run": seconds, "epochs_s": epochs_s}))
    return folder / "last.pth", max(seconds, epochs_s)


def shared_note(folder: Path) -> str:
    """' (1 thread, side by side with another family)' when train() ran this family with --jobs > 1 (its log says)."""
    log = folder / "train.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    marks = [line for line in text.splitlines() if line.startswith("--- ") and "side by side" in line]
    if not marks:
        return ""
    threads = marks[-1].split("trained with ", 1)[1].split(" ", 1)[0]
    return f" ({threads} thread(s), side by side with another family)"


def mixed_precision(weights: str, recipe: dict, max_drop: float, out: Path, calib_size: int) -> dict:
    """`rtmdet-edge quantize --max-drop D` on one study model with the per-tensor minmax ONNX Runtime recipe (the
    coarsest weight scales, so the search is most likely to need float layers); returns its mixed.json."""
    cmd = [
        sys.executable, "-m", "rtmdet_edge.cli", "quantize", "--weights", weights, "--method", "ptq",
        "--recipe", "onnxruntime", "--calibrator", "minmax", "--granularity", "per-tensor",
        "--data", recipe["val_data"], "--calib-size", str(calib_size), "--imgsz", str(recipe["imgsz"]),
        "--max-drop", str(max_drop), "--out", str(out),
    ]  # fmt: skip
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True)
    result = json.loads((out / "mixed" / "mixed.json").read_text())
    result["command"] = "rtmdet-edge " + " ".join(cmd[3:]).replace(str(Path(weights).parent), "<cache>/" + Path(weights).parent.name)
    return result


def mixed_lines(result: dict, block: str) -> list[str]:
    lat = result["latency_ms"]
    lines = [
        f"**Mixed precision to a budget** ({block}, `--max-drop {result['max_drop']}`, ONNX Runtime, per-tensor minmax "
        f"recipe): FP32 mAP {result['fp32_map']:.2f}, all-INT8 {result['int8_map']:.2f} (drop "
        f"{result['fp32_map'] - result['int8_map']:.2f}), mixed {result['mixed_map']:.2f} (drop "
        f"{result['fp32_map'] - result['mixed_map']:.2f}): budget **{'met' if result['met'] else 'NOT met'}** with "
        f"{len(result['kept_float'])} conv(s) kept in float. Latency FP32 {lat['fp32']:.1f} ms, all-INT8 "
        f"{lat['int8']:.1f} ms, mixed {lat['mixed']:.1f} ms. Command: `{result['command'].replace(str(ROOT) + '/', '')}`.",
        "",
    ]
    if result["kept_float"]:
        lines += ["| kept in float | block | one-layer SQNR (dB) |", "|---|---|---:|"]
        lines += [f"| {k['layer']} | {k['block']} | {k['sqnr_db']:.1f} |" for k in result["kept_float"]]
        lines.append("")
    lines += ["Search steps (layers kept in float by sensitivity rank -> drop): "
              + ", ".join(f"{s['k']} -> {s['drop']:.2f}" for s in result["steps"]), ""]
    return lines


def learning_curve(folder: Path) -> list[dict[str, float]]:
    from benchmarks.learning_curve import read_metrics  # one reader of train's metrics.csv

    path = folder / "metrics.csv"
    return read_metrics(path) if path.is_file() else []


def curve_plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for block, rows in curves.items():
        rows = [r for r in rows if "AP" in r]
        ax.plot([r["epoch"] for r in rows], [100 * r["AP"] for r in rows], marker="o", label=block)
    ax.axhline(30, color="grey", ls="--", lw=0.8, label="target mAP 30")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP@[.5:.95] (EMA)")
    ax.set_title("Study models: learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="dw5,rep3,qarep3", help="block families (dw3,dw7 for the kernel ablation)")
    p.add_argument("--skip-train", action="store_true", help="use cached checkpoints only")
    p.add_argument("--train-only", action="store_true", help="train (or find cached) checkpoints, print them, stop")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-scale", action="store_true", help="the 640 / more-images recipe (needs CUDA)")
    p.add_argument("--methods", default=None, help="gap methods (default: all)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--calib-size", type=int, default=32,
                   help="calibration images (train split) for every PTQ method; ONNX Runtime's entropy and percentile "
                        "calibrators cost time in proportion")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the README section from benchmarks/results/gap_study/{report,mixed}.json of the last run")
    p.add_argument("--jobs", type=int, default=1,
                   help="families trained at once, the CPU cores split between them (per-model times then "
                        "count a share of the cores; the log of each run says so)")
    p.add_argument("--max-drop", type=float, default=0.5, help="mixed-precision budget for the first family (0: skip)")
    args = p.parse_args()
    recipe = GPU_RECIPE if args.gpu_scale else RECIPE
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()]
    start = time.perf_counter()
    weights, train_s, curves = [], {}, {}
    if args.jobs > 1 and not args.skip_train:  # train missing families side by side, the cores split between them
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, (os.cpu_count() or 2) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda b: train(recipe, b, args.device, threads), blocks))
    for block in blocks:
        if args.skip_train:
            w = CACHE / recipe_key(recipe) / block / "last.pth"
            if not w.is_file():
                raise SystemExit(f"no cached checkpoint for {block} ({w}); run without --skip-train")
            train_s[block] = json.loads((w.parent / "done.json").read_text())["seconds"]
        else:
            w, train_s[block] = train(recipe, block, args.device)
        weights.append(str(w))
        curves[block] = learning_curve(w.parent)
    if args.train_only:
        print("\n".join(weights))
        return 0

    from quant.gap import DEFAULT_METHODS, GapSettings, run_gap

    methods = tuple(args.methods.split(",")) if args.methods else DEFAULT_METHODS
    out = RESULTS / "gap_study"
    settings = GapSettings(data=recipe["val_data"], imgsz=recipe["imgsz"], methods=methods, bootstrap=args.bootstrap,
                           calib_size=args.calib_size)
    gap_start = time.perf_counter()
    if args.report_only:  # re-render the section from the last run's files
        report = json.loads((out / "report.json").read_text())
        mixed = json.loads((out / "mixed.json").read_text()) if (out / "mixed.json").is_file() else None
        gap_s = report["seconds"] + (mixed or {}).get("seconds", 0.0)
    else:
        report = run_gap(weights, settings, out)
        mixed = None
        if args.max_drop > 0:
            mixed_start = time.perf_counter()
            mixed = mixed_precision(weights[0], recipe, args.max_drop, out / "mixed", args.calib_size)
            mixed["seconds"] = time.perf_counter() - mixed_start
            (out / "mixed.json").write_text(json.dumps(mixed, indent=2, default=str))
        gap_s = time.perf_counter() - gap_start
    curve_plot(curves, out / "learning_curves.png")

    lines = [
        f"Study task: `{recipe['model']}` from scratch on `--data {recipe['data']}` (train split), scored on "
        f"`{recipe['val_data']}` (held-out val split), input {recipe['imgsz']}, {recipe['epochs']} epochs "
        f"({recipe['stage2_epochs']} in stage 2), batch {recipe['batch']}, AdamW lr {recipe['lr']}, same seed for "
        "every family. Training time per model (this machine): "
        + ", ".join(f"{b} {s / 60:.1f} min{shared_note(CACHE / recipe_key(recipe) / b)}" for b, s in train_s.items())
        + f"; the study itself took {gap_s / 60:.1f} min.",
        "",
        "| family | final val mAP (EMA) | mAP50 |",
        "|---|---:|---:|",
    ]
    for block, rows in curves.items():
        last = [r for r in rows if "AP" in r][-1:] or [{}]
        lines.append(f"| {block} | {100 * last[0].get('AP', float('nan')):.1f} | {100 * last[0].get('AP50', float('nan')):.1f} |")
    report_md = (out / "report.md").read_text().split("\n", 2)[2]  # drop its title
    lines += ["", "![learning curves](benchmarks/results/gap_study/learning_curves.png)", "", report_md.replace(
        "](", "](benchmarks/results/gap_study/"),
        "", *(mixed_lines(mixed, blocks[0]) if mixed else []),
        f"Produced by `python benchmarks/gap_study.py` (training skipped for cached checkpoints; the study took "
        f"{report['seconds'] / 60:.1f} min"
        + (f", the mixed-precision search {mixed['seconds'] / 60:.1f} min" if mixed and "seconds" in mixed else "")
        + ").",
    ]  # fmt: skip
    (RESULTS / "gap_study.md").write_text("\n".join(lines) + "\n")
    from benchmarks.update_readme import update

    update()
    print(f"gap study done: {len(report['rows'])} rows -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
