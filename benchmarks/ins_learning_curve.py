"""Does a tiny RTMDet-Ins learn masks? Box and mask mAP of rtmdet-ins-tiny trained from scratch on synthetic data, CPU.

    python benchmarks/ins_learning_curve.py            # ~12 CPU-minutes (one thread)

Setting (small enough for a CPU in minutes, so it shows learning, not final accuracy): 8 synthetic training images,
3 classes, at most 4 objects each, 128x128, no augmentation (test letterbox), batches of 8, AdamW lr 0.004 (32x the
linear-scaling value for batch 8, as the detector's overfit test), warm-up 10%, flat then cosine to 5%, EMA. Every
`--eval-every` iterations the EMA weights are evaluated with the official Ins test settings on the training images
(memorisation) and on 8 held-out images (generalisation; expected to stay low with 8 training images).
Writes benchmarks/results/ins_learning_curve.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rtmdet_edge.data import SyntheticDataset, build_test_pipeline
from rtmdet_edge.data.loader import collate_train
from rtmdet_edge.evaluation.coco import evaluate
from rtmdet_edge.models.model import build_model
from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.engine import train_one_epoch
from rtmdet_edge.training.loss import build_criterion
from rtmdet_edge.training.optim import LRSchedule, build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=160)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    imgsz, lr, batch_size, num_classes = args.imgsz, 0.004, 8, 3
    train_set = SyntheticDataset(args.images, num_classes, imgsz, seed=0, max_objects=4, transforms=build_test_pipeline(imgsz))
    held_out = SyntheticDataset(args.images, num_classes, imgsz, seed=1, split="val", max_objects=4)
    samples = [train_set[i] for i in range(len(train_set))]
    batches = [collate_train(samples[i : i + batch_size], with_masks=True) for i in range(0, len(samples), batch_size)]
    model = build_model("rtmdet-ins-tiny", num_classes=num_classes)
    criterion, optimizer = build_criterion(model), build_optimizer(model, lr)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    ema = ModelEMA(model)
    schedule = LRSchedule(base_lr=lr, iters_per_epoch=len(batches), max_epochs=args.iters // len(batches),
                          warmup_iters=args.iters // 10)  # fmt: skip
    rows, train_seconds = [], 0.0
    train_eval = SyntheticDataset(args.images, num_classes, imgsz, seed=0, max_objects=4)  # same images, no pipeline
    for epoch in range(args.iters // len(batches)):
        t0 = time.perf_counter()
        stats = train_one_epoch(model, criterion, batches, optimizer, scaler, ema, schedule, epoch,
                                iters_per_epoch=len(batches), show_progress=False)  # fmt: skip
        train_seconds += time.perf_counter() - t0
        it = (epoch + 1) * len(batches)
        if it % args.eval_every == 0 or it == args.iters:
            row = {"iter": it, "train_minutes": round(train_seconds / 60, 2)}
            row |= {k: stats[k] for k in ("loss", "loss_cls", "loss_bbox", "loss_mask") if k in stats}
            for name, ds in (("train", train_eval), ("heldout", held_out)):
                res = evaluate(ema.module, ds, imgsz=imgsz, show_progress=False)
                row |= {f"{name}_box_AP50": res.metrics["AP50"], f"{name}_box_AP": res.metrics["AP"],
                        f"{name}_mask_AP50": res.segm_metrics["AP50"], f"{name}_mask_AP": res.segm_metrics["AP"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    write(args, rows)
    return 0


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/ins_learning_curve.py" + (
        f" --iters {args.iters} --eval-every {args.eval_every} --images {args.images} --imgsz {args.imgsz}"
    )
    (args.out / "ins_learning_curve.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    cols = ["iter", "loss_mask", "train_box_AP50", "train_mask_AP50", "train_mask_AP", "heldout_box_AP50", "heldout_mask_AP50"]
    lines = [
        f"rtmdet-ins-tiny from scratch on {args.images} synthetic images ({args.imgsz}px, 3 classes, no augmentation, "
        f"batch 8, lr 0.004), EMA weights, official Ins test settings; 'train' = the training images (memorisation), "
        f"'heldout' = {args.images} other synthetic images. CPU, one thread, on a machine shared with other jobs. "
        f"Command: `{cmd}`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---:|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) if c == "iter" else f"{r.get(c, float('nan')):.3f}" for c in cols) + " |")
    lines += ["", f"Training time: {rows[-1]['train_minutes'] if rows else 0} minutes (excluding evaluation).", ""]
    (args.out / "ins_learning_curve.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_box_AP50", "train_mask_AP50", "train_mask_AP", "heldout_mask_AP50"):
        ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker="o", label=key)
    ax.set(xlabel="iteration", ylabel="COCO AP", ylim=(0, 1), title="rtmdet-ins-tiny, synthetic")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "ins_learning_curve.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
