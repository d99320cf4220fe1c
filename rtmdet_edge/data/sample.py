"""The sample dict shared by every dataset and transform, plus the small geometry helpers they all need.

See rtmdet_edge/data/__init__.py for the contract. Kept separate from __init__ so dataset modules can import it without
a circular import.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

Sample = dict[str, Any]
# Optional per-object arrays that must stay aligned with boxes/labels through every transform.
PER_OBJECT_KEYS = ("rboxes", "difficult")


def empty_sample(image: np.ndarray, image_id: int = 0, path: str | None = None, with_rboxes: bool = False) -> Sample:
    """A sample with no objects (all annotation arrays present and empty)."""
    sample: Sample = {
        "image": image,
        "boxes": np.zeros((0, 4), np.float32),
        "labels": np.zeros((0,), np.int64),
        "polygons": [],
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": int(image_id),
        "path": path,
        "ori_shape": (int(image.shape[0]), int(image.shape[1])),
    }
    if with_rboxes:
        sample["rboxes"] = np.zeros((0, 5), np.float32)
    return sample


def select(sample: Sample, keep: np.ndarray) -> Sample:
    """Keep only the objects where keep (bool [N] or int indices) is set; returns a new dict (arrays not copied)."""
    keep = np.asarray(keep)
    idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
    out = dict(sample)
    out["boxes"] = sample["boxes"][idx]
    out["labels"] = sample["labels"][idx]
    out["polygons"] = [sample["polygons"][i] for i in idx] if len(sample["polygons"]) else []
    for key in PER_OBJECT_KEYS:
        if key in sample:
            out[key] = sample[key][idx]
    return out


def norm_angle_le90(angle: np.ndarray) -> np.ndarray:
    """Wrap angles (radians) into [-pi/2, pi/2): a rectangle is the same after a half turn."""
    return (angle + np.pi / 2) % np.pi - np.pi / 2


def points_to_rbox_le90(points: np.ndarray) -> np.ndarray:
    """cv2.minAreaRect of points [K,2] -> le90 (cx, cy, w, h, angle) float32, angle in [-pi/2, pi/2).

    Follows mmrotate's poly2obb_le90: the side whose direction has |angle| <= pi/2 is w; this only matters for
    the (w, h, angle) vs (h, w, angle +- pi/2) ambiguity, which describes the same rectangle.
    """
    (cx, cy), (w, h), deg = cv2.minAreaRect(points.astype(np.float32).reshape(-1, 1, 2))
    angle = math.radians(deg)
    if w < h:  # choose w as the longer side, as mmrotate's le90 regularisation does
        w, h = h, w
        angle += math.pi / 2
    angle = (angle + math.pi / 2) % math.pi - math.pi / 2
    return np.array([cx, cy, w, h, angle], np.float32)


def rbox_corners(rboxes: np.ndarray) -> np.ndarray:
    """le90 rboxes [N,5] -> corners [N,4,2]."""
    cx, cy, w, h, a = (rboxes[:, i] for i in range(5))
    cos, sin = np.cos(a), np.sin(a)
    dx = np.stack([w / 2 * cos, w / 2 * sin], -1)  # half of the w side
    dy = np.stack([-h / 2 * sin, h / 2 * cos], -1)  # half of the h side
    c = np.stack([cx, cy], -1)
    return np.stack([c - dx - dy, c + dx - dy, c + dx + dy, c - dx + dy], 1).astype(np.float32)


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """Largest outer contour of a binary mask as float32 [K,2] (pixel-corner-free cv2 coordinates), [0,2] if empty."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    largest = max(contours, key=cv2.contourArea)
    return largest.reshape(-1, 2).astype(np.float32)


def affine_polygons(polygons: list[list[np.ndarray]], sx: float, sy: float, tx: float, ty: float) -> list:
    """x' = x*sx + tx, y' = y*sy + ty for every part of every instance."""
    if not polygons:
        return []
    scale = np.array([sx, sy], np.float32)
    shift = np.array([tx, ty], np.float32)
    return [[(p * scale + shift).astype(np.float32) for p in parts] for parts in polygons]


