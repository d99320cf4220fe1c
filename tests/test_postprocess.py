"""Post-processing: exact greedy NMS, official end-to-end predictions on the real fixture image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtmdet_edge.inference.postprocess import DEPLOY, OFFICIAL, batched_nms, nms, postprocess
from rtmdet_edge.inference.preprocess import normalize, preprocess


def reference_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, thr: float) -> list[int]:
    """Plain-loop greedy class-aware NMS in float64 (mmcv semantics: suppress when IoU > thr)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            if labels[i] != labels[j]:
                continue
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            b = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (a + b - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_nms_equals_greedy_reference(seed: int) -> None:
    g = np.random.default_rng(seed)
    n = int(g.integers(1, 1500))
    # clustered boxes so that suppression chains are long (the hard case for block-wise NMS)
    centers = g.uniform(0, 300, size=(max(1, n // 30), 2))[g.integers(0, max(1, n // 30), n)]
    xy = centers + g.normal(0, 6, size=(n, 2))
    wh = g.uniform(4, 60, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = g.permutation(n).astype(np.float32) / n  # distinct scores: the order is well defined
    labels = g.integers(0, 3, n)
    expected = reference_nms(boxes.astype(np.float64), scores, labels, 0.5)
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5)
    assert got.tolist() == expected
    capped = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5, max_keep=7)
    assert capped.tolist() == expected[:7]


def test_nms_empty() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def match_detections(got, ref_boxes, ref_scores, ref_labels, box_tol=1e-2, score_tol=1e-5) -> None:
    """Same count; each position equal, except that detections whose scores tie within float noise may swap."""
    assert len(got.scores) == len(ref_scores)
    used = np.zeros(len(ref_scores), bool)
    for i in range(len(ref_scores)):
        cand = np.nonzero(
            ~used
            & (np.abs(ref_scores - got.scores[i]) <= score_tol)
            & (ref_labels == got.labels[i])
            & (np.abs(ref_boxes - got.boxes[i]).max(axis=1) <= box_tol)
        )[0]
        assert len(cand), f"detection {i} (label {got.labels[i]}, score {got.scores[i]:.6f}) not in the reference"
        j = cand[0] if i not in cand else i
        assert abs(int(j) - i) <= 3, f"detection {i} found at {j}: order differs beyond a near-tie"
        used[j] = True


def test_predict_matches_official_end_to_end(official_dir, official_tiny) -> None:
    ref = np.load(official_dir / "rtmdet_tiny" / "predict.npz")
    batch, metas = preprocess(ref["image_bgr"], 640)
    x = normalize(batch)
    assert np.array_equal(x.numpy(), ref["inputs"])  # letterbox + normalisation bit-exact
    with torch.no_grad():
        out = official_tiny(x)
    det = postprocess(out, metas, OFFICIAL)[0].numpy()
    assert len(det) == 300
    match_detections(det, ref["pred_bboxes"], ref["pred_scores"], ref["pred_labels"])


def test_postprocess_of_official_head_outputs_is_exact(official_dir) -> None:
    ref = np.load(official_dir / "rtmdet_tiny" / "predict.npz")
    _, metas = preprocess(ref["image_bgr"], 640)
    out = {
        "cls_scores": [torch.from_numpy(ref[f"head_cls_score_{i}"]) for i in range(3)],
        "bbox_preds": [torch.from_numpy(ref[f"head_bbox_pred_{i}"]) for i in range(3)],
    }
    det = postprocess(out, metas, OFFICIAL)[0].numpy()
    np.testing.assert_array_equal(det.labels, ref["pred_labels"])
    np.testing.assert_allclose(det.boxes, ref["pred_bboxes"], atol=1e-3)
    np.testing.assert_allclose(det.scores, ref["pred_scores"], atol=1e-6)


def test_deploy_preset_is_a_subset_in_spirit(official_dir, official_tiny) -> None:
    ref = np.load(official_dir / "rtmdet_tiny" / "predict.npz")
    batch, metas = preprocess([ref["image_bgr"], ref["image_bgr"][:300]], 640)  # two sizes in one batch
    with torch.no_grad():
        out = official_tiny(normalize(batch))
    dets = [d.numpy() for d in postprocess(out, metas, DEPLOY)]
    for d, meta in zip(dets, metas):
        assert len(d) <= DEPLOY.max_per_img and (d.scores >= DEPLOY.score_thr).all()
        h, w = meta.ori_shape
        assert (d.boxes[:, 2] <= 640 / meta.scale_factor[0] + 1e-3).all() and (d.boxes >= -1e-3).all()


@pytest.mark.parametrize("score_thr", [0.0, 0.001, 0.3, 0.9])
@pytest.mark.parametrize("topk", [50, 100000])
def test_select_candidates_equals_full_sigmoid_filter(score_thr: float, topk: int) -> None:
    """Filtering on logits first must pick exactly mmdet's pairs: sigmoid of everything, `> thr`, row-major order."""
    from rtmdet_edge.inference.postprocess import select_candidates

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(7, 9, 11, generator=g) * 4
    if score_thr > 0:  # values within float rounding of the threshold's logit, on both sides
        edge = torch.logit(torch.tensor(score_thr, dtype=torch.float64)).float()
        logits.view(-1)[:40] = edge + torch.linspace(-1e-5, 1e-5, 40)
    logits.view(-1)[40:60] = logits.view(-1)[60]  # exact score ties: row-major order decides them
    probs = logits.permute(1, 2, 0).reshape(-1, 7).sigmoid()
    valid = probs > score_thr
    ref_scores, pairs = probs[valid], torch.nonzero(valid)
    if len(ref_scores) > topk:
        ref_scores, order = ref_scores.topk(topk)
    else:
        ref_scores, order = ref_scores.sort(descending=True)
    scores, labels, priors = select_candidates(logits, score_thr, topk)
    # Same pairs, same scores to the last bit or two: PyTorch's sigmoid rounds an element differently by where it
    # falls in the SIMD loop (on AVX-512 CPUs the reference's strided view and our gathered vector differ by one ulp
    # in a few elements), so bitwise equality would test the CPU, not the selection.
    torch.testing.assert_close(scores, ref_scores, rtol=1e-6, atol=0)
    ref_labels, ref_priors = pairs[order, 1], pairs[order, 0]
    assert set(zip(priors.tolist(), labels.tolist())) == set(zip(ref_priors.tolist(), ref_labels.tolist()))
    # The order is mmdet's wherever it is decided by more than float noise (ties included: equal logits give
    # bit-equal scores on both sides and row-major order decides them).
    gap = torch.full_like(ref_scores, float("inf"))
    gap[1:] = (ref_scores[1:] - ref_scores[:-1]).abs()
    gap[:-1] = torch.minimum(gap[:-1], (ref_scores[1:] - ref_scores[:-1]).abs())
    decided = (gap > 1e-6 * ref_scores) | (gap == 0)
    assert decided.float().mean() > 0.5  # most of the order is checked, not a vacuous subset
    assert torch.equal(labels[decided], ref_labels[decided]) and torch.equal(priors[decided], ref_priors[decided])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pairs_above_numpy_and_torch_paths_agree(dtype) -> None:
    """float32 CPU logits take the numpy path, others (float16 here, CUDA in use) torch's: same pairs, same order."""
    from rtmdet_edge.inference.postprocess import _pairs_above

    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(6, 50, generator=g) * 3).to(dtype)
    logits[:, 7] = -10.0  # a prior with no class above the bound
    pair, vals = _pairs_above(logits, 1.5)
    ref = torch.nonzero(logits.t().reshape(-1) > 1.5).squeeze(1)  # row-major (prior, class)
    assert torch.equal(pair, ref) and torch.equal(vals, logits.t().reshape(-1)[ref])
    assert not (pair // 6 == 7).any()
    empty_pair, empty_vals = _pairs_above(logits, 100.0)
    assert empty_pair.numel() == 0 and empty_vals.numel() == 0


def test_select_candidates_on_quantized_logits_keeps_the_top_scores() -> None:
    """INT8 outputs take few values, so many pairs tie: with more priors than nms_pre the search bound rises to the
    k-th best prior's logit, and the top-k scores must still be exactly those of the full filter."""
    from rtmdet_edge.inference.postprocess import select_candidates

    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(20, 40, 40, generator=g) * 2 / 0.05).round() * 0.05  # a 0.05 grid, like dequantized INT8
    scores, labels, priors = select_candidates(logits, 0.3, 100)
    every = logits.permute(1, 2, 0).reshape(-1).sigmoid()
    ref = every[every > 0.3].sort(descending=True).values[:100]
    assert len(every[every > 0.3]) > 10 * 100  # the raised-bound path, not a trivial cut
    torch.testing.assert_close(scores, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(logits[labels, priors // 40, priors % 40].sigmoid(), scores, rtol=1e-6, atol=0)
    assert len(set(zip(priors.tolist(), labels.tolist()))) == 100
