"""RTMDet-Ins post-processing, as the official RTMDetInsHead._bbox_mask_post_process (RTMDET_FACTS.md 4.1, 8).

Boxes exactly as detection (score filter and top nms_pre per level, decode clipped to the padded input, rescale,
drop empty boxes, class-aware NMS, keep max_per_img), keeping each survivor's prior and kernel. Then masks only for
the kept instances: dynamic convs over the image's prototypes (stride 8) -> bilinear x8 to the input size -> bilinear
to ceil(H / w_scale) x ceil(W / h_scale) (the official code swaps the two scale factors; it matters only for
non-uniform scaling) -> crop to the original image -> sigmoid > 0.5.

Mask assembly is post-processing, not part of the network or its ONNX graph: it runs for the <= 100 kept instances
only, whereas in-graph it would have to run for every candidate before NMS (or put NMS inside the graph), and its
output size depends on the original image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from rtmdet_edge.geometry.boxes import distance2bbox, level_priors
from rtmdet_edge.inference.postprocess import (
    DEPLOY,
    Detections,
    PostprocessConfig,
    batched_nms,
    level_rows,
    select_candidates,
)
from rtmdet_edge.inference.preprocess import LetterboxMeta
from rtmdet_edge.models.heads.instance import dynamic_mask_logits

# Official RTMDet-Ins test_cfg: nms_pre 1000, score 0.05, IoU 0.6, 100 instances, mask threshold 0.5.
INS_OFFICIAL = PostprocessConfig(score_thr=0.05, nms_pre=1000, iou_thr=0.6, max_per_img=100)
INS_DEPLOY = replace(DEPLOY, iou_thr=0.6)
INS_PRESETS = {"official": INS_OFFICIAL, "deploy": INS_DEPLOY}
MASK_THR = 0.5
MASK_CHUNK = 16  # instances upsampled at a time: bounds memory for large originals (results are per instance)


def masks_from_logits(
    logits: Tensor, meta: LetterboxMeta, mask_stride: int = 8, mask_thr: float = MASK_THR, chunk: int = MASK_CHUNK
) -> Tensor:
    """[N, h, w] logits at the prototype stride -> [N, H_ori, W_ori] bool masks in original-image pixels."""
    ori_h, ori_w = meta.ori_shape
    n = logits.shape[0]
    if n == 0:
        return torch.zeros((0, ori_h, ori_w), dtype=torch.bool, device=logits.device)
    w_scale, h_scale = meta.scale_factor
    inv = (1 / w_scale, 1 / h_scale)
    up_h, up_w = logits.shape[-2] * mask_stride, logits.shape[-1] * mask_stride
    # Official quirk: the height is scaled by 1/w_scale and the width by 1/h_scale (same numbers for keep-ratio).
    size = [math.ceil(up_h * inv[0]), math.ceil(up_w * inv[1])]
    out = []
    for start in range(0, n, chunk):
        x = logits[None, start : start + chunk].float()
        x = F.interpolate(x, scale_factor=mask_stride, mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[..., :ori_h, :ori_w]
        out.append(x.sigmoid()[0] > mask_thr)
    masks = torch.cat(out, 0)
    if masks.shape[-2:] != (ori_h, ori_w):
        # The swapped factors can leave the map a pixel short of the original (e.g. 300x512 at 320: 511 columns,
        # where the official code returns a 300x511 mask). Deviation: pad with background so every mask has the
        # image's shape; the pixels the official code does produce are unchanged.
        masks = F.pad(masks, (0, ori_w - masks.shape[-1], 0, ori_h - masks.shape[-2]), value=False)
    return masks


def postprocess_ins(
    outputs: dict[str, Sequence[Tensor] | Tensor],
    metas: Sequence[LetterboxMeta],
    cfg: PostprocessConfig = INS_OFFICIAL,
    strides: Sequence[int] = (8, 16, 32),
    with_logits: bool = False,
) -> list[Detections]:
    """Raw Ins outputs of a batch -> one Detections per image with `masks` [N, H_ori, W_ori] bool.

    with_logits: also attach `mask_logits` [N, h, w] (prototype resolution) to each result, for parity checks.
    """
    cls_scores, bbox_preds = outputs["cls_scores"], outputs["bbox_preds"]
    kernel_preds, mask_feat = outputs["kernel_preds"], outputs["mask_feat"]
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    device = cls_scores[0].device
    priors_per_level = level_priors(sizes, strides, device=device)
    results = []
    for i, meta in enumerate(metas):
        all_scores, all_labels, all_boxes, all_priors, all_kernels = [], [], [], [], []
        for cls, reg, ker, priors in zip(cls_scores, bbox_preds, kernel_preds, priors_per_level):
            scores, labels, keep = select_candidates(cls[i], cfg.score_thr, cfg.nms_pre)
            all_scores.append(scores)
            all_labels.append(labels)
            all_boxes.append(distance2bbox(priors[keep, :2], level_rows(reg[i], keep), max_shape=meta.input_shape))
            all_priors.append(priors[keep])
            all_kernels.append(level_rows(ker[i], keep))
        scores, labels, boxes = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_boxes)
        priors, kernels = torch.cat(all_priors), torch.cat(all_kernels)
        w_scale, h_scale = meta.scale_factor
        boxes = boxes * boxes.new_tensor([1 / w_scale, 1 / h_scale, 1 / w_scale, 1 / h_scale])  # official scale_boxes
        if cfg.min_bbox_size >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = (wh > cfg.min_bbox_size).all(dim=1)
            boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
            priors, kernels = priors[valid], kernels[valid]
        keep = batched_nms(boxes, scores, labels, cfg.iou_thr, cfg.max_per_img)
        logits = dynamic_mask_logits(mask_feat[i].float(), kernels[keep], priors[keep], strides[0])
        det = Detections(boxes[keep], scores[keep], labels[keep], masks=masks_from_logits(logits, meta, strides[0]))
        if with_logits:
            det.mask_logits = logits
        results.append(det)
    return results
