"""Training throughput of rtmdet-tiny against the official mmdet implementation, measured side by side in one run.

Every variant runs in its own worker process (same thread count, OMP_WAIT_POLICY=PASSIVE for all) that keeps its model,
optimizer and batch between requests; the driver asks the workers for one training step each in turn, rotating the
order every round (ABC, BCA, CAB, ...), so a shared, loaded machine slows every variant alike and the ratios survive
even when the absolute numbers do not. Reported: median seconds per step after the warm-up rounds, images/s, the ratio
to the official fp32 step, and where the time of our step goes.

Step = forward + loss (assigner, QFL, GIoU) + backward + AdamW step + EMA update, fixed batch (rtmdet-tiny, 80 classes,
random normalised input, 10 random boxes per image), no data loading:
- ours: `rtmdet_edge.training.engine.train_one_epoch` on one batch, as `rtmdet-edge train` runs it (foreach AdamW,
  multi-tensor EMA); variants `fp32` (channels_last + the fused BN/SiLU kernel, the train default on CPU),
  `fp32-unfused` (--no-fused-bn-silu), `fp32-nchw` (--no-channels-last),
  `bf16` (CPU autocast, channels_last), `compile` (torch.compile), and on CUDA `cuda-fp32`, `cuda-fp16`
  (autocast + GradScaler), `cuda-bf16` (all channels_last);
- official: `benchmarks/train_step_official.py` in the isolated mmdet 3.3.0 environment (`--official-python`,
  default /tmp/mmenv/bin/python; the row is left out when it is absent).

It also trains one real epoch of synthetic data at 640 through `rtmdet-edge train` with the default DataLoader workers
and reports the share of the epoch spent waiting for data (metrics.jsonl `data_wait_share`).

Writes benchmarks/results/train_speed.{json,md}.

    python benchmarks/train_speed.py [--sizes 320 640] [--rounds 3] [--warmup 1] [--variants fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
OFFICIAL_PYTHON = "/tmp/mmenv/bin/python"
PHASES = ("forward", "assign", "loss", "backward", "optimizer", "ema")
LABELS = {
    "fp32": "ours fp32, channels_last + fused BN/SiLU (train default)",
    "fp32-unfused": "ours fp32, channels_last, PyTorch BN + SiLU (--no-fused-bn-silu)",
    "fp32-nchw": "ours fp32, NCHW (--no-channels-last)",
    "bf16": "ours bf16 autocast, channels_last",
    "compile": "ours fp32, torch.compile",
    "official": "official mmdet 3.3.0 fp32",
}


def synthetic_batch(batch: int, imgsz: int, num_classes: int, seed: int = 0):
    """The same batch as benchmarks/train_step_official.py (duplicated there: that file may not import this repo)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, imgsz, imgsz, generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(10, 2, generator=g) * imgsz * 0.7
        wh = torch.rand(10, 2, generator=g) * imgsz * 0.3 + 8
        labels = torch.randint(0, num_classes, (10,), generator=g)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": labels})
    return images, targets


# ---------------------------------------------------------------------------------------------------------------------
# Worker: our training step, with the time of each phase
def worker(imgsz: int, batch: int, threads: int, variant: str) -> None:
    import torch

    from rtmdet_edge.models.bn_silu import fuse_bn_silu
    from rtmdet_edge.models.model import build_model
    from rtmdet_edge.training.ema import ModelEMA
    from rtmdet_edge.training.engine import train_one_epoch
    from rtmdet_edge.training.loss import build_criterion
    from rtmdet_edge.training.optim import build_optimizer

    torch.set_num_threads(threads)
    device = torch.device("cuda" if variant.startswith("cuda") else "cpu")
    amp_dtype = {"bf16": torch.bfloat16, "cuda-fp16": torch.float16, "cuda-bf16": torch.bfloat16}.get(variant)
    channels_last = variant != "fp32-nchw"
    torch.manual_seed(0)
    model = build_model("rtmdet-tiny", num_classes=80).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and variant not in ("fp32-unfused", "compile"):
        fuse_bn_silu(model)  # as `rtmdet-edge train` does on CPU (a no-op path for NCHW and autocast inputs)
    criterion = build_criterion(model)
    optimizer = build_optimizer(model, 0.004 * batch / 256)
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    runner = torch.compile(model) if variant == "compile" else model
    images, targets = synthetic_batch(batch, imgsz, 80)
    data = [(images, targets)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    spent = dict.fromkeys(PHASES, 0.0)
    marks: dict[str, float] = {}

    def start(name: str) -> None:
        sync()
        marks[name] = time.perf_counter()

    def stop(name: str) -> None:
        sync()
        spent[name] += time.perf_counter() - marks.pop(name)

    model.register_forward_pre_hook(lambda *_: start("forward"))
    model.register_forward_hook(lambda *_: stop("forward"))
    optimizer.register_step_pre_hook(lambda *_: start("optimizer"))
    optimizer.register_step_post_hook(lambda *_: stop("optimizer"))
    get_targets = criterion.get_targets

    def timed_get_targets(*args):
        start("assign")
        out = get_targets(*args)
        stop("assign")
        return out

    criterion.get_targets = timed_get_targets

    def timed_criterion(outputs, tgts):
        start("loss")
        out = criterion(outputs, tgts)
        stop("loss")
        return out

    class TimedEMA:
        def update(self, m) -> None:
            start("ema")
            ema.update(m)
            stop("ema")

    print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if json.loads(line).get("cmd") != "step":
            break
        for k in spent:
            spent[k] = 0.0
        start("step")
        stats = train_one_epoch(runner, timed_criterion, data, optimizer, scaler, TimedEMA(), lambda s: 1e-4, 0,
                                iters_per_epoch=1, device=device, show_progress=False, amp_dtype=amp_dtype,
                                channels_last=channels_last)  # fmt: skip
        sync()
        total = time.perf_counter() - marks.pop("step")
        phases = dict(spent)
        phases["loss"] -= phases["assign"]  # the criterion's time includes the assignment
        phases["backward"] = total - sum(v for k, v in phases.items() if k != "backward")  # + zero_grad, grad norm
        print(json.dumps({"s": total, "loss": stats["loss"], "phases": phases}), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Driver
class Worker:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def step(self) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "step"}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=120)


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    return env


