"""Does a tiny RTMDet-Ins learn masks that generalise? Held-out box and mask mAP of rtmdet-ins-tiny trained from scratch
on the easy synthetic task, CPU.

    python benchmarks/ins_learning_curve.py      # ~20 minutes on 2 cores shared with another training job

Setting (small enough for a CPU, so it shows learning, not final accuracy): the `easy` synthetic style (--data easy:N:
3 classes, at most 4 objects, solid colours, no clutter, objects 24 px to half the image; data/synthetic.py EASY),
`--images` training images rendered once at 128 px and cycled, no augmentation (400 iterations of batch 8 see each of
the 1600 images twice), AdamW lr 0.004 (from scratch), warm-up 10%, flat then cosine to 5%, EMA. Every `--eval-every`
iterations the EMA weights are evaluated with the official Ins test settings on `--heldout` images of the val split
(different images: generalisation) and on 32 training images (memorisation, for comparison).
Writes benchmarks/results/ins_learning_curve.{json,md,png} and the EMA model to ~/.cache/rtmdet_edge/ins_learning_curve/
last.pth (benchmarks/benchmark_kinds.py benchmarks it). OpenMP threads wait passively (OMP_WAIT_POLICY, unless set):
spinning workers on a CPU shared with other jobs made each iteration several times slower here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads its OpenMP runtime below

import torch  # noqa: E402

from rtmdet_edge.checkpoint import save_checkpoint  # noqa: E402
from rtmdet_edge.data import build_test_pipeline  # noqa: E402
from rtmdet_edge.data.loader import collate_train  # noqa: E402
from rtmdet_edge.data.spec import build_dataset  # noqa: E402
from rtmdet_edge.evaluation.coco import evaluate  # noqa: E402
from rtmdet_edge.models.model import build_model  # noqa: E402
from rtmdet_edge.training.ema import ModelEMA  # noqa: E402
from rtmdet_edge.training.engine import train_one_epoch  # noqa: E402
from rtmdet_edge.training.loss import build_criterion  # noqa: E402
from rtmdet_edge.training.optim import LRSchedule, build_optimizer  # noqa: E402
from targets.latency import load_note  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "rtmdet_edge" / "ins_learning_curve"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--images", type=int, default=1600)
    ap.add_argument("--heldout", type=int, default=96)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--checkpoint", type=Path, default=CACHE / "last.pth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    imgsz, lr, batch_size = args.imgsz, 0.004, 8
    train_set = build_dataset(f"easy:{args.images}", split="train", imgsz=imgsz, transforms=build_test_pipeline(imgsz))
    held_out = build_dataset(f"easy:{args.heldout}", split="val", imgsz=imgsz)
    train_eval = build_dataset("easy:32", split="train", imgsz=imgsz)  # the first 32 training images, no pipeline
    num_classes = len(train_set.class_names)
    samples = [train_set[i] for i in range(len(train_set))]
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [collate_train([samples[j] for j in order[i : i + batch_size]], with_masks=True)
               for i in range(0, len(order) - batch_size + 1, batch_size)]  # fmt: skip
    model = build_model("rtmdet-ins-tiny", num_classes=num_classes)
    criterion, optimizer = build_criterion(model), build_optimizer(model, lr)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ema = ModelEMA(model)
    # One "epoch" of the schedule = eval_every iterations, so evaluation falls on epoch ends.
    chunk = args.eval_every
    schedule = LRSchedule(base_lr=lr, iters_per_epoch=chunk, max_epochs=args.iters // chunk,
                          warmup_iters=args.iters // 10)  # fmt: skip
    rows, train_seconds = [], 0.0
    for epoch in range(args.iters // chunk):
        chunk_batches = [batches[(epoch * chunk + i) % len(batches)] for i in range(chunk)]
        t0 = time.perf_counter()
        stats = train_one_epoch(model, criterion, chunk_batches, optimizer, scaler, ema, schedule, epoch,
                                iters_per_epoch=chunk, show_progress=False)  # fmt: skip
        train_seconds += time.perf_counter() - t0
        row = {"iter": (epoch + 1) * chunk, "images_seen": (epoch + 1) * chunk * batch_size,
               "train_minutes": round(train_seconds / 60, 2)}  # fmt: skip
        row |= {k: stats[k] for k in ("loss", "loss_cls", "loss_bbox", "loss_mask") if k in stats}
        for name, ds in (("train", train_eval), ("heldout", held_out)):
            res = evaluate(ema.module, ds, imgsz=imgsz, show_progress=False)
            row |= {f"{name}_box_AP50": res.metrics["AP50"], f"{name}_box_AP": res.metrics["AP"],
                    f"{name}_mask_AP50": res.segm_metrics["AP50"], f"{name}_mask_AP": res.segm_metrics["AP"]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.checkpoint, {"model": ema.module.state_dict(), "config": model.config.to_dict(),
                                      "class_names": list(train_set.class_names), "imgsz": imgsz,
                                      "data": f"easy:{args.heldout}"})  # fmt: skip
    write(args, rows, num_classes)
    return 0


def write(args: argparse.Namespace, rows: list[dict], num_classes: int) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/ins_learning_curve.py" + (
        f" --iters {args.iters} --eval-every {args.eval_every} --images {args.images} --heldout {args.heldout}"
        f" --imgsz {args.imgsz} --threads {args.threads}"
    )
    (args.out / "ins_learning_curve.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    cols = ["iter", "images_seen", "loss_mask", "heldout_box_AP50", "heldout_mask_AP50", "heldout_mask_AP",
            "train_box_AP50", "train_mask_AP50"]  # fmt: skip
    lines = [
        f"rtmdet-ins-tiny from scratch on {args.images} images of the easy synthetic task (`easy`: {num_classes} classes, "
        f"at most 4 objects, solid colours, no clutter; {args.imgsz}px, no augmentation, batch 8, lr 0.004), EMA weights, "
        f"official Ins test settings. 'heldout' = {args.heldout} images of the val split, never trained on "
        "(generalisation); 'train' = 32 training images (memorisation). COCO AP (box and segm), CPU, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the end"
        f"{load_note(os.getloadavg()[0], args.threads)}. Command: `{cmd}`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---:|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) if c in ("iter", "images_seen") else f"{r.get(c, float('nan')):.3f}"
                                       for c in cols) + " |")  # fmt: skip
    lines += ["", f"Training time: {rows[-1]['train_minutes'] if rows else 0} minutes (excluding evaluation).", "",
              "![ins learning curve](benchmarks/results/ins_learning_curve.png)", ""]  # fmt: skip
    (args.out / "ins_learning_curve.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("heldout_box_AP50", "heldout_mask_AP50", "heldout_mask_AP", "train_mask_AP50"):
        ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker="o", label=key)
    ax.set(xlabel="iteration (batch 8)", ylabel="COCO AP", ylim=(0, 1), title="rtmdet-ins-tiny, easy synthetic")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "ins_learning_curve.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
