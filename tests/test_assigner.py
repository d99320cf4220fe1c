"""DynamicSoftLabelAssigner: exact official assignment on the fixture, and hand-built cases for each rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rtmdet_edge.training.assigner import INF, DynamicSoftLabelAssigner
from rtmdet_edge.geometry.boxes import distance2bbox, make_priors, points_in_boxes

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official" / "rtmdet_tiny"
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "loss_seed0.npz").exists(), reason=f"official loss fixture not found at {FIXTURE}"
)


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "loss_seed0.npz")


def fixture_inputs(ref, image: int):
    priors = make_priors([(40, 40), (20, 20), (10, 10)], (8, 16, 32))
    logits = torch.cat(
        [torch.from_numpy(ref[f"cls_score_{l}"][image]).permute(1, 2, 0).reshape(-1, 80) for l in range(3)]
    )
    distances = torch.cat(
        [torch.from_numpy(ref[f"bbox_pred_{l}"][image]).permute(1, 2, 0).reshape(-1, 4) for l in range(3)]
    )
    boxes = distance2bbox(priors[:, :2], distances)
    gt_boxes = torch.from_numpy(ref[f"gt_bboxes_{image}"])
    gt_labels = torch.from_numpy(ref[f"gt_labels_{image}"])
    return priors, logits, boxes, gt_boxes, gt_labels


@needs_fixture
@pytest.mark.parametrize("image", [0, 1])
def test_fixture_assignment_is_exact(ref, image):
    priors, logits, boxes, gt_boxes, gt_labels = fixture_inputs(ref, image)
    assert torch.equal(priors, torch.from_numpy(ref["priors"]))
    assert torch.equal(boxes, torch.from_numpy(ref["assign_pred_bboxes"][image]))
    result = DynamicSoftLabelAssigner().assign(priors, logits, boxes, gt_boxes, gt_labels)
    assert torch.equal(result.gt_inds, torch.from_numpy(ref["assign_gt_inds"][image]))
    assert torch.equal(result.labels, torch.from_numpy(ref["assign_labels"][image]))
    assert torch.equal(result.max_overlaps, torch.from_numpy(ref["assign_max_overlaps"][image]))


@needs_fixture
def test_fixture_cost_matrix_and_dynamic_k(ref):
    result = DynamicSoftLabelAssigner().assign(*fixture_inputs(ref, 0))
    assert torch.equal(result.candidates, torch.from_numpy(ref["assign0_valid_in_gts"]))
    assert torch.equal(result.pos_mask, torch.from_numpy(ref["assign0_fg"]))
    assert result.dynamic_ks.tolist() == ref["assign0_dynamic_ks"].tolist() == [5, 5, 5, 3, 5]
    np.testing.assert_array_equal(result.pairwise_ious.numpy(), ref["assign0_pairwise_ious"])
    # The class term is summed in a different order (see _soft_cls_cost): equal within float32 rounding. The centre
    # prior 10^(d - 3) turns a one-ulp difference in d (CPUs with AVX-512 and with AVX2 round differently) into a
    # relative error of ln(10) * d * eps, up to ~1e-5 for the far priors whose cost is 1e22: the tolerance grows with
    # the exponent, and stays ~2-4e-6 for the costs that decide the assignment (checked exactly above).
    cost, want = result.cost.numpy().astype(np.float64), ref["assign0_cost"].astype(np.float64)
    rtol = 2e-6 + 4 * np.log(10) * np.finfo(np.float32).eps * np.log10(np.maximum(np.abs(want), 1.0))
    assert np.all(np.abs(cost - want) <= rtol * np.abs(want)), float(np.max(np.abs(cost - want) / np.abs(want)))


def test_empty_ground_truth_is_all_background():
    priors = make_priors([(4, 4)], (8,))
    result = DynamicSoftLabelAssigner().assign(
        priors, torch.zeros(16, 3), torch.rand(16, 4) * 32, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert result.gt_inds.tolist() == [0] * 16
    assert result.labels.tolist() == [-1] * 16
    assert result.max_overlaps.tolist() == [0.0] * 16  # official early return: 0, not -INF
    assert result.cost is None


def test_ground_truth_without_any_prior_inside():
    priors = make_priors([(4, 4)], (8,))
    tiny = torch.tensor([[1.0, 1.0, 2.0, 2.0], [100.0, 100.0, 120.0, 130.0]])  # between priors; outside the image
    boxes = priors[:, :2].repeat(1, 2)
    result = DynamicSoftLabelAssigner().assign(priors, torch.zeros(16, 3), boxes, tiny, torch.tensor([0, 1]))
    assert not result.candidates.any()
    assert result.num_pos == 0 and result.max_overlaps.abs().sum() == 0


def test_hand_built_single_object():
    # Three candidates inside the GT: two predict it exactly (IoU 1), one overlaps half; a fourth prior is outside.
    priors = torch.tensor([[8.0, 8.0, 8, 8], [16.0, 16.0, 8, 8], [24.0, 24.0, 8, 8], [40.0, 40.0, 8, 8]])
    gt = torch.tensor([[4.0, 4.0, 30.0, 30.0]])
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0], [4.0, 4.0, 30.0, 30.0], [17.0, 4.0, 30.0, 30.0], [36.0, 36, 44, 44]])
    result = DynamicSoftLabelAssigner().assign(priors, torch.zeros(4, 2), boxes, gt, torch.tensor([1]))
    assert result.candidates.tolist() == [True, True, True, False]
    assert result.dynamic_ks.tolist() == [2]  # int(1 + 1 + 0.5)
    assert result.gt_inds.tolist() == [1, 1, 0, 0]
    assert result.labels.tolist() == [1, 1, -1, -1]
    assert result.max_overlaps.tolist() == [1.0, 1.0, -INF, -INF]


def test_conflict_goes_to_the_cheapest_gt_of_the_whole_row():
    """Official quirk: a prior claimed by GTs 0 and 1 goes to GT 2, which did not claim it but is cheaper in its row."""
    cost = torch.tensor([[1.0, 1.0, 0.5], [5.0, 5.0, 0.1], [9.0, 9.0, 9.0]])
    ious = torch.full((3, 3), 0.2)
    dynamic_ks, matched_gt, fg = DynamicSoftLabelAssigner()._dynamic_k_matching(cost, ious)
    assert dynamic_ks.tolist() == [1, 1, 1]
    assert fg.tolist() == [True, True, False]
    assert matched_gt.tolist() == [2, 2]


def test_dynamic_k_truncates_and_is_at_least_one():
    ious = torch.tensor([[0.99999, 0.1], [0.99999, 0.1], [0.99999, 0.1], [0.5, 0.0]])
    cost = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    dynamic_ks, _, _ = DynamicSoftLabelAssigner()._dynamic_k_matching(cost, ious)
    assert dynamic_ks.tolist() == [3, 1]  # int(3.49997) = 3; int(0.3) = 0 -> 1


def test_far_ground_truth_gets_infinite_centre_cost_without_nan():
    # At stride 8 a GT centre more than ~41.5 strides away overflows 10**(d - 3) in float32, as official.
    priors = torch.tensor([[0.0, 0.0, 8, 8], [8.0, 8.0, 8, 8]])
    gts = torch.tensor([[-10.0, -10.0, 10.0, 10.0], [400.0, 400.0, 420.0, 420.0]])
    boxes = torch.tensor([[-9.0, -9.0, 9.0, 9.0], [-8.0, -8.0, 8.0, 8.0]])
    result = DynamicSoftLabelAssigner().assign(priors, torch.zeros(2, 2), boxes, gts, torch.tensor([0, 1]))
    assert result.candidates.tolist() == [True, True]
    assert torch.isinf(result.cost[:, 1]).all() and not torch.isnan(result.cost).any()
    # GT 0 (k = int(0.81 + 0.64) = 1) keeps its cheapest prior; GT 1 still claims one prior (k >= 1) among its tied
    # infinite costs but loses any conflict to GT 0, whose cost is finite.
    assert result.dynamic_ks.tolist() == [1, 1]
    assert result.gt_inds[0].item() == 1 and 2 not in result.gt_inds.tolist()


def test_degenerate_boxes_and_predictions_stay_finite():
    priors = make_priors([(4, 4), (2, 2)], (8, 16))
    gts = torch.tensor([[0.0, 0.0, 0.0, 20.0], [20.0, 20.0, 10.0, 10.0], [1.0, 1.0, 25.0, 25.0], [1.0, 1, 25, 25]])
    boxes = priors[:, :2].repeat(1, 2) + torch.tensor([5.0, 5.0, -5.0, -5.0])  # inverted predictions
    boxes[::3] = torch.tensor([1.0, 1.0, 25.0, 25.0])
    logits = torch.randn(priors.shape[0], 4, generator=torch.Generator().manual_seed(0)) * 30  # saturated
    result = DynamicSoftLabelAssigner().assign(priors, logits, boxes, gts, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(result.cost).all()
    assert result.num_pos >= 1
    # Degenerate GTs contain no prior but still take part in the matching (official): any prior they win has IoU 0,
    # i.e. a zero soft target and zero box-loss weight.
    assert not points_in_boxes(priors[:, :2], gts[:2]).any()
    to_degenerate = result.pos_mask & (result.gt_inds <= 2)
    assert (result.max_overlaps[to_degenerate] == 0).all()


def test_points_in_boxes_is_strict():
    points = torch.tensor([[8.0, 8.0], [8.0, 9.0], [9.0, 9.0]])
    inside = points_in_boxes(points, torch.tensor([[8.0, 8.0, 16.0, 16.0]]))
    assert inside[:, 0].tolist() == [False, False, True]


def test_assignment_carries_no_gradient():
    priors = make_priors([(4, 4)], (8,))
    logits = torch.zeros(16, 2, requires_grad=True)
    boxes = (priors[:, :2].repeat(1, 2) + torch.tensor([-6.0, -6.0, 6.0, 6.0])).requires_grad_(True)
    gt = torch.tensor([[2.0, 2.0, 20.0, 20.0]])
    result = DynamicSoftLabelAssigner().assign(priors, logits, boxes, gt, torch.tensor([1]))
    assert result.num_pos >= 1
    assert not result.max_overlaps.requires_grad and not result.cost.requires_grad
