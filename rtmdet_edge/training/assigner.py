"""DynamicSoftLabelAssigner: which prior learns which ground-truth object (RTMDET_FACTS.md 1.5, 3.2).

A re-implementation of mmdet 3.3.0 `DynamicSoftLabelAssigner` that reproduces its assignment prior for prior, float32
quirks included (see fixtures/official/*/loss_seed0.json, section "quirks"):

- candidates are the priors whose point lies strictly inside at least one GT; every candidate is scored against every
  GT, including GTs it is not inside;
- cost = soft-label classification cost + iou_weight * -log(IoU + 1e-7) + 10 ** (distance/stride - soft_center_radius);
  the centre term is float32 and overflows to inf for far priors, which is kept (such a prior is only chosen when a GT
  has fewer finite-cost candidates than its k);
- dynamic k = max(1, int(sum of the top-min(13, #candidates) IoUs)), int() truncating; each GT takes its k cheapest
  candidates; a prior claimed by several GTs keeps the GT with the lowest cost over *all* GTs (argmin of its cost row);
- the IoU uses the detached decoded predictions, so the assignment follows the current weights.

The box geometry is injected (pairwise IoU, point-in-box test, box centre) so the rotated head can reuse the matching
with rotated boxes, and the Ins head can pass mask centres of mass instead of box centres.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rtmdet_edge.geometry.boxes import box_centers, box_iou, points_in_boxes

INF = 100000000.0  # official constant: max_overlaps of unassigned priors is -INF
EPS = 1.0e-7  # official constant inside -log(IoU + EPS)


@dataclass
class AssignResult:
    """Assignment of one image's P priors to its G ground-truth objects.

    gt_inds: [P] int64, 0 = background, k = the k-th GT (1-based), as mmdet.
    labels: [P] int64 class of the assigned GT, -1 for background.
    max_overlaps: [P] float32 IoU of the prior's decoded prediction with its assigned GT (the soft target); -1e8 for
        every other prior, 0 everywhere when the image has no GT or no candidate.
    candidates: [P] bool, priors strictly inside at least one GT (the rows of `cost`).
    cost: [V, G] cost matrix of the V candidates (None when there was nothing to match).
    pairwise_ious: [V, G] IoU of the candidates' predictions with every GT (None likewise).
    dynamic_ks: [G] int32 number of priors each GT asked for (None likewise).
    """

    gt_inds: Tensor
    labels: Tensor
    max_overlaps: Tensor
    candidates: Tensor
    cost: Tensor | None = None
    pairwise_ious: Tensor | None = None
    dynamic_ks: Tensor | None = None

    @property
    def pos_mask(self) -> Tensor:
        return self.gt_inds > 0

    @property
    def num_pos(self) -> int:
        return int(self.pos_mask.sum())


PairwiseIoU = Callable[[Tensor, Tensor], Tensor]  # [V, box] x [G, box] -> [V, G]
PointsInBoxes = Callable[[Tensor, Tensor], Tensor]  # [P, 2] x [G, box] -> [P, G] bool
BoxCenters = Callable[[Tensor], Tensor]  # [G, box] -> [G, 2]


class DynamicSoftLabelAssigner:
    """No-grad prior-to-GT matcher of RTMDet.

    Args:
        topk: number of best IoUs summed to get each GT's dynamic k (official 13).
        iou_weight: weight of the -log(IoU) cost (official 3.0).
        soft_center_radius: the centre cost is 10 ** (distance_in_strides - radius) (official 3.0).
        iou_fn: pairwise IoU of predictions and GTs; xyxy box_iou (mmdet BboxOverlaps2D arithmetic) by default.
        inside_fn: strict point-in-box test deciding the candidates.
        center_fn: GT centres for the distance cost.
    """

    def __init__(
        self,
        topk: int = 13,
        iou_weight: float = 3.0,
        soft_center_radius: float = 3.0,
        iou_fn: PairwiseIoU = box_iou,
        inside_fn: PointsInBoxes = points_in_boxes,
        center_fn: BoxCenters = box_centers,
    ) -> None:
        self.topk = topk
        self.iou_weight = iou_weight
        self.soft_center_radius = soft_center_radius
        self.iou_fn = iou_fn
        self.inside_fn = inside_fn
        self.center_fn = center_fn

    @torch.no_grad()
    def assign(
        self,
        priors: Tensor,
        cls_logits: Tensor,
        pred_boxes: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_centers: Tensor | None = None,
    ) -> AssignResult:
        """Assign one image.

        Args:
            priors: [P, 4] (x, y, stride_w, stride_h), see boxes.make_priors.
            cls_logits: [P, C] classification logits (not sigmoid).
            pred_boxes: [P, 4] decoded predictions, xyxy input pixels (any box format iou_fn accepts).
            gt_boxes: [G, 4] ground truth in the same format, G may be 0.
            gt_labels: [G] int64 class indices.
            gt_centers: [G, 2] optional centres (the Ins head uses mask centres of mass); default center_fn(gt_boxes).
        """
        num_priors = priors.shape[0]
        num_gt = gt_boxes.shape[0]
        device = priors.device
        gt_inds = torch.zeros(num_priors, dtype=torch.long, device=device)
        background_labels = torch.full((num_priors,), -1, dtype=torch.long, device=device)

        candidates = (
            self.inside_fn(priors[:, :2], gt_boxes).any(dim=1)
            if num_gt > 0
            else torch.zeros(num_priors, dtype=torch.bool, device=device)
        )
        num_valid = int(candidates.sum())
        if num_gt == 0 or num_valid == 0:
            # Official early return: all background and max_overlaps 0 (not -INF) on this path.
            zeros = pred_boxes.new_zeros(num_priors, dtype=torch.float32)
            return AssignResult(gt_inds, background_labels, zeros, candidates)

        valid_priors = priors[candidates]
        valid_logits = cls_logits[candidates].float()
        valid_boxes = pred_boxes[candidates]
        centers = self.center_fn(gt_boxes) if gt_centers is None else gt_centers

        strides = valid_priors[:, 2]
        distance = (valid_priors[:, None, :2] - centers[None, :, :]).pow(2).sum(-1).sqrt() / strides[:, None]
        # float32 on purpose: overflows to inf beyond ~41.5 strides, exactly like the official code.
        soft_center_prior = torch.pow(10, distance - self.soft_center_radius)

        pairwise_ious = self.iou_fn(valid_boxes, gt_boxes)  # [V, G]
        iou_cost = -torch.log(pairwise_ious + EPS) * self.iou_weight

        soft_cls_cost = _soft_cls_cost(valid_logits, gt_labels, pairwise_ious)
        cost = soft_cls_cost + iou_cost + soft_center_prior  # [V, G]

        dynamic_ks, matched_gt, fg = self._dynamic_k_matching(cost, pairwise_ious)

        valid_idx = candidates.nonzero().squeeze(1)
        pos_idx = valid_idx[fg]
        gt_inds[pos_idx] = matched_gt + 1
        labels = background_labels
        labels[pos_idx] = gt_labels[matched_gt].long()
        max_overlaps = torch.full((num_priors,), -INF, dtype=torch.float32, device=device)
        max_overlaps[pos_idx] = pairwise_ious[fg, matched_gt].float()
        return AssignResult(gt_inds, labels, max_overlaps, candidates, cost, pairwise_ious, dynamic_ks)

    def _dynamic_k_matching(self, cost: Tensor, pairwise_ious: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SimOTA-style dynamic-k matching on the [V, G] candidate cost matrix.

        Returns (dynamic_ks [G] int32, matched GT index [num_fg] int64, fg mask [V] bool).
        """
        num_valid, num_gt = cost.shape
        candidate_topk = min(self.topk, num_valid)
        topk_ious, _ = torch.topk(pairwise_ious, candidate_topk, dim=0)
        # .int() truncates, as the official code does; summing the sorted top-k in the same order keeps the sum bitwise.
        dynamic_ks = torch.clamp(topk_ious.sum(0).int(), min=1)

        # All GTs at once: take the max k cheapest per column, then keep each GT's first k_g (topk is sorted).
        k_max = int(dynamic_ks.max())
        _, pos_rows = torch.topk(cost, k_max, dim=0, largest=False)  # [k_max, G]
        keep = torch.arange(k_max, device=cost.device)[:, None] < dynamic_ks[None, :]
        cols = torch.arange(num_gt, device=cost.device)[None, :].expand(k_max, num_gt)
        matching = torch.zeros_like(cost, dtype=torch.bool)
        matching[pos_rows[keep], cols[keep]] = True

        # A prior claimed by several GTs keeps the argmin of its whole cost row (official: over all GTs).
        multiple = matching.sum(1) > 1
        if multiple.any():
            best_gt = cost[multiple].argmin(dim=1)
            rows = matching[multiple]
            rows.zero_()
            rows[torch.arange(rows.shape[0], device=cost.device), best_gt] = True
            matching[multiple] = rows
        fg = matching.any(dim=1)
        matched_gt = matching[fg].to(torch.uint8).argmax(dim=1)
        return dynamic_ks, matched_gt, fg

    __call__ = assign

def _soft_cls_cost(logits: Tensor, gt_labels: Tensor, pairwise_ious: Tensor) -> Tensor:
    """Sum over classes of BCE(logit, onehot*IoU) * |onehot*IoU - sigmoid(logit)|^2, [V, C] x [G] x [V, G] -> [V, G].

    The official code materialises a [V, G, C] tensor. Only the GT's own class depends on the GT, so this sums the
    background term once per prior and swaps the label column: O(V*C + V*G) memory instead of O(V*G*C) (crowded
    640 images would otherwise need gigabytes), equal to the official value within float32 rounding.
    """
    probs = logits.sigmoid()
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * probs.pow(2)
    neg_sum = neg.sum(dim=1, keepdim=True)  # [V, 1]
    labels = gt_labels.long()
    label_logits = logits[:, labels]  # [V, G]
    label_probs = probs[:, labels]
    pos = F.binary_cross_entropy_with_logits(label_logits, pairwise_ious, reduction="none") * (
        (pairwise_ious - label_probs).abs().pow(2)
    )
    return neg_sum - neg[:, labels] + pos
