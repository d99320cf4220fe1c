"""DOTA mAP: 1.0 for the ground truth on dota8, and equal to an independent implementation on perturbed predictions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rtmdet_edge.data.dota import DOTA_CLASSES, DotaDataset
from rtmdet_edge.data.sample import rbox_corners
from rtmdet_edge.evaluation.dota import average_precision, evaluate_dota

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon  # noqa: E402


@pytest.fixture(scope="module")
def dota8_gt(data_dir: Path) -> list[dict]:
    gts = []
    for split in ("train", "val"):
        ds = DotaDataset(data_dir / "dota8", split)
        for i in range(len(ds)):
            _, corners, labels, difficult = ds.items[i]
            from rtmdet_edge.data.sample import points_to_rbox_le90

            rboxes = np.stack([points_to_rbox_le90(c) for c in corners]) if len(labels) else np.zeros((0, 5))
            gts.append({"rboxes": rboxes, "labels": labels, "difficult": difficult})
    assert sum(len(g["labels"]) for g in gts) == 133
    return gts


def test_ground_truth_as_predictions_scores_one(dota8_gt: list[dict]) -> None:
    dets = [{"rboxes": g["rboxes"], "labels": g["labels"], "scores": np.ones(len(g["labels"]))} for g in dota8_gt]
    result = evaluate_dota(dets, dota8_gt, DOTA_CLASSES)
    assert result.mAP50_07 == pytest.approx(1.0) and result.mAP50 == pytest.approx(1.0)
    assert result.mAP == pytest.approx(1.0)
    assert result.per_class["ship"]["num_gts"] == 105


def independent_voc_ap(dets_by_image, gts_by_image, cls: int, thr: float, use_07: bool) -> float | None:
    """Written from the DOTA devkit's definition, separately: shapely polygon IoU, one global score order."""
    records = []  # (score, image, polygon)
    for img, det in enumerate(dets_by_image):
        for box, score, label in zip(det["rboxes"], det["scores"], det["labels"]):
            if label == cls:
                records.append((score, img, Polygon(rbox_corners(np.asarray([box]))[0])))
    gt_polys = {}
    npos = 0
    for img, gt in enumerate(gts_by_image):
        sel = [k for k, label in enumerate(gt["labels"]) if label == cls]
        gt_polys[img] = [(Polygon(rbox_corners(np.asarray([gt["rboxes"][k]]))[0]), bool(gt["difficult"][k])) for k in sel]
        npos += sum(not d for _, d in gt_polys[img])
    if npos == 0:
        return None
    records.sort(key=lambda r: -r[0])
    used = {img: [False] * len(v) for img, v in gt_polys.items()}
    tp, fp = [], []
    for _, img, poly in records:
        best, best_k = -1.0, -1
        for k, (g, _) in enumerate(gt_polys[img]):
            inter = shapely.intersection(poly, g, grid_size=1e-9).area
            iou = inter / (poly.area + g.area - inter)
            if iou > best:
                best, best_k = iou, k
        if best > thr:
            if gt_polys[img][best_k][1]:
                continue
            if not used[img][best_k]:
                used[img][best_k] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    rec = tp_c / npos
    prec = tp_c / np.maximum(tp_c + fp_c, 1e-12)
    if use_07:
        return sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0, 1.1, 0.1)) / 11
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def test_perturbed_predictions_equal_independent(dota8_gt: list[dict]) -> None:
    rng = np.random.default_rng(0)
    gts = [dict(g) for g in dota8_gt]
    gts[0]["difficult"] = gts[0]["difficult"].copy()
    gts[0]["difficult"][::4] = True  # exercise the ignore rule
    dets = []
    for g in gts:
        n = len(g["labels"])
        boxes = g["rboxes"].astype(np.float64).copy()
        scale = np.maximum(boxes[:, 3:4], 2.0)
        boxes[:, :2] += rng.normal(0, 0.25, (n, 2)) * scale
        boxes[:, 2:4] *= rng.uniform(0.7, 1.3, (n, 2))
        boxes[:, 4] += rng.normal(0, 0.15, n)
        labels = g["labels"].copy()
        flip = rng.random(n) < 0.1
        labels[flip] = rng.integers(0, 15, flip.sum())
        dup = rng.random(n) < 0.2  # duplicates become false positives
        extra = np.concatenate([rng.uniform(0, 1024, (5, 2)), rng.uniform(5, 60, (5, 2)), rng.uniform(-1.5, 1.5, (5, 1))], 1)
        boxes = np.concatenate([boxes, boxes[dup], extra])
        labels = np.concatenate([labels, labels[dup], rng.integers(0, 15, 5)])
        dets.append({"rboxes": boxes, "labels": labels, "scores": rng.random(len(labels))})
    result = evaluate_dota(dets, gts, DOTA_CLASSES, iou_thrs=(0.5, 0.75))
    for thr, key07, key in ((0.5, "mAP50_07", "mAP50"), (0.75, None, "mAP75")):
        aps_area, aps_07 = [], []
        for c in range(15):
            ap = independent_voc_ap(dets, gts, c, thr, use_07=False)
            if ap is not None:
                aps_area.append(ap)
                aps_07.append(independent_voc_ap(dets, gts, c, thr, use_07=True))
        assert getattr(result, key) == pytest.approx(np.mean(aps_area), abs=1e-9)
        if key07:
            assert getattr(result, key07) == pytest.approx(np.mean(aps_07), abs=1e-9)
    assert 0.05 < result.mAP50 < 0.95  # the perturbation is neither trivial nor total


def test_average_precision_modes() -> None:
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert average_precision(rec, prec, "area") == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(rec, prec, "11points") == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    assert math.isnan(evaluate_dota([], [], ["a"]).mAP)


def test_predictor_evaluation_gives_one_with_the_ground_truth_as_predictions():
    """evaluate_dota_predictor (the benchmark's DOTA mAP of any backend) on the synthetic rotated boxes."""
    from types import SimpleNamespace

    from rtmdet_edge.data.spec import build_dataset
    from rtmdet_edge.evaluation.dota import evaluate_dota_predictor

    data = build_dataset("easy:6", split="val", imgsz=96)

    class Oracle:  # returns the ground truth of the images in the order they are asked for
        def __init__(self) -> None:
            self.i = 0

        def __call__(self, image):
            s = data.load_raw(self.i)
            self.i += 1
            return SimpleNamespace(boxes=s["rboxes"], scores=np.ones(len(s["labels"])), labels=s["labels"])

    result = evaluate_dota_predictor(Oracle(), data, data.class_names)
    assert result.mAP50_07 == pytest.approx(1.0) and result.mAP == pytest.approx(1.0)
