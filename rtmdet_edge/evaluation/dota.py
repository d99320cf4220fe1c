"""DOTA-style rotated-box mAP (DOTA devkit task 1 / mmrotate DOTAMetric definitions).

Per class, over the whole dataset: detections sorted by score (stable); each one is matched to the ground truth of its
image and class with the highest rotated IoU; IoU > threshold and that object not yet taken -> true positive, already
taken -> false positive; IoU > threshold with a `difficult` object -> ignored (neither); otherwise false positive.
Recall is over the non-difficult objects. AP is VOC07 11-point (the classic DOTA "mAP50" of the paper) or the area
under the monotone precision envelope ("area"). mAP averages the classes that have at least one non-difficult object
(mmrotate; the devkit would give NaN for the others); `mAP` over IoU 0.50:0.05:0.95 averages the area mAPs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rtmdet_edge.geometry.rotated import rbox_iou

IOU_THRS_COCO = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str = "area") -> float:
    """AP of one precision/recall curve: mode "11points" (VOC07) or "area" (VOC2010+, monotone envelope)."""
    if mode == "11points":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    if mode != "area":
        raise ValueError(f"unknown AP mode {mode!r}; use '11points' or 'area'")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _as_np(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1, *shape_tail)


def match_class(
    dets: Sequence[tuple[np.ndarray, np.ndarray]],
    gts: Sequence[tuple[np.ndarray, np.ndarray]],
    iou_thrs: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One class over all images.

    dets[i] = (rboxes [N, 5], scores [N]); gts[i] = (rboxes [G, 5], difficult [G] bool).
    Returns scores [D] (sorted, descending), tp [T, D], fp [T, D] (bool, per IoU threshold), number of positives.
    """
    num_pos = int(sum((~g[1]).sum() for g in gts))
    all_scores, all_tp, all_fp = [], [], []
    for (boxes, scores), (gt_boxes, difficult) in zip(dets, gts):
        n = len(scores)
        if n == 0:
            continue
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        tp = np.zeros((len(iou_thrs), n), bool)
        fp = np.zeros((len(iou_thrs), n), bool)
        if len(gt_boxes) == 0:
            fp[:] = True
        else:
            ious = rbox_iou(torch.from_numpy(boxes).double(), torch.from_numpy(gt_boxes).double()).numpy()
            best = ious.argmax(1)
            best_iou = ious[np.arange(n), best]
            for t, thr in enumerate(iou_thrs):
                taken = np.zeros(len(gt_boxes), bool)
                for d in range(n):  # in score order within the image: same result as the global order
                    if best_iou[d] > thr:
                        g = best[d]
                        if difficult[g]:
                            continue
                        if not taken[g]:
                            tp[t, d] = taken[g] = True
                        else:
                            fp[t, d] = True
                    else:
                        fp[t, d] = True
        all_scores.append(scores)
        all_tp.append(tp)
        all_fp.append(fp)
    if not all_scores:
        empty = np.zeros((len(iou_thrs), 0), bool)
        return np.zeros(0), empty, empty, num_pos
    scores = np.concatenate(all_scores)
    order = np.argsort(-scores, kind="stable")
    return scores[order], np.concatenate(all_tp, 1)[:, order], np.concatenate(all_fp, 1)[:, order], num_pos


@dataclass
class DotaResult:
    """mAP50_07: VOC07 11-point mAP at IoU 0.5 (the paper's DOTA number); mAP50 / mAP75: area AP;
    mAP: area mAP averaged over IoU 0.50:0.05:0.95; per_class: name -> {"AP50_07", "AP50", "num_gts"}."""

    mAP50_07: float
    mAP50: float
    mAP75: float
    mAP: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:  # strict JSON has no NaN: classes without objects get null
            return None if isinstance(v, float) and np.isnan(v) else v

        per_class = {n: {k: clean(v) for k, v in r.items()} for n, r in self.per_class.items()}
        return {"mAP50_07": clean(self.mAP50_07), "mAP50": clean(self.mAP50), "mAP75": clean(self.mAP75),
                "mAP": clean(self.mAP), "per_class": per_class}

    def table(self) -> str:
        lines = [f"{'class':<20} {'gts':>5} {'AP50(07)':>9} {'AP50':>7}"]
        for name, r in self.per_class.items():
            lines.append(f"{name:<20} {r['num_gts']:>5d} {r['AP50_07']:>9.4f} {r['AP50']:>7.4f}")
        lines.append(f"mAP50(07) {self.mAP50_07:.4f}  mAP50 {self.mAP50:.4f}  mAP75 {self.mAP75:.4f}  "
                     f"mAP(.5:.95) {self.mAP:.4f}")
        return "\n".join(lines)


