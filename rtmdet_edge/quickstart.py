"""`rtmdet-edge quickstart`: the whole story on the built-in synthetic data, on a CPU, in minutes.

Stages (each the same command a user would type, its log in <out>/logs/):
  1. train a dw5 and a rep3 rtmdet-tiny on the gap study's synthetic task (short schedule)
  2. quantize both: PTQ (onnxruntime and nncf recipes) and QAT
  3. export to every target available here, benchmark every target x precision (FP32, bf16, INT8)
  4. the INT8 gap study of both families (a reduced method set)
  5. an annotated demo video from the fastest INT8 model
and writes <out>/index.md linking every table, plot and the video, plus a short terminal summary.

Its schedule is short: the accuracy it reaches is far below `benchmarks/gap_study.py` (30-minute models); the numbers
it prints are this run's own, and they say what the pipeline does, not what the models can reach.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtmdet_edge.errors import UserError

BLOCKS = ("dw5", "rep3")


@dataclass(frozen=True)
class Plan:
    """The short schedule, scaled by --minutes. The default (15) was sized from a measured run on 2 CPU cores: at 160 px
    with 600 images x 6 epochs the quickstart itself took 29.6 minutes (training 5.6-8.2 min per model, the gap study
    7.2), so the default trains at 128 px on fewer images and the gap study runs three methods
    (benchmarks/quickstart_time.py measures the result from a fresh clone)."""

    imgsz: int = 128
    train_images: int = 400
    val_images: int = 48
    epochs: int = 5
    batch: int = 16
    lr: float = 0.004
    calib: int = 24
    qat_epochs: int = 1
    gap_methods: str = "nncf,ort-minmax-pc,ort-minmax-pt"

    @staticmethod
    def for_minutes(minutes: float) -> Plan:
        scale = max(0.25, minutes / 15.0)
        return Plan(train_images=int(400 * scale), epochs=max(2, round(5 * min(scale, 3.0))))


# Rough share of the total time per stage (used for the "time left" estimate; refined as stages finish).
WEIGHTS = {"train": 0.45, "quantize": 0.15, "benchmark": 0.15, "gap": 0.2, "demo": 0.05}


class Progress:
    """One line per stage with elapsed time and an estimate of what is left."""

    def __init__(self, stages: list[tuple[str, str]], budget_s: float) -> None:
        self.stages, self.budget_s, self.start = stages, budget_s, time.perf_counter()
        self.done_weight = 0.0

    def begin(self, index: int) -> None:
        kind, text = self.stages[index]
        elapsed = time.perf_counter() - self.start
        if self.done_weight > 0:
            left = elapsed / self.done_weight * (1 - self.done_weight)
        else:
            left = self.budget_s
        print(f"[{index + 1}/{len(self.stages)}] {text}  (elapsed {elapsed / 60:.1f} min, ~{left / 60:.1f} min left)",
              flush=True)  # fmt: skip

    def end(self, index: int) -> None:
        kind = self.stages[index][0]
        self.done_weight += WEIGHTS[kind] / sum(1 for k, _ in self.stages if k == kind)


def _cli(args: list[str], log: Path) -> None:
    """Run one rtmdet-edge command in a subprocess (as a user would), its output into `log`."""
    cmd = [sys.executable, "-m", "rtmdet_edge.cli", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ rtmdet-edge " + " ".join(args) + "\n")
        f.flush()
        # Idle OpenMP threads sleep instead of spinning: with DataLoader workers and a second runtime's threads on
        # the same two cores, spinning threads cost a training step up to 10x (measured on the learning-curve runs).
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise UserError(f"stage `rtmdet-edge {args[0]}` failed (exit {code}): {tail[0]} (full log: {log})")


def _available_targets() -> list[str]:
    targets = ["torch", "onnxruntime", "openvino"]
    try:
        import tensorrt  # noqa: F401
        import torch

        if torch.cuda.is_available():
            targets.append("tensorrt")
    except ImportError:
        pass
    return targets


def run_quickstart(out: Path, minutes: float, on_stage: Callable[[str], None] | None = None) -> dict:
    plan = Plan.for_minutes(minutes)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    data = f"study:{plan.train_images}"
    val = f"study:{plan.val_images}"
    targets = _available_targets()
    stages: list[tuple[str, str]] = []
    for b in BLOCKS:
        stages.append(("train", f"train rtmdet-tiny {b} ({plan.epochs} epochs, {plan.train_images} images at {plan.imgsz})"))
    for b in BLOCKS:
        stages.append(("quantize", f"quantize {b}: PTQ onnxruntime + nncf, QAT"))
    stages += [("benchmark", f"export + benchmark on {', '.join(targets)}"), ("gap", "INT8 gap study dw5 vs rep3"),
               ("demo", "annotated demo video from the fastest INT8 model")]  # fmt: skip
    progress = Progress(stages, minutes * 60)
    step = iter(range(len(stages)))
    summary: dict = {"plan": plan.__dict__, "targets": targets, "stages": []}

    def stage(fn: Callable[[], None]) -> None:
        i = next(step)
        progress.begin(i)
        if on_stage is not None:
            on_stage(stages[i][1])
        t0 = time.perf_counter()
        fn()
        summary["stages"].append({"stage": stages[i][1], "seconds": time.perf_counter() - t0})
        progress.end(i)

    weights = {}
    for b in BLOCKS:
        def train(b: str = b) -> None:
            _cli(["train", "--model", "rtmdet-tiny", "--block", b, "--data", data, "--val-data", val,
                  "--imgsz", str(plan.imgsz), "--epochs", str(plan.epochs), "--stage2-epochs", "1",
                  "--batch", str(plan.batch), "--lr", str(plan.lr), "--warmup-iters", "50", "--device", "cpu",
                  "--workers", "1", "--eval-interval", str(plan.epochs), "--out", str(out / "train" / b)],
                 logs / f"train_{b}.log")  # fmt: skip
            weights[b] = out / "train" / b / "last.pth"

        stage(train)
    int8 = {}
    for b in BLOCKS:
        def quantize(b: str = b) -> None:
            for recipe in ("onnxruntime", "nncf"):
                folder = out / "quantize" / f"{b}_{recipe}"
                _cli(["quantize", "--weights", str(weights[b]), "--method", "ptq", "--recipe", recipe,
                      "--data", data, "--calib-size", str(plan.calib), "--imgsz", str(plan.imgsz),
                      "--out", str(folder)], logs / f"quantize_{b}_{recipe}.log")  # fmt: skip
                int8[(b, recipe)] = folder
            folder = out / "quantize" / f"{b}_qat"
            try:
                _cli(["quantize", "--weights", str(weights[b]), "--method", "qat", "--recipe", "onnxruntime",
                      "--data", data, "--calib-size", str(plan.calib), "--imgsz", str(plan.imgsz),
                      "--epochs", str(plan.qat_epochs), "--out", str(folder)], logs / f"quantize_{b}_qat.log")  # fmt: skip
                int8[(b, "qat")] = folder
            except UserError as e:
                summary.setdefault("not_run", []).append(f"QAT {b}: {e}")

        stage(quantize)

    def benchmark() -> None:
        args = ["benchmark", "--weights", str(weights["dw5"]), "--targets", ",".join(targets),
                "--precision", "fp32,bf16,int8", "--data", val, "--imgsz", str(plan.imgsz), "--warmup", "3",
                "--runs", "10", "--batch", "2", "--no-memory", "--out", str(out / "benchmark")]  # fmt: skip
        _cli(args, logs / "benchmark.log")

    stage(benchmark)

    def gap() -> None:
        _cli(["gap", "--weights", str(weights["dw5"]), str(weights["rep3"]), "--data", val, "--imgsz", str(plan.imgsz),
              "--methods", plan.gap_methods, "--calib-size", str(plan.calib),
              "--bootstrap", "300", "--runs", "10", "--out", str(out / "gap")], logs / "gap.log")  # fmt: skip

    stage(gap)

    def demo() -> None:
        from rtmdet_edge.inference.detector import Detector
        from rtmdet_edge.inference.stream import run_stream

        rows = json.loads((out / "gap" / "report.json").read_text())["rows"]
        best = min((r for r in rows if r["method"] != "fp32" and r.get("available") and r.get("latency_ms")),
                   key=lambda r: r["latency_ms"])  # fmt: skip
        video = _demo_source(out)
        model_file = Path(best["model_file"])
        det = Detector(model_file, imgsz=plan.imgsz, backend=best["target"], device="cpu", postprocess="deploy")
        stats = run_stream(det, str(video), det.class_names, out=out / "demo.mp4", score_thr=0.3)
        summary["demo"] = {"model": str(model_file), "target": best["target"], "method": best["method"],
                           **stats.summary()}  # fmt: skip

    stage(demo)
    summary["seconds"] = time.perf_counter() - progress.start
    write_index(out, summary)
    return summary


def _demo_source(out: Path) -> Path:
    """The shared demo video when present, else a clip rendered from the synthetic study data."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "demo.mp4"
    if shared.is_file():
        return shared
    import cv2

    from rtmdet_edge.data.synthetic import SyntheticDataset

    path = out / "synthetic_clip.mp4"
    ds = SyntheticDataset(48, 4, 320, seed=7, split="test", max_objects=8, style="study")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (320, 320))
    for i in range(len(ds)):
        writer.write(ds.load_raw(i)["image"])
    writer.release()
    return path


