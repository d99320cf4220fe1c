"""Flips and rotation keep rotated boxes on their pixels (checked by drawing each box and measuring it again)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtmdet_edge.data.loader import collate_train
from rtmdet_edge.data.rotated_transforms import (
    RandomRotate,
    RandomRotatedFlip,
    build_rotated_train_pipeline,
    flip_rotated,
    rotate_rotated,
)
from rtmdet_edge.data.sample import empty_sample, points_to_rbox_le90, rbox_corners
from rtmdet_edge.data.synthetic import SyntheticDataset
from rtmdet_edge.geometry.rotated import rbox_iou_aligned


def sample_with_boxes() -> dict:
    rboxes = np.array([[60.0, 50.0, 50.0, 16.0, 0.4], [140.0, 120.0, 36.0, 30.0, -1.1], [100.0, 40.0, 24.0, 10.0, 1.4]],
                      np.float32)
    image = np.zeros((160, 200, 3), np.uint8)
    s = empty_sample(image, with_rboxes=True)
    s["rboxes"] = rboxes
    s["labels"] = np.array([0, 1, 2])
    s["boxes"] = np.zeros((3, 4), np.float32)
    s["image"] = draw(image.shape[:2], rboxes)
    return s


def draw(shape: tuple[int, int], rboxes: np.ndarray) -> np.ndarray:
    """Each box filled in its own channel (continuous coordinates: pixel i covers [i, i + 1))."""
    img = np.zeros((*shape, 3), np.uint8)
    for k, c in enumerate(rbox_corners(rboxes)):
        pts = np.round((c - 0.5) * 16).astype(np.int32)  # 4 fractional bits, pixel-centre coordinates
        channel = np.zeros(shape, np.uint8)
        cv2.fillPoly(channel, [pts], 255, lineType=cv2.LINE_8, shift=4)
        img[..., k] = channel
    return img


def measured(image: np.ndarray, k: int) -> np.ndarray:
    ys, xs = np.nonzero(image[..., k] > 127)  # half level: linear interpolation keeps the edges where they were
    pts = np.stack([xs, ys], 1).astype(np.float32) + 0.5
    rb = points_to_rbox_le90(pts)
    rb[2:4] += 1.0  # pixel centres -> pixel areas
    return rb


@pytest.mark.parametrize("op", ["horizontal", "vertical", "diagonal", 90.0, -90.0, 180.0, 33.0, -127.0])
def test_boxes_follow_pixels(op) -> None:
    s = sample_with_boxes()
    out = flip_rotated(s, op) if isinstance(op, str) else rotate_rotated(s, op)
    assert len(out["rboxes"]) == 3
    for k in range(3):
        ours, seen = out["rboxes"][k].astype(np.float64), measured(out["image"], k).astype(np.float64)
        # centre within half a pixel, angle within ~1.5 degrees (mod pi), size within the rasterisation error
        assert np.hypot(*(ours[:2] - seen[:2])) < 0.5
        turn = (ours[4] - seen[4] + np.pi / 2) % np.pi - np.pi / 2
        assert abs(turn) < 0.03
        assert np.abs(ours[2:4] - seen[2:4]).max() < 3.5
        assert rbox_iou_aligned(torch.tensor(ours[None]), torch.tensor(seen[None])).item() > 0.75
        assert -np.pi / 2 <= out["rboxes"][k, 4] < np.pi / 2
    # the boxes' hull is what "boxes" says
    np.testing.assert_allclose(out["boxes"][:, :2], rbox_corners(out["rboxes"]).min(1), atol=1e-4)


def test_exact_geometry_of_flips_and_quarter_turns() -> None:
    s = sample_with_boxes()
    h, w = s["image"].shape[:2]
    corners = rbox_corners(s["rboxes"])
    for op, mapped in (
        ("horizontal", np.stack([w - corners[..., 0], corners[..., 1]], -1)),
        ("vertical", np.stack([corners[..., 0], h - corners[..., 1]], -1)),
        ("diagonal", np.stack([w - corners[..., 0], h - corners[..., 1]], -1)),
    ):
        out = flip_rotated(s, op)
        got = torch.tensor(out["rboxes"], dtype=torch.float64)
        want = torch.tensor(np.stack([points_to_rbox_le90(c) for c in mapped]), dtype=torch.float64)
        assert rbox_iou_aligned(got, want).min().item() > 0.9999


def test_rotation_drops_objects_whose_centre_leaves() -> None:
    s = sample_with_boxes()
    s["rboxes"][0, :2] = [5.0, 5.0]  # near a corner: a 45 degree turn moves its centre out of the image
    out = rotate_rotated(s, 45.0)
    assert len(out["rboxes"]) == 2 and list(out["labels"]) == [1, 2]


def test_pipeline_on_synthetic_and_collate() -> None:
    ds = SyntheticDataset(num_images=4, num_classes=3, imgsz=128, seed=0)
    ds.transforms = build_rotated_train_pipeline(160, rect_obj_labels=(), seed=0)
    samples = [ds[i] for i in range(4)]
    assert all(s["image"].shape == (160, 160, 3) for s in samples)
    images, targets = collate_train(samples)
    assert images.shape == (4, 3, 160, 160)
    assert all(t["rboxes"].shape[1] == 5 and len(t["rboxes"]) == len(t["labels"]) for t in targets)


def test_random_transforms_are_seeded() -> None:
    s = sample_with_boxes()
    a = [RandomRotate(1.0, seed=3)(s)["rboxes"] for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    flips = RandomRotatedFlip(1.0, seed=0)
    assert any(not np.array_equal(flips(s)["rboxes"], s["rboxes"]) for _ in range(3))
