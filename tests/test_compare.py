"""match_detections: sets, not sequences; a swap at the cut-off is excused only when the scores tie."""

from __future__ import annotations

import numpy as np
import pytest

from rtmdet_edge.inference.compare import match_detections
from rtmdet_edge.inference.postprocess import Detections


def dets(rows: list[tuple[float, int, float]]) -> Detections:
    """(x, label, score) rows -> Detections with 10x10 boxes at (x, x)."""
    boxes = np.asarray([[x, x, x + 10, x + 10] for x, _, _ in rows], np.float32).reshape(-1, 4)
    labels = np.asarray([label for _, label, _ in rows], np.int64)
    scores = np.asarray([score for _, _, score in rows], np.float32)
    return Detections(boxes, scores, labels)


REF = [(0, 1, 0.9), (20, 2, 0.8), (40, 1, 0.7), (60, 0, 0.5)]


def test_order_is_ignored_and_rounding_matches():
    got = [(x + 1e-3, label, score + 1e-6) for x, label, score in reversed(REF)]
    m = match_detections(dets(REF), dets(got), score_atol=1e-4, box_atol=1e-2)
    assert m.ok and m.matched == 4 and m.excused_ref == 0
    assert m.box_max_abs == pytest.approx(1e-3, abs=1e-5)


def test_swap_at_the_cut_off_is_excused_when_scores_tie():
    # max_per_img kept 4 on each side; the last two candidates tie at 0.5 and each side kept a different one
    got = [*REF[:3], (80, 2, 0.5 + 2e-7)]
    m = match_detections(dets(REF), dets(got), score_atol=1e-4, box_atol=1e-2)
    assert m.ok and m.matched == 3 and m.swaps == [(3, 3)] and m.excused_ref == 1


def test_drift_that_is_not_a_tie_fails():
    # the same swap, but the scores differ by 0.01: not a tie, so a real difference
    got = [*REF[:3], (80, 2, 0.51)]
    m = match_detections(dets(REF), dets(got), score_atol=1e-4, box_atol=1e-2)
    assert not m.ok and m.missing == [3] and m.extra == [3]
    # a score that drifted on a matched box fails too, and so does a moved box
    drifted = [*REF[:3], (60, 0, 0.5 + 1e-3)]
    assert not match_detections(dets(REF), dets(drifted), score_atol=1e-4, box_atol=1e-2).ok
    moved = [*REF[:3], (60.2, 0, 0.5)]
    assert not match_detections(dets(REF), dets(moved), score_atol=1e-4, box_atol=1e-2).ok
    assert match_detections(dets(REF), dets(moved), score_atol=1e-4, min_iou=0.9).ok  # IoU 0.9 allows it


def test_a_tie_away_from_the_cut_off_is_not_excused():
    # ref's 0.7 detection is replaced by another box with the same score: not the lowest kept, so not a cut-off swap
    got = [REF[0], REF[1], (90, 1, 0.7), REF[3]]
    m = match_detections(dets(REF), dets(got), score_atol=1e-4, box_atol=1e-2)
    assert not m.ok and m.missing == [2]


def test_missing_detection_fails_unless_it_ties_the_score_threshold():
    ref = [*REF, (80, 1, 0.3 + 1e-6)]
    m = match_detections(dets(ref), dets(REF), score_atol=1e-4, box_atol=1e-2)
    assert not m.ok  # without the threshold there is nothing it could tie with
    m = match_detections(dets(ref), dets(REF), score_atol=1e-4, box_atol=1e-2, score_thr=0.3)
    assert m.ok and m.threshold_ties == [("ref", 4)] and m.excused_ref == 1
    m = match_detections(dets(REF), dets(REF[:3]), score_atol=1e-4, box_atol=1e-2, score_thr=0.3)
    assert not m.ok and m.missing == [3]  # 0.5 is far above the threshold


def test_empty_sets_and_labels():
    assert match_detections(dets([]), dets([]), score_atol=1e-4, box_atol=1e-2).ok
    relabelled = [*REF[:3], (60, 1, 0.5)]  # even at the cut-off, a changed label is not a swap
    m = match_detections(dets(REF), dets(relabelled), score_atol=1e-4, box_atol=1e-2)
    assert not m.ok and m.missing == [3] and m.extra == [3]
    with pytest.raises(ValueError):
        match_detections(dets(REF), dets(REF), score_atol=1e-4)


def test_rotated_boxes_match_with_rotated_iou_in_either_form():
    """RTMDet-R: [N,5] boxes; (w, h, a) and (h, w, a + pi/2) are the same box, a moved box is not."""
    ref = Detections(np.array([[50, 50, 40, 10, 0.3], [20, 20, 8, 8, 0.0]]), np.array([0.9, 0.5]), np.array([0, 1]))
    same = Detections(np.array([[20, 20, 8, 8, 0.0], [50, 50, 10, 40, 0.3 + np.pi / 2]]), np.array([0.5, 0.9]),
                      np.array([1, 0]))  # fmt: skip
    m = match_detections(ref, same, score_atol=1e-3, min_iou=0.9)
    assert m.ok and m.matched == 2 and m.box_max_abs < 1e-6
    moved = Detections(np.array([[50, 50, 40, 10, 0.3 + 0.5], [20, 20, 8, 8, 0.0]]), np.array([0.9, 0.5]), np.array([0, 1]))
    m = match_detections(ref, moved, score_atol=1e-3, min_iou=0.9)
    assert m.matched == 1 and m.missing == [0] and m.extra == [0]
