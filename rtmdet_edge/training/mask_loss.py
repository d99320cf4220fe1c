"""RTMDet-Ins training: Dice mask loss and the criterion that adds it to the detection terms (RTMDET_FACTS.md 4.1).

Reproduces mmdet 3.3.0 `RTMDetInsHead.loss_by_feat` (checked against fixtures/official/rtmdet-ins_tiny/loss_seed0.npz):

- assignment as for detection, except that each GT's centre in the soft centre prior is its mask's centre of mass;
- for every positive prior (image by image, in prior order): mask logits from its own kernel_pred and prior over the
  image's mask_feat (stride 8), upsampled x2 bilinearly (align_corners=False) to stride 4; the GT mask is subsampled
  at [2::4, 2::4] of the input-resolution mask;
- loss_mask = 2 * sum over positives of Dice(sigmoid, eps 5e-6) / (num_pos + FLT_EPSILON), num_pos = all positives
  of the batch (zero-IoU positives included), reduce-meaned over ranks and clamped at 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rtmdet_edge.geometry.masks import center_of_mass
from rtmdet_edge.models.heads.instance import dynamic_mask_logits
from rtmdet_edge.training.assigner import AssignResult
from rtmdet_edge.training.loss import FLT_EPSILON, RTMDetCriterion, _gt_tensors, reduce_mean

MASK_LOSS_STRIDE = 4


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 5e-6) -> Tensor:
    """Per instance 1 - 2*sum(p*t) / ((sum(p^2) + eps) + (sum(t^2) + eps)), p = sigmoid(logits): [N, ...] -> [N].

    mmdet DiceLoss with use_sigmoid=True and naive_dice=False (V-Net form, squared denominators).
    """
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).float()
    a = (p * t).sum(1)
    b = (p * p).sum(1) + eps
    c = (t * t).sum(1) + eps
    return 1 - 2 * a / (b + c)


def gt_masks(target: dict, device: torch.device) -> Tensor:
    """target["masks"] as a [G, H, W] bool tensor at input resolution (bool/uint8 tensor or numpy array)."""
    masks = target["masks"]
    masks = torch.as_tensor(masks, device=device)
    return masks.bool() if masks.dtype != torch.bool else masks


class RTMDetInsCriterion(RTMDetCriterion):
    """RTMDetCriterion plus the Dice mask term.

    Each target carries either "masks" [G, H, W] bool at input resolution, or the compact form the train loader
    produces: "mask_centers" [G, 2] and "masks_stride4" [G, H/4, W/4] (see geometry.masks.mask_targets).

    Args:
        mask_loss_weight: official 2.0. dice_eps: official 5e-6. The other arguments are RTMDetCriterion's.
    """

    def __init__(self, *args, mask_loss_weight: float = 2.0, dice_eps: float = 5e-6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask_loss_weight = mask_loss_weight
        self.dice_eps = dice_eps

    def forward(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        """As RTMDetCriterion.forward, plus "loss_mask" (scalar) from outputs "kernel_preds" and "mask_feat"."""
        levels = self.level_losses(outputs, targets)
        losses = {
            "loss_cls": torch.stack(levels["loss_cls"]).sum(),
            "loss_bbox": torch.stack(levels["loss_bbox"]).sum(),
            "loss_mask": self.mask_loss(outputs, targets, levels["targets"].assignments),
            "num_pos": levels["num_pos"],
        }
        return losses

    @torch.no_grad()
    def assign(
        self, priors: Tensor, logits: Tensor, boxes: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> list[AssignResult]:
        """As detection, with each GT's centre of mass (mask) as the centre of the soft centre prior (official)."""
        results = []
        for i, target in enumerate(targets):
            gt_boxes, gt_labels = _gt_tensors(target, priors.device)
            if "mask_centers" in target:
                centers = torch.as_tensor(target["mask_centers"], dtype=torch.float32, device=priors.device)
            else:
                masks = gt_masks(target, priors.device)
                centers = center_of_mass(masks)
                centers[~masks.flatten(1).any(1)] = float("nan")
            # An object without mask pixels (box-only annotation) falls back to its box centre, which is what the
            # detection assigner uses; the official code would use (0, 0) there.
            empty = torch.isnan(centers).any(1)
            if empty.any():
                centers = centers.clone()
                centers[empty] = (gt_boxes[empty, :2] + gt_boxes[empty, 2:]) / 2
            results.append(
                self.assigner.assign(
                    priors, logits[i].detach(), boxes[i].detach(), gt_boxes, gt_labels, gt_centers=centers
                )
            )
        return results

    def mask_inputs(
        self, outputs: dict, targets: Sequence[dict], assignments: Sequence[AssignResult]
    ) -> tuple[Tensor, Tensor]:
        """The exact inputs of the Dice loss: positives' logits at stride 4 [N, H/4, W/4] and GT masks [N, H/4, W/4]."""
        kernel_preds, mask_feat = outputs["kernel_preds"], outputs["mask_feat"]
        num_images = mask_feat.shape[0]
        priors = self.priors(outputs["cls_scores"])
        kernels = torch.cat(
            [k.permute(0, 2, 3, 1).reshape(num_images, -1, k.shape[1]) for k in kernel_preds], 1
        )  # [B, P, 169]
        logits, gts = [], []
        half = MASK_LOSS_STRIDE // 2
        for i, (result, target) in enumerate(zip(assignments, targets)):
            pos = result.pos_mask.nonzero().squeeze(1)
            logits.append(dynamic_mask_logits(mask_feat[i], kernels[i, pos], priors[pos], self.strides[0]))
            if "masks_stride4" in target:  # already sampled at [2::4, 2::4] by the loader (geometry.masks.mask_targets)
                gts.append(torch.as_tensor(target["masks_stride4"], device=mask_feat.device)[result.gt_inds[pos] - 1])
            else:
                masks = gt_masks(target, mask_feat.device)
                gts.append(masks[result.gt_inds[pos] - 1, half::MASK_LOSS_STRIDE, half::MASK_LOSS_STRIDE])
        pos_logits = torch.cat(logits, 0)
        if pos_logits.shape[0] > 0:
            pos_logits = F.interpolate(
                pos_logits.unsqueeze(0),
                scale_factor=self.strides[0] // MASK_LOSS_STRIDE,
                mode="bilinear",
                align_corners=False,
            ).squeeze(0)
        return pos_logits, torch.cat(gts, 0)

    def mask_loss(self, outputs: dict, targets: Sequence[dict], assignments: Sequence[AssignResult]) -> Tensor:
        pos_logits, pos_gts = self.mask_inputs(outputs, targets, assignments)
        num_pos = reduce_mean(pos_logits.new_tensor([float(pos_logits.shape[0])])).clamp_(min=1).item()
        if pos_logits.shape[0] == 0:
            return outputs["mask_feat"].sum() * 0  # keeps the graph (official)
        dice = dice_loss(pos_logits.float(), pos_gts, eps=self.dice_eps)
        return self.mask_loss_weight * (dice.sum() / (num_pos + FLT_EPSILON))