def clip_polygon(poly: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Sutherland-Hodgman clip of one polygon [K,2] to the rectangle [x1,x2]x[y1,y2] (exact intersection).

    Vectorised per edge: vertex i emits itself if inside, then the crossing point of edge (i, i+1) if that edge
    crosses the boundary; interleaving both candidate lists keeps the vertex order.
    """
    poly = np.asarray(poly, np.float32)
    for axis, bound, keep_greater in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        if len(poly) == 0:
            break
        v = poly[:, axis] - bound
        inside = v >= 0 if keep_greater else v <= 0
        if inside.all():
            continue
        nxt = np.roll(poly, -1, axis=0)
        vn = np.roll(v, -1)
        cross = inside != np.roll(inside, -1)
        denom = np.where(cross, v - vn, 1.0)
        t = (v / denom)[:, None]
        inter = poly + t * (nxt - poly)
        cand = np.stack([poly, inter], 1).reshape(-1, 2)
        keep = np.stack([inside, cross], 1).reshape(-1)
        poly = cand[keep]
    return poly


def crop_polygons(polygons: list, width: float, height: float) -> list:
    """Clip every instance to [0,width]x[0,height]; instances already inside are passed through untouched."""
    out = []
    for parts in polygons:
        if not parts:
            out.append(parts)
            continue
        pts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        lo, hi = pts.min(0), pts.max(0)
        if lo[0] >= 0 and lo[1] >= 0 and hi[0] <= width and hi[1] <= height:
            out.append(parts)
            continue
        clipped = [clip_polygon(p, 0.0, 0.0, width, height) for p in parts]
        out.append([p for p in clipped if len(p) >= 3])
    return out


class DetectionDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement __len__ and load_raw(i); __getitem__ applies self.transforms.

    A transform may return None (mmdet RandomCrop does when a crop holds no object); like mmengine's BaseDataset
    we then try another random index, up to max_refetch times.
    """

    class_names: list[str]
    transforms: Callable[[Sample], Sample | None] | None = None
    max_refetch: int = 100

    def load_raw(self, index: int) -> Sample:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def first_decodable(self, index: int, path_at: Callable[[int], Any], where: str) -> tuple[int, np.ndarray]:
        """(index, BGR image) of the first decodable image from `index` on, wrapping around: an undecodable file is
        replaced by the next good one (one counted warning per file in self.skips), so an epoch keeps its length."""
        from rtmdet_edge.data.coco import read_image
        from rtmdet_edge.errors import UserError

        warned = self.__dict__.setdefault("_warned", set())
        for k in range(len(self)):
            i = (index + k) % len(self)
            path = path_at(i)
            image, why = read_image(path)
            if image is not None:
                return i, image
            if str(path) not in warned:
                warned.add(str(path))
                self.skips.skip("undecodable image", f"{path}: {why}; using another image instead")
        raise UserError(f"none of the {len(self)} images {where} can be decoded")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, index: int) -> Sample:
        if self.transforms is None:
            return self.load_raw(index)
        rng = getattr(self, "_refetch_rng", None)
        if rng is None:
            rng = self._refetch_rng = np.random.default_rng(index)
        for _ in range(self.max_refetch):
            out = self.transforms(self.load_raw(index))
            if out is not None:
                return out
            index = int(rng.integers(len(self)))
        raise RuntimeError(f"the train pipeline rejected {self.max_refetch} images in a row; do the images have boxes?")


class SkipLog:
    """Bad inputs skipped by a dataset: one warning line each (the first `max_lines` per reason) and exact counts.

    The counts end up in the summary (`summary()`, and the warning build_dataset prints after loading), so a user
    learns how much of the data was unusable even when the individual lines were capped.
    """

    def __init__(self, max_lines: int = 20) -> None:
        self.max_lines = max_lines
        self.counts: dict[str, int] = {}

    def skip(self, reason: str, message: str) -> None:
        n = self.counts[reason] = self.counts.get(reason, 0) + 1
        if n <= self.max_lines:
            warnings.warn(message, stacklevel=3)
        elif n == self.max_lines + 1:
            warnings.warn(f"more inputs skipped ({reason}); only the count is reported from now on", stacklevel=3)

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


def warn_once(seen: set, key: str, message: str) -> None:
    if key not in seen:
        seen.add(key)
        warnings.warn(message, stacklevel=3)
