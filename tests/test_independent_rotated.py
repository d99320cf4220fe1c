"""RTMDet-R against the OFFICIAL mmrotate 1.0.0rc1 beyond the shared fixture: other sizes (tiny, s, m, l), seeds, class
counts, inputs and ground truth. The raw outputs of these folders are checked by test_independent_parity.py; here,
the two other halves of the acceptance point: the end-to-end post-processing and the loss with its assignment.

Each `rtmdet-r-*` folder under tests/fixtures/independent/ was produced by tools/make_independent_rotated_fixtures.py
in an isolated venv that imports nothing from this repository: mmrotate's `predict_by_feat` and `loss_by_feat` ran on
the folder's own official raw head outputs (`raw.npz`), with seeded random rotated GT for the loss. mmcv-lite has no
compiled ops, so that script computes box_iou_rotated, diff_iou_rotated_2d and nms_rotated with exact float64 shapely
geometry (see its docstring); the official ops compute the same quantities in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtmdet_edge.geometry.rotated import rbox_iou
from rtmdet_edge.inference.preprocess import LetterboxMeta
from rtmdet_edge.inference.rotated_postprocess import postprocess_rotated
from rtmdet_edge.training.rotated_loss import RotatedRTMDetCriterion

ROOT = Path(__file__).parent / "fixtures" / "independent"
FOLDERS = sorted(p for p in ROOT.glob("rtmdet-r-*") if (p / "loss.npz").is_file()) if ROOT.is_dir() else []
GROUPS = (("cls_scores", "cls_score"), ("bbox_preds", "bbox_pred"), ("angle_preds", "angle_pred"))


def _outputs(folder: Path) -> dict[str, list[torch.Tensor]]:
    raw = np.load(folder / "raw.npz")
    return {group: [torch.from_numpy(raw[f"{name}_{i}"]) for i in range(3)] for group, name in GROUPS}


def test_rotated_folders_present() -> None:
    assert len(FOLDERS) >= 4, "tests/fixtures/independent/rtmdet-r-* missing (tools/make_independent_rotated_fixtures.py)"


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_rotated_postprocess_matches_official(folder: Path) -> None:
    """Same detections as mmrotate's predict_by_feat: every official one found with the same label, score within 1e-5
    and rotated IoU > 0.999, same count. A float-noise tie at the NMS threshold may flip one decision (and the ones
    it causes), so up to 0.5% may differ; each folder's run prints how many did."""
    info = json.loads((folder / "info.json").read_text())
    ref = np.load(folder / "predict.npz")
    h, w = info["input_hw"]
    meta = LetterboxMeta(ori_shape=(h, w), resized_shape=(h, w), input_shape=(h, w), scale_factor=(1.0, 1.0))
    dets = postprocess_rotated(_outputs(folder), [meta])[0]
    n_ref = len(ref["pred_scores"])
    assert n_ref == info["num_predictions"] > 50
    ours = torch.as_tensor(np.asarray(dets.boxes), dtype=torch.float64)
    iou = rbox_iou(ours, torch.from_numpy(ref["pred_bboxes"]).double()).numpy()
    same = (np.asarray(dets.labels)[:, None] == ref["pred_labels"][None]) & (
        np.abs(np.asarray(dets.scores)[:, None] - ref["pred_scores"][None]) < 1e-5
    )
    matched = int(((iou > 0.999) & same).any(0).sum())
    print(f"{folder.name}: {matched}/{n_ref} official detections matched, {len(dets)} ours")
    assert abs(len(dets) - n_ref) <= max(1, n_ref // 200)
    assert matched >= n_ref - max(1, n_ref // 200)


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_rotated_loss_matches_official(folder: Path) -> None:
    ref = np.load(folder / "loss.npz")
    outputs = _outputs(folder)
    target = {"rboxes": torch.from_numpy(ref["gt_bboxes"]), "labels": torch.from_numpy(ref["gt_labels"])}
    crit = RotatedRTMDetCriterion(num_classes=outputs["cls_scores"][0].shape[1])
    levels = crit.level_losses(outputs, [target])
    a = levels["targets"].assignments[0]
    np.testing.assert_array_equal(a.gt_inds.numpy(), ref["assign_gt_inds"], err_msg="assignment differs")
    np.testing.assert_array_equal(a.labels.numpy(), ref["assign_labels"])
    np.testing.assert_allclose(a.max_overlaps.numpy(), ref["assign_max_overlaps"], atol=2e-6)
    assert (ref["assign_gt_inds"] > 0).sum() > 0
    np.testing.assert_allclose([x.item() for x in levels["loss_cls"]], ref["loss_cls"], rtol=1e-5)
    np.testing.assert_allclose([x.item() for x in levels["loss_bbox"]], ref["loss_bbox"], rtol=1e-5, atol=1e-7)