def measure_size(imgsz: int, args: argparse.Namespace, official: str | None) -> list[dict]:
    env = worker_env(args.threads)
    limits = dict(item.split("=") for item in args.max_size)
    workers = [
        Worker(v, [sys.executable, __file__, "--worker", v, "--sizes", str(imgsz), "--batch", str(args.batch),
                   "--threads", str(args.threads)], env)  # fmt: skip
        for v in args.variants
        if imgsz <= int(limits.get(v, imgsz))
    ]
    if official:
        workers.append(Worker("official", [official, str(ROOT / "benchmarks" / "train_step_official.py"), str(imgsz),
                                           str(args.batch), str(args.threads)], env))  # fmt: skip
    replies: dict[str, list[dict]] = {w.name: [] for w in workers}
    try:
        for r in range(args.warmup + args.rounds):
            order = workers[r % len(workers):] + workers[: r % len(workers)]
            for w in order:
                reply = w.step()
                if r >= args.warmup:
                    replies[w.name].append(reply)
                print(f"  {imgsz} round {r} {w.name}: {reply['s']:.2f} s", file=sys.stderr, flush=True)
    finally:
        for w in workers:
            w.close()
    ref = statistics.median(x["s"] for x in replies["official"]) if official else None
    rows = []
    for w in workers:
        times = [x["s"] for x in replies[w.name]]
        median = statistics.median(times)
        row = {
            "variant": w.name, "imgsz": imgsz, "batch": args.batch, "threads": args.threads,
            "median_s_per_iter": round(median, 4), "images_per_s": round(args.batch / median, 3),
            "vs_official": round(ref / median, 3) if ref else None, "times_s": [round(t, 4) for t in times],
            "first_loss": replies[w.name][0]["loss"],
        }  # fmt: skip
        if "phases" in replies[w.name][0]:
            row["phases_s"] = {k: round(statistics.median(x["phases"][k] for x in replies[w.name]), 4) for k in PHASES}
        rows.append(row)
    return rows


