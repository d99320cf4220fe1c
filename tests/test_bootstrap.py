"""Paired bootstrap on COCOeval's matching: exact AP with unit weights, exact AP of duplicated images with weights."""

from __future__ import annotations

import numpy as np
import pytest

from rtmdet_edge.evaluation.bootstrap import paired_bootstrap, weighted_ap
from rtmdet_edge.evaluation.coco import _CocoCollector
from rtmdet_edge.inference.postprocess import Detections

NAMES = ["a", "b", "c"]


def _scene(rng: np.random.Generator, noise: float) -> tuple[dict, Detections]:
    n = int(rng.integers(0, 6))
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(8, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    labels = rng.integers(0, 3, n)
    info = {"boxes": boxes, "labels": labels, "ori_shape": (300, 300)}
    if rng.random() < 0.2:
        info["ignore_boxes"] = np.array([[0, 0, 40, 40]], np.float64)
    # detections: jittered true boxes (some with the wrong label), plus false positives
    keep = rng.random(n) < 0.85
    d = boxes[keep] + rng.normal(0, noise, (int(keep.sum()), 4)) * wh[keep].repeat(2, 1) / 10
    dl = np.where(rng.random(int(keep.sum())) < 0.9, labels[keep], rng.integers(0, 3, int(keep.sum())))
    m = int(rng.integers(0, 4))
    fxy = rng.uniform(0, 250, (m, 2))
    d = np.concatenate([d, np.concatenate([fxy, fxy + rng.uniform(5, 50, (m, 2))], 1)])
    dl = np.concatenate([dl, rng.integers(0, 3, m)])
    return info, Detections(d, rng.uniform(0.05, 1.0, len(d)), dl)


def _evaluate(scenes, repeat: np.ndarray | None = None):
    col = _CocoCollector(NAMES, [1, 2, 3])
    for i, (info, det) in enumerate(scenes):
        for _ in range(1 if repeat is None else int(repeat[i])):
            col.add_image(info, det)
    return col.summarize()


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    return [_scene(rng, 1.0) for _ in range(40)]


def test_unit_weights_equal_cocoeval(scenes) -> None:
    result = _evaluate(scenes)
    ap, per_class = weighted_ap(result.matches)
    assert ap == pytest.approx(result.metrics["AP"], abs=1e-12)
    for k, name in enumerate(NAMES):
        assert per_class[k] == pytest.approx(result.per_class[name], abs=1e-12)


def test_weights_equal_duplicated_images(scenes) -> None:
    table = _evaluate(scenes).matches
    rng = np.random.default_rng(1)
    for _ in range(3):
        counts = np.bincount(rng.integers(0, len(scenes), len(scenes)), minlength=len(scenes))
        expected = _evaluate(scenes, counts).metrics["AP"]  # COCOeval on the drawn images, duplicates included
        assert weighted_ap(table, counts)[0] == pytest.approx(expected, abs=1e-9)


def test_interval_separates_a_real_gap_from_noise(scenes) -> None:
    base = _evaluate(scenes).matches
    rng = np.random.default_rng(5)
    worse = _evaluate([(info, Detections(d.boxes + rng.normal(0, 3, d.boxes.shape), d.scores, d.labels))
                       for info, d in scenes]).matches  # fmt: skip
    gap = paired_bootstrap(base, worse, draws=300)
    assert gap.value > 0 and gap.excludes_zero()  # 3 px of box noise is a real loss
    same = paired_bootstrap(base, base, draws=50)
    assert same.value == 0 and same.low == 0 and same.high == 0
    with pytest.raises(ValueError):
        paired_bootstrap(base, _evaluate(scenes[:10]).matches)
