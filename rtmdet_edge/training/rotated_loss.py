"""RTMDet-R losses: the detection criterion with rotated boxes (mmrotate 1.x RotatedRTMDetHead.loss_by_feat).

What changes against RTMDetCriterion (everything else, QFL and the normalisation included, is shared):
- decode: (l, t, r, b) distances turned by the raw angle output around the prior (DistanceAnglePointCoder, le90 angle
  wrap without a w/h swap), [B, P, 5];
- assigner: DynamicSoftLabelAssigner with the rotated IoU (w and h clamped at 1e-3 first, as mmrotate's
  rbbox_overlaps), candidates strictly inside a rotated GT with a 0.01 px margin, GT centre = (cx, cy);
- box loss: RotatedIoULoss(mode="linear", loss_weight=2): 1 - max(IoU, 1e-6), IoU differentiable (polygon clipping);
- targets: the le90-regularised GT rboxes (w >= h).
There is no angle loss (loss_angle=None for RTMDet-R): the angle learns through the rotated IoU only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rtmdet_edge.geometry.rotated import distance2rbox, points_in_rboxes, rbox_centers, rbox_iou, rbox_iou_aligned, regularize_le90
from rtmdet_edge.training.assigner import DynamicSoftLabelAssigner
from rtmdet_edge.training.loss import FLT_EPSILON, RTMDetCriterion


def assigner_iou(pred_rboxes: Tensor, gt_rboxes: Tensor) -> Tensor:
    """mmrotate RBboxOverlaps2D: pairwise rotated IoU with w, h clamped at 1e-3 (tiny boxes otherwise misbehave)."""
    return rbox_iou(pred_rboxes, gt_rboxes, min_size=1e-3)


def build_rotated_assigner(topk: int = 13) -> DynamicSoftLabelAssigner:
    return DynamicSoftLabelAssigner(
        topk=topk, iou_fn=assigner_iou, inside_fn=points_in_rboxes, center_fn=rbox_centers
    )


class RotatedIoULoss(nn.Module):
    """loss_weight * sum(weight * (1 - clamp(IoU, eps))) / (1 + FLT_EPSILON) over matching [N, 5] rows (linear mode)."""

    def __init__(self, loss_weight: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(self, pred_rboxes: Tensor, target_rboxes: Tensor, weight: Tensor) -> Tensor:
        if not torch.any(weight > 0):
            return (pred_rboxes * weight.unsqueeze(1)).sum()  # official early exit: a zero that keeps the graph
        loss = 1 - rbox_iou_aligned(pred_rboxes, target_rboxes).clamp(min=self.eps)
        return self.loss_weight * (loss * weight).sum() / (1.0 + FLT_EPSILON)


class RotatedRTMDetCriterion(RTMDetCriterion):
    """Assign priors to rotated ground truth and compute RTMDet-R's losses.

    targets per image: "rboxes" [N, 5] (cx, cy, w, h, angle) input pixels (or "boxes" with 5 columns), "labels" [N].
    Returns "loss_cls", "loss_bbox" (sums of the per-level terms) and "num_pos", as RTMDetCriterion.
    """

    box_dim = 5

    def __init__(self, num_classes: int, strides: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__(num_classes, strides, assigner=build_rotated_assigner(), box_loss=RotatedIoULoss())

    def gt_tensors(self, target: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
        rboxes = target["rboxes"] if "rboxes" in target else target["boxes"]
        rboxes = torch.as_tensor(rboxes, dtype=torch.float32, device=device).reshape(-1, 5)
        labels = torch.as_tensor(target["labels"], dtype=torch.long, device=device).reshape(-1)
        if rboxes.shape[0] != labels.shape[0]:
            raise ValueError(f"target has {rboxes.shape[0]} rotated boxes but {labels.shape[0]} labels")
        return regularize_le90(rboxes), labels

    def decode(self, outputs: dict[str, list[Tensor]], priors: Tensor) -> tuple[Tensor, Tensor]:
        """Flat logits [B, P, C] and decoded rotated boxes [B, P, 5] (float32, no clamp)."""
        cls_scores, bbox_preds, angle_preds = outputs["cls_scores"], outputs["bbox_preds"], outputs["angle_preds"]
        num_images = cls_scores[0].shape[0]
        logits = torch.cat(
            [s.float().permute(0, 2, 3, 1).reshape(num_images, -1, self.num_classes) for s in cls_scores], 1
        )
        distances = torch.cat([d.float().permute(0, 2, 3, 1).reshape(num_images, -1, 4) for d in bbox_preds], 1)
        angles = torch.cat([a.float().permute(0, 2, 3, 1).reshape(num_images, -1, 1) for a in angle_preds], 1)
        return logits, distance2rbox(priors[None, :, :2], distances, angles)
