"""RTMDet losses: official parity on the reference fixture, end to end through the model, and an independent float64
loop reference on random batches the repository does not contain."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import rtmdet_edge
from rtmdet_edge.training.loss import FLT_EPSILON, GIoULoss, QualityFocalLoss, RTMDetCriterion, build_criterion, reduce_mean

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official" / "rtmdet_tiny"
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "loss_seed0.npz").exists(), reason=f"official loss fixture not found at {FIXTURE}"
)
RTOL = 1e-5


def rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-12)))


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "loss_seed0.npz")


def fixture_targets(ref) -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.from_numpy(ref[f"gt_bboxes_{i}"]), "labels": torch.from_numpy(ref[f"gt_labels_{i}"])}
        for i in range(ref["inputs"].shape[0])
    ]


def fixture_outputs(ref, requires_grad: bool = False) -> dict[str, list[torch.Tensor]]:
    return {
        "cls_scores": [torch.from_numpy(ref[f"cls_score_{l}"]).requires_grad_(requires_grad) for l in range(3)],
        "bbox_preds": [torch.from_numpy(ref[f"bbox_pred_{l}"]).requires_grad_(requires_grad) for l in range(3)],
    }


# --------------------------------------------------------------------------------------------------------------------
# Official fixture, from the recorded head outputs
# --------------------------------------------------------------------------------------------------------------------


@needs_fixture
def test_fixture_losses_per_level(ref):
    criterion = RTMDetCriterion(num_classes=80)
    outputs = fixture_outputs(ref, requires_grad=True)
    levels = criterion.level_losses(outputs, fixture_targets(ref))
    loss_cls = torch.stack(levels["loss_cls"]).detach().numpy()
    loss_bbox = torch.stack(levels["loss_bbox"]).detach().numpy()
    assert rel_err(loss_cls, ref["loss_cls"]) < RTOL
    assert rel_err(loss_bbox, ref["loss_bbox"]) < RTOL
    meta = json.loads((FIXTURE / "loss_seed0.json").read_text())["normalisation"]
    assert levels["cls_avg_factor"] == pytest.approx(meta["cls_avg_factor"], rel=1e-6)
    assert levels["bbox_avg_factor"] == pytest.approx(meta["bbox_avg_factor"], rel=1e-6)

    targets = levels["targets"]
    assert torch.equal(targets.labels, torch.from_numpy(ref["target_labels"]))
    assert torch.equal(targets.label_weights, torch.from_numpy(ref["target_label_weights"]))
    assert torch.equal(targets.box_targets, torch.from_numpy(ref["target_bboxes"]))
    assert torch.equal(targets.scores, torch.from_numpy(ref["target_scores"]))
    assert int(levels["num_pos"]) == 23

    losses = criterion(outputs, fixture_targets(ref))
    assert set(losses) == {"loss_cls", "loss_bbox", "num_pos"}
    assert rel_err(losses["loss_cls"].item(), ref["loss_cls"].sum()) < RTOL
    assert rel_err(losses["loss_bbox"].item(), ref["loss_bbox"].sum()) < RTOL
    assert rel_err((losses["loss_cls"] + losses["loss_bbox"]).item(), ref["loss"]) < RTOL
    assert not losses["num_pos"].requires_grad


@needs_fixture
def test_fixture_gradients_wrt_head_outputs(ref):
    """The fixture stores gradients of the 1x1 predictors; their biases' gradients are sums of the output gradients
    (cls: dL/dlogit summed over batch and positions; reg: the head multiplies distances by the stride)."""
    outputs = fixture_outputs(ref, requires_grad=True)
    losses = RTMDetCriterion(num_classes=80)(outputs, fixture_targets(ref))
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    for level, stride in enumerate((8, 16, 32)):
        cls_grad = outputs["cls_scores"][level].grad.sum((0, 2, 3)).numpy()
        expected = ref[f"grad_bbox_head.rtm_cls.{level}.bias"]
        assert np.abs(cls_grad - expected).max() <= 1e-5 * np.abs(expected).max()
        reg_grad = outputs["bbox_preds"][level].grad.sum((0, 2, 3)).numpy() * stride
        expected = ref[f"grad_bbox_head.rtm_reg.{level}.bias"]
        assert np.abs(reg_grad - expected).max() <= 1e-5 * np.abs(expected).max()


@needs_fixture
def test_fixture_loss_inputs(ref):
    """The exact inputs the official code gave the box loss at each level (prediction, target, weight)."""
    criterion = RTMDetCriterion(num_classes=80)
    outputs = fixture_outputs(ref)
    priors = criterion.priors(outputs["cls_scores"])
    assert torch.equal(priors, torch.from_numpy(ref["priors"]))
    logits, boxes = criterion.decode(outputs, priors)
    assert torch.equal(boxes, torch.from_numpy(ref["assign_pred_bboxes"]))
    targets = criterion.get_targets(priors, logits, boxes, fixture_targets(ref))
    start = 0
    for level, size in enumerate((1600, 400, 100)):
        sl = slice(start, start + size)
        start += size
        pos = targets.pos_mask[:, sl].reshape(-1)
        assert torch.equal(boxes[:, sl].reshape(-1, 4)[pos], torch.from_numpy(ref[f"lossin_bbox_l{level}_pred"]))
        assert torch.equal(
            targets.box_targets[:, sl].reshape(-1, 4)[pos], torch.from_numpy(ref[f"lossin_bbox_l{level}_target"])
        )
        expected_weight = torch.from_numpy(ref[f"lossin_bbox_l{level}_weight"])
        assert torch.equal(targets.scores[:, sl].reshape(-1)[pos], expected_weight)

    # Unnormalised per-level sums and the per-prior QFL.
    qfl = QualityFocalLoss()
    per_prior = torch.stack(
        [
            qfl(logits[i, p : p + 1], targets.labels[i, p : p + 1], targets.scores[i, p : p + 1], torch.ones(1))
            for i in range(2)
            for p in range(0, 2100, 97)
        ]
    ) * (1 + FLT_EPSILON)
    expected = ref["loss_cls_per_prior"][:, ::97].reshape(-1)
    assert rel_err(per_prior.numpy(), expected) < RTOL


# --------------------------------------------------------------------------------------------------------------------
# End to end through the model (the real acceptance test)
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_model():
    return rtmdet_edge.load_checkpoint(FIXTURE / "checkpoint.pth")


@needs_fixture
@pytest.mark.slow
def test_end_to_end_eval_bn(ref, official_model):
    model = official_model.eval()
    criterion = rtmdet_edge.build_criterion(model)
    levels = criterion.level_losses(model(torch.from_numpy(ref["inputs"])), fixture_targets(ref))
    loss_cls, loss_bbox = torch.stack(levels["loss_cls"]), torch.stack(levels["loss_bbox"])
    assert rel_err(loss_cls.detach().numpy(), ref["loss_cls"]) < RTOL
    assert rel_err(loss_bbox.detach().numpy(), ref["loss_bbox"]) < RTOL
    assert torch.equal(levels["targets"].labels, torch.from_numpy(ref["target_labels"]))

    model.zero_grad()
    (loss_cls.sum() + loss_bbox.sum()).backward()
    params = dict(model.named_parameters())
    grad_keys = [k for k in ref.files if k.startswith("grad_")]
    assert len(grad_keys) == 40
    for key in grad_keys:
        grad, expected = params[key[len("grad_") :]].grad.numpy(), ref[key]
        assert np.abs(grad - expected).max() <= 1e-4 * np.abs(expected).max(), key
    # Gradient norms of every parameter, backbone and neck included.
    norms = json.loads((FIXTURE / "loss_seed0.json").read_text())["grad_norms"]
    for name, expected in norms.items():
        assert params[name].grad.norm().item() == pytest.approx(expected, rel=1e-4), name
    model.zero_grad()


@needs_fixture
@pytest.mark.slow
def test_end_to_end_train_bn(ref, official_model):
    model = official_model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        with torch.no_grad():
            levels = rtmdet_edge.build_criterion(model).level_losses(
                model(torch.from_numpy(ref["inputs"])), fixture_targets(ref)
            )
    finally:
        model.load_state_dict(state)  # train-mode BN updated the running statistics
        model.eval()
    assert rel_err(torch.stack(levels["loss_cls"]).numpy(), ref["trainbn_loss_cls"]) < RTOL
    assert rel_err(torch.stack(levels["loss_bbox"]).numpy(), ref["trainbn_loss_bbox"]) < RTOL


# --------------------------------------------------------------------------------------------------------------------
# Independent reference: plain loops in float64, written from the formulas (RTMDET_FACTS 1.5, loss_seed0.json quirks)
# --------------------------------------------------------------------------------------------------------------------

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _bce_logits(x: float, t: float) -> float:
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def _iou(a, b, eps=1e-6) -> float:
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    overlap = w * h
    return overlap / max(area_a + area_b - overlap, eps)


def _giou(a, b, eps=1e-6) -> float:
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    overlap = w * h
    union = max(area_a + area_b - overlap, eps)
    enclose = max(max(max(a[2], b[2]) - min(a[0], b[0]), 0.0) * max(max(a[3], b[3]) - min(a[1], b[1]), 0.0), eps)
    return overlap / union - (enclose - union) / enclose


def reference_assign(priors, logits, boxes, gt_boxes, gt_labels):
    """Returns (gt_index per prior or -1, IoU with it). Loops over priors and GTs."""
    num_priors, num_gt = len(priors), len(gt_boxes)
    assigned = [-1] * num_priors
    overlaps = [0.0] * num_priors
    candidates = [
        p
        for p in range(num_priors)
        if any(
            min(priors[p][0] - g[0], priors[p][1] - g[1], g[2] - priors[p][0], g[3] - priors[p][1]) > 0
            for g in gt_boxes
        )
    ]
    if num_gt == 0 or not candidates:
        return assigned, overlaps
    cost, ious = {}, {}
    for p in candidates:
        x, y, stride = priors[p]
        for g in range(num_gt):
            gb = gt_boxes[g]
            iou = _iou(boxes[p], gb)
            dist = math.hypot(x - (gb[0] + gb[2]) / 2, y - (gb[1] + gb[3]) / 2) / stride
            # The official centre prior is float32 and overflows to inf beyond ~41.5 strides.
            exponent = dist - 3.0
            center = math.inf if exponent > 38.53 else 10.0**exponent
            center = math.inf if center > FLOAT32_MAX else center
            cls_cost = 0.0
            for c, logit in enumerate(logits[p]):
                target = iou if c == gt_labels[g] else 0.0
                cls_cost += _bce_logits(logit, target) * abs(target - _sigmoid(logit)) ** 2
            cost[p, g] = cls_cost + 3.0 * -math.log(iou + 1e-7) + center
            ious[p, g] = iou
    claimed = {p: [] for p in candidates}
    for g in range(num_gt):
        top = sorted((ious[p, g] for p in candidates), reverse=True)[: min(13, len(candidates))]
        k = max(1, int(sum(top)))
        for p in sorted(candidates, key=lambda p: (cost[p, g], p))[:k]:
            claimed[p].append(g)
    for p, gts in claimed.items():
        if not gts:
            continue
        if len(gts) > 1:  # keep the cheapest GT of the whole row, not only among the claimants
            row = [cost[p, g] for g in range(num_gt)]
            gts = [row.index(min(row))]
        assigned[p] = gts[0]
        overlaps[p] = ious[p, gts[0]]
    return assigned, overlaps


def reference_losses(cls_scores, bbox_preds, targets, strides, num_classes):
    """Per-level (loss_cls, loss_bbox) lists, assignments, from numpy head outputs; float64 throughout."""
    batch = cls_scores[0].shape[0]
    priors, levels = [], []
    for level, (score, stride) in enumerate(zip(cls_scores, strides)):
        for i in range(score.shape[2]):
            for j in range(score.shape[3]):
                priors.append((j * stride, i * stride, stride))
                levels.append(level)
    cls_sum = [0.0] * len(strides)
    box_sum = [0.0] * len(strides)
    score_total = 0.0
    assignments = []
    for b in range(batch):
        logits, boxes = [], []
        for score, pred in zip(cls_scores, bbox_preds):
            for i in range(score.shape[2]):
                for j in range(score.shape[3]):
                    logits.append([float(v) for v in score[b, :, i, j]])
                    boxes.append([float(v) for v in pred[b, :, i, j]])
        for p, (x, y, _) in enumerate(priors):
            left, top, right, bottom = boxes[p]
            boxes[p] = (x - left, y - top, x + right, y + bottom)
        gt_boxes = [tuple(float(v) for v in box) for box in targets[b]["boxes"]]
        gt_labels = [int(v) for v in targets[b]["labels"]]
        assigned, overlaps = reference_assign(priors, logits, boxes, gt_boxes, gt_labels)
        assignments.append((assigned, overlaps))
        for p in range(len(priors)):
            g = assigned[p]
            for c, logit in enumerate(logits[p]):
                sig = _sigmoid(logit)
                if g >= 0 and c == gt_labels[g]:
                    cls_sum[levels[p]] += _bce_logits(logit, overlaps[p]) * abs(overlaps[p] - sig) ** 2
                else:
                    cls_sum[levels[p]] += _bce_logits(logit, 0.0) * sig**2
            if g >= 0:
                score_total += overlaps[p]
                box_sum[levels[p]] += 2.0 * overlaps[p] * (1.0 - _giou(boxes[p], gt_boxes[g]))
    avg = max(1.0, score_total)
    cls = [s / (1 + 2.0**-23) / avg for s in cls_sum]
    box = [s / (1 + 2.0**-23) / avg for s in box_sum]
    return cls, box, assignments


def random_batch(seed: int, size_hw: tuple[int, int], batch: int, num_classes: int, max_gt: int = 20):
    """Head outputs and targets that exercise the edge cases: tiny, partly/fully outside, duplicate, degenerate GTs."""
    g = torch.Generator().manual_seed(seed)
    h, w = size_hw
    cls_scores, bbox_preds = [], []
    for stride in (8, 16, 32):
        hl, wl = h // stride, w // stride
        cls_scores.append(torch.randn(batch, num_classes, hl, wl, generator=g) * 1.5 - 2.0)
        dist = torch.rand(batch, 4, hl, wl, generator=g) * 4 * stride
        flip = torch.rand(batch, 4, hl, wl, generator=g) < 0.05  # some inverted (degenerate) predictions
        bbox_preds.append(torch.where(flip, -dist * 0.2, dist))
    targets = []
    for b in range(batch):
        n = int(torch.randint(0, max_gt + 1, (1,), generator=g)) if b else max_gt  # first image always crowded
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 1.0
        kind = torch.rand(n, generator=g)
        wh[kind < 0.15] = torch.rand(int((kind < 0.15).sum()), 2, generator=g) * 3  # tiny (may fit no prior)
        boxes = torch.cat([xy, xy + wh], dim=1)
        on_grid = kind > 0.8  # edges exactly on prior points: the "strictly inside" test matters
        boxes[on_grid] = (boxes[on_grid] / 8).round() * 8
        labels = torch.randint(0, num_classes, (n,), generator=g)
        if n >= 4:
            boxes[1] = boxes[0]  # duplicate box, same label
            labels[1] = labels[0]
            boxes[2] = boxes[0]  # duplicate box, other label
            boxes[3] = torch.tensor([w + 40.0, h + 40.0, w + 90.0, h + 70.0])  # fully outside the image
        if n >= 5:
            boxes[4, 2] = boxes[4, 0]  # zero width
        targets.append({"boxes": boxes, "labels": labels})
    return {"cls_scores": cls_scores, "bbox_preds": bbox_preds}, targets


CASES = [
    (1, (96, 128), 2, 4),
    (2, (128, 96), 3, 3),
    (3, (64, 64), 2, 5),
    (4, (160, 128), 2, 2),
    (5, (96, 96), 2, 1),
    (6, (128, 128), 2, 6),
    (7, (320, 288), 1, 2),  # far GTs: the float32 centre prior overflows to inf in the cost
]


@pytest.mark.parametrize("seed, size_hw, batch, num_classes", CASES)
def test_matches_loop_reference_on_random_batches(seed, size_hw, batch, num_classes):
    outputs, targets = random_batch(seed, size_hw, batch, num_classes)
    criterion = RTMDetCriterion(num_classes=num_classes)
    levels = criterion.level_losses(outputs, targets)
    ref_cls, ref_box, ref_assign = reference_losses(
        [s.numpy().astype(np.float64) for s in outputs["cls_scores"]],
        [d.numpy().astype(np.float64) for d in outputs["bbox_preds"]],
        [{"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()} for t in targets],
        (8, 16, 32),
        num_classes,
    )
    for b, (assigned, overlaps) in enumerate(ref_assign):
        result = levels["targets"].assignments[b]
        assert result.gt_inds.tolist() == [g + 1 for g in assigned], f"image {b}"
        pos = result.gt_inds > 0
        expected = np.asarray(overlaps)[pos.numpy()]
        np.testing.assert_allclose(result.max_overlaps[pos].numpy(), expected, rtol=1e-5, atol=1e-7)
    # Per-level terms; a level with (almost) nothing in it is compared absolutely.
    for ours, theirs in ((levels["loss_cls"], ref_cls), (levels["loss_bbox"], ref_box)):
        for value, expected in zip(ours, theirs):
            assert abs(value.item() - expected) <= RTOL * abs(expected) + 1e-6
    assert levels["num_pos"].item() == sum(sum(g >= 0 for g in a) for a, _ in ref_assign)


# --------------------------------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------------------------------


def test_batch_without_objects_backpropagates():
    outputs, _ = random_batch(0, (64, 96), 2, 3)
    for t in outputs["cls_scores"] + outputs["bbox_preds"]:
        t.requires_grad_(True)
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)} for _ in range(2)]
    losses = RTMDetCriterion(num_classes=3)(outputs, targets)
    assert losses["loss_bbox"].item() == 0.0
    assert losses["num_pos"].item() == 0
    # Only negative QFL terms, normalised by the clamped avg factor 1.
    expected = 0.0
    for logits in outputs["cls_scores"]:
        x = logits.detach().double()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
        expected += (bce * x.sigmoid() ** 2).sum().item() / (1 + FLT_EPSILON)
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=RTOL)
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert all(torch.isfinite(t.grad).all() for t in outputs["cls_scores"] + outputs["bbox_preds"])
    assert all(t.grad.abs().sum() == 0 for t in outputs["bbox_preds"])


def test_degenerate_and_outside_boxes_stay_finite():
    outputs, _ = random_batch(7, (64, 64), 1, 2)
    for t in outputs["cls_scores"] + outputs["bbox_preds"]:
        t.requires_grad_(True)
    boxes = torch.tensor(
        [
            [10.0, 10.0, 10.0, 30.0],  # zero width
            [30.0, 30.0, 20.0, 20.0],  # inverted
            [100.0, 100.0, 140.0, 150.0],  # outside the 64x64 image
            [-20.0, -20.0, 9.0, 9.0],  # partly outside
            [5.0, 5.0, 5.5, 5.5],  # tiny, no prior inside
            [5.0, 5.0, 5.5, 5.5],  # duplicate of it
        ]
    )
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 1, 0, 1, 0, 1]), "ignore_boxes": torch.zeros(0, 4)}]
    losses = RTMDetCriterion(num_classes=2)(outputs, targets)
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_bbox"])
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert all(torch.isfinite(t.grad).all() for t in outputs["cls_scores"] + outputs["bbox_preds"])
    assert losses["num_pos"].item() >= 1  # the partly outside box has priors inside


def test_giou_loss_zero_weight_and_perfect_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 8.0, 9.0]], requires_grad=True)
    loss = GIoULoss()(boxes, boxes.detach(), torch.tensor([0.5, 1.0]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    zero = GIoULoss()(boxes, boxes.detach() + 3, torch.zeros(2))
    assert zero.item() == 0.0 and zero.requires_grad
    # Disjoint boxes: IoU 0, enclosing 20x20 box, union 200 -> GIoU = -(400-200)/400, loss 2 * 1.5 / (1+eps).
    far = GIoULoss()(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[10.0, 10.0, 20.0, 20.0]]), torch.ones(1))
    assert far.item() == pytest.approx(3.0 / (1 + FLT_EPSILON), rel=1e-7)


def test_reduce_mean_is_identity_without_distributed():
    t = torch.tensor(3.5)
    assert reduce_mean(t).item() == 3.5


def test_reduce_mean_single_process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        outputs, targets = random_batch(3, (64, 64), 2, 3, max_gt=4)
        with_dist = RTMDetCriterion(num_classes=3).level_losses(outputs, targets)
    finally:
        dist.destroy_process_group()
    without = RTMDetCriterion(num_classes=3).level_losses(outputs, targets)
    assert with_dist["cls_avg_factor"] == without["cls_avg_factor"]
    assert torch.equal(torch.stack(with_dist["loss_cls"]), torch.stack(without["loss_cls"]))


def test_build_criterion_reads_the_model():
    model = SimpleNamespace(num_classes=7, strides=(8, 16, 32), config=SimpleNamespace(kind="det"))
    criterion = build_criterion(model)
    assert criterion.num_classes == 7 and criterion.strides == (8, 16, 32)
    from rtmdet_edge.training.mask_loss import RTMDetInsCriterion
    from rtmdet_edge.training.rotated_loss import RotatedRTMDetCriterion

    for kind, cls in (("ins", RTMDetInsCriterion), ("rot", RotatedRTMDetCriterion)):
        other = build_criterion(SimpleNamespace(num_classes=7, strides=(8, 16, 32), config=SimpleNamespace(kind=kind)))
        assert isinstance(other, cls) and other.num_classes == 7


def test_target_count_mismatch_is_an_error():
    outputs, targets = random_batch(0, (64, 64), 2, 3, max_gt=2)
    with pytest.raises(ValueError, match="targets"):
        RTMDetCriterion(num_classes=3)(outputs, targets[:1])