def evaluate_dota(
    detections: Sequence[dict[str, Any]],
    ground_truths: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    iou_thrs: Sequence[float] = IOU_THRS_COCO,
) -> DotaResult:
    """DOTA mAP of per-image detections against per-image ground truth (same order, same pixel frame).

    detections[i]: "rboxes" (or "boxes") [N, 5] le90 (cx, cy, w, h, angle), "scores" [N], "labels" [N].
    ground_truths[i]: "rboxes" [G, 5], "labels" [G], optional "difficult" [G] bool (ignored objects).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truths)} images")
    thrs = list(iou_thrs)
    for needed in (0.5, 0.75):
        if needed not in thrs:
            thrs.append(needed)
    per_class: dict[str, dict[str, float]] = {}
    aps_area = []  # [classes with objects, thresholds]
    aps_07 = []
    for c, name in enumerate(class_names):
        dets, gts = [], []
        for det, gt in zip(detections, ground_truths):
            d_boxes = _as_np(det.get("rboxes", det.get("boxes")), np.float64, (5,))
            d_labels = _as_np(det["labels"], np.int64)
            d_scores = _as_np(det["scores"], np.float64)
            keep = d_labels == c
            dets.append((d_boxes[keep], d_scores[keep]))
            g_boxes = _as_np(gt["rboxes"], np.float64, (5,))
            g_labels = _as_np(gt["labels"], np.int64)
            g_diff = _as_np(gt.get("difficult", np.zeros(len(g_labels), bool)), bool)
            gkeep = g_labels == c
            gts.append((g_boxes[gkeep], g_diff[gkeep]))
        _, tp, fp, num_pos = match_class(dets, gts, thrs)
        tp_cum, fp_cum = np.cumsum(tp, 1), np.cumsum(fp, 1)
        recall = tp_cum / max(num_pos, 1)
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        area = [average_precision(recall[t], precision[t], "area") for t in range(len(thrs))]
        ap07 = average_precision(recall[thrs.index(0.5)], precision[thrs.index(0.5)], "11points")
        per_class[name] = {"num_gts": num_pos, "AP50_07": ap07 if num_pos else float("nan"),
                           "AP50": area[thrs.index(0.5)] if num_pos else float("nan")}
        if num_pos:
            aps_area.append(area)
            aps_07.append(ap07)
    if not aps_area:
        nan = float("nan")
        return DotaResult(nan, nan, nan, nan, per_class)
    aps = np.asarray(aps_area)  # [K, T]
    coco = [thrs.index(t) for t in iou_thrs]
    return DotaResult(
        mAP50_07=float(np.mean(aps_07)),
        mAP50=float(aps[:, thrs.index(0.5)].mean()),
        mAP75=float(aps[:, thrs.index(0.75)].mean()),
        mAP=float(aps[:, coco].mean()),
        per_class=per_class,
    )


def evaluate_dota_predictor(
    predictor: Callable[[np.ndarray], Any], dataset: Any, class_names: Sequence[str], show_progress: bool = False
) -> DotaResult:
    """DOTA mAP of any callable image_bgr -> detections with .boxes [N,5] le90 in original pixels, .scores, .labels
    (a rotated Detector on any backend) over a dataset's raw samples (load_raw: "image", "rboxes", "labels",
    optional "difficult"). The nn.Module path is rtmdet_edge.training.rotated_train.evaluate_rotated."""
    dets, gts = [], []
    for i in tqdm(range(len(dataset)), desc="eval (DOTA)", disable=not show_progress):
        sample = dataset.load_raw(i)
        d = predictor(sample["image"])
        dets.append({"rboxes": np.asarray(d.boxes), "scores": np.asarray(d.scores), "labels": np.asarray(d.labels)})
        labels = np.asarray(sample["labels"])
        gts.append({"rboxes": sample["rboxes"], "labels": labels,
                    "difficult": sample.get("difficult", np.zeros(len(labels), bool))})  # fmt: skip
    return evaluate_dota(dets, gts, class_names)
