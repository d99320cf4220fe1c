"""A compact RTMDet-R training loop: the rotated pipeline and criterion, the shared train_one_epoch, AdamW with
warm-up + flat + cosine, EMA, and DOTA mAP of the EMA model after chosen epochs.

The official rotated recipe (mmrotate rotated_rtmdet_*-3x-dota): AdamW lr 2.5e-4 at batch 8 (0.004 / 16), weight decay
0.05 except norms and biases, 36 epochs, 1000 warm-up iterations, cosine from epoch 18 to 5%, EMA 0.0002, the
dota_rr pipeline (resize 1024, flip 0.75 h/v/d, rotate 0.5) = ROTATED_RECIPE. `train_rotated` runs it on any dataset
whose samples carry "rboxes" (DotaDataset, SyntheticDataset).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rtmdet_edge.data.loader import collate_train
from rtmdet_edge.data.rotated_transforms import build_rotated_train_pipeline
from rtmdet_edge.evaluation.dota import DotaResult, evaluate_dota
from rtmdet_edge.inference.preprocess import normalize, preprocess
from rtmdet_edge.inference.rotated_postprocess import OFFICIAL, postprocess_rotated
from rtmdet_edge.models.model import build_model
from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.engine import train_one_epoch
from rtmdet_edge.training.loss import build_criterion
from rtmdet_edge.training.optim import LRSchedule, build_optimizer, short_run_warmup


@dataclass(frozen=True)
class RotatedTrainConfig:
    model: str = "rtmdet-r-tiny"
    num_classes: int = 15
    epochs: int = 36
    batch: int = 8
    imgsz: int = 1024
    lr: float = 2.5e-4  # official: 0.004 / 16 at batch 8
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    cosine_begin_epoch: int | None = 18
    rect_obj_labels: tuple[int, ...] = (9, 11)  # DOTA storage-tank, roundabout: rotated by 90-degree steps only
    eval_epochs: tuple[int, ...] = (12, 24, 36)
    seed: int = 0
    workers: int = 0


ROTATED_RECIPE = RotatedTrainConfig()


@torch.inference_mode()
def evaluate_rotated(model: torch.nn.Module, dataset: Dataset, imgsz: int, class_names: Sequence[str], batch: int = 4) -> DotaResult:
    """DOTA mAP of a rotated model on a dataset's raw samples (original pixels, official test settings)."""
    model.eval()
    dets, gts = [], []
    for start in range(0, len(dataset), batch):
        samples = [dataset.load_raw(i) for i in range(start, min(start + batch, len(dataset)))]
        images, metas = preprocess([s["image"] for s in samples], imgsz)
        outputs = model(normalize(torch.from_numpy(images)))
        for s, d in zip(samples, postprocess_rotated(outputs, metas, OFFICIAL, model.strides)):
            dets.append({"rboxes": d.boxes.numpy(), "scores": d.scores.numpy(), "labels": d.labels.numpy()})
            gts.append({"rboxes": s["rboxes"], "labels": s["labels"], "difficult": s.get("difficult", np.zeros(len(s["labels"]), bool))})
    return evaluate_dota(dets, gts, class_names)


def train_rotated(cfg: RotatedTrainConfig, train_set: Dataset, val_set: Dataset, out: str | Path, class_names: Sequence[str]) -> list[dict]:
    """Train, evaluate the EMA model after cfg.eval_epochs, write out/metrics.jsonl and out/last.pth; returns rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=cfg.num_classes)
    criterion = build_criterion(model)
    train_set.transforms = build_rotated_train_pipeline(cfg.imgsz, cfg.rect_obj_labels, seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch, shuffle=True, drop_last=True, collate_fn=collate_train,
                        num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed))
    iters = len(loader)
    schedule = LRSchedule(cfg.lr, iters, cfg.epochs, warmup_iters=short_run_warmup(cfg.warmup_iters, iters * cfg.epochs),
                          cosine_begin_epoch=cfg.cosine_begin_epoch)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ema = ModelEMA(model)
    rows = []
    log = open(out / "metrics.jsonl", "w")
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        stats = train_one_epoch(model, criterion, loader, optimizer, scaler, ema, schedule, epoch,
                                iters_per_epoch=iters, show_progress=False)
        row = {"epoch": epoch + 1, "loss": stats.get("loss"), "loss_cls": stats.get("loss_cls"),
               "loss_bbox": stats.get("loss_bbox"), "train_s": time.perf_counter() - t0}
        if epoch + 1 in cfg.eval_epochs or epoch + 1 == cfg.epochs:
            result = evaluate_rotated(ema.module, val_set, cfg.imgsz, class_names)
            row |= {"mAP50_07": result.mAP50_07, "mAP50": result.mAP50, "mAP": result.mAP}
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
    torch.save({"model": ema.module.state_dict(), "config": model.config.to_dict(), "train_config": asdict(cfg)}, out / "last.pth")
    return rows


def run_rotated(train_cfg) -> int:
    """`rtmdet-edge train --model rtmdet-r-*`: the rotated recipe on a DOTA root (or synthetic data), CPU or one GPU-less
    process (no resume or torchrun for RTMDet-R yet). lr defaults to the official 2.5e-4 scaled to the batch."""
    from rtmdet_edge.data import build_dataset

    train_set = build_dataset(train_cfg.data, train_cfg.images, split="train", imgsz=train_cfg.imgsz)
    val_set = build_dataset(train_cfg.val_data or train_cfg.data, train_cfg.val_images or train_cfg.images, split="val",
                            imgsz=train_cfg.imgsz)
    interval = max(1, train_cfg.eval_interval)
    cfg = RotatedTrainConfig(
        model=train_cfg.model,
        num_classes=train_set.num_classes,
        epochs=train_cfg.epochs,
        batch=train_cfg.batch,
        imgsz=train_cfg.imgsz,
        lr=train_cfg.lr if train_cfg.lr is not None else 2.5e-4 * train_cfg.batch / 8,
        weight_decay=train_cfg.weight_decay,
        warmup_iters=train_cfg.warmup_iters,
        cosine_begin_epoch=train_cfg.epochs // 2,
        eval_epochs=tuple(range(interval, train_cfg.epochs + 1, interval)),
        seed=train_cfg.seed,
        workers=train_cfg.workers,
    )
    rows = train_rotated(cfg, train_set, val_set, train_cfg.out, train_set.class_names)
    for row in rows:
        print(json.dumps(row))
    print(f"wrote {Path(train_cfg.out) / 'last.pth'} and metrics.jsonl")
    return 0


__all__ = ["ROTATED_RECIPE", "RotatedTrainConfig", "evaluate_rotated", "run_rotated", "train_rotated"]
