"""Training throughput (images/s) of rtmdet-tiny: forward + loss + backward + AdamW step (+ EMA), batch 8.

CPU rows use torch.set_num_threads(2); a CUDA row (AMP, as train.py uses) is added when a GPU is present.
Inputs are fixed synthetic batches (collated once), so the number is the model/loss/optimizer cost, not data loading.
Reports the median seconds per iteration after warm-up. Writes benchmarks/results/train_speed.{json,md}.

    python benchmarks/train_speed.py [--sizes 320 640] [--iters 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from rtmdet_edge.data import SyntheticDataset, build_test_pipeline
from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.engine import train_one_epoch
from rtmdet_edge.data.loader import collate_train
from rtmdet_edge.training.loss import build_criterion
from rtmdet_edge.models.model import build_model
from rtmdet_edge.training.optim import build_optimizer

RESULTS = Path(__file__).resolve().parent / "results"


def measure(device: torch.device, imgsz: int, batch: int, iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    ds = SyntheticDataset(batch, 8, imgsz, transforms=build_test_pipeline(imgsz))
    data = [collate_train([ds[i] for i in range(batch)])]
    model = build_model("rtmdet-tiny", num_classes=8).to(device)
    criterion = build_criterion(model)
    optimizer = build_optimizer(model, 1e-4)
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_one_epoch(model, criterion, data, optimizer, scaler, ema, lambda step: 1e-4, i, iters_per_epoch=1,
                        device=device, show_progress=False)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "amp": device.type == "cuda",
        "imgsz": imgsz,
        "batch": batch,
        "iters": iters,
        "median_s_per_iter": round(median, 4),
        "images_per_s": round(batch / median, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(2)
    rows = [measure(torch.device("cpu"), s, args.batch, args.iters, args.warmup) for s in args.sizes]
    if torch.cuda.is_available():
        rows += [measure(torch.device("cuda"), s, args.batch, args.iters * 5, args.warmup * 3) for s in args.sizes]
    report = {"model": "rtmdet-tiny", "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(report, indent=2))
    lines = [
        "| device | threads | AMP | imgsz | batch | s/iter (median) | images/s |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['device']} | {r['threads'] or '-'} | {'yes' if r['amp'] else 'no'} | {r['imgsz']} | {r['batch']} | "
          f"{r['median_s_per_iter']} | {r['images_per_s']} |" for r in rows),
    ]  # fmt: skip
    md = "# rtmdet-tiny training speed\n\nforward + loss + backward + AdamW step + EMA, fixed batch, median after " \
         f"{args.warmup} warm-up iterations. torch {torch.__version__}.\n\n" + "\n".join(lines) + "\n"  # fmt: skip
    (args.out / "train_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
