"""Instance masks: centres of mass, IoU, COCO RLE, and compact (bit-packed) storage. Masks are [N, H, W] bool."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

EPS = 1e-7  # official DynamicSoftLabelAssigner constant, also its center_of_mass normaliser floor


def center_of_mass(masks: Tensor, eps: float = EPS) -> Tensor:
    """[N, H, W] bool/uint8 -> [N, 2] (x, y) in pixel indices (0..W-1, no +0.5), as the official assigner computes it.

    Integer moment sums are exact; the division is float32 as official, so the centres match bit for bit.
    """
    n, h, w = masks.shape
    m = masks.to(torch.int64) if masks.dtype == torch.bool else masks
    grid_y = torch.arange(h, device=masks.device)[:, None]
    grid_x = torch.arange(w, device=masks.device)
    normaliser = m.sum(dim=(1, 2)).float().clamp(min=eps)
    center_y = (m * grid_y).sum(dim=(1, 2)) / normaliser
    center_x = (m * grid_x).sum(dim=(1, 2)) / normaliser
    return torch.stack([center_x, center_y], dim=1)


def mask_iou(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> np.ndarray:
    """Element-wise IoU of two aligned stacks [N, H, W] of bool masks -> [N] (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool).reshape(len(a), -1)
    b = np.asarray(b, dtype=bool).reshape(len(b), -1)
    inter = (a & b).sum(1)
    union = (a | b).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def pack_masks(masks: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """[N, H, W] bool -> (np.packbits rows [N, ceil(H*W/8)] uint8, shape): 8x smaller, for storage and transport."""
    masks = np.asarray(masks, dtype=bool)
    return np.packbits(masks.reshape(len(masks), -1), axis=1), tuple(masks.shape)  # type: ignore[return-value]


def unpack_masks(packed: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    n, h, w = shape
    return np.unpackbits(packed, axis=1, count=h * w).reshape(n, h, w).astype(bool)


def masks_to_rle(masks: np.ndarray) -> list[dict]:
    """[N, H, W] bool -> COCO RLE dicts ({"size": [H, W], "counts": str}), JSON-serialisable."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def polygons_to_masks(polygons: list, height: int, width: int) -> np.ndarray:
    """Per object a list of [K, 2] (x, y) parts -> [N, H, W] bool, rasterised as COCO / mmdet PolygonMasks do
    (pycocotools frPyObjects + merge + decode). An object without parts gets an empty mask."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(polygons), height, width), dtype=bool)
    for i, parts in enumerate(polygons):
        flat = [np.asarray(p, np.float64).reshape(-1).tolist() for p in parts if len(p) >= 3]
        if flat:
            rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
            out[i] = mask_utils.decode(rle).astype(bool)
    return out


def mask_targets(polygons: list, height: int, width: int, stride: int = 4) -> tuple[Tensor, Tensor]:
    """What the RTMDet-Ins loss needs from N objects' polygons on an H x W training image.

    Returns (centres [N, 2] float32 (x, y) of mass of the full-resolution masks, NaN for an object without mask
    pixels; masks [N, H/stride, W/stride] bool sampled at [stride//2::stride] as the official loss samples them).
    Rasterises one object at a time, so peak memory is one full-resolution mask.
    """
    n = len(polygons)
    half = stride // 2
    centres = torch.zeros((n, 2), dtype=torch.float32)
    small = torch.zeros((n, len(range(half, height, stride)), len(range(half, width, stride))), dtype=torch.bool)
    for i, parts in enumerate(polygons):
        full = torch.from_numpy(polygons_to_masks([parts], height, width))
        centres[i] = center_of_mass(full)[0] if full.any() else float("nan")
        small[i] = full[0, half::stride, half::stride]
    return centres, small


def matched_mask_iou(reference, other, min_box_iou: float = 0.5, per_instance: bool = False) -> float | np.ndarray:
    """Mean mask IoU between two detection sets of one image (e.g. PyTorch vs a deployed backend).

    Each reference detection is paired with the unused `other` detection of the same label whose box overlaps it most
    (box IoU >= min_box_iou); an unpaired reference detection counts as IoU 0, and so does each surplus detection of
    `other`, so missing or extra instances lower the score. Both have .boxes [N,4], .labels [N], .masks [N,H,W].
    Returns 1.0 when both are empty; with per_instance, the array of IoUs that the mean is taken over.
    """
    from rtmdet_edge.geometry.boxes import box_iou

    ref_boxes, oth_boxes = torch.as_tensor(np.asarray(reference.boxes)), torch.as_tensor(np.asarray(other.boxes))
    n_ref, n_oth = len(ref_boxes), len(oth_boxes)
    if n_ref == 0 and n_oth == 0:
        return np.ones(0) if per_instance else 1.0
    ious = box_iou(ref_boxes.float(), oth_boxes.float()).numpy() if n_ref and n_oth else np.zeros((n_ref, n_oth))
    ref_labels, oth_labels = np.asarray(reference.labels), np.asarray(other.labels)
    ref_masks, oth_masks = np.asarray(reference.masks, bool), np.asarray(other.masks, bool)
    used: set[int] = set()
    scores = []
    for i in range(n_ref):
        cand = [j for j in np.argsort(-ious[i]) if j not in used and oth_labels[j] == ref_labels[i] and ious[i, j] >= min_box_iou]
        if not cand:
            scores.append(0.0)
            continue
        used.add(int(cand[0]))
        scores.append(float(mask_iou(ref_masks[i : i + 1], oth_masks[cand[0] : cand[0] + 1])[0]))
    scores += [0.0] * (n_oth - len(used))
    return np.array(scores) if per_instance else float(np.mean(scores))
