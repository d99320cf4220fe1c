"""Every transform keeps boxes, polygons and rboxes on their pixels (plain images, distinct colours)."""

from __future__ import annotations

import numpy as np
import pytest
from _data_helpers import PlainDataset, assert_aligned, make_sample

from rtmdet_edge.data.pipeline import build_test_pipeline, build_train_pipeline
from rtmdet_edge.data.transforms import (
    CachedMixUp,
    CachedMosaic,
    Compose,
    FilterAnnotations,
    LetterboxResize,
    MixUp,
    Mosaic,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    YOLOXHSVRandomAug,
)


def test_plain_sample_is_aligned():
    assert assert_aligned(make_sample(0)) == 6


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "make",
    [
        lambda s: RandomResize(640, (0.5, 2.0), seed=s),
        lambda s: RandomResize((640, 320), (0.3, 1.0), keep_ratio=False, seed=s),
        lambda s: RandomCrop(300, allow_negative_crop=True, seed=s),
        lambda s: RandomCrop(300, allow_negative_crop=True, recompute_bbox=True, seed=s),
        lambda s: RandomFlip(1.0, seed=s),
        lambda s: Pad(700),
        lambda s: LetterboxResize(320),
        lambda s: Compose([RandomResize(1280, (0.1, 2.0), seed=s), RandomCrop(640, seed=s), RandomFlip(0.5, seed=s), Pad(640)]),
    ],
    ids=["resize", "resize-noratio", "crop", "crop-recompute", "flip", "pad", "letterbox", "stage2-geometry"],
)
def test_geometric_transform_keeps_alignment(make, seed):
    out = make(seed)(make_sample(seed))
    if out is None:  # a crop without objects
        return
    assert out["image"].dtype == np.uint8
    t = make(seed)
    # a crop clips the box of a cut object, not the object: the box then only contains its pixels (mmdet semantics)
    loose = isinstance(t, RandomCrop) and not t.recompute_bbox or isinstance(t, Compose)
    # anisotropic resize distorts rotated rectangles slightly: only box tightness is exact there
    assert_aligned(out, check_rbox=not isinstance(t, RandomResize) or t.keep_ratio, contain=loose)
    assert len(out["polygons"]) == len(out["boxes"]) == len(out["rboxes"]) == len(out["labels"])
    for box, parts in zip(out["boxes"], out["polygons"]):
        if parts:  # polygon hull equals the (clipped) box, or lies inside it
            pts = np.concatenate(parts)
            hull = np.array([*pts.min(0), *pts.max(0)])
            if loose:
                assert (hull[:2] >= box[:2] - 1).all() and (hull[2:] <= box[2:] + 1).all()
            else:
                np.testing.assert_allclose(hull, box, atol=1.0)


def test_flip_maps_rbox_angle():
    s = make_sample(3)
    out = RandomFlip(1.0)(s)
    np.testing.assert_allclose(out["rboxes"][:, 0], 640 - s["rboxes"][:, 0], atol=1e-4)
    a = out["rboxes"][:, 4]
    assert ((a >= -np.pi / 2) & (a < np.pi / 2)).all()
    assert assert_aligned(out) == 6


def test_crop_rejects_empty_and_pad_is_bottom_right():
    s = make_sample(1)
    s_empty = {**s, "boxes": s["boxes"][:0], "labels": s["labels"][:0], "polygons": [], "rboxes": s["rboxes"][:0]}
    assert RandomCrop(100)(s_empty) is None
    assert RandomCrop(100, allow_negative_crop=True)(s_empty) is not None
    out = Pad((500, 700), pad_val=114)(s)
    assert out["image"].shape == (500, 700, 3)
    assert (out["image"][480:] == 114).all() and (out["image"][:, 640:] == 114).all()
    np.testing.assert_array_equal(out["boxes"], s["boxes"])


def test_hsv_keeps_geometry_and_uniform_regions():
    s = make_sample(2)
    t = YOLOXHSVRandomAug(seed=0)
    changed = 0
    for _ in range(5):
        out = t(s)
        np.testing.assert_array_equal(out["boxes"], s["boxes"])
        changed += int(not np.array_equal(out["image"], s["image"]))
        for box in out["boxes"].astype(int):  # the centre pixel's region is one colour in and out
            cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
            patch = out["image"][cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3)
            assert (patch == patch[0]).all()
    assert changed >= 2
    assert np.array_equal(s["image"], make_sample(2)["image"]), "HSV modified its input in place"


def test_filter_annotations():
    s = make_sample(0)
    s["boxes"][0] = [10, 10, 10.5, 30]
    out = FilterAnnotations((1, 1))(s)
    assert len(out["boxes"]) == 5 and len(out["polygons"]) == 5 and len(out["rboxes"]) == 5
    assert FilterAnnotations((1000, 1000), keep_empty=False)(s) is None


@pytest.mark.parametrize("cached", [True, False])
def test_mosaic_keeps_all_boxes_on_pixels(cached):
    ds = PlainDataset(8)
    t = CachedMosaic(320, max_cached_images=6, seed=1) if cached else Mosaic(320, ds, seed=1)
    outs = [t(ds.load_raw(i)) for i in range(8)]
    out = outs[-1]
    assert out["image"].shape == (640, 640, 3)
    # tiles are cut at the centre lines and canvas border: boxes of cut objects contain their pixels
    assert assert_aligned(out, contain=True) >= 6
    assert len(out["boxes"]) > 6  # objects from several tiles


