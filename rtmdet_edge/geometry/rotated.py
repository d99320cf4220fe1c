"""Rotated boxes (cx, cy, w, h, angle), le90: conversions, a differentiable rotated IoU, point-in-box tests.

Conventions (mmrotate 1.x, RTMDET_FACTS.md 4.2): boxes are [..., 5] (cx, cy, w, h, angle) in pixels and radians, image
axes (x right, y down), so a positive angle turns the w side clockwise on screen. le90: angle in [-pi/2, pi/2) and,
after `regularize_le90`, w >= h. (w, h, a) and (h, w, a + pi/2) are the same rectangle; so are a and a + pi.

The IoU clips one rectangle by the other (Sutherland-Hodgman on four half-planes, vectorised over pairs with a fixed
vertex budget of 8) and takes the shoelace area. It works in the frame of the second box, after subtracting its centre,
which keeps float32 precise for boxes far from the origin. Every operation is differentiable and guarded so that
identical, nested, touching and degenerate (zero-size) pairs give finite values and finite gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Pairs per chunk in pairwise IoU: each pair carries a few [16, 2] vertex tensors.
_PAIRS_PER_CHUNK = 1 << 18


def norm_angle_le90(angle: Tensor) -> Tensor:
    """Wrap radians into [-pi/2, pi/2) (mmrotate norm_angle 'le90'; no w/h swap)."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def regularize_le90(rboxes: Tensor) -> Tensor:
    """Unique le90 form (mmrotate RotatedBoxes.regularize_boxes('le90')): w > h else swap and turn by pi/2."""
    x, y, w, h, a = rboxes.unbind(-1)
    longer = w > h
    w_, h_ = torch.where(longer, w, h), torch.where(longer, h, w)
    a = torch.where(longer, a, a + math.pi / 2)
    return torch.stack([x, y, w_, h_, norm_angle_le90(a)], -1)


def rbox_to_corners(rboxes: Tensor) -> Tensor:
    """[..., 5] -> [..., 4, 2] corners in order (-w,-h), (+w,-h), (+w,+h), (-w,+h) of the box's own axes."""
    cx, cy, w, h, a = rboxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    wx, wy = w / 2 * cos, w / 2 * sin  # half of the w side
    hx, hy = -h / 2 * sin, h / 2 * cos  # half of the h side
    xs = torch.stack([cx - wx - hx, cx + wx - hx, cx + wx + hx, cx - wx + hx], -1)
    ys = torch.stack([cy - wy - hy, cy + wy - hy, cy + wy + hy, cy - wy + hy], -1)
    return torch.stack([xs, ys], -1)


def corners_to_rbox(corners: Tensor) -> Tensor:
    """[..., 4, 2] rectangle corners in order -> [..., 5] le90 (regularised). The first edge gives w and the angle.

    For quadrilaterals that are not rectangles (raw DOTA labels) use the data loader's cv2.minAreaRect conversion.
    """
    c = corners.mean(-2)
    e1 = corners[..., 1, :] - corners[..., 0, :]
    e2 = corners[..., 2, :] - corners[..., 1, :]
    w = e1.norm(dim=-1)
    h = e2.norm(dim=-1)
    a = torch.atan2(e1[..., 1], e1[..., 0])
    return regularize_le90(torch.stack([c[..., 0], c[..., 1], w, h, a], -1))


def rbox_areas(rboxes: Tensor) -> Tensor:
    return rboxes[..., 2] * rboxes[..., 3]


def rbox_centers(rboxes: Tensor) -> Tensor:
    return rboxes[..., :2]


