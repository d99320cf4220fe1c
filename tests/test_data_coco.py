"""CocoDataset on coco128-seg and on hand-made broken inputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from _data_helpers import SHARED

from rtmdet_edge.data import CocoDataset
from rtmdet_edge.errors import UserError

COCO128 = SHARED / "data" / "coco128-seg"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason=f"{COCO128} not found (shared data is beside the repo)")


@needs_coco128
def test_coco128_loads_all_instances():
    ds = CocoDataset(COCO128 / "annotations" / "instances_train2017.json", COCO128 / "images" / "train2017")
    assert len(ds) == 128 and len(ds.class_names) == 80
    raw = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())
    expected = sum(1 for a in raw["annotations"] if not a["iscrowd"] and min(a["bbox"][2:]) > 1)
    samples = [ds.load_raw(i) for i in range(len(ds))]
    assert sum(len(s["boxes"]) for s in samples) == expected == 929
    assert sum(len(s["boxes"]) == 0 for s in samples) == 2  # images without objects are kept
    s = samples[0]
    assert s["image"].dtype == np.uint8 and s["image"].shape[2] == 3
    assert s["ori_shape"] == s["image"].shape[:2] and s["image_id"] == ds.image_ids[0]
    assert len(s["polygons"]) == len(s["boxes"]) and all(p[0].shape[1] == 2 for p in s["polygons"])
    # category mapping round trip: label -> category id -> the annotation's category id
    by_image = {}
    for a in raw["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["category_id"])
    for s in samples[:20]:
        assert [ds.label_to_cat_id(l) for l in s["labels"]] == by_image.get(s["image_id"], [])
    masks = ds.load_masks(0)
    assert masks.shape == (len(samples[0]["boxes"]), *samples[0]["ori_shape"])


def _write(tmp_path, data, images=("a.png",)):
    import cv2

    (tmp_path / "images").mkdir(exist_ok=True)
    for name in images:
        cv2.imwrite(str(tmp_path / "images" / name), np.full((50, 60, 3), 100, np.uint8))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _base():
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 50}],
        "annotations": [],
        "categories": [{"id": 3, "name": "x"}, {"id": 7, "name": "y"}],
    }


def test_rules_for_crowd_degenerate_unknown_and_rle(tmp_path):
    from pycocotools import mask as mask_utils

    mask = np.zeros((50, 60), np.uint8, order="F")
    mask[10:30, 20:40] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode()
    data = _base()
    data["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 20], "iscrowd": 0, "segmentation": [[1, 2, 11, 2, 11, 22]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0.5, 10], "iscrowd": 0},  # degenerate
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 30], "iscrowd": 1},  # crowd -> ignore
        {"id": 4, "image_id": 1, "category_id": 99, "bbox": [0, 0, 30, 30], "iscrowd": 0},  # unknown category
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [20, 10, 20, 20], "iscrowd": 0, "segmentation": rle},
    ]
    with pytest.warns(UserWarning, match="99"):
        ds = CocoDataset(_write(tmp_path, data), tmp_path / "images")
    s = ds.load_raw(0)
    np.testing.assert_allclose(s["boxes"], [[1, 2, 11, 22], [20, 10, 40, 30]])
    assert s["labels"].tolist() == [1, 0] and ds.cat_ids == [3, 7]
    np.testing.assert_allclose(s["ignore_boxes"], [[0, 0, 30, 30]])
    poly = s["polygons"][1][0]  # from the RLE mask's contour
    assert poly.min(0).tolist() == [20, 10] and poly.max(0).tolist() == [39, 29]
    assert ds.load_masks(0)[1].sum() == 400


def test_missing_and_corrupt_images_are_skipped(tmp_path):
    data = _base()
    data["images"] += [
        {"id": 2, "file_name": "b.png", "width": 60, "height": 50},
        {"id": 3, "file_name": "missing.png", "width": 60, "height": 50},
    ]
    path = _write(tmp_path, data, images=("a.png", "b.png"))
    (tmp_path / "images" / "b.png").write_bytes(b"not an image at all")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = CocoDataset(path, tmp_path / "images")
    # one line per bad image, counted by reason
    assert len(w) == 2 and "b.png: not an image" in str(w[0].message) and "missing.png: missing image" in str(w[1].message)
    assert ds.skipped == {"not an image": 1, "missing image": 1}
    assert len(ds) == 1 and ds.load_raw(0)["image_id"] == 1


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ('{"annotations": []}', "images"),
        ('{"images": [], "categories": []}', "categories"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1}]}', "file_name"),
        ('{"images": [], "categories": [{"id": 1}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1]}]}', "bbox"),
    ],
)
def test_malformed_annotation_file_is_a_user_error(tmp_path, content, match):
    path = _write(tmp_path, content)
    with pytest.raises(UserError, match=match):
        CocoDataset(path, tmp_path / "images")


def test_missing_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        CocoDataset(tmp_path / "nope.json", tmp_path)
    with pytest.raises(UserError):
        CocoDataset(_write(tmp_path, _base()), tmp_path / "no_images")