@pytest.mark.parametrize("cached", [True, False])
def test_mixup_keeps_all_boxes_on_pixels(cached):
    # A objects in the top half, B objects (labels 10+) in the bottom half: after a 50/50 blend each colour is halved.
    a = make_sample(0, size=(320, 320), n=3, rows=(0.0, 0.45))
    b_ds = PlainDataset(2, size=(320, 320), n=3, label_offset=10, rows=(0.55, 1.0))
    if cached:
        t = CachedMixUp(320, max_cached_images=4, seed=0, flip_ratio=0.5)
        t(b_ds.load_raw(0))
        t.cache = [b_ds.load_raw(0)]
        out = t._mix(a, b_ds.load_raw(0))
    else:
        out = MixUp(320, b_ds, pre_transform=lambda s: s, seed=0)(a)
    assert len(out["boxes"]) == 6 and set(out["labels"].tolist()) == {0, 1, 2, 10, 11, 12}
    assert assert_aligned(out, scale=0.5) == 6


@pytest.mark.parametrize("size", ["tiny", "s", "rtmdet-l", "rtmdet-nano"])
@pytest.mark.parametrize("stage", [1, 2])
def test_train_pipeline_outputs(size, stage):
    ds = PlainDataset(12)
    pipe = build_train_pipeline(size, 320, stage, seed=0)
    n = 0
    for i in range(12):
        out = pipe(ds.load_raw(i))
        if out is None:
            continue
        assert out["image"].shape == (320, 320, 3) and out["image"].dtype == np.uint8
        assert len(out["boxes"]) == len(out["labels"]) == len(out["polygons"]) == len(out["rboxes"])
        b = out["boxes"]
        assert ((b[:, 2] - b[:, 0]) > 1).all() and ((b[:, 3] - b[:, 1]) > 1).all()
        assert (b >= 0).all() and (b <= 320).all()
        n += 1
    assert n >= 6


def test_pipelines_are_reproducible():
    ds = PlainDataset(10)
    runs = []
    for _ in range(2):
        pipe = build_train_pipeline("tiny", 320, 1, seed=3)
        runs.append([pipe(ds.load_raw(i)) for i in range(10)])
    for a, b in zip(*runs):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["boxes"], b["boxes"])


def test_test_pipeline_letterbox():
    s = make_sample(0)
    out = build_test_pipeline(320)(s)
    assert out["image"].shape == (320, 320, 3)
    np.testing.assert_allclose(out["boxes"], s["boxes"] * 0.5, atol=1e-4)
    assert out["meta"].scale_factor == (0.5, 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_fused_resize_crop_matches_separate_transforms(seed):
    from rtmdet_edge.data.transforms import RandomResizeCrop

    s = make_sample(seed)
    sep = Compose([RandomResize(1280, (0.1, 2.0), seed=seed), RandomCrop(320, allow_negative_crop=True, seed=seed + 1)])
    fused = RandomResizeCrop(RandomResize(1280, (0.1, 2.0), seed=seed), RandomCrop(320, allow_negative_crop=True, seed=seed + 1))
    a, b = sep(s), fused(s)
    assert a["image"].shape == b["image"].shape
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    diff = np.abs(a["image"].astype(int) - b["image"].astype(int))
    assert np.percentile(diff, 99) <= 2 and diff.mean() < 0.5  # bilinear rounding only


def test_clip_polygon_is_exact_intersection():
    import cv2

    from rtmdet_edge.data.sample import clip_polygon

    rng = np.random.default_rng(0)
    for _ in range(20):
        poly = rng.uniform(-50, 150, (int(rng.integers(3, 9)), 2)).astype(np.float32)
        hull = cv2.convexHull(poly).reshape(-1, 2)
        clipped = clip_polygon(hull, 0, 0, 100, 100)
        ref, _ = cv2.intersectConvexConvex(hull, np.array([[0, 0], [100, 0], [100, 100], [0, 100]], np.float32))
        got = cv2.contourArea(clipped) if len(clipped) >= 3 else 0.0
        assert abs(got - ref) < 1e-2 * max(ref, 1.0)


def test_stage1_polygons_stay_inside_the_image():
    ds = PlainDataset(10)
    pipe = build_train_pipeline("s", 320, 1, seed=1)
    for i in range(10):
        out = pipe(ds.load_raw(i))
        if out is None:
            continue
        for parts in out["polygons"]:
            for p in parts:
                assert (p >= -1e-3).all() and (p <= 320 + 1e-3).all()


def test_nano_pipeline_is_mosaic_without_mixup():
    # mmpose rtmdet_nano_320-8xb32_*.py: CachedMosaic (20, FIFO), RandomResize ratio 0.5-1.5, no CachedMixUp
    names = [type(t).__name__ for t in build_train_pipeline("rtmdet-nano", 320, 1).transforms]
    assert "CachedMosaic" in names and "CachedMixUp" not in names
    assert "CachedMixUp" in [type(t).__name__ for t in build_train_pipeline("rtmdet-tiny", 320, 1).transforms]
