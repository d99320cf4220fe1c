"""COCO mask (segm) mAP in evaluation: perfect masks score 1, shifted masks lower than their boxes, RLE results."""

from __future__ import annotations

import numpy as np
import torch

from rtmdet_edge.evaluation.coco import _CocoCollector, evaluate
from rtmdet_edge.geometry.masks import masks_to_rle, polygons_to_masks
from rtmdet_edge.inference.postprocess import Detections


def _info(polys, labels, h=64, w=80):
    boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for (p,) in polys], np.float32)
    return {"boxes": boxes, "labels": np.array(labels), "polygons": polys, "ori_shape": (h, w), "image_id": 0}


def _polys():
    tri = np.array([[10, 10], [40, 10], [10, 40]], np.float32)
    sq = np.array([[50, 20], [70, 20], [70, 50], [50, 50]], np.float32)
    return [[tri], [sq]]


def test_perfect_masks_give_segm_ap_1_and_shifted_masks_less() -> None:
    polys = _polys()
    info = _info(polys, [0, 1])
    masks = polygons_to_masks(polys, 64, 80)
    assert masks.shape == (2, 64, 80) and masks[0, 12, 12] and not masks[0, 38, 38]
    col = _CocoCollector(["a", "b"], [1, 2])
    col.add_image(info, Detections(info["boxes"], np.array([0.9, 0.8]), np.array([0, 1]), masks))
    res = col.summarize()
    assert res.metrics["AP"] > 0.99 and res.segm_metrics is not None and res.segm_metrics["AP"] > 0.99
    assert "mask" in res.table() and "segm_metrics" in res.to_dict()

    shifted = np.roll(masks, 6, axis=2)  # same boxes, masks moved: box AP stays, mask AP drops
    col = _CocoCollector(["a", "b"], [1, 2])
    col.add_image(info, Detections(info["boxes"], np.array([0.9, 0.8]), np.array([0, 1]), shifted))
    res = col.summarize()
    assert res.metrics["AP"] > 0.99 and res.segm_metrics["AP"] < 0.7


def test_box_only_detections_have_no_segm() -> None:
    info = _info(_polys(), [0, 1])
    col = _CocoCollector(["a", "b"], [1, 2])
    col.add_image(info, Detections(info["boxes"], np.array([0.9, 0.8]), np.array([0, 1])))
    res = col.summarize()
    assert res.segm_metrics is None and "segm_metrics" not in res.to_dict()


def test_rle_round_trip() -> None:
    from pycocotools import mask as mask_utils

    masks = polygons_to_masks(_polys(), 64, 80)
    rles = masks_to_rle(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [64, 80] for r in rles)
    decoded = np.stack([mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}) for r in rles])
    assert np.array_equal(decoded.astype(bool), masks)


def test_evaluate_an_ins_model_reports_segm() -> None:
    from rtmdet_edge import build_model
    from rtmdet_edge.data import SyntheticDataset

    torch.manual_seed(0)
    dataset = SyntheticDataset(num_images=2, imgsz=64, num_classes=2, seed=0)
    model = build_model("rtmdet-ins-tiny", num_classes=dataset.num_classes)
    res = evaluate(model, dataset, imgsz=64, batch_size=2, show_progress=False)
    assert res.segm_metrics is not None and set(res.segm_metrics) == set(res.metrics)
