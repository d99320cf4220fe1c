"""RTMDet-R post-processing: raw outputs -> rotated detections in original-image pixels (mmrotate 1.x).

Per image and level: sigmoid scores, the top nms_pre (prior, class) pairs above score_thr; decode (l, t, r, b, angle)
at offset-0 priors into le90 (cx, cy, w, h, angle) boxes (no clipping: mmrotate never clips rotated boxes); rescale to
the original image (RotatedBoxes.rescale_); drop boxes without positive width and height; class-aware rotated NMS;
keep max_per_img. The NMS is the detector's exact greedy NMS with the rotated IoU plugged in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rtmdet_edge.geometry.boxes import level_priors
from rtmdet_edge.geometry.rotated import distance2rbox, rbox_iou, rescale_rboxes
from rtmdet_edge.inference.postprocess import Detections, PostprocessConfig, level_rows, nms, select_candidates
from rtmdet_edge.inference.preprocess import LetterboxMeta

# mmrotate rotated_rtmdet test_cfg: nms_pre 2000, score 0.05, nms_rotated IoU 0.1, 2000 boxes (what DOTA mAP uses).
OFFICIAL = PostprocessConfig(score_thr=0.05, nms_pre=2000, iou_thr=0.1, max_per_img=2000)
# For deployment: fewer candidates and boxes, same IoU threshold (aerial objects are dense and rarely overlap).
DEPLOY = PostprocessConfig(score_thr=0.3, nms_pre=1000, iou_thr=0.1, max_per_img=300)
PRESETS = {"official": OFFICIAL, "deploy": DEPLOY}


def rotated_nms(rboxes: Tensor, scores: Tensor, iou_thr: float, max_keep: int = -1) -> Tensor:
    """Exact greedy NMS of [N, 5] rotated boxes (suppress when IoU > iou_thr); kept indices by score."""
    return nms(rboxes, scores, iou_thr, max_keep, iou_fn=rbox_iou)


def batched_rotated_nms(rboxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float, max_keep: int = -1) -> Tensor:
    """Class-aware rotated NMS by mmcv's offset trick: centres move by label * (max(x, y) + max(w, h) + 1), which is
    beyond any corner, so boxes of different classes never overlap."""
    if rboxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=rboxes.device)
    max_coordinate = rboxes[:, :2].max() + rboxes[:, 2:4].max()
    offsets = labels.to(rboxes) * (max_coordinate + 1)
    shifted = torch.cat([rboxes[:, :2] + offsets[:, None], rboxes[:, 2:]], 1)
    return rotated_nms(shifted, scores, iou_thr, max_keep)


def decode_rotated(
    outputs: dict[str, Sequence[Tensor]], image: int, priors_per_level: Sequence[Tensor], cfg: PostprocessConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Top candidates of one image over all levels -> (rboxes [K, 5] input pixels, scores [K], labels [K])."""
    all_scores, all_labels, all_boxes = [], [], []
    for cls, reg, ang, priors in zip(outputs["cls_scores"], outputs["bbox_preds"], outputs["angle_preds"], priors_per_level):
        scores, labels, keep = select_candidates(cls[image], cfg.score_thr, cfg.nms_pre)
        all_scores.append(scores)
        all_labels.append(labels)
        all_boxes.append(distance2rbox(priors[keep, :2], level_rows(reg[image], keep), level_rows(ang[image], keep)))
    return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)


def postprocess_rotated(
    outputs: dict[str, Sequence[Tensor]],
    metas: Sequence[LetterboxMeta],
    cfg: PostprocessConfig = OFFICIAL,
    strides: Sequence[int] = (8, 16, 32),
) -> list[Detections]:
    """Decode a batch of RTMDet-R raw outputs into one Detections per image: boxes [N, 5] (cx, cy, w, h, angle)."""
    cls_scores = outputs["cls_scores"]
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    priors_per_level = level_priors(sizes, strides, device=cls_scores[0].device)
    results = []
    for i, meta in enumerate(metas):
        boxes, scores, labels = decode_rotated(outputs, i, priors_per_level, cfg)
        w_scale, h_scale = meta.scale_factor
        boxes = rescale_rboxes(boxes, 1.0 / w_scale, 1.0 / h_scale)
        if cfg.min_bbox_size >= 0:
            valid = (boxes[:, 2] > cfg.min_bbox_size) & (boxes[:, 3] > cfg.min_bbox_size)
            boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_rotated_nms(boxes, scores, labels, cfg.iou_thr, cfg.max_per_img)
        results.append(Detections(boxes[keep], scores[keep], labels[keep]))
    return results
