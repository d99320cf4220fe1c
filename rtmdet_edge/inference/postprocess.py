"""Raw per-level outputs -> detections in original-image pixels, exactly as the official RTMDetHead.predict_by_feat.

Per image and level: sigmoid scores [HW, C], keep (prior, class) pairs above score_thr, the top nms_pre of them;
decode distances at offset-0 priors; clip to the padded input (mmcv Pad overwrites img_shape, RTMDET_FACTS.md 8);
divide by the scale factor; drop boxes of zero width/height (min_bbox_size=0 means w > 0 and h > 0); class-aware NMS;
keep max_per_img. NMS is written here in vectorised torch (no torchvision, no mmcv).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rtmdet_edge.geometry.boxes import box_iou, distance2bbox, level_priors
from rtmdet_edge.inference.preprocess import LetterboxMeta


@dataclass(frozen=True)
class PostprocessConfig:
    score_thr: float = 0.001
    nms_pre: int = 30000
    iou_thr: float = 0.65
    max_per_img: int = 300
    min_bbox_size: float = 0.0


# The official test_cfg (mmdet 3.x, after PR#9494): what COCO mAP is reported with.
OFFICIAL = PostprocessConfig()
# The README's suggestion for deployment: far fewer candidates, so decode + NMS cost little next to the network.
DEPLOY = PostprocessConfig(score_thr=0.3, nms_pre=1000, iou_thr=0.65, max_per_img=100)
PRESETS = {"official": OFFICIAL, "deploy": DEPLOY}


@dataclass
class Detections:
    """Detections of one image: boxes [N,4] xyxy original-image pixels, scores [N], labels [N] (0-based);
    masks [N,H,W] bool in original-image pixels for instance-segmentation models, else None."""

    boxes: Tensor | np.ndarray
    scores: Tensor | np.ndarray
    labels: Tensor | np.ndarray
    masks: Tensor | np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def numpy(self) -> Detections:
        def conv(x: Tensor | np.ndarray) -> np.ndarray:
            return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)

        masks = None if self.masks is None else conv(self.masks)
        return Detections(conv(self.boxes), conv(self.scores), conv(self.labels), masks)


def nms(
    boxes: Tensor,
    scores: Tensor,
    iou_thr: float,
    max_keep: int = -1,
    block: int | None = None,
    iou_fn: Callable[[Tensor, Tensor], Tensor] = box_iou,
) -> Tensor:
    """Exact greedy NMS (suppress when IoU > iou_thr), vectorised in blocks; returns kept indices by score.

    iou_fn is the pairwise IoU of the box format (xyxy box_iou; rotated NMS passes the rotated IoU).

    Candidates are visited in descending score order in blocks: a block is first suppressed by every box kept so far,
    then resolved internally by iterating keep_j = alive_j and not any(i < j kept with IoU_ij > thr) to its fixed point,
    which is exactly greedy NMS (Cluster-NMS, Zheng et al. 2021). It stops as soon as max_keep boxes are kept.
    The default block (128 when at most 128 boxes are kept, else 256) was the fastest at 640 on a crowded image
    with ~18k candidates: larger blocks pay for IoU matrices and fixed-point passes that max_keep never needs.
    """
    if block is None:
        block = 128 if 0 < max_keep <= 128 else 256
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    kept: list[Tensor] = []
    kept_boxes = boxes[:0]
    num_kept = 0
    for start in range(0, len(order), block):
        b = boxes[start : start + block]
        alive = torch.ones(len(b), dtype=torch.bool, device=b.device)
        if num_kept:
            alive = ~(iou_fn(b, kept_boxes) > iou_thr).any(dim=1)
        over = (iou_fn(b, b) > iou_thr).triu(diagonal=1)  # over[i, j]: i (higher score) would suppress j
        keep = alive.clone()
        while True:
            new_keep = alive & ~(over & keep[:, None]).any(dim=0)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        idx = torch.nonzero(keep).squeeze(1)
        if max_keep > 0:
            idx = idx[: max_keep - num_kept]
        kept.append(idx + start)
        kept_boxes = torch.cat([kept_boxes, b[idx]])
        num_kept += len(idx)
        if 0 < max_keep <= num_kept:
            break
    return order[torch.cat(kept)]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float, max_keep: int = -1) -> Tensor:
    """Class-aware NMS with mmcv's coordinate-offset trick: boxes of different classes can never overlap.

    The offsets are applied as mmcv does (label * (max coordinate + 1)) so borderline IoUs round the same way.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_thr, max_keep)


