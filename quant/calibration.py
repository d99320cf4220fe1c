"""Calibration images through the same pre-processing as inference (letterbox + normalise, rtmdet_edge.inference).

Sources: `synthetic[:N]`, any dataset SPEC that rtmdet_edge.data.build_dataset reads (its train split, annotations
unused), or a folder of plain images (no annotations needed for PTQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from quant.settings import MIN_CALIB_IMAGES
from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.preprocess import letterbox, normalize_numpy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class CalibrationSet:
    """batch: [N,3,H,W] float32, normalised BGR as the network consumes it; sources: where each image came from."""

    batch: np.ndarray
    sources: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.batch)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _is_plain_folder(path: Path) -> bool:
    """A folder of images that is not a COCO or DOTA root (those are read as datasets)."""
    return path.is_dir() and not (path / "annotations").is_dir() and not any(path.glob("labelTxt*"))


def _evenly(n_total: int, count: int) -> list[int]:
    """count indices spread over range(n_total), so a calibration subset is not just the first scenes."""
    if count >= n_total:
        return list(range(n_total))
    return [int(i) for i in np.linspace(0, n_total - 1, count).round()]


def load_calibration(
    data: str | None,
    images: str | None,
    count: int,
    imgsz: int,
    num_classes: int | None = None,
    min_images: int = MIN_CALIB_IMAGES,
) -> CalibrationSet:
    """The first `count` (evenly spread) calibration images, pre-processed; UserError when there are too few."""
    if count < min_images:
        raise UserError(f"--calib-size {count} is too few to estimate activation ranges; use at least {min_images}")
    folder = Path(images) if images and data is None else Path(data) if data and _is_plain_folder(Path(data)) else None
    if data is None and folder is None:
        raise UserError("give calibration images: --data SPEC (synthetic, a dataset) or --images DIR")
    sources: list[str] = []
    boxed: list[np.ndarray] = []
    if folder is not None:
        if not folder.is_dir():
            raise UserError(f"calibration folder not found: {folder}")
        files = image_files(folder)
        if not files:
            raise UserError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for i in _evenly(len(files), count):
            image = cv2.imread(str(files[i]))
            if image is None:
                raise UserError(f"cannot read calibration image {files[i]}")
            boxed.append(letterbox(image, imgsz)[0])
            sources.append(str(files[i]))
        description = f"folder {folder} ({len(files)} images)"
    else:
        from rtmdet_edge.data.spec import build_dataset

        spec = data if not (data.startswith("synthetic") and ":" not in data) else f"synthetic:{count}"
        dataset = build_dataset(spec, images=images, split="train", num_classes=None, imgsz=imgsz)
        if len(dataset) == 0:
            raise UserError(f"--data {data} holds no images")
        for i in _evenly(len(dataset), count):
            sample = dataset.load_raw(i) if hasattr(dataset, "load_raw") else dataset[i]
            boxed.append(letterbox(sample["image"], imgsz)[0])
            sources.append(str(sample.get("path") or f"{data}[{i}]"))
        description = f"dataset {data} ({len(dataset)} images, train split)"
    if len(boxed) < min_images:
        raise UserError(f"only {len(boxed)} calibration images found in {description}; need at least {min_images}")
    return CalibrationSet(normalize_numpy(np.stack(boxed)), sources, description)