def data_wait(imgsz: int, batch: int, images: int, threads: int) -> dict:
    """One real epoch of `rtmdet-edge train` on synthetic data with the default workers; its data-wait share."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "rtmdet_edge.cli", "train", "--model", "rtmdet-tiny", "--data",
               f"synthetic:{images}", "--epochs", "1", "--batch", str(batch), "--imgsz", str(imgsz), "--device",
               "cpu", "--eval-interval", "0", "--out", tmp]  # fmt: skip
        subprocess.run(cmd, check=True, env=worker_env(threads), cwd=ROOT, stdout=subprocess.DEVNULL)
        row = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])
    from rtmdet_edge.config import TrainConfig

    return {"imgsz": imgsz, "batch": batch, "images": images, "iters": row["iters"], "workers": TrainConfig().workers,
            "epoch_time_s": round(row["epoch_time_s"], 2), "data_wait_s": round(row["data_wait_s"], 2),
            "data_wait_share": round(row["data_wait_share"], 4),
            "command": " ".join(["rtmdet-edge", *cmd[3:-1], "<tmp>"])}  # fmt: skip


def markdown(report: dict) -> str:
    from targets.latency import machine_loaded

    first = [float(str(report[k]).split(",")[0]) for k in ("load_start", "load_end")]  # "1.3, 1.1, 1.0" strings
    loaded = machine_loaded(max(first), report["threads"])  # one worker steps at a time
    lines = [
        "# rtmdet-tiny training speed, side by side with the official implementation",
        "",
        f"Step = forward + loss + backward + AdamW + EMA, rtmdet-tiny, 80 classes, batch {report['batch']}, random "
        f"normalised input with 10 random boxes per image, {report['threads']} threads per process "
        "(OMP_WAIT_POLICY=PASSIVE), no data loading. Each variant is a worker process; one step each in turn, the "
        f"order rotated every round, {report['warmup']} warm-up + {report['rounds']} timed rounds, medians. "
        f"CPU: {report['cpu']} ({report['cpu_capability']}, native bf16: {report['native_bf16']}). "
        f"torch {report['torch']}; official: {report['official'] or 'not run (environment absent)'}.",
        "",
        (
            f"**The machine was shared and loaded** (load average {report['load_start']} at the start, "
            f"{report['load_end']} at the end, on {os.cpu_count()} cores): absolute numbers are far below an idle "
            "machine's; compare the ratios, which are taken within the same rounds."
            if loaded
            else f"Load average {report['load_start']} at the start, {report['load_end']} at the end, on "
            f"{os.cpu_count()} cores: nothing else ran."
        ),
        "",
        "| variant | device | imgsz | s/step (median) | s/step (min-max) | images/s | vs official fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        device = report["cuda_device"] if r["variant"].startswith("cuda") else "cpu"
        ratio = f"{r['vs_official']:.2f}x" if r["vs_official"] else "-"
        label = LABELS.get(r["variant"], r["variant"])
        spread = f"{min(r['times_s']):.2f}-{max(r['times_s']):.2f}"
        lines.append(f"| {label} | {device} | {r['imgsz']} | {r['median_s_per_iter']:.3f} | {spread} | "
                     f"{r['images_per_s']:.2f} | {ratio} |")  # fmt: skip
    best = {}
    for r in report["rows"]:
        if r["variant"] in ("fp32", "fp32-unfused", "fp32-nchw", "compile") and r["vs_official"]:
            best[r["imgsz"]] = max(best.get(r["imgsz"], 0.0), r["vs_official"])
    if best:
        verdict = "met" if all(v >= 1.3 for v in best.values()) else "not met"
        cells = ", ".join(f"{k}: {v:.2f}x" for k, v in sorted(best.items()))
        lines += ["", f"Best of our fp32 variants vs official, per size: {cells}. Target >= 1.3x: **{verdict}** here."]
    lines += ["", "Where our step's time goes (median seconds per phase; backward includes zero_grad and grad norm):",
              "", "| variant | imgsz | " + " | ".join(PHASES) + " |", "|---|---:|" + "---:|" * len(PHASES)]  # fmt: skip
    for r in report["rows"]:
        if "phases_s" in r:
            total = sum(r["phases_s"].values())
            cells = " | ".join(f"{r['phases_s'][k]:.3f} ({100 * r['phases_s'][k] / total:.0f}%)" for k in PHASES)
            lines.append(f"| {LABELS.get(r['variant'], r['variant'])} | {r['imgsz']} | {cells} |")
    dw = report.get("data_wait")
    if dw:
        lines += ["", f"Data loading: one real epoch of `{dw['command']}` ({dw['images']} synthetic images, "
                  f"{dw['iters']} steps of {dw['batch']} at {dw['imgsz']}, Mosaic/MixUp pipeline, default "
                  f"{dw['workers']} DataLoader workers): waiting for data took {100 * dw['data_wait_share']:.1f}% of "
                  f"the epoch ({dw['data_wait_s']} s of {dw['epoch_time_s']} s)."]  # fmt: skip
    lines += ["", f"Produced by `{report['command']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16"],
                        help="ours: fp32 fp32-nchw bf16 compile (cuda-fp32 cuda-fp16 cuda-bf16 are added on a GPU)")
    parser.add_argument("--max-size", nargs="*", default=[], metavar="VARIANT=SIZE",
                        help="run a variant only up to this image size (e.g. bf16=160 where bf16 is emulated)")
    parser.add_argument("--official-python", default=OFFICIAL_PYTHON, help="python of the mmdet 3.3.0 environment")
    parser.add_argument("--data-wait-images", type=int, default=32, help="images of the data-wait epoch (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite train_speed.md from train_speed.json")
    args = parser.parse_args()
    if args.markdown_only:
        (args.out / "train_speed.md").write_text(markdown(json.loads((args.out / "train_speed.json").read_text())))
        return
    if args.worker:
        worker(args.sizes[0], args.batch, args.threads, args.worker)
        return

    import torch

    from targets.latency import cpu_name

    official = args.official_python if Path(args.official_python).is_file() else None
    cuda = torch.cuda.is_available()
    if cuda:
        args.variants += ["cuda-fp32", "cuda-fp16"] + (["cuda-bf16"] if torch.cuda.is_bf16_supported() else [])
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for size in args.sizes:
        rows += measure_size(size, args, official)
    dw = data_wait(640, args.batch, args.data_wait_images, args.threads) if args.data_wait_images else None
    report = {
        "model": "rtmdet-tiny", "torch": torch.__version__, "batch": args.batch, "threads": args.threads,
        "rounds": args.rounds, "warmup": args.warmup, "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "official": "mmdet 3.3.0 (" + args.official_python + ")" if official else None,
        "load_start": load_start, "load_end": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "rows": rows, "data_wait": dw, "command": " ".join(["python benchmarks/train_speed.py", *sys.argv[1:]]),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (args.out / "train_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
