"""Synthetic dataset: determinism, tight labels, export round trips, speed."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from rtmdet_edge.data import CocoDataset, DotaDataset, SyntheticDataset, export_coco, export_dota


def test_deterministic_per_seed_and_index():
    a, b = SyntheticDataset(20, seed=3), SyntheticDataset(20, seed=3)
    for i in (0, 7, 19):
        sa, sb = a.load_raw(i), b[i]
        np.testing.assert_array_equal(sa["image"], sb["image"])
        np.testing.assert_array_equal(sa["boxes"], sb["boxes"])
        np.testing.assert_array_equal(sa["labels"], sb["labels"])
    assert not np.array_equal(a.load_raw(0)["image"], SyntheticDataset(20, seed=4).load_raw(0)["image"])
    assert not np.array_equal(a.load_raw(0)["image"], SyntheticDataset(20, seed=3, split="val").load_raw(0)["image"])
    # order of access does not matter (no hidden state)
    np.testing.assert_array_equal(SyntheticDataset(20, seed=3).load_raw(7)["image"], a.load_raw(7)["image"])


def test_labels_are_tight_and_consistent():
    ds = SyntheticDataset(30, num_classes=8, imgsz=(320, 416), seed=1)
    total = 0
    for i in range(len(ds)):
        s, id_map = ds.render(i)
        assert s["image"].shape == (320, 416, 3) and s["image"].dtype == np.uint8
        n = len(s["boxes"])
        assert s["labels"].shape == (n,) and s["rboxes"].shape == (n, 5) and len(s["polygons"]) == n
        assert ((s["labels"] >= 0) & (s["labels"] < 8)).all()
        ids = sorted(set(np.unique(id_map).tolist()) - {0})
        for k, (box, rb, parts) in enumerate(zip(s["boxes"], s["rboxes"], s["polygons"])):
            # the box is the tight box of some visible instance's pixels
            matches = []
            for obj in ids:
                x, y, w, h = cv2.boundingRect((id_map == obj).astype(np.uint8))
                matches.append(np.abs(np.array([x, y, x + w, y + h]) - box).max())
            assert min(matches) == 0, f"image {i} object {k}: box {box} is not tight around any instance"
            pts = parts[0]
            assert len(pts) >= 1
            assert (pts.min(0) >= box[:2] - 1e-3).all() and (pts.max(0) <= box[2:] - 1 + 1e-3).all()
            assert box[0] - 2 <= rb[0] <= box[2] + 2 and box[1] - 2 <= rb[1] <= box[3] + 2
            assert -np.pi / 2 <= rb[4] < np.pi / 2
            # the rbox covers the polygon: rbox area >= polygon area, and no larger than its box's bound
            assert rb[2] * rb[3] + 1 >= cv2.contourArea(pts)
            total += 1
    assert total > 60


def test_difficulty_spread():
    # generation speed (10 ms per 640x640 image budget) is measured by benchmarks/data_pipeline.py, not asserted here
    ds = SyntheticDataset(60, imgsz=640, seed=0)
    counts, small = [], 0
    for i in range(len(ds)):
        s = ds.load_raw(i)
        counts.append(len(s["boxes"]))
        wh = s["boxes"][:, 2:] - s["boxes"][:, :2]
        small += int((wh.max(1) < 32).sum())
    assert max(counts) >= 10 and min(counts) <= 3
    assert small >= 30  # plenty of small objects
    assert len(set(np.concatenate([ds.load_raw(i)["labels"] for i in range(20)]).tolist())) == 8


def test_export_coco_round_trip(tmp_path):
    ds = SyntheticDataset(6, num_classes=5, imgsz=256, seed=2)
    export_coco(ds, tmp_path / "ann.json", tmp_path / "images")
    coco = CocoDataset(tmp_path / "ann.json", tmp_path / "images")
    assert len(coco) == 6 and coco.class_names == ds.class_names
    for i in range(6):
        a, b = ds.load_raw(i), coco.load_raw(i)
        np.testing.assert_array_equal(a["image"], b["image"])  # PNG is lossless
        keep = ((a["boxes"][:, 2:] - a["boxes"][:, :2]) > 1).all(1)  # CocoDataset drops boxes of <= 1 px
        np.testing.assert_allclose(b["boxes"], a["boxes"][keep], atol=1e-4)
        np.testing.assert_array_equal(b["labels"], a["labels"][keep])
        assert [coco.label_to_cat_id(l) for l in b["labels"]] == [int(l) + 1 for l in a["labels"][keep]]


def test_export_dota_round_trip(tmp_path):
    ds = SyntheticDataset(4, num_classes=6, imgsz=256, seed=5)
    export_dota(ds, tmp_path, split="train")
    dota = DotaDataset(tmp_path, "train", class_names=ds.class_names)
    for i in range(4):
        a, b = ds.load_raw(i), dota.load_raw(i)
        np.testing.assert_array_equal(b["labels"], a["labels"])
        np.testing.assert_allclose(b["rboxes"][:, :4], a["rboxes"][:, :4], atol=0.2)
        da = np.abs(b["rboxes"][:, 4] - a["rboxes"][:, 4])
        assert (np.minimum(da, np.pi - da) < 0.02).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        SyntheticDataset(5, num_classes=0)  # more than 12 is allowed: see test_robustness_data
    with pytest.raises(IndexError):
        SyntheticDataset(5).load_raw(5)


def test_easy_style_plain_colours_same_labels():
    """`easy` (the Ins/R learning curves' task): 3 classes, at most 4 objects, no clutter; switching textures off keeps
    the shapes and labels of the textured images (the texture is drawn from the stream, then discarded)."""
    from dataclasses import replace

    from rtmdet_edge.data.spec import build_dataset
    from rtmdet_edge.data.synthetic import EASY

    easy = build_dataset("easy:12", split="val", imgsz=128)
    assert easy.class_names == ["ellipse", "rectangle", "triangle"] and easy.style == EASY
    textured = SyntheticDataset(12, 3, 128, split="val", max_objects=4, style=replace(EASY, textures=True))
    for i in range(12):
        a, b = easy.load_raw(i), textured.load_raw(i)
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        assert 1 <= len(a["labels"]) <= 5
