"""RTMDet-R train transforms (mmrotate dota_rr.py): flips in three directions and random rotation, both exact for
le90 rotated boxes, and the official rotated pipeline: Resize (keep ratio) -> RandomFlip(0.75, h/v/d) ->
RandomRotate(0.5, +-180 deg; multiples of 90 deg for rect_obj_labels) -> Pad (114).

Only "rboxes" carry the geometry here; "boxes" are recomputed as the axis-aligned hull of each rotated box and polygons
are dropped (the rotated criterion reads rboxes only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from rtmdet_edge.data.sample import Sample, norm_angle_le90, rbox_corners, select
from rtmdet_edge.data.transforms import PAD_VALUE, Compose, LetterboxResize, Pad, _Random


def _with_rboxes(sample: Sample, image: np.ndarray, rboxes: np.ndarray) -> Sample:
    out = dict(sample)
    out["image"] = image
    out["rboxes"] = rboxes.astype(np.float32)
    corners = rbox_corners(out["rboxes"]) if len(rboxes) else np.zeros((0, 4, 2), np.float32)
    out["boxes"] = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32).reshape(-1, 4)
    out["polygons"] = []
    return out


def flip_rotated(sample: Sample, direction: str) -> Sample:
    """Mirror image and rboxes: "horizontal" (x -> W - x, angle -> -angle), "vertical" (y -> H - y, angle -> -angle)
    or "diagonal" (both; the angle is unchanged). Pixel edges map to pixel edges, so boxes stay exact."""
    h, w = sample["image"].shape[:2]
    rb = np.asarray(sample["rboxes"], np.float32).reshape(-1, 5).copy()
    if direction == "horizontal":
        image = sample["image"][:, ::-1]
        rb[:, 0] = w - rb[:, 0]
        rb[:, 4] = -rb[:, 4]
    elif direction == "vertical":
        image = sample["image"][::-1]
        rb[:, 1] = h - rb[:, 1]
        rb[:, 4] = -rb[:, 4]
    elif direction == "diagonal":
        image = sample["image"][::-1, ::-1]
        rb[:, 0] = w - rb[:, 0]
        rb[:, 1] = h - rb[:, 1]
    else:
        raise ValueError(f"unknown flip direction {direction!r}")
    rb[:, 4] = norm_angle_le90(rb[:, 4])
    return _with_rboxes(sample, np.ascontiguousarray(image), rb)


def rotate_rotated(sample: Sample, angle_deg: float, pad_val: int = 0) -> Sample:
    """Turn image and rboxes by angle_deg about the image centre (positive: counter-clockwise on screen, as
    cv2.getRotationMatrix2D); objects whose centre leaves the image are dropped (mmrotate RandomRotate)."""
    h, w = sample["image"].shape[:2]
    # cv2's pixel-centre convention: the image centre is ((w - 1) / 2, (h - 1) / 2) in pixel-index coordinates,
    # which is (w / 2, h / 2) in the continuous coordinates the boxes use (pixel i covers [i, i + 1)).
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    image = cv2.warpAffine(sample["image"], matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(pad_val,) * 3)
    rb = np.asarray(sample["rboxes"], np.float32).reshape(-1, 5).copy()
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = rb[:, 0] - w / 2, rb[:, 1] - h / 2
    rb[:, 0] = cos * cx + sin * cy + w / 2
    rb[:, 1] = -sin * cx + cos * cy + h / 2
    rb[:, 4] = norm_angle_le90(rb[:, 4] - theta)
    inside = (rb[:, 0] >= 0) & (rb[:, 0] < w) & (rb[:, 1] >= 0) & (rb[:, 1] < h)
    out = _with_rboxes(select(sample, np.ones(len(rb), bool)), image, rb)
    return select(out, inside)


class RandomRotatedFlip(_Random):
    """With probability prob flip in one of the directions, chosen uniformly (mmdet RandomFlip with a direction list)."""

    def __init__(self, prob: float = 0.75, directions: Sequence[str] = ("horizontal", "vertical", "diagonal"), seed: int | None = 0) -> None:
        super().__init__(seed)
        self.prob = prob
        self.directions = tuple(directions)

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.prob:
            return sample
        return flip_rotated(sample, self.directions[int(self.rng.integers(len(self.directions)))])


class RandomRotate(_Random):
    """With probability prob turn by a uniform angle in [-angle_range, angle_range] degrees; when the image holds an
    object of rect_obj_labels (roundabouts, storage tanks in DOTA: mmrotate [9, 11]) only by 90-degree steps."""

    def __init__(self, prob: float = 0.5, angle_range: float = 180.0, rect_obj_labels: Sequence[int] = (), seed: int | None = 0) -> None:
        super().__init__(seed)
        self.prob = prob
        self.angle_range = angle_range
        self.rect_obj_labels = tuple(rect_obj_labels)

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.prob:
            return sample
        if self.rect_obj_labels and np.isin(sample["labels"], self.rect_obj_labels).any():
            angle = float(self.rng.choice([-90.0, 90.0, 180.0]))
        else:
            angle = float(self.rng.uniform(-self.angle_range, self.angle_range))
        return rotate_rotated(sample, angle)


def build_rotated_train_pipeline(imgsz: int = 1024, rect_obj_labels: Sequence[int] = (9, 11), seed: int = 0) -> Compose:
    """mmrotate dota_rr train pipeline: keep-ratio resize + pad to imgsz, flip (0.75), rotate (0.5)."""
    return Compose([
        LetterboxResize(imgsz),
        RandomRotatedFlip(0.75, seed=seed),
        RandomRotate(0.5, 180.0, rect_obj_labels, seed=seed + 1),
        Pad(imgsz, PAD_VALUE),
    ])
