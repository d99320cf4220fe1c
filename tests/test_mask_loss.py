"""RTMDet-Ins training loss: official parity (mask-centre assignment, Dice at stride 4, loss_mask), end to end through
the model, and an independent grouped-conv reference of the dynamic mask convs on random inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rtmdet_edge
from rtmdet_edge.geometry.masks import center_of_mass
from rtmdet_edge.models.heads.instance import dynamic_mask_logits, dynamic_param_sizes
from rtmdet_edge.training.mask_loss import RTMDetInsCriterion, dice_loss

RTOL = 1e-5


def rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-12)))


@pytest.fixture(scope="module")
def folder(official_dir):
    return official_dir / "rtmdet-ins_tiny"


@pytest.fixture(scope="module")
def ref(folder):
    return np.load(folder / "loss_seed0.npz")


def targets_of(ref) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.from_numpy(ref[f"gt_bboxes_{i}"]),
            "labels": torch.from_numpy(ref[f"gt_labels_{i}"]),
            "masks": torch.from_numpy(ref[f"gt_masks_{i}"]),
        }
        for i in range(ref["inputs"].shape[0])
    ]


def outputs_of(ref, requires_grad: bool = False) -> dict:
    out = {
        group: [torch.from_numpy(ref[f"{name}_{l}"]).requires_grad_(requires_grad) for l in range(3)]
        for group, name in (("cls_scores", "cls_score"), ("bbox_preds", "bbox_pred"), ("kernel_preds", "kernel_pred"))
    }
    out["mask_feat"] = torch.from_numpy(ref["mask_feat"]).requires_grad_(requires_grad)
    return out


def test_centre_of_mass_matches_official(ref) -> None:
    got = center_of_mass(torch.from_numpy(ref["gt_masks_0"]))
    assert torch.equal(got, torch.from_numpy(ref["gt_mask_center_of_mass_0"]))


def test_fixture_losses_assignment_and_mask_inputs(ref, folder) -> None:
    criterion = RTMDetInsCriterion(num_classes=80)
    outputs, targets = outputs_of(ref, requires_grad=True), targets_of(ref)
    levels = criterion.level_losses(outputs, targets)
    assert rel_err(torch.stack(levels["loss_cls"]).detach(), ref["loss_cls"]) < RTOL
    assert rel_err(torch.stack(levels["loss_bbox"]).detach(), ref["loss_bbox"]) < RTOL
    assignments = levels["targets"].assignments
    # The same assignment for every prior (mass centres in the soft centre prior).
    assert np.array_equal(torch.stack([a.gt_inds for a in assignments]).numpy(), ref["assign_gt_inds"])
    assert np.array_equal(torch.stack([a.labels for a in assignments]).numpy(), ref["assign_labels"])
    np.testing.assert_allclose(
        torch.stack([a.max_overlaps for a in assignments]).numpy(), ref["assign_max_overlaps"], rtol=1e-6
    )
    logits, gts = criterion.mask_inputs(outputs, targets, assignments)
    assert gts.shape == ref["lossin_mask_target"].shape == (20, 80, 80)
    assert np.array_equal(gts.numpy(), ref["lossin_mask_target"])
    assert np.abs(logits.detach().numpy() - ref["lossin_mask_pred_logits"]).max() < 1e-5

    losses = criterion(outputs, targets)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_mask", "num_pos"}
    assert rel_err(losses["loss_mask"].item(), ref["loss_mask"]) < RTOL
    total = losses["loss_cls"] + losses["loss_bbox"] + losses["loss_mask"]
    assert rel_err(total.item(), ref["loss"]) < RTOL
    assert int(losses["num_pos"]) == sum(json.loads((folder / "loss_seed0.json").read_text())["num_pos_per_image"])


@pytest.fixture(scope="module")
def official_ins(folder):
    return rtmdet_edge.load_checkpoint(folder / "checkpoint.pth")


@pytest.mark.slow
def test_end_to_end_eval_bn_losses_and_gradients(ref, official_ins) -> None:
    model = official_ins.eval()
    criterion = rtmdet_edge.build_criterion(model)
    assert isinstance(criterion, RTMDetInsCriterion)
    outputs = model(torch.from_numpy(ref["inputs"]))
    levels = criterion.level_losses(outputs, targets_of(ref))
    assert rel_err(torch.stack(levels["loss_cls"]).detach(), ref["loss_cls"]) < RTOL
    assert rel_err(torch.stack(levels["loss_bbox"]).detach(), ref["loss_bbox"]) < RTOL
    assert np.array_equal(
        torch.stack([a.gt_inds for a in levels["targets"].assignments]).numpy(), ref["assign_gt_inds"]
    )
    loss_mask = criterion.mask_loss(outputs, targets_of(ref), levels["targets"].assignments)
    assert rel_err(loss_mask.item(), ref["loss_mask"]) < RTOL

    model.zero_grad()
    (torch.stack(levels["loss_cls"]).sum() + torch.stack(levels["loss_bbox"]).sum() + loss_mask).backward()
    params = dict(model.named_parameters(remove_duplicate=False))
    grad_keys = [k for k in ref.files if k.startswith("grad_")]
    for key in grad_keys:
        grad, expected = params[key[len("grad_") :]].grad.numpy(), ref[key]
        assert np.abs(grad - expected).max() <= 1e-4 * np.abs(expected).max(), key
    model.zero_grad()


@pytest.mark.slow
def test_end_to_end_train_bn(ref, official_ins) -> None:
    model = official_ins
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        with torch.no_grad():
            losses = rtmdet_edge.build_criterion(model)(model(torch.from_numpy(ref["inputs"])), targets_of(ref))
    finally:
        model.load_state_dict(state)
        model.eval()
    assert rel_err(losses["loss_cls"].item(), ref["trainbn_loss_cls"].sum()) < RTOL
    assert rel_err(losses["loss_bbox"].item(), ref["trainbn_loss_bbox"].sum()) < RTOL
    assert rel_err(losses["loss_mask"].item(), ref["trainbn_loss_mask"]) < RTOL


def _official_style_grouped_conv(mask_feat, kernels, priors, stride=8):
    """Independent reference: the grouped-conv formulation (one group per instance), float64."""
    n = kernels.shape[0]
    p, h, w = mask_feat.shape
    weight_nums, bias_nums = dynamic_param_sizes(p)
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
    coord = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).double()  # [HW, 2]
    rel = (priors[:, None, :2] - coord[None]).permute(0, 2, 1) / (priors[:, 2].reshape(-1, 1, 1) * 8)
    x = torch.cat([rel.reshape(n, 2, h, w), mask_feat[None].expand(n, p, h, w)], 1).reshape(1, -1, h, w)
    chunks = list(torch.split(kernels, weight_nums + bias_nums, dim=1))
    layers = len(weight_nums)
    for i in range(layers):
        c_out = bias_nums[i]
        wgt = chunks[i].reshape(n * c_out, -1, 1, 1)
        x = F.conv2d(x, wgt, chunks[layers + i].reshape(-1), groups=n)
        if i < layers - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dynamic_mask_logits_match_grouped_conv_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w, n = 9 + seed, 13, 5 + seed
    mask_feat = torch.randn(8, h, w, generator=g, dtype=torch.float64)
    kernels = torch.randn(n, 169, generator=g, dtype=torch.float64) * 0.5
    strides = torch.tensor([8.0, 16.0, 32.0], dtype=torch.float64)[torch.randint(0, 3, (n,), generator=g)]
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([w * 8.0, h * 8.0], dtype=torch.float64)
    priors = torch.cat([xy, strides[:, None], strides[:, None]], 1)
    got = dynamic_mask_logits(mask_feat, kernels, priors)
    ref = _official_style_grouped_conv(mask_feat, kernels, priors)
    assert torch.allclose(got, ref, atol=1e-10, rtol=1e-10)


def test_dice_loss_values() -> None:
    t = torch.zeros(2, 4, 4, dtype=torch.bool)
    t[:, 1:3, 1:3] = True
    perfect = torch.where(t, 50.0, -50.0)
    assert torch.allclose(dice_loss(perfect, t), torch.zeros(2), atol=1e-5)
    assert torch.allclose(dice_loss(-perfect, t), torch.ones(2), atol=1e-5)


def test_batch_without_objects_gives_zero_mask_loss_with_graph() -> None:
    torch.manual_seed(0)
    model = rtmdet_edge.build_model("rtmdet-ins-tiny", num_classes=3)
    out = model(torch.randn(2, 3, 64, 64))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 64)}
    losses = rtmdet_edge.build_criterion(model)(out, [empty, empty])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_mask"].requires_grad
    (losses["loss_cls"] + losses["loss_bbox"] + losses["loss_mask"]).backward()


def test_mask_loss_backpropagates_into_prototypes_and_kernels() -> None:
    torch.manual_seed(0)
    model = rtmdet_edge.build_model("rtmdet-ins-tiny", num_classes=2)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 10:40, 16:50] = True
    target = {"boxes": torch.tensor([[16.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]), "masks": mask}
    losses = rtmdet_edge.build_criterion(model)(model(torch.randn(1, 3, 64, 64)), [target])
    assert losses["num_pos"] > 0 and losses["loss_mask"] > 0
    losses["loss_mask"].backward()
    head = model.bbox_head
    assert head.mask_head.projection.weight.grad.abs().sum() > 0
    assert any(k.weight.grad is not None and k.weight.grad.abs().sum() > 0 for k in head.rtm_kernel)


def test_compact_mask_targets_give_the_same_loss(ref) -> None:
    from rtmdet_edge.geometry.masks import mask_targets

    criterion = RTMDetInsCriterion(num_classes=80)
    full = targets_of(ref)
    compact = []
    for t in full:
        small = t["masks"][:, 2::4, 2::4]
        compact.append({"boxes": t["boxes"], "labels": t["labels"], "mask_centers": center_of_mass(t["masks"]),
                        "masks_stride4": small})
    a = criterion(outputs_of(ref), full)
    b = criterion(outputs_of(ref), compact)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # polygons -> compact targets: centre and samples equal those of the rasterised full mask
    square = [[np.array([[4.0, 6.0], [30.0, 6.0], [30.0, 20.0], [4.0, 20.0]], np.float32)], []]
    centres, small = mask_targets(square, 32, 40)
    assert small.shape == (2, 8, 10) and small.dtype == torch.bool and not small[1].any()
    assert torch.isnan(centres[1]).all()  # no mask pixels: the criterion falls back to the box centre
    assert 16 <= centres[0, 0] <= 18 and 12 <= centres[0, 1] <= 14


def test_train_loader_carries_compact_masks_for_ins() -> None:
    from rtmdet_edge.config import TrainConfig
    from rtmdet_edge.data import SyntheticDataset
    from rtmdet_edge.data.loader import build_train_loader

    cfg = TrainConfig(model="rtmdet-ins-tiny", epochs=1, batch=2, imgsz=64, workers=0)
    loader = build_train_loader(cfg, 2, SyntheticDataset(num_images=4, imgsz=64, num_classes=2, seed=0))
    images, targets = next(iter(loader))
    assert images.shape == (2, 3, 64, 64)
    for t in targets:
        n = len(t["labels"])
        assert t["masks_stride4"].shape == (n, 16, 16) and t["mask_centers"].shape == (n, 2)
    assert any(t["masks_stride4"].any() for t in targets)
    model = rtmdet_edge.build_model("rtmdet-ins-tiny", num_classes=2)
    losses = rtmdet_edge.build_criterion(model)(model(images), targets)
    assert torch.isfinite(losses["loss_mask"])


def test_ins_train_pipeline_crops_as_the_ins_configs() -> None:
    from rtmdet_edge.data.pipeline import build_train_pipeline

    def crop_of(name: str):
        return next(t for t in build_train_pipeline(name, 64, 2).transforms if hasattr(t, "crop")).crop

    ins, det = crop_of("rtmdet-ins-tiny"), crop_of("rtmdet-tiny")
    assert ins.recompute_bbox and ins.allow_negative_crop
    assert not det.recompute_bbox and not det.allow_negative_crop