def select_candidates(logits: Tensor, score_thr: float, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Class logits of one image and level [C, H, W] -> (scores, labels, prior indices) of the top-k (prior, class)
    pairs whose sigmoid is above score_thr, by score: mmdet's filter_scores_and_topk on sigmoid(logits).

    The sigmoid runs only on pairs whose logit passes the threshold's logit (less a margin far above fp32 rounding,
    then the exact `sigmoid > score_thr` test): at 640 with the deploy settings sigmoid over all 8400 x 80 pairs and a
    second nonzero over them cost more than the rest of decode + NMS together (benchmarks/e2e_overhead.py).
    """
    num_classes = logits.shape[0]
    if score_thr <= 0.0:
        flat = logits.permute(1, 2, 0).reshape(-1)  # row-major (prior, class) like mmdet: the order decides ties
        pair = torch.arange(flat.numel(), device=flat.device)
    else:
        bound = math.log(score_thr) - math.log1p(-score_thr) - 1e-2 if score_thr < 1.0 else math.inf
        pair, flat = _pairs_above(logits.detach().reshape(num_classes, -1), bound, topk)
    scores = flat.float().sigmoid()  # flat[i] is the logit of pair[i] on both branches
    exact = scores > score_thr
    if not bool(exact.all()):  # usually all pass (the margin is tiny): skip two masked copies then
        scores, pair = scores[exact], pair[exact]
    if len(scores) > topk:
        # partial selection is cheaper than mmdet's full sort; which of the pairs tied at the cut it keeps is the
        # kernel's choice (INT8 outputs take at most 256 values, so ties are common there)
        scores, order = scores.topk(topk, sorted=True)
    else:
        scores, order = scores.sort(descending=True)
    pair = pair[order]
    prior = torch.div(pair, num_classes, rounding_mode="floor")
    return scores, pair - prior * num_classes, prior


def _pairs_above(by_class: Tensor, bound: float, topk: int | None = None) -> tuple[Tensor, Tensor]:
    """Logits [C, HW] -> (flat (prior, class) indices in row-major order, their logits) of the logits above bound.

    The priors with any class above the bound come first, then only their rows are searched, so the [HW, C] copy a
    permute makes is never built. On the CPU this runs in numpy: at 640 its comparison and nonzero are ~4x faster
    than torch's on the single thread post-processing gets next to another runtime (benchmarks/e2e_overhead.py).

    topk: the caller keeps only the top-k pairs by sigmoid score. When there are more priors than k, the k-th best
    prior's best logit t is a lower bound of the k-th best pair's logit (those k priors hold k pairs at least that
    high), so the bound rises to just below t (a few float32 roundings of the score below, so score ties stay): an
    INT8 model of a random-weight detector puts ~46k pairs above the deploy threshold at stride 8, ~1k survive this.
    """
    num_classes, hw = by_class.shape
    if by_class.device.type == "cpu" and by_class.dtype in (torch.float32, torch.float64):
        a = by_class.numpy()
        best = a.max(axis=0)  # each prior's best logit
        if topk is not None and 0 < topk < hw:
            bound = max(bound, _logit_below(float(np.partition(best, hw - topk)[hw - topk])))
            # few hits now: find them in the class-major layout the network writes, then sort them row-major
            hit = np.flatnonzero(a > bound)  # class * HW + prior
            cls, prior = np.divmod(hit, hw)
            pair = prior * num_classes + cls
            pair.sort()  # sorting the values and reading the logits back costs less than argsort + two gathers
            prior, cls = np.divmod(pair, num_classes)
            return torch.from_numpy(pair), torch.from_numpy(a[cls, prior])
        rows = np.flatnonzero(best > bound)
        hit = np.flatnonzero(a[:, rows].T > bound)  # row-major over the passing priors
        k, cls = np.divmod(hit, num_classes)
        return torch.from_numpy(rows[k] * num_classes + cls), torch.from_numpy(a[cls, rows[k]])
    rows = torch.nonzero((by_class > bound).any(dim=0)).squeeze(1)
    sub = by_class[:, rows].t().reshape(-1)
    hit = torch.nonzero(sub > bound).squeeze(1)
    k = torch.div(hit, num_classes, rounding_mode="floor")
    return rows[k] * num_classes + (hit - k * num_classes), sub[hit]


def _logit_below(t: float) -> float:
    """A logit under t by more than float32 sigmoid rounding: every x whose float32 sigmoid ties or beats t's is above
    it (near 1 one float32 step of the score spans a wide range of logits, hence the margin in score space)."""
    score = float(torch.tensor(t, dtype=torch.float32).sigmoid())
    low = score * (1.0 - 8 * float(np.finfo(np.float32).eps))
    return math.log(low) - math.log1p(-low) if 0.0 < low < 1.0 else -math.inf


def level_rows(x: Tensor, rows: Tensor) -> Tensor:
    """One image's map [D, H, W] -> the float rows [K, D] of the given flat positions (no copy of the whole map)."""
    return x.reshape(x.shape[0], -1)[:, rows].t().float()


def postprocess(
    outputs: dict[str, Sequence[Tensor]],
    metas: Sequence[LetterboxMeta],
    cfg: PostprocessConfig = OFFICIAL,
    strides: Sequence[int] = (8, 16, 32),
) -> list[Detections]:
    """Decode a batch of raw outputs into one Detections per image (original-image pixels)."""
    cls_scores, bbox_preds = outputs["cls_scores"], outputs["bbox_preds"]
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    device = cls_scores[0].device
    priors_per_level = level_priors(sizes, strides, device=device)
    results = []
    for i, meta in enumerate(metas):
        all_scores, all_labels, all_points, all_dists = [], [], [], []
        for cls, reg, priors in zip(cls_scores, bbox_preds, priors_per_level):
            scores, labels, keep = select_candidates(cls[i], cfg.score_thr, cfg.nms_pre)
            all_scores.append(scores)
            all_labels.append(labels)
            all_points.append(priors[keep, :2])
            all_dists.append(level_rows(reg[i], keep))
        scores = torch.cat(all_scores)
        labels = torch.cat(all_labels)
        # one decode for all levels: elementwise, so the same boxes as per level, at a third of the op calls
        boxes = distance2bbox(torch.cat(all_points), torch.cat(all_dists), max_shape=meta.input_shape)
        w_scale, h_scale = meta.scale_factor
        boxes = boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
        if cfg.min_bbox_size >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = (wh > cfg.min_bbox_size).all(dim=1)
            if not bool(valid.all()):
                boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels, cfg.iou_thr, cfg.max_per_img)
        results.append(Detections(boxes[keep], scores[keep], labels[keep]))
    return results
