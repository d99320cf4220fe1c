"""RTMDet-R loss and assignment against the official mmrotate numbers (fixtures/official/rtmdet-r_tiny/loss_seed0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rtmdet_edge
from rtmdet_edge.training.loss import build_criterion
from rtmdet_edge.training.rotated_loss import RotatedIoULoss, RotatedRTMDetCriterion


@pytest.fixture(scope="module")
def ref(official_dir: Path):
    return dict(np.load(official_dir / "rtmdet-r_tiny" / "loss_seed0.npz"))


def _outputs(ref: dict) -> dict[str, list[torch.Tensor]]:
    """The official raw head outputs of the batch, as leaf tensors (the loss is checked on exactly these)."""
    groups = {"cls_scores": "cls_score", "bbox_preds": "bbox_pred", "angle_preds": "angle_pred"}
    return {g: [torch.tensor(ref[f"{p}_{i}"], requires_grad=True) for i in range(3)] for g, p in groups.items()}


def _targets(ref: dict) -> list[dict[str, torch.Tensor]]:
    return [
        {"rboxes": torch.from_numpy(ref[f"gt_bboxes_{i}"]), "labels": torch.from_numpy(ref[f"gt_labels_{i}"])}
        for i in range(2)
    ]


def test_assignment_equals_official(ref: dict) -> None:
    crit = RotatedRTMDetCriterion(num_classes=15)
    levels = crit.level_losses(_outputs(ref), _targets(ref))
    results = levels["targets"].assignments
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.gt_inds.numpy(), ref["assign_gt_inds"][i])
        np.testing.assert_array_equal(result.labels.numpy(), ref["assign_labels"][i])
        np.testing.assert_allclose(result.max_overlaps.numpy(), ref["assign_max_overlaps"][i], atol=2e-6)
    np.testing.assert_array_equal(results[0].candidates.numpy(), ref["assign0_valid_in_gts"])
    np.testing.assert_array_equal(results[0].dynamic_ks.numpy(), ref["assign0_dynamic_ks"])
    np.testing.assert_allclose(results[0].pairwise_ious.numpy(), ref["assign0_pairwise_ious"], atol=2e-6)
    finite = np.isfinite(ref["assign0_cost"])
    np.testing.assert_array_equal(np.isfinite(results[0].cost.numpy()), finite)
    np.testing.assert_allclose(results[0].cost.numpy()[finite], ref["assign0_cost"][finite], rtol=1e-5, atol=1e-5)
    # decoded predictions (the assigner's and the loss's boxes) and their le90 targets
    np.testing.assert_allclose(levels["targets"].box_targets.numpy(), ref["target_bboxes"], atol=1e-5)
    np.testing.assert_allclose(levels["targets"].scores.numpy(), ref["target_scores"], atol=2e-6)


def test_losses_equal_official(ref: dict) -> None:
    outputs = _outputs(ref)
    crit = RotatedRTMDetCriterion(num_classes=15)
    levels = crit.level_losses(outputs, _targets(ref))
    np.testing.assert_allclose([x.item() for x in levels["loss_cls"]], ref["loss_cls"], rtol=1e-5)
    np.testing.assert_allclose([x.item() for x in levels["loss_bbox"]], ref["loss_bbox"], rtol=1e-5)
    losses = crit(outputs, _targets(ref))
    total = losses["loss_cls"] + losses["loss_bbox"]
    assert total.item() == pytest.approx(float(ref["loss"]), rel=1e-5)
    total.backward()
    for group in outputs.values():
        for t in group:
            assert torch.isfinite(t.grad).all()


def test_rotated_iou_loss_on_official_inputs(ref: dict) -> None:
    """The box loss alone on the exact (pred, target, weight) the official loss saw, level by level."""
    loss = RotatedIoULoss()
    for level in range(3):
        pred = torch.from_numpy(ref[f"lossin_bbox_l{level}_pred"])
        target = torch.from_numpy(ref[f"lossin_bbox_l{level}_target"])
        weight = torch.from_numpy(ref[f"lossin_bbox_l{level}_weight"])
        ours = loss(pred, target, weight).item()
        assert ours == pytest.approx(float(ref["loss_bbox_unnormalised"][level]), rel=1e-5)


@pytest.mark.slow
def test_full_model_loss_and_gradients(ref: dict, official_dir: Path) -> None:
    model = rtmdet_edge.load_checkpoint(official_dir / "rtmdet-r_tiny" / "checkpoint.pth").eval()
    crit = build_criterion(model)
    assert isinstance(crit, RotatedRTMDetCriterion)
    losses = crit(model(torch.from_numpy(ref["inputs"])), _targets(ref))
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert (losses["loss_cls"] + losses["loss_bbox"]).item() == pytest.approx(float(ref["loss"]), rel=1e-5)
    params = dict(model.named_parameters())
    for key in ref:
        if key.startswith("grad_"):
            grad = params[key[len("grad_"):]].grad.numpy()
            scale = np.abs(ref[key]).max()
            assert np.abs(grad - ref[key]).max() <= 1e-4 * scale + 1e-7, key


def test_empty_and_tiny_model() -> None:
    torch.manual_seed(0)
    model = rtmdet_edge.build_model("rtmdet-r-tiny", num_classes=3)
    out = model(torch.randn(2, 3, 64, 64))
    targets = [
        {"rboxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)},
        {"rboxes": torch.tensor([[30.0, 30.0, 40.0, 12.0, 0.5], [10.0, 50.0, 6.0, 14.0, -1.2]]),
         "labels": torch.tensor([0, 2])},
    ]
    losses = build_criterion(model)(out, targets)
    total = losses["loss_cls"] + losses["loss_bbox"]
    total.backward()
    assert torch.isfinite(total) and losses["num_pos"] > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
