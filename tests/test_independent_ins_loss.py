"""RTMDet-Ins loss against the OFFICIAL mmdet 3.3.0 loss beyond the shared fixture: other sizes, seeds, class counts,
inputs and ground truth.

Folders under tests/fixtures/independent/ with a `loss.npz` were produced by tools/make_independent_fixtures.py
(section "RTMDet-Ins") in an isolated venv that imports nothing from this repository: mmdet's
RTMDetInsSepBNHead.loss_by_feat ran on the folder's own official raw head outputs (`raw.npz`) with seeded random GT
masks (ellipses and rotated rectangles, boxes = tight mask boxes), and its assigner's result was recorded. Feeding the
same raw outputs and GT to our criterion must give the same assignment for every prior and the same losses
(1e-5 relative).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rtmdet_edge.geometry.masks import unpack_masks
from rtmdet_edge.training.mask_loss import RTMDetInsCriterion

ROOT = Path(__file__).parent / "fixtures" / "independent"
FOLDERS = sorted(p for p in ROOT.glob("rtmdet-ins-*") if (p / "loss.npz").is_file()) if ROOT.is_dir() else []


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_ins_loss_matches_official(folder: Path) -> None:
    raw, ref = np.load(folder / "raw.npz"), np.load(folder / "loss.npz")
    outputs = {
        group: [torch.from_numpy(raw[f"{name}_{i}"]) for i in range(3)]
        for group, name in (("cls_scores", "cls_score"), ("bbox_preds", "bbox_pred"), ("kernel_preds", "kernel_pred"))
    }
    outputs["mask_feat"] = torch.from_numpy(raw["mask_feat"])
    masks = unpack_masks(ref["gt_masks_packed"], tuple(int(s) for s in ref["gt_masks_shape"]))
    target = {"boxes": torch.from_numpy(ref["gt_bboxes"]), "labels": torch.from_numpy(ref["gt_labels"]),
              "masks": torch.from_numpy(masks)}  # fmt: skip
    num_classes = raw["cls_score_0"].shape[1]
    criterion = RTMDetInsCriterion(num_classes=num_classes)
    levels = criterion.level_losses(outputs, [target])
    a = levels["targets"].assignments[0]
    assert np.array_equal(a.gt_inds.numpy(), ref["assign_gt_inds"]), "assignment differs from mmdet"
    assert np.array_equal(a.labels.numpy(), ref["assign_labels"])
    np.testing.assert_allclose(a.max_overlaps.numpy(), ref["assign_max_overlaps"], rtol=1e-6)
    losses = criterion(outputs, [target])
    for key in ("loss_cls", "loss_bbox", "loss_mask"):
        expected = float(np.sum(ref[key]))
        assert abs(losses[key].item() - expected) <= 1e-5 * abs(expected), (key, losses[key].item(), expected)
    assert int(losses["num_pos"]) == int((ref["assign_gt_inds"] > 0).sum()) > 0
