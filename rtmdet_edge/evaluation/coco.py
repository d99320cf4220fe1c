"""COCO box mAP (pycocotools) of a model, or of any callable that turns a BGR image into detections; for detections
that carry masks (RTMDet-Ins) also COCO mask ("segm") mAP from RLE-encoded masks, as mmdet's CocoMetric does (each mask
result also carries its box, so pycocotools takes its area from the box, as for mmdet's segm results).

Matches mmdet's CocoMetric as used by the RTMDet configs: COCOeval with maxDets (100, 300, 1000), so AP is computed
over up to 1000 detections per image (the model keeps at most 300: test_cfg max_per_img), and the 12 numbers are
AP, AP50, AP75, APs, APm, APl, AR@100, AR@300, AR@1000, ARs, ARm, ARl (the last three at 1000).

A COCO dataset (one with a pycocotools `.coco`) is scored against its own annotation file (official areas, crowds, ids).
Otherwise ground truth comes from the dataset's own samples in the same pass as the predictions: boxes are xyxy original-image
pixels, areas are the polygon areas when the sample has polygons (COCO's "area" is the mask area) else box areas,
and ignore_boxes become iscrowd regions of every category (a detection inside one is neither a hit nor a miss).
Labels (0..C-1) are mapped back to the dataset's category ids (`dataset.cat_ids` when present, else label + 1).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rtmdet_edge.evaluation.bootstrap import MatchTable, match_table

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@100", "AR@300", "AR@1000", "ARs", "ARm", "ARl")
MAX_DETS = (100, 300, 1000)  # mmdet CocoMetric proposal_nums


@dataclass
class EvalResult:
    """metrics: the 12 COCO numbers (0..1, NaN where COCO reports -1: no ground truth of that size); per_class: AP per
    class name (NaN for classes with no ground truth)."""

    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    # Instance segmentation (detections with masks): the same 12 numbers and per-class AP for COCO "segm".
    segm_metrics: dict[str, float] | None = None
    segm_per_class: dict[str, float] | None = None
    # COCOeval's per-image box matching, for paired bootstrap intervals (rtmdet_edge.evaluation.bootstrap); not
    # serialised
    matches: MatchTable | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if np.isnan(v) else v) for k, v in d.items()}

        out = {
            "metrics": clean(self.metrics),
            "per_class": {k: (None if np.isnan(v) else v) for k, v in self.per_class.items()},
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }
        if self.segm_metrics is not None:
            out["segm_metrics"] = clean(self.segm_metrics)
            out["segm_per_class"] = clean(self.segm_per_class or {})
        return out

    def table(self) -> str:
        segm = self.segm_metrics
        head = f"{'metric':<10}{'value':>8}" if segm is None else f"{'metric':<10}{'box':>8}{'mask':>8}"
        lines = [head] + [
            f"{k:<10}{_fmt(v):>8}" + (f"{_fmt(segm[k]):>8}" if segm is not None else "") for k, v in self.metrics.items()
        ]
        if self.per_class:
            width = max(12, max(len(k) for k in self.per_class) + 2)
            lines += ["", f"{'class':<{width}}{'AP':>8}" + (f"{'mask AP':>9}" if segm is not None else "")]
            for k, v in self.per_class.items():
                row = f"{k:<{width}}{_fmt(v):>8}"
                if segm is not None:
                    row += f"{_fmt((self.segm_per_class or {}).get(k, float('nan'))):>9}"
                lines.append(row)
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.4f}"


def _polygon_area(parts: Sequence[np.ndarray]) -> float:
    area = 0.0
    for p in parts:
        p = np.asarray(p, np.float64).reshape(-1, 2)
        if len(p) >= 3:
            x, y = p[:, 0], p[:, 1]
            area += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return area


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class _CocoCollector:
    """Accumulates ground truth and detections in COCO json form."""

    def __init__(self, class_names: Sequence[str], cat_ids: Sequence[int], coco_gt: Any = None) -> None:
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids)
        self.coco_gt = coco_gt  # a COCO dataset's own annotations: official areas, crowds and image ids
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.detections: list[dict] = []
        self.has_masks = False  # set when detections carry masks: summarize() adds COCO "segm"

    def add_image(self, info: dict[str, Any], detections: Any) -> None:
        if self.coco_gt is not None:
            image_id = int(info["image_id"])
            self.images.append({"id": image_id})
        else:
            image_id = len(self.images) + 1  # our own ids: dataset ids need not be unique across sources
            h, w = info["ori_shape"][:2]
            self.images.append({"id": image_id, "height": int(h), "width": int(w)})
            self._add_ground_truth(image_id, info)
        d_boxes = _as_numpy(detections.boxes).astype(np.float64).reshape(-1, 4)
        d_scores = _as_numpy(detections.scores).astype(np.float64).reshape(-1)
        d_labels = _as_numpy(detections.labels).astype(np.int64).reshape(-1)
        masks = getattr(detections, "masks", None)
        rles = None
        if masks is not None:
            from rtmdet_edge.geometry.masks import masks_to_rle

            self.has_masks = True
            rles = masks_to_rle(_as_numpy(masks))
        for j, (box, score, label) in enumerate(zip(d_boxes, d_scores, d_labels)):
            x1, y1, x2, y2 = box.tolist()
            det = {
                "image_id": image_id,
                "category_id": self.cat_ids[int(label)],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
            if rles is not None:
                det["segmentation"] = rles[j]
            self.detections.append(det)

    def _add_ground_truth(self, image_id: int, info: dict[str, Any]) -> None:
        boxes = np.asarray(info["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(info["labels"], np.int64).reshape(-1)
        polygons = info.get("polygons") or []
        for j, (box, label) in enumerate(zip(boxes, labels)):
            bw, bh = box[2] - box[0], box[3] - box[1]
            parts = polygons[j] if j < len(polygons) else []
            area = _polygon_area(parts) if len(parts) else bw * bh
            self._add_gt(image_id, box, int(label), area if area > 0 else bw * bh, iscrowd=0, parts=parts)
        for box in np.asarray(info.get("ignore_boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4):
            for label in range(len(self.cat_ids)):
                self._add_gt(image_id, box, label, (box[2] - box[0]) * (box[3] - box[1]), iscrowd=1)

    def _add_gt(
        self, image_id: int, box: np.ndarray, label: int, area: float, iscrowd: int, parts: Sequence[np.ndarray] = ()
    ) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        # COCO polygon lists for "segm" (the box as a polygon when the object has none, e.g. ignore regions)
        segmentation = [np.asarray(p, np.float64).reshape(-1).tolist() for p in parts if len(p) >= 3]
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": self.cat_ids[label],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(area),
                "iscrowd": iscrowd,
                "segmentation": segmentation or [[x1, y1, x1, y2, x2, y2, x2, y1]],
            }
        )

    def summarize(self) -> EvalResult:
        from pycocotools.coco import COCO

        n_img, n_det = len(self.images), len(self.detections)
        zeros = dict.fromkeys(METRIC_NAMES, 0.0)
        if self.coco_gt is not None:
            gt = self.coco_gt
            has_gt = any(a.get("iscrowd", 0) == 0 for im in self.images for a in gt.imgToAnns[im["id"]])
        else:
            gt = COCO()
            gt.dataset = {
                "images": self.images,
                "annotations": self.annotations,
                "categories": [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.class_names)],
            }
            has_gt = any(a["iscrowd"] == 0 for a in self.annotations)
        if not self.detections or not has_gt:
            nan = {name: float("nan") for name in self.class_names}
            if self.has_masks:
                return EvalResult(zeros, nan, n_img, n_det, dict(zeros), dict(nan))
            return EvalResult(zeros, nan, n_img, n_det)
        with contextlib.redirect_stdout(io.StringIO()):
            if self.coco_gt is None:
                gt.createIndex()
            dt = gt.loadRes(self.detections)
        metrics, per_class, matches = self._cocoeval(gt, dt, "bbox")
        if not self.has_masks:
            return EvalResult(metrics, per_class, n_img, n_det, matches=matches)
        segm_metrics, segm_per_class, _ = self._cocoeval(gt, dt, "segm")
        return EvalResult(metrics, per_class, n_img, n_det, segm_metrics, segm_per_class, matches)

    def _cocoeval(self, gt: Any, dt: Any, iou_type: str) -> tuple[dict[str, float], dict[str, float], MatchTable]:
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(gt, dt, iou_type)
            coco_eval.params.catIds = self.cat_ids
            coco_eval.params.imgIds = [im["id"] for im in self.images]
            coco_eval.params.maxDets = list(MAX_DETS)
            coco_eval.evaluate()
            matches = match_table(coco_eval)
            coco_eval.accumulate()
            coco_eval.summarize()
        # COCOeval's -1 means "no ground truth of this kind" (e.g. no small objects): not a score of 0, so NaN here,
        # None in JSON and "n/a" in the table.
        metrics = {name: float(v) if v > -1 else float("nan") for name, v in zip(METRIC_NAMES, coco_eval.stats)}
        # precision: [T iou, R recall, K classes, A areas, M maxDets]; area "all", the largest maxDets.
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, name in enumerate(self.class_names):
            p = precision[:, :, k]
            per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        return metrics, per_class, matches


def _class_info(dataset: Any) -> tuple[list[str], list[int]]:
    names = list(dataset.class_names)
    cat_ids = list(getattr(dataset, "cat_ids", None) or range(1, len(names) + 1))
    if len(cat_ids) != len(names):
        raise ValueError(f"dataset has {len(names)} class names but {len(cat_ids)} category ids")
    return names, cat_ids


@torch.no_grad()
def evaluate(
    predictor: nn.Module | Callable[[np.ndarray], Any],
    dataset: Any,
    *,
    imgsz: int = 640,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    workers: int = 0,
    show_progress: bool = True,
) -> EvalResult:
    """COCO box mAP of predictor on dataset (samples as in rtmdet_edge.data: image BGR, boxes xyxy, labels, ...).

    predictor: an RTMDet nn.Module (run on letterboxed batches, then rtmdet_edge.inference.postprocess with the official test
    settings), or any callable image_bgr -> detections with .boxes [N,4] xyxy original pixels, .scores, .labels
    (a Detector, a compiled backend wrapper...).
    """
    names, cat_ids = _class_info(dataset)
    coco_gt = getattr(dataset, "coco", None)  # COCO datasets: evaluate against their own annotation file
    collector = _CocoCollector(names, cat_ids, coco_gt if hasattr(coco_gt, "imgToAnns") else None)
    if isinstance(predictor, nn.Module):
        from rtmdet_edge.data.loader import build_val_loader
        from rtmdet_edge.inference.postprocess import OFFICIAL, postprocess

        device = torch.device(device)
        was_training = predictor.training
        predictor.eval()
        loader = build_val_loader(dataset, imgsz=imgsz, batch_size=batch_size, workers=workers)
        strides = getattr(predictor, "strides", (8, 16, 32))
        for images, metas, infos in tqdm(loader, desc="eval", disable=not show_progress):
            outputs = predictor(images.to(device))
            if "mask_feat" in outputs:  # RTMDet-Ins: boxes and masks with its official test_cfg
                from rtmdet_edge.inference.postprocess_ins import INS_OFFICIAL, postprocess_ins

                results = postprocess_ins(outputs, metas, INS_OFFICIAL, strides=strides)
            else:
                results = postprocess(outputs, metas, OFFICIAL, strides=strides)
            for info, dets in zip(infos, results):
                collector.add_image(info, dets)
        predictor.train(was_training)
    else:
        for i in tqdm(range(len(dataset)), desc="eval", disable=not show_progress):
            sample = dataset.load_raw(i) if hasattr(dataset, "load_raw") else dataset[i]
            collector.add_image(sample, predictor(sample["image"]))
    return collector.summarize()