def write_index(out: Path, summary: dict) -> Path:
    from rtmdet_edge.io import atomic_write_json, atomic_write_text

    lines = [
        "# rtmdet-edge quickstart report",
        "",
        "A short schedule on the synthetic study task: accuracy here is far below what `benchmarks/gap_study.py` "
        "reaches with 30-minute models. Every number below comes from this run.",
        "",
        f"Total time: {summary['seconds'] / 60:.1f} min on targets {', '.join(summary['targets'])}.",
        "",
        "| stage | minutes |",
        "|---|---:|",
        *(f"| {s['stage']} | {s['seconds'] / 60:.1f} |" for s in summary["stages"]),
        "",
        "- Per-target benchmark: [benchmark/report.md](benchmark/report.md) (plots: "
        "[latency vs mAP](benchmark/latency_vs_map.png), [latency bars](benchmark/latency_bars.png))",
        "- INT8 gap study: [gap/report.md](gap/report.md) ([drops](gap/gap_drop.png), "
        "[latency vs mAP](gap/gap_latency_vs_map.png), [sensitivity](gap/evidence_sensitivity.png))",
        "- Quantization summaries: " + ", ".join(f"[{p.name}](quantize/{p.name}/summary.md)"
                                                 for p in sorted((out / "quantize").glob("*")) if p.is_dir()),
        "- Training logs and curves: " + ", ".join(f"[{b}](train/{b}/metrics.png)" for b in BLOCKS),
    ]  # fmt: skip
    if "demo" in summary:
        d = summary["demo"]
        lines.append(f"- Demo video: [demo.mp4](demo.mp4) ({d['method']} on {d['target']}, {d['fps']:.1f} FPS, "
                     f"{d['frames_processed']} frames)")  # fmt: skip
    if summary.get("not_run"):
        lines += ["", "Not run:", *(f"- {x}" for x in summary["not_run"])]
    gap_md = out / "gap" / "report.md"
    if gap_md.is_file():
        lines += ["", "## Gap table", "", *[ln for ln in gap_md.read_text().splitlines() if ln.startswith("|")][:40]]
    atomic_write_json(out / "summary.json", summary)
    return atomic_write_text(out / "index.md", "\n".join(lines) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", default="runs/quickstart", help="report folder (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=15.0, help="time budget; scales the schedule (default: 15)")
    p.add_argument("--force", action="store_true", help="start over even when --out holds an earlier run")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise UserError(f"{out} already holds a run; pass --force to replace it or choose another --out")
        shutil.rmtree(out)
    summary = run_quickstart(out, args.minutes)
    print(f"\nquickstart done in {summary['seconds'] / 60:.1f} min -> {out / 'index.md'}")
    if "demo" in summary:
        d = summary["demo"]
        print(f"demo video: {out / 'demo.mp4'} ({d['method']} on {d['target']}, {d['fps']:.1f} FPS)")
    print("Short schedule: accuracy is far below benchmarks/gap_study.py; see index.md for every table and plot.")
    return 0
