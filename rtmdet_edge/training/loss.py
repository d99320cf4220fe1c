"""RTMDet training losses: QualityFocalLoss, GIoU loss and the criterion that assigns and weighs them (FACTS 3.2).

Reproduces mmdet 3.3.0 `RTMDetHead.loss_by_feat` (checked against fixtures/official/*/loss_seed0.npz):

- per level: QFL summed over every prior of every image, GIoU over the positives weighted by their soft score, each
  "averaged" with avg_factor=1.0, which mmdet's weight_reduce_loss turns into sum / (1 + FLT_EPSILON);
- then every level is divided by the batch-wide avg factor max(1, reduce_mean(sum of soft scores)) taken as a python
  float (no gradient through it); the totals are the SUM over levels (mmdet parse_losses sums the per-level list).

The criterion is split so other heads can extend it without rewriting: `decode` (raw outputs -> flat scores and boxes),
`assign` (one AssignResult per image, through a pluggable assigner), `get_targets` and `level_losses` (the detection
terms). The Ins head adds its mask Dice term after the detection terms (outputs kernel_preds/mask_feat, targets masks);
the rotated head swaps the box decoder, the assigner's IoU and the box loss for rotated ones ([N, 5] boxes, outputs
angle_preds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rtmdet_edge.training.assigner import AssignResult, DynamicSoftLabelAssigner
from rtmdet_edge.geometry.boxes import aligned_giou, distance2bbox, make_priors

# mmdet weight_reduce_loss divides by (avg_factor + torch.finfo(torch.float32).eps); with avg_factor=1.0 per level the
# loss is sum / (1 + 1.1920929e-07). Kept for bitwise-close parity with official numbers.
FLT_EPSILON = torch.finfo(torch.float32).eps


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Per-prior QFL (Generalized Focal Loss, arXiv 2006.04388), summed over classes.

    Args:
        logits: [N, C] classification logits.
        labels: [N] int64 class of each prior; C (or any value outside [0, C)) for background.
        scores: [N] soft target (IoU) of the positive's class; ignored for background.

    Every class gets BCE(logit, 0) * sigmoid^beta; a positive's own class gets BCE(logit, score) * |score-sigmoid|^beta.
    The modulating factor is not detached (as official).
    """
    probs = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * probs.pow(beta)
    num_classes = logits.shape[1]
    pos = ((labels >= 0) & (labels < num_classes)).nonzero().squeeze(1)
    if pos.numel() > 0:
        pos_labels = labels[pos].long()
        pos_logits = logits[pos, pos_labels]
        pos_scores = scores[pos]
        modulating = (pos_scores - probs[pos, pos_labels]).abs().pow(beta)
        loss = loss.clone()  # index_put over the background term, as official (its gradient there is dropped)
        pos_bce = F.binary_cross_entropy_with_logits(pos_logits, pos_scores, reduction="none")
        loss[pos, pos_labels] = pos_bce * modulating
    return loss.sum(dim=1)


def _sum_with_unit_avg_factor(loss: Tensor, weight: Tensor) -> Tensor:
    """mmdet weight_reduce_loss(loss, weight, reduction="mean", avg_factor=1.0)."""
    return (loss * weight).sum() / (1.0 + FLT_EPSILON)


class QualityFocalLoss(nn.Module):
    """QFL with sigmoid, as used by RTMDet (beta 2, weight 1). Returns sum(per_prior * weight) / (1 + FLT_EPSILON)."""

    def __init__(self, beta: float = 2.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, labels: Tensor, scores: Tensor, weight: Tensor) -> Tensor:
        """logits [N, C], labels [N] (C = background), scores [N], weight [N] -> scalar."""
        per_prior = quality_focal_loss(logits, labels, scores, self.beta)
        return self.loss_weight * _sum_with_unit_avg_factor(per_prior, weight)


