"""Train and validation DataLoaders: sampling (distributed, resumable mid-epoch), worker seeding and collation.

Train batches are (images [B,3,H,W] normalised float32 BGR, targets: list of {"boxes" [N,4] xyxy input pixels float32,
"labels" [N] int64}). Val batches are (images, metas: list of LetterboxMeta, samples: list of the raw sample dicts
without pixels) with the official test letterbox (rtmdet_edge.inference.preprocess.letterbox).
"""

from __future__ import annotations

import functools

import random
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from rtmdet_edge.inference.preprocess import LetterboxMeta, letterbox, normalize


class ResumableSampler(DistributedSampler):
    """DistributedSampler (per-epoch shuffle from seed + epoch, even split across ranks) that can start mid-epoch.

    `set_epoch(epoch, start_batch)` makes the next pass skip the first start_batch * batch_size indices of this rank's
    order, so a run resumed from a mid-epoch checkpoint sees exactly the batches it had not seen, in the same order.
    Works without an initialised process group (num_replicas=1, rank=0).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start_batch * self.batch_size, 0)


def init_worker(worker_id: int) -> None:
    """Every DataLoader worker: OpenCV single-threaded (N workers x all cores of cv2 threads oversubscribe the CPU;
    the workers are the parallelism, as in the torchvision references and Ultralytics). Ctrl-C in a terminal reaches
    the whole process group: workers ignore it so the main process can finish the iteration and save a checkpoint
    (they end with the loader)."""
    cv2.setNumThreads(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def seed_worker(worker_id: int) -> None:
    init_worker(worker_id)
    # torch seeds each worker from the loader's generator; numpy and random must follow or every worker (and every
    # epoch) would draw the same augmentations.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def collate_train(
    samples: Sequence[dict[str, Any]], with_masks: bool = False
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Sample dicts (same-size images after the train pipeline) -> (normalised [B,3,H,W], targets).

    with_masks (RTMDet-Ins): each target also gets what the mask loss needs, from the sample's polygons rasterised once
    after every transform (as mmdet keeps PolygonMasks through the pipeline and rasterises them in the loss):
    "mask_centers" [N, 2] (centre of mass of the full-resolution mask) and "masks_stride4" [N, H/4, W/4] bool (the
    mask sampled at [2::4, 2::4], the only pixels the Dice loss reads). Only these leave the worker: 1/16 of the
    full masks (a 640 image with 50 objects: 1.3 MB instead of 20 MB).
    """
    images = normalize(np.stack([s["image"] for s in samples]))
    targets = [
        {
            "boxes": torch.as_tensor(np.asarray(s["boxes"], np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(s["labels"], np.int64).reshape(-1)),
        }
        | ({"rboxes": torch.as_tensor(np.asarray(s["rboxes"], np.float32).reshape(-1, 5))} if "rboxes" in s else {})
        for s in samples
    ]
    if with_masks:
        from rtmdet_edge.geometry.masks import mask_targets

        for s, t in zip(samples, targets):
            h, w = s["image"].shape[:2]
            polygons = s["polygons"] if len(s["polygons"]) else [[] for _ in range(len(t["labels"]))]
            t["mask_centers"], t["masks_stride4"] = mask_targets(polygons, h, w)
    return images, targets


class SeededTrainSet(Dataset):
    """The train dataset with its pipeline reseeded per sample from (seed, epoch, index).

    Augmentations become a function of the sample's position in the schedule, not of how many samples a process (or
    DataLoader worker) has drawn before: a run resumed mid-epoch re-draws exactly the same augmentations, with any
    number of workers. Only the Mosaic/MixUp caches (stage 1) carry history, and they restart empty after a resume.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        from rtmdet_edge.data.transforms import reseed

        # (epoch, index) from EpochTaggedSampler: persistent workers hold a copy of this object made at the first
        # epoch, so self.epoch would stay 0 there.
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        if self.dataset.transforms is not None:
            reseed(self.dataset.transforms, (self.seed << 44) + (epoch << 24) + index)
        return self.dataset[index]


class EpochTaggedSampler(Sampler):
    """Yields (epoch, index) pairs of a ResumableSampler, so every worker (persistent ones included) knows the epoch."""

    def __init__(self, sampler: ResumableSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def build_train_loader(
    cfg: Any,
    stage: int,
    dataset: Dataset,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin: bool = False,
    persistent: bool | None = None,
) -> DataLoader:
    """Loader of the official stage-1 (Mosaic + MixUp) or stage-2 (no mixing) pipeline for cfg (a TrainConfig).

    Sets dataset.transforms to the pipeline of cfg.model's size at cfg.imgsz. cfg.batch is the total batch; each of
    the world_size processes loads cfg.batch // world_size. drop_last=True: a last batch of 1 would break BatchNorm.
    The loader's generator is private, so creating the iterator never consumes the global torch RNG (a mid-epoch
    resume would otherwise diverge); call `loader.sampler.set_epoch(epoch, start_batch)` and
    `set_loader_epoch(loader, epoch)` before each epoch (train.py does).
    persistent (default: same as pin, i.e. on CUDA): keep the workers alive between epochs, as the official config
    does; the sampler tags every index with its epoch so their augmentation seeds still follow the schedule.
    """
    from rtmdet_edge.data.pipeline import build_train_pipeline

    batch_size = cfg.batch // world_size
    dataset.transforms = build_train_pipeline(cfg.model, cfg.imgsz, stage, dataset, seed=cfg.seed)
    seeded = SeededTrainSet(dataset, cfg.seed)
    sampler = EpochTaggedSampler(
        ResumableSampler(seeded, num_replicas=world_size, rank=rank, seed=cfg.seed, batch_size=batch_size)
    )
    persistent = pin if persistent is None else persistent
    return DataLoader(
        seeded,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=functools.partial(collate_train, with_masks=_is_ins(cfg.model)),
        pin_memory=pin,
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator(),
        persistent_workers=persistent and cfg.workers > 0,
    )


def _is_ins(model_name: str) -> bool:
    from rtmdet_edge.config import PRESETS

    cfg = PRESETS.get(model_name)
    return cfg is not None and cfg.kind == "ins"


def set_loader_epoch(loader: DataLoader, epoch: int, start_batch: int = 0, seed: int = 0, rank: int = 0) -> None:
    """Shuffle order, augmentation seeds and worker seeds of `epoch`, starting at batch start_batch."""
    loader.sampler.set_epoch(epoch, start_batch)
    loader.dataset.epoch = epoch
    loader.generator.manual_seed(seed * 100_003 + epoch * 1009 + rank)


class LetterboxDataset(Dataset):
    """Wraps a dataset (no train transforms) with the official test letterbox."""

    def __init__(self, dataset: Dataset, imgsz: int) -> None:
        self.dataset = dataset
        self.imgsz = imgsz

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, LetterboxMeta, dict[str, Any]]:
        sample = self.dataset.load_raw(index) if hasattr(self.dataset, "load_raw") else self.dataset[index]
        image, meta = letterbox(sample["image"], self.imgsz)
        info = {k: v for k, v in sample.items() if k != "image"}
        return image, meta, info


def collate_val(items: Sequence[tuple[np.ndarray, LetterboxMeta, dict[str, Any]]]):
    images, metas, infos = zip(*items)
    return normalize(np.stack(images)), list(metas), list(infos)


def build_val_loader(dataset: Dataset, *, imgsz: int, batch_size: int = 8, workers: int = 0) -> DataLoader:
    """In-order loader of (images [B,3,S,S], metas, infos) with the test letterbox; infos hold the annotations."""
    return DataLoader(
        LetterboxDataset(dataset, imgsz),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_val,
        worker_init_fn=init_worker,
    )