def distance2rbox(points: Tensor, distance: Tensor, angle: Tensor) -> Tensor:
    """Decode (l, t, r, b) distances in the box's rotated frame plus an angle (mmrotate DistanceAnglePointCoder).

    Args:
        points: [..., 2] prior points. distance: [..., 4] pixels. angle: [..., 1] radians (raw head output).
    Returns:
        [..., 5] boxes; the angle is wrapped into le90's range without swapping w and h (as official).
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    wh = distance[..., :2] + distance[..., 2:]
    off = (distance[..., 2:] - distance[..., :2]) / 2  # centre offset in the box frame
    ox = cos[..., 0] * off[..., 0] - sin[..., 0] * off[..., 1]
    oy = sin[..., 0] * off[..., 0] + cos[..., 0] * off[..., 1]
    ctr = points[..., :2] + torch.stack([ox, oy], -1)
    return torch.cat([ctr, wh, norm_angle_le90(angle)], -1)


def rescale_rboxes(rboxes: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Scale boxes about the origin by (scale_x, scale_y) (mmrotate RotatedBoxes.rescale_, exact for uniform scales).

    A non-uniform scale turns a rectangle into a parallelogram; like the official code, this keeps the rectangle whose
    sides follow the scaled w and h directions.
    """
    ctr, w, h, t = rboxes.split([2, 1, 1, 1], dim=-1)
    cos, sin = torch.cos(t), torch.sin(t)
    ctr = ctr * ctr.new_tensor([scale_x, scale_y])
    w = w * torch.sqrt((scale_x * cos) ** 2 + (scale_y * sin) ** 2)
    h = h * torch.sqrt((scale_x * sin) ** 2 + (scale_y * cos) ** 2)
    t = torch.atan2(scale_x * sin, scale_y * cos)
    return torch.cat([ctr, w, h, t], -1)


def points_in_rboxes(points: Tensor, rboxes: Tensor, eps: float = 0.01) -> Tensor:
    """[P, 2] x [G, 5] -> [P, G] bool: the point is inside with a margin of eps pixels (RotatedBoxes.find_inside_points)."""
    ctr, wh, t = rboxes[None, :, :2], rboxes[None, :, 2:4], rboxes[None, :, 4]
    offset = points[:, None, :] - ctr
    cos, sin = torch.cos(t), torch.sin(t)
    ox = cos * offset[..., 0] + sin * offset[..., 1]
    oy = -sin * offset[..., 0] + cos * offset[..., 1]
    w, h = wh[..., 0], wh[..., 1]
    return (ox <= w / 2 - eps) & (ox >= -w / 2 + eps) & (oy <= h / 2 - eps) & (oy >= -h / 2 + eps)


