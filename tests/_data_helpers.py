"""Shared helpers for the data tests: plain images with rotated rectangles of distinct colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rtmdet_edge.data.sample import points_to_rbox_le90

SHARED = Path(__file__).resolve().parents[2] / "shared"


def colour_of(label: int) -> np.ndarray:
    """Blue fixed at 255 so no blend with the black background or 114 padding matches another object."""
    return np.array([255, 40 + 50 * (label % 5), 40 + 50 * (label // 5)], np.float32)


def make_sample(seed: int, n: int = 6, size: tuple[int, int] = (480, 640), label_offset: int = 0, rows=(0.0, 1.0)) -> dict:
    """Black image with n non-overlapping rotated rectangles (label k drawn in colour_of(k))."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    boxes, labels, polys, rboxes = [], [], [], []
    cols = 3
    for k in range(n):
        cx = (k % cols + 0.5) * w / cols + rng.uniform(-10, 10)
        cy = h * (rows[0] + (rows[1] - rows[0]) * ((k // cols + 0.5) / ((n + cols - 1) // cols)))
        rw, rh = rng.uniform(30, w / cols - 60), rng.uniform(20, 50)
        ang = rng.uniform(-np.pi / 2, np.pi / 2)
        corners = cv2.boxPoints(((cx, cy), (rw, rh), np.degrees(ang))).astype(np.float32)
        label = k + label_offset
        cv2.fillPoly(img, [np.round(corners * 16).astype(np.int32)], colour_of(label).tolist(), cv2.LINE_8, 4)
        boxes.append([*corners.min(0), *corners.max(0)])
        labels.append(label)
        polys.append([corners])
        rboxes.append(points_to_rbox_le90(corners))
    return {
        "image": img,
        "boxes": np.asarray(boxes, np.float32),
        "labels": np.asarray(labels, np.int64),
        "polygons": polys,
        "rboxes": np.asarray(rboxes, np.float32),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": seed,
        "path": None,
        "ori_shape": (h, w),
    }


class PlainDataset:
    """Dataset of make_sample images (for mosaic/mixup partners)."""

    class_names = [str(k) for k in range(30)]

    def __init__(self, num_images: int = 8, **kw) -> None:
        self.n, self.kw = num_images, kw

    def __len__(self) -> int:
        return self.n

    def load_raw(self, i: int) -> dict:
        return make_sample(100 + i, **self.kw)


def assert_aligned(sample: dict, scale: float = 1.0, tol: float = 3.0, min_size: float = 6.0, check_rbox=True, contain=False) -> int:
    """For each object: the pixels of its colour (times `scale`, e.g. 0.5 after mixup) have the object's box as
    bounding rect (within tol px), and the shrunk rbox is filled with that colour. Returns objects checked."""
    img = sample["image"].astype(np.float32)
    h, w = img.shape[:2]
    checked = 0
    for box, label, rb in zip(sample["boxes"], sample["labels"], sample.get("rboxes", [None] * len(sample["boxes"]))):
        x1, y1, x2, y2 = box
        assert -0.01 <= x1 <= x2 <= w + 0.01 and -0.01 <= y1 <= y2 <= h + 0.01, (box, (h, w))
        if min(x2 - x1, y2 - y1) < min_size:
            continue
        col = colour_of(int(label)) * scale
        match = (np.abs(img - col).max(-1) <= 8).astype(np.uint8)
        match = cv2.morphologyEx(match, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        # Look only near the box: a mosaic may paste the same image (same colours) twice.
        window = np.zeros_like(match)
        m = int(tol) + 3
        window[max(int(y1) - m, 0) : int(y2) + m, max(int(x1) - m, 0) : int(x2) + m] = 1
        match &= window
        bx, by, bw, bh = cv2.boundingRect(match)
        assert bw > 0, f"label {label}: colour not found in box {box}"
        got = np.array([bx, by, bx + bw, by + bh], np.float32)
        if contain:  # the box may be larger than the visible pixels (a crop clips the box, not the object)
            assert (got[:2] >= box[:2] - tol).all() and (got[2:] <= box[2:] + tol).all(), f"{label}: {box} vs {got}"
        else:
            assert np.abs(got - box).max() <= tol, f"label {label}: box {box} vs pixels {got}"
        if check_rbox and rb is not None and min(rb[2], rb[3]) > 8:
            shrunk = rb.copy()
            shrunk[2:4] -= 6
            corners = cv2.boxPoints(((rb[0], rb[1]), (shrunk[2], shrunk[3]), np.degrees(rb[4])))
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(corners).astype(np.int32)], 1)
            inside = match[m > 0]
            if len(inside) > 20:
                assert inside.mean() > 0.9, f"label {label}: rbox {rb} covers only {inside.mean():.2f} of its colour"
        checked += 1
    return checked
