"""RTMDet-Ins inference: the end-to-end official prediction (same detections, mask IoU >= 0.99), Detector masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtmdet_edge import Detector, load_checkpoint
from rtmdet_edge.geometry.masks import mask_iou, pack_masks, unpack_masks
from rtmdet_edge.inference.postprocess_ins import INS_OFFICIAL, masks_from_logits, postprocess_ins
from rtmdet_edge.inference.preprocess import LetterboxMeta, normalize, preprocess
from rtmdet_edge.models.outputs import flatten_outputs


@pytest.fixture(scope="module")
def folder(official_dir):
    return official_dir / "rtmdet-ins_tiny"


@pytest.fixture(scope="module")
def ref(folder):
    return np.load(folder / "predict.npz")


@pytest.fixture(scope="module")
def official_ins(folder):
    return load_checkpoint(folder / "checkpoint.pth").eval()


def reference_masks(ref) -> np.ndarray:
    shape = tuple(int(s) for s in ref["pred_masks_shape"])
    return unpack_masks(ref["pred_masks_packed"], shape)


def match(got_boxes, got_scores, got_labels, ref_boxes, ref_scores, ref_labels) -> list[int]:
    """Index of the reference detection matching each of ours: same label, box within 1e-2 px, score within 1e-5.

    Order may differ only between detections whose scores tie within float noise (fixtures README).
    """
    used: set[int] = set()
    out = []
    for i in range(len(got_scores)):
        cands = [
            j
            for j in np.nonzero(np.abs(ref_scores - got_scores[i]) < 1e-5)[0]
            if j not in used and ref_labels[j] == got_labels[i] and np.abs(ref_boxes[j] - got_boxes[i]).max() < 1e-2
        ]
        assert cands, f"detection {i} (label {got_labels[i]}, score {got_scores[i]:.6f}) has no official counterpart"
        used.add(cands[0])
        if cands[0] != i:  # a swapped position must be a score tie
            assert abs(ref_scores[cands[0]] - ref_scores[i]) < 1e-5
        out.append(int(cands[0]))
    return out


def test_end_to_end_prediction_matches_official(ref, official_ins) -> None:
    batch, metas = preprocess([ref["image_bgr"]], 640)
    x = normalize(torch.from_numpy(batch))
    assert np.array_equal(x.numpy(), ref["inputs"])
    with torch.no_grad():
        outputs = official_ins(x)
    for name, value in flatten_outputs(outputs).items():  # head outputs at 640 within float noise
        scale = max(1.0, float(np.abs(ref[f"head_{name}"]).max()))
        assert np.abs(value.numpy() - ref[f"head_{name}"]).max() <= 2e-5 * scale, name
    det = postprocess_ins(outputs, metas, INS_OFFICIAL, with_logits=True)[0]
    assert len(det) == len(ref["pred_scores"]) == 100
    idx = match(
        det.boxes.numpy(), det.scores.numpy(), det.labels.numpy(), ref["pred_bboxes"], ref["pred_scores"], ref["pred_labels"]
    )
    assert sorted(idx) == list(range(len(idx)))
    np.testing.assert_allclose(det.mask_logits.numpy(), ref["pred_mask_logits_lowres"][idx], atol=1e-3)
    ref_masks = reference_masks(ref)[idx]
    assert det.masks.shape == ref_masks.shape == (100, 600, 512) and det.masks.dtype == torch.bool
    ious = mask_iou(det.masks.numpy(), ref_masks)
    assert ious.min() >= 0.99, f"min mask IoU {ious.min():.4f}"


def test_detector_returns_masks(folder, ref) -> None:
    det = Detector(folder / "checkpoint.pth", imgsz=640, device="cpu")
    result = det(ref["image_bgr"])
    assert result.masks is not None and result.masks.shape == (len(result), 600, 512) and result.masks.dtype == bool
    assert len(result) == 100  # the Ins official preset: 100 instances at most, score 0.05, IoU 0.6
    ious = mask_iou(result.masks, reference_masks(ref)[match(result.boxes, result.scores, result.labels,
                                                             ref["pred_bboxes"], ref["pred_scores"], ref["pred_labels"])])
    assert ious.min() >= 0.99
    deploy = Detector(folder / "checkpoint.pth", imgsz=320, device="cpu", postprocess="deploy")(ref["image_bgr"][:300])
    assert deploy.masks.shape[1:] == (300, 512)


def test_masks_follow_the_letterbox_on_a_non_square_image() -> None:
    # A logit map positive on the left half of a 200x100 image letterboxed into 64x64 (scale 0.32).
    meta = LetterboxMeta(ori_shape=(200, 100), resized_shape=(64, 32), input_shape=(64, 64), scale_factor=(0.32, 0.32))
    logits = torch.full((1, 8, 8), -10.0)
    logits[0, :, :2] = 10.0  # input columns 0..15 -> original columns 0..~50
    masks = masks_from_logits(logits, meta)
    assert masks.shape == (1, 200, 100)
    cols = masks[0].any(dim=0).nonzero().squeeze(1)
    assert 0 == cols.min() and 40 <= cols.max() <= 60
    assert masks_from_logits(logits[:0], meta).shape == (0, 200, 100)


def test_no_detection_gives_empty_masks() -> None:
    outputs = {
        "cls_scores": [torch.full((1, 2, 8 // s, 8 // s), -20.0) for s in (1, 2, 4)],
        "bbox_preds": [torch.ones(1, 4, 8 // s, 8 // s) for s in (1, 2, 4)],
        "kernel_preds": [torch.zeros(1, 169, 8 // s, 8 // s) for s in (1, 2, 4)],
        "mask_feat": torch.zeros(1, 8, 8, 8),
    }
    meta = LetterboxMeta(ori_shape=(50, 60), resized_shape=(53, 64), input_shape=(64, 64), scale_factor=(64 / 60, 53 / 50))
    det = postprocess_ins(outputs, [meta])[0]
    assert len(det) == 0 and det.masks.shape == (0, 50, 60)


def test_pack_unpack_round_trip(rng) -> None:
    masks = rng.random((3, 7, 11)) > 0.5
    packed, shape = pack_masks(masks)
    assert packed.nbytes <= masks.size // 8 + 3
    assert np.array_equal(unpack_masks(packed, shape), masks)


def test_predict_writes_rle_and_draws_masks(folder, data_dir, tmp_path) -> None:
    import json

    import cv2
    from pycocotools import mask as mask_utils

    from rtmdet_edge.cli import main

    out = tmp_path / "out"
    src = data_dir / "video" / "demo.jpg"
    rc = main(["predict", "--weights", str(folder / "checkpoint.pth"), "--source", str(src), "--out", str(out),
               "--imgsz", "320", "--device", "cpu", "--show-thr", "0.05"])  # fmt: skip
    assert rc == 0
    results = json.loads((out / "demo.json").read_text())
    h, w = cv2.imread(str(src)).shape[:2]
    assert results and all(r["segmentation"]["size"] == [h, w] for r in results)
    m = mask_utils.decode({"size": [h, w], "counts": results[0]["segmentation"]["counts"].encode()})
    assert m.shape == (h, w)
    drawn = cv2.imread(str(out / "demo.jpg"))
    assert drawn is not None and drawn.shape[:2] == (h, w)
