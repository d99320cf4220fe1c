"""Do two detection sets agree? Matched as sets (order ignored), with ties at a cut-off excused, nothing else.

Two runs of the same network on different kernels (PyTorch vs ONNX Runtime, or fp32 vs fp16) give scores that differ
in the last bits. Where two candidates have (nearly) the same score, the one kept by `max_per_img`, by NMS or by the
score threshold can differ between the runs: A is kept on one side and B on the other, although every number agrees
within rounding. Comparing detections position by position, or counting such a swap as a miss, fails a correct
backend. The rule here:

- a reference detection and a candidate match when they have the same label, scores within `score_atol`, and boxes
  within `box_atol` pixels (max over the 4 coordinates) and/or IoU >= `min_iou`; each candidate matches at most once,
  greedily in reference score order, the closest box first;
- a reference detection left over and a candidate left over are excused as a *swap* only when their scores tie
  within `score_atol`, each sits at the other side's cut-off (its score is within `score_atol` of the lowest score
  the other side kept), which is where such a swap happens, and they are two different objects (IoU < 0.5): a box
  that moved or changed its label is a drift, not a swap;
- a detection left over alone is excused only when its score ties with the score threshold (`score_thr`, when given):
  the other side scored it just below the threshold;
- everything else is a mismatch: a score or box that drifted, a missing or extra detection away from the cut-off.

Rotated boxes ([N,5] cx, cy, w, h, angle, RTMDet-R) are matched the same way with rotated IoU; their box difference
is the largest centre or size difference in pixels after putting both boxes in one form (w and h swap with a
quarter turn of the angle, so (w, h, a) and (h, w, a + pi/2) are the same box).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from rtmdet_edge.geometry.rotated import rbox_iou
from rtmdet_edge.inference.postprocess import Detections


# Above this IoU a left-over pair is one object that drifted (moved, relabelled), not two candidates that swapped.
_SWAP_MAX_IOU = 0.5


@dataclass
class DetectionMatch:
    """The outcome of match_detections for one image."""

    num_ref: int
    num_got: int
    matched: int = 0
    swaps: list[tuple[int, int]] = field(default_factory=list)  # (ref index, got index) excused as ties at the cut-off
    threshold_ties: list[tuple[str, int]] = field(default_factory=list)  # ("ref" | "got", index) tied with score_thr
    missing: list[int] = field(default_factory=list)  # reference detections not reproduced (not excused)
    extra: list[int] = field(default_factory=list)  # candidate detections with no reference (not excused)
    box_max_abs: float = 0.0  # pixels, over matched pairs
    score_max_abs: float = 0.0  # over matched pairs

    @property
    def excused_ref(self) -> int:
        """Reference detections not matched but excused (swaps and threshold ties on the reference side)."""
        return len(self.swaps) + sum(1 for side, _ in self.threshold_ties if side == "ref")

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def _arrays(d: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = d.numpy()
    boxes = np.asarray(d.boxes, np.float64)
    width = boxes.shape[-1] if boxes.ndim == 2 and boxes.shape[-1] in (4, 5) else 4  # 5: rotated (RTMDet-R)
    return boxes.reshape(-1, width), np.asarray(d.scores, np.float64).reshape(-1), np.asarray(d.labels).reshape(-1)


def _box_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N,4|5] x [M,4|5] -> [N,M] largest coordinate difference in pixels (rotated: centre and size, same form)."""
    if a.shape[-1] == 4:
        return np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    centre = np.abs(a[:, None, :2] - b[None, :, :2]).max(-1)
    same = np.abs(a[:, None, 2:4] - b[None, :, 2:4]).max(-1)
    swapped = np.abs(a[:, None, 2:4] - b[None, :, 3:1:-1]).max(-1)  # (w, h) vs (h, w): the same box a quarter turn on
    return np.maximum(centre, np.minimum(same, swapped))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N,4] x [M,4] xyxy (or [N,5] x [M,5] rotated) -> [N,M] IoU."""
    if a.shape[-1] == 5:
        return rbox_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(
    ref: Detections,
    got: Detections,
    *,
    score_atol: float,
    box_atol: float | None = None,
    min_iou: float | None = None,
    score_thr: float | None = None,
) -> DetectionMatch:
    """Match `got` against `ref` as sets (see the module docstring for the rule).

    Args:
        score_atol: largest score difference of a match, and the width of a tie.
        box_atol: largest coordinate difference of a match, in the boxes' pixels (None: not checked).
        min_iou: smallest IoU of a match (None: not checked). At least one of box_atol / min_iou is needed.
        score_thr: the score threshold both sides applied; detections tied with it may be missing on one side.
    """
    if box_atol is None and min_iou is None:
        raise ValueError("match_detections needs box_atol and/or min_iou")
    rb, rs, rl = _arrays(ref)
    gb, gs, gl = _arrays(got)
    result = DetectionMatch(num_ref=len(rs), num_got=len(gs))
    if len(rs) and len(gs):
        if rb.shape[-1] != gb.shape[-1]:
            raise ValueError(f"cannot match boxes of {rb.shape[-1]} and {gb.shape[-1]} coordinates")
        box_diff = _box_diff(rb, gb)  # [N, M]
        ok = (rl[:, None] == gl[None, :]) & (np.abs(rs[:, None] - gs[None, :]) <= score_atol)
        if box_atol is not None:
            ok &= box_diff <= box_atol
        if min_iou is not None:
            ok &= _iou(rb, gb) >= min_iou
    else:
        box_diff = ok = np.zeros((len(rs), len(gs)), bool)
    used = np.zeros(len(gs), bool)
    left_ref = []
    for i in np.argsort(-rs, kind="stable"):
        cand = np.flatnonzero(ok[i] & ~used)
        if len(cand) == 0:
            left_ref.append(int(i))
            continue
        j = int(cand[np.argmin(box_diff[i, cand])])
        used[j] = True
        result.matched += 1
        result.box_max_abs = max(result.box_max_abs, float(box_diff[i, j]))
        result.score_max_abs = max(result.score_max_abs, float(abs(rs[i] - gs[j])))
    left_got = [int(j) for j in np.flatnonzero(~used)]

    # swaps at the cut-off: both sides' leftovers tie with each other and with the lowest score the other side kept
    ref_floor = rs.min() if len(rs) else np.inf
    got_floor = gs.min() if len(gs) else np.inf
    overlap = _iou(rb, gb) if len(rs) and len(gs) else np.zeros((len(rs), len(gs)))
    for i in list(left_ref):
        if rs[i] > got_floor + score_atol:
            continue
        partners = [
            j
            for j in left_got
            if abs(gs[j] - rs[i]) <= score_atol and gs[j] <= ref_floor + score_atol and overlap[i, j] < _SWAP_MAX_IOU
        ]
        if partners:
            j = min(partners, key=lambda j: abs(gs[j] - rs[i]))
            result.swaps.append((i, j))
            left_ref.remove(i)
            left_got.remove(j)
    # ties with the score threshold: the other side scored the same detection just below it
    if score_thr is not None:
        for side, left, scores in (("ref", left_ref, rs), ("got", left_got, gs)):
            for k in list(left):
                if scores[k] <= score_thr + score_atol:
                    result.threshold_ties.append((side, k))
                    left.remove(k)
    result.missing = sorted(left_ref)
    result.extra = sorted(left_got)
    return result