def _clip_half_plane(poly: Tensor, valid: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Clip convex polygons by the half-planes s >= 0 (s linear in the vertex position).

    poly [..., K, 2] with valid [..., K] (valid vertices first, in order); s [..., K] the signed distance of each
    vertex. Each vertex is kept if inside, and the crossing point of each edge that strictly changes side is added
    after it, so a convex polygon gains at most one vertex: returns [..., K + 1, 2] and its validity.
    """
    k = poly.shape[-2]
    n = valid.sum(-1, keepdim=True)
    idx = torch.arange(k, device=poly.device).expand_as(valid)
    nxt = torch.where(n > 0, (idx + 1) % n.clamp(min=1), idx)
    poly_next = poly.gather(-2, nxt[..., None].expand_as(poly))
    s_next = s.gather(-1, nxt)
    inside = valid & (s >= 0)
    cross = valid & (((s > 0) & (s_next < 0)) | ((s < 0) & (s_next > 0)))
    # where() on both the denominator and the result keeps gradients finite for edges that do not cross
    denom = torch.where(cross, s - s_next, torch.ones_like(s))
    t = torch.where(cross, s / denom, torch.zeros_like(s))
    inter = poly + t[..., None] * (poly_next - poly)
    cand = torch.stack([poly, inter], -2).flatten(-3, -2)  # [..., 2K, 2]: vertex i, then the crossing on edge i
    cmask = torch.stack([inside, cross], -1).flatten(-2)  # [..., 2K]
    # Compact the kept entries to the front, in order: entry e goes to slot (number of kept entries before it); dropped
    # entries all go to a spare slot k + 1 that is cut off (a cumsum and a scatter, cheaper than a sort).
    slot = torch.where(cmask, cmask.cumsum(-1) - 1, torch.full_like(cmask, k + 1, dtype=torch.long))
    out = cand.new_zeros(*cand.shape[:-2], k + 2, 2).scatter(-2, slot[..., None].expand_as(cand), cand)
    count = cmask.sum(-1, keepdim=True)
    new_valid = torch.arange(k + 1, device=poly.device).expand(*cmask.shape[:-1], k + 1) < count
    return out[..., : k + 1, :], new_valid


def intersection_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Area of the intersection of matching (broadcast) rotated boxes [..., 5] x [..., 5] -> [...]."""
    boxes1, boxes2 = torch.broadcast_tensors(boxes1, boxes2)
    # Frame of box 2: translate by its centre, rotate by minus its angle; box 2 is then [-w/2, w/2] x [-h/2, h/2].
    cos2, sin2 = torch.cos(boxes2[..., 4]), torch.sin(boxes2[..., 4])
    d = boxes1[..., :2] - boxes2[..., :2]
    rel_ctr = torch.stack([cos2 * d[..., 0] + sin2 * d[..., 1], -sin2 * d[..., 0] + cos2 * d[..., 1]], -1)
    rel = torch.cat([rel_ctr, boxes1[..., 2:4], (boxes1[..., 4] - boxes2[..., 4])[..., None]], -1)
    poly = rbox_to_corners(rel)  # [..., 4, 2]
    valid = torch.ones(poly.shape[:-1], dtype=torch.bool, device=poly.device)
    half_w = boxes2[..., 2, None].abs() / 2
    half_h = boxes2[..., 3, None].abs() / 2
    for axis, sign, half in ((0, -1.0, half_w), (0, 1.0, half_w), (1, -1.0, half_h), (1, 1.0, half_h)):
        s = half + sign * poly[..., axis]  # inside: -half <= coordinate <= half
        poly, valid = _clip_half_plane(poly, valid, s)
    # Shoelace over the valid vertices (cyclic within the valid prefix).
    k = poly.shape[-2]
    n = valid.sum(-1, keepdim=True)
    idx = torch.arange(k, device=poly.device).expand_as(valid)
    nxt = torch.where(n > 0, (idx + 1) % n.clamp(min=1), idx)
    poly_next = poly.gather(-2, nxt[..., None].expand_as(poly))
    cross = poly[..., 0] * poly_next[..., 1] - poly_next[..., 0] * poly[..., 1]
    return (torch.where(valid, cross, torch.zeros_like(cross)).sum(-1) / 2).abs()


def rbox_iou_aligned(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of matching rows [N, 5] x [N, 5] -> [N], differentiable (union clamped at eps)."""
    inter = intersection_area(boxes1, boxes2)
    union = rbox_areas(boxes1).abs() + rbox_areas(boxes2).abs() - inter
    return inter / union.clamp(min=eps)


def rbox_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6, min_size: float | None = None) -> Tensor:
    """Pairwise IoU [N, 5] x [M, 5] -> [N, M], computed in chunks of rows.

    min_size: clamp w and h from below first (mmrotate rbbox_overlaps uses 1e-3 for the assigner's IoU).
    """
    if min_size is not None:
        boxes1 = torch.cat([boxes1[:, :2], boxes1[:, 2:4].clamp(min=min_size), boxes1[:, 4:]], 1)
        boxes2 = torch.cat([boxes2[:, :2], boxes2[:, 2:4].clamp(min=min_size), boxes2[:, 4:]], 1)
    n, m = boxes1.shape[0], boxes2.shape[0]
    if n == 0 or m == 0:
        return boxes1.new_zeros((n, m))
    # Only pairs whose circumscribed circles meet can overlap: clip those, the rest are exactly 0. Crowded aerial
    # scenes and class-offset NMS have few such pairs, so this is what makes rotated NMS on thousands of boxes cheap.
    radius1 = torch.hypot(boxes1[:, 2], boxes1[:, 3]) / 2
    radius2 = torch.hypot(boxes2[:, 2], boxes2[:, 3]) / 2
    near = torch.cdist(boxes1[:, :2].double(), boxes2[:, :2].double()) <= (radius1[:, None] + radius2[None, :]).double() + 1e-3
    rows, cols = near.nonzero(as_tuple=True)
    values = [
        rbox_iou_aligned(boxes1[r], boxes2[c], eps)
        for r, c in zip(rows.split(_PAIRS_PER_CHUNK), cols.split(_PAIRS_PER_CHUNK))
    ]
    out = boxes1.new_zeros((n, m))
    if values:
        out = out.index_put((rows, cols), torch.cat(values))
    return out
