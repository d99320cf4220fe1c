"""Point priors, distance <-> box conversions and IoU. All boxes are xyxy in input pixels unless a name says otherwise."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor


def make_priors(
    featmap_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Point priors of every level, concatenated.

    The official MlvlPointGenerator uses offset 0, so a prior sits on the top-left corner of its cell: (j*s, i*s).

    Returns:
        [sum(H_l*W_l), 4] rows (x, y, stride_w, stride_h), level 0 first, each level row-major (i outer, j inner).
    """
    priors = []
    for (h, w), s in zip(featmap_sizes, strides):
        ys = torch.arange(h, device=device, dtype=dtype) * s
        xs = torch.arange(w, device=device, dtype=dtype) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        stride = torch.full_like(xx, float(s))
        priors.append(torch.stack([xx, yy, stride, stride], dim=-1).reshape(-1, 4))
    return torch.cat(priors, dim=0)


@functools.lru_cache(maxsize=16)
def _level_priors_cached(sizes: tuple[tuple[int, int], ...], strides: tuple[int, ...], device: str) -> tuple[Tensor, ...]:
    with torch.inference_mode(False):  # normal tensors: usable in and out of inference mode, whoever asked first
        return make_priors(sizes, strides, device=device).split([h * w for h, w in sizes])


def level_priors(
    featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[Tensor, ...]:
    """make_priors split per level, cached by (sizes, strides, device): post-processing asks for the same priors on
    every frame, and building them cost about as much as a level's candidate search. The tensors are shared: read
    them, never write into them."""
    sizes = tuple((int(h), int(w)) for h, w in featmap_sizes)
    return _level_priors_cached(sizes, tuple(int(s) for s in strides), str(device))


def distance2bbox(points: Tensor, distance: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
    """Decode (l, t, r, b) distances at points into xyxy boxes.

    Args:
        points: [..., 2] (x, y) prior points.
        distance: [..., 4] distances in pixels.
        max_shape: (H, W) to clip to, as the official DistancePointBBoxCoder does at test time.
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    if max_shape is not None:
        h, w = max_shape
        boxes[..., 0::2] = boxes[..., 0::2].clamp(min=0, max=w)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(min=0, max=h)
    return boxes


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise IoU, [N,4] x [M,4] -> [N,M]. Same arithmetic as mmdet's bbox_overlaps (union clamped at eps)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1[:, None] + area2[None, :] - overlap).clamp(min=eps)
    return overlap / union


def box_centers(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy -> [..., 2] (cx, cy)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2.0


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """[P, 2] points x [G, 4] xyxy boxes -> [P, G] bool, True where the point is strictly inside the box.

    Strict (min of the four deltas > 0), as the official DynamicSoftLabelAssigner: a point on an edge is outside and a
    box with zero or negative width contains nothing.
    """
    lt = points[:, None, :] - boxes[None, :, :2]
    rb = boxes[None, :, 2:] - points[:, None, :]
    return torch.cat([lt, rb], dim=-1).min(dim=-1).values > 0


def aligned_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of matching rows, [N,4] x [N,4] -> [N]. Same arithmetic as mmdet's bbox_overlaps(mode="giou",
    is_aligned=True): union and enclosing area are clamped at eps, and the clamped union is used in the GIoU term."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    eps_t = overlap.new_tensor([eps])
    union = torch.max(area1 + area2 - overlap, eps_t)
    ious = overlap / union
    enclose_wh = (torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    enclose_area = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    return ious - (enclose_area - union) / enclose_area
