"""Train loader: persistent workers (the CUDA default) draw exactly the in-process loader's augmentations, per epoch."""

from __future__ import annotations

import torch

from rtmdet_edge.config import TrainConfig
from rtmdet_edge.data import build_dataset
from rtmdet_edge.data.loader import build_train_loader, set_loader_epoch


def _epochs(workers: int, persistent: bool, stage: int) -> list[torch.Tensor]:
    cfg = TrainConfig(model="rtmdet-tiny", data="synthetic:4", imgsz=64, batch=2, workers=workers, seed=3)
    dataset = build_dataset(cfg.data, None, split="train", imgsz=cfg.imgsz)
    loader = build_train_loader(cfg, stage, dataset, persistent=persistent)
    assert loader.persistent_workers == (persistent and workers > 0)
    seen = []
    for epoch in range(2):
        set_loader_epoch(loader, epoch, seed=cfg.seed)
        seen += [images for images, _ in loader]
    return seen


def test_persistent_workers_follow_the_epoch_like_the_main_process():
    torch.set_num_threads(1)
    reference = _epochs(workers=0, persistent=False, stage=2)
    persistent = _epochs(workers=1, persistent=True, stage=2)
    assert len(reference) == len(persistent) == 4
    for a, b in zip(reference, persistent):
        assert torch.equal(a, b)
    assert not torch.equal(reference[0], reference[2]) or not torch.equal(reference[1], reference[3])  # epochs differ