class GIoULoss(nn.Module):
    """loss_weight * sum(weight * (1 - GIoU)) / (1 + FLT_EPSILON) over matching xyxy rows (official: 2, eps 1e-6)."""

    def __init__(self, loss_weight: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(self, pred_boxes: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor:
        """pred_boxes [N, 4], target_boxes [N, 4] xyxy, weight [N] -> scalar."""
        if not torch.any(weight > 0):
            # Official early exit: a zero that keeps the graph, without loss_weight or normalisation.
            return (pred_boxes * weight.unsqueeze(1)).sum()
        loss = 1 - aligned_giou(pred_boxes, target_boxes, eps=self.eps)
        return self.loss_weight * _sum_with_unit_avg_factor(loss, weight)


def reduce_mean(tensor: Tensor) -> Tensor:
    """Mean over ranks (mmdet reduce_mean); identity without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


@dataclass
class DetectionTargets:
    """Per-prior training targets of a batch, priors flattened over levels (level 0 first).

    labels: [B, P] int64, num_classes for background. label_weights: [B, P] float (1 everywhere: pos_weight=-1).
    box_targets: [B, P, 4] assigned GT box, 0 for background. scores: [B, P] soft target = IoU of the positive's
    prediction with its GT (0 for background); it is also the positive's box-loss weight.
    """

    labels: Tensor
    label_weights: Tensor
    box_targets: Tensor
    scores: Tensor
    assignments: list[AssignResult]

    @property
    def pos_mask(self) -> Tensor:
        return torch.stack([a.pos_mask for a in self.assignments])


class RTMDetCriterion(nn.Module):
    """Assign priors to ground truth and compute RTMDet's detection losses.

    Args:
        num_classes: number of classes of the classification head.
        strides: prior stride of each level (8, 16, 32).
        assigner: DynamicSoftLabelAssigner(topk=13, iou_weight=3, soft_center_radius=3) by default.
        cls_loss: QualityFocalLoss(beta=2, loss_weight=1) by default.
        box_loss: GIoULoss(loss_weight=2, eps=1e-6) by default.
    """

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        assigner: DynamicSoftLabelAssigner | None = None,
        cls_loss: nn.Module | None = None,
        box_loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.assigner = assigner if assigner is not None else DynamicSoftLabelAssigner()
        self.cls_loss = cls_loss if cls_loss is not None else QualityFocalLoss()
        self.box_loss = box_loss if box_loss is not None else GIoULoss()

    def forward(self, outputs: dict[str, list[Tensor]], targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Losses of a batch.

        Args:
            outputs: the model's dict, "cls_scores" [L x [B, C, H_l, W_l]] logits and
                "bbox_preds" [L x [B, 4, H_l, W_l]] (l, t, r, b) distances in input pixels.
            targets: one dict per image: "boxes" [N, 4] xyxy input pixels, "labels" [N] int64. An optional
                "ignore_boxes" key is accepted and ignored (the official RTMDet recipe never uses ignore regions).

        Returns:
            "loss_cls", "loss_bbox": scalars, each the sum of its per-level terms (add them for the total);
            "num_pos": number of positive priors in the batch (detached, for logging; not a loss).
        """
        levels = self.level_losses(outputs, targets)
        losses = {
            "loss_cls": torch.stack(levels["loss_cls"]).sum(),
            "loss_bbox": torch.stack(levels["loss_bbox"]).sum(),
        }
        # Heads with more outputs add their terms here (Ins: "loss_mask" from kernel_preds/mask_feat and the same
        # assignment, normalised by its own avg factor).
        losses["num_pos"] = levels["num_pos"]
        return losses

    box_dim = 4  # values per box: xyxy here, (cx, cy, w, h, angle) in the rotated criterion

    def gt_tensors(self, target: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
        """Ground-truth boxes and labels of one image as tensors (the rotated criterion reads its rboxes)."""
        return _gt_tensors(target, device)

    def priors(self, cls_scores: Sequence[Tensor]) -> Tensor:
        """[P, 4] (x, y, stride, stride) priors for the feature map sizes of cls_scores."""
        sizes = [(int(s.shape[-2]), int(s.shape[-1])) for s in cls_scores]
        return make_priors(sizes, self.strides, device=cls_scores[0].device, dtype=torch.float32)

    def decode(self, outputs: dict[str, list[Tensor]], priors: Tensor) -> tuple[Tensor, Tensor]:
        """Flatten logits to [B, P, C] and decode distances to [B, P, 4] xyxy boxes (no clamp, as official).

        Computed in float32 even under autocast: the soft-score targets and the cost use float32 in the reference.
        """
        cls_scores, bbox_preds = outputs["cls_scores"], outputs["bbox_preds"]
        num_images = cls_scores[0].shape[0]
        logits = torch.cat(
            [s.float().permute(0, 2, 3, 1).reshape(num_images, -1, self.num_classes) for s in cls_scores], 1
        )
        distances = torch.cat([d.float().permute(0, 2, 3, 1).reshape(num_images, -1, 4) for d in bbox_preds], 1)
        return logits, distance2bbox(priors[None, :, :2], distances)

    @torch.no_grad()
    def assign(
        self, priors: Tensor, logits: Tensor, boxes: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> list[AssignResult]:
        """One AssignResult per image, from detached flat logits [B, P, C] and decoded boxes [B, P, 4]."""
        results = []
        for i, target in enumerate(targets):
            gt_boxes, gt_labels = self.gt_tensors(target, priors.device)
            results.append(self.assigner.assign(priors, logits[i].detach(), boxes[i].detach(), gt_boxes, gt_labels))
        return results

    @torch.no_grad()
    def get_targets(
        self, priors: Tensor, logits: Tensor, boxes: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> DetectionTargets:
        assignments = self.assign(priors, logits, boxes, targets)
        num_images, num_priors = logits.shape[:2]
        device = logits.device
        labels = torch.full((num_images, num_priors), self.num_classes, dtype=torch.long, device=device)
        box_targets = torch.zeros((num_images, num_priors, self.box_dim), dtype=torch.float32, device=device)
        scores = torch.zeros((num_images, num_priors), dtype=torch.float32, device=device)
        for i, (result, target) in enumerate(zip(assignments, targets)):
            pos = result.pos_mask
            if pos.any():
                gt_boxes, _ = self.gt_tensors(target, device)
                labels[i, pos] = result.labels[pos]
                box_targets[i, pos] = gt_boxes[result.gt_inds[pos] - 1]
                scores[i, pos] = result.max_overlaps[pos]
        label_weights = torch.ones((num_images, num_priors), dtype=torch.float32, device=device)
        return DetectionTargets(labels, label_weights, box_targets, scores, assignments)

    def level_losses(self, outputs: dict[str, list[Tensor]], targets: Sequence[dict[str, Tensor]]) -> dict:
        """The official per-level terms: {"loss_cls": [L], "loss_bbox": [L], "cls_avg_factor": float,
        "bbox_avg_factor": float, "num_pos": Tensor, "targets": DetectionTargets}."""
        cls_scores = outputs["cls_scores"]
        if len(targets) != cls_scores[0].shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {cls_scores[0].shape[0]} images")
        priors = self.priors(cls_scores)
        logits, boxes = self.decode(outputs, priors)
        det_targets = self.get_targets(priors, logits, boxes, targets)
        pos_mask = det_targets.pos_mask

        level_sizes = [int(s.shape[-2] * s.shape[-1]) for s in cls_scores]
        losses_cls, losses_bbox, cls_factors, bbox_factors = [], [], [], []
        start = 0
        for size in level_sizes:
            sl = slice(start, start + size)
            start += size
            # Image-major flattening within a level, as official loss_by_feat_single.
            level_logits = logits[:, sl].reshape(-1, self.num_classes)
            level_boxes = boxes[:, sl].reshape(-1, self.box_dim)
            level_labels = det_targets.labels[:, sl].reshape(-1)
            level_scores = det_targets.scores[:, sl].reshape(-1)
            level_weights = det_targets.label_weights[:, sl].reshape(-1)
            level_pos = pos_mask[:, sl].reshape(-1)

            losses_cls.append(self.cls_loss(level_logits, level_labels, level_scores, level_weights))
            cls_factors.append(level_scores.sum())
            if level_pos.any():
                pos_weight = level_scores[level_pos]
                box_targets = det_targets.box_targets[:, sl].reshape(-1, self.box_dim)[level_pos]
                losses_bbox.append(self.box_loss(level_boxes[level_pos], box_targets, pos_weight))
                bbox_factors.append(pos_weight.sum())
            else:
                losses_bbox.append(level_boxes.sum() * 0)
                bbox_factors.append(level_boxes.new_tensor(0.0))

        # Python floats from .item(): no gradient flows through the normalisation (official).
        cls_avg_factor = reduce_mean(sum(cls_factors)).clamp_(min=1).item()
        bbox_avg_factor = reduce_mean(sum(bbox_factors)).clamp_(min=1).item()
        return {
            "loss_cls": [loss / cls_avg_factor for loss in losses_cls],
            "loss_bbox": [loss / bbox_avg_factor for loss in losses_bbox],
            "cls_avg_factor": cls_avg_factor,
            "bbox_avg_factor": bbox_avg_factor,
            "num_pos": pos_mask.sum().detach().float(),
            "targets": det_targets,
        }


def _gt_tensors(target: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
    labels = torch.as_tensor(target["labels"], dtype=torch.long, device=device).reshape(-1)
    if boxes.shape[0] != labels.shape[0]:
        raise ValueError(f"target has {boxes.shape[0]} boxes but {labels.shape[0]} labels")
    return boxes, labels


def build_criterion(model: nn.Module) -> RTMDetCriterion:
    """The official RTMDet criterion for a model built by rtmdet_edge.build_model (reads num_classes, strides, kind)."""
    kind = model.config.kind
    if kind == "ins":
        from rtmdet_edge.training.mask_loss import RTMDetInsCriterion  # it imports this module

        return RTMDetInsCriterion(num_classes=model.num_classes, strides=model.strides)
    if kind == "rot":
        from rtmdet_edge.training.rotated_loss import RotatedRTMDetCriterion

        return RotatedRTMDetCriterion(num_classes=model.num_classes, strides=model.strides)
    if kind != "det":
        raise NotImplementedError(f"training losses for model kind {kind!r} are not implemented yet")
    return RTMDetCriterion(num_classes=model.num_classes, strides=model.strides)
