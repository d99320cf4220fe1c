"""Split large images into patches and merge patch detections back: ground truth survives the round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtmdet_edge.data.dota import DOTA_CLASSES, DotaDataset
from rtmdet_edge.data.dota_split import sliding_windows, split_sample, window_iof
from rtmdet_edge.evaluation.dota import evaluate_dota
from rtmdet_edge.inference.large_image import merge_detections
from rtmdet_edge.inference.postprocess import Detections


def test_sliding_windows_cover_the_image() -> None:
    win = sliding_windows(3000, 2500)
    assert (win[:, 2] - win[:, 0] == 1024).all()
    assert win[:, 0].min() == 0 and win[:, 2].max() == 2500 and win[:, 3].max() == 3000
    xs = sorted(set(win[:, 0].tolist()))
    assert xs == [0, 824, 1476]  # step 824, last one moved back to end at the border
    assert sliding_windows(600, 500).tolist() == [[0, 0, 1024, 1024]]


def test_window_iof() -> None:
    rboxes = np.array([[100.0, 100.0, 40.0, 20.0, 0.0], [1020.0, 100.0, 40.0, 20.0, 0.0]])
    iof = window_iof(rboxes, np.array([[0, 0, 1024, 1024], [1000, 0, 2024, 1024]]))
    np.testing.assert_allclose(iof, [[1.0, 0.0], [0.6, 1.0]], atol=1e-9)


def dota8_samples(data_dir: Path, mosaic: bool) -> list[dict]:
    """The 8 dota8 tiles (1024 px), or two 2048 x 2048 images each tiling four of them (the official 1024/200 split
    then has real work: 9 windows, objects on window borders)."""
    samples = []
    for split in ("train", "val"):
        ds = DotaDataset(data_dir / "dota8", split)
        tiles = [ds.load_raw(i) for i in range(len(ds))]
        if not mosaic:
            samples += tiles
            continue
        image = np.zeros((2048, 2048, 3), np.uint8)
        parts = []
        for k, t in enumerate(tiles):
            ox, oy = 1024 * (k % 2), 1024 * (k // 2)
            image[oy : oy + 1024, ox : ox + 1024] = t["image"]
            parts.append((t, np.array([ox, oy, 0, 0, 0], np.float32)))
        samples.append({
            "image": image,
            "rboxes": np.concatenate([t["rboxes"] + off for t, off in parts]),
            "boxes": np.concatenate([t["boxes"] + np.tile(off[:2], 2) for t, off in parts]),
            "labels": np.concatenate([t["labels"] for t, _ in parts]),
            "difficult": np.concatenate([t["difficult"] for t, _ in parts]),
            "polygons": [[p + off[:2] for p in poly] for t, off in parts for poly in t["polygons"]],
            "ignore_boxes": np.zeros((0, 4), np.float32),
            "ori_shape": (2048, 2048),
        })
    return samples


@pytest.mark.parametrize("size,gap,mosaic", [(1024, 200, True), (512, 200, False)])
def test_ground_truth_round_trip_is_exact(data_dir: Path, size: int, gap: int, mosaic: bool) -> None:
    """Images split into patches (as training sees them), the patch boxes mapped back and merged (as inference
    does) -> the original ground truth, DOTA mAP 1.0, objects cut by a patch border included."""
    gts, merged, cut = [], [], 0
    for sample in dota8_samples(data_dir, mosaic):
        patches = split_sample(sample, size, gap)
        windows = [w for w, _ in patches]
        inside_one = (window_iof(sample["rboxes"], np.stack(windows)) > 0.999).any(1)
        cut += int((~inside_one).sum())
        for _, p in patches:
            assert p["image"].shape == (size, size, 3)
        dets = [Detections(p["rboxes"], np.ones(len(p["labels"]), np.float32), p["labels"]) for _, p in patches]
        out = merge_detections(windows, dets, iou_thr=0.1)
        merged.append({"rboxes": out.boxes, "scores": out.scores, "labels": out.labels})
        gts.append({"rboxes": sample["rboxes"], "labels": sample["labels"], "difficult": sample["difficult"]})
        assert len(out) == len(sample["labels"])
    assert cut > 0  # some objects are not wholly inside any patch: they came back from the patches holding >= 70%
    result = evaluate_dota(merged, gts, DOTA_CLASSES)
    assert result.mAP50_07 == pytest.approx(1.0) and result.mAP == pytest.approx(1.0)


def test_detect_large_runs_windows_and_merges(official_dir: Path, data_dir: Path) -> None:
    import cv2

    import rtmdet_edge
    from rtmdet_edge.inference.large_image import detect_large

    det = rtmdet_edge.Detector(official_dir / "rtmdet-r_tiny" / "checkpoint.pth", imgsz=256, device="cpu",
                               postprocess="deploy")
    image = cv2.imread(str(data_dir / "dota8" / "images" / "val" / "P1470__1024__3296___1648.jpg"))[:600, :700]
    out = detect_large(det, image, size=256, gap=64)
    assert out.boxes.shape[1] == 5 and len(out) > 0
    # boxes are in image pixels: centres inside the image, and no two same-class boxes overlap above the NMS IoU
    assert (out.boxes[:, 0] >= -1).all() and (out.boxes[:, 0] <= 701).all() and (out.boxes[:, 1] <= 601).all()
    import torch

    from rtmdet_edge.geometry.rotated import rbox_iou

    iou = rbox_iou(torch.as_tensor(out.boxes), torch.as_tensor(out.boxes)).numpy()
    same = out.labels[:, None] == out.labels[None]
    np.fill_diagonal(iou, 0)
    assert (iou[same] <= 0.1 + 1e-6).all()
