"""Bad data never crashes a dataset: each case ends as documented (README "Reliability"): skipped with one counted
warning, loaded after conversion, or one UserError for a file that is unusable as a whole."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest

from rtmdet_edge.data import CocoDataset, DotaDataset, build_dataset
from rtmdet_edge.data.coco import read_image
from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.preprocess import letterbox


def _png(path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _coco(tmp_path, images: list[dict], annotations: list[dict] | None = None, files: dict | None = None):
    """Write images/<name> for each entry of `files` (name -> array, bytes or None to leave it missing) and the JSON."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name, content in (files or {}).items():
        if isinstance(content, np.ndarray):
            _png(folder / name, content)
        elif content is not None:
            (folder / name).write_bytes(content)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations or [], "categories": [{"id": 1, "name": "a"}]}))
    return ann, folder


def _img(i: int, name: str, w: int = 40, h: int = 30) -> dict:
    return {"id": i, "file_name": name, "width": w, "height": h}


def _load(ann, folder, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDataset(ann, folder, **kw)
    return ds, [str(w.message) for w in caught]


def test_file_name_escaping_the_images_folder_is_refused_even_when_it_is_an_image(tmp_path) -> None:
    _png(tmp_path / "secret.png", np.zeros((8, 8, 3), np.uint8))  # a real image outside the images folder
    ann, folder = _coco(
        tmp_path,
        [_img(1, "ok.png"), _img(2, "../secret.png"), _img(3, "../../../../etc/passwd"), _img(4, str(tmp_path / "secret.png"))],
        files={"ok.png": np.zeros((30, 40, 3), np.uint8)},
    )
    ds, lines = _load(ann, folder)
    assert ds.image_ids == [1]
    assert ds.skipped == {"outside the images folder": 3}
    assert sum("points outside" in m for m in lines) == 3


def test_bad_image_files_are_skipped_one_counted_warning_each(tmp_path) -> None:
    good = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", good)
    files = {
        "good.png": good,
        "empty.png": b"",
        "text.png": b"hello, not an image",
        "trunc.jpg": jpeg.tobytes()[: len(jpeg) // 2],
        # 'missing.png' is listed but absent
    }
    names = ["good.png", "empty.png", "text.png", "trunc.jpg", "missing.png"]
    ann, folder = _coco(tmp_path, [_img(i + 1, n) for i, n in enumerate(names)], files=files)
    ds, lines = _load(ann, folder)
    assert ds.skipped == {"empty file": 1, "not an image": 1, "missing image": 1}
    assert len(lines) == 3 and all(m.endswith("skipped") for m in lines)
    assert len(ds) == 2  # good.png and trunc.jpg (its header is fine: it is only caught when decoded)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = ds.load_raw(1)  # trunc.jpg -> replaced by the next good image, one warning
        ds.load_raw(1)
    assert s["path"].endswith("good.png") and ds.skipped["undecodable image"] == 1
    assert len(caught) == 1 and "truncated JPEG" in str(caught[0].message)


def test_all_images_undecodable_is_one_user_error_not_a_recursion(tmp_path) -> None:
    names = [f"{k}.jpg" for k in range(1200)]  # deeper than Python's recursion limit
    head = b"\xff\xd8\xff\xe0" + b"\x00" * 20  # a JPEG signature and nothing decodable
    ann, folder = _coco(tmp_path, [_img(i + 1, n) for i, n in enumerate(names)], files=dict.fromkeys(names, head))
    ds, _ = _load(ann, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="can be decoded"):
            ds.load_raw(0)


def test_grayscale_rgba_16bit_tiny_and_extreme_aspect_images_load_as_8bit_bgr(tmp_path) -> None:
    cases = {
        "gray.png": np.full((30, 40), 200, np.uint8),
        "rgba.png": np.dstack([np.full((30, 40, 3), 50, np.uint8), np.full((30, 40), 255, np.uint8)]),
        "deep.png": np.full((30, 40, 3), 40000, np.uint16),
        "one.png": np.full((1, 1, 3), 9, np.uint8),
        "wide.png": np.full((1, 3000, 3), 9, np.uint8),
        "tall.png": np.full((2000, 2, 3), 9, np.uint8),
    }
    for name, image in cases.items():
        _png(tmp_path / name, image)
        loaded, why = read_image(tmp_path / name)
        assert loaded is not None and loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3, (name, why)
        assert loaded.shape[:2] == image.shape[:2]
        padded, meta = letterbox(loaded, 64)  # the val/predict preprocessing copes with every shape
        assert padded.shape == (64, 64, 3) and min(meta.resized_shape) >= 1
    assert read_image(tmp_path / "deep.png")[0].max() == 40000 >> 8  # 16-bit scaled to 8-bit, not clipped


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"images": [{"id": 1, "file_name": "a.png"}], "categ', "not valid JSON"),  # cut off mid-file
        ("", "not valid JSON"),
        ("[]", "images"),
        ('{"images": [{"id": "1", "file_name": "a.png"}], "categories": [{"id": 1}]}', "integer"),
        ('{"images": [{"id": 1, "file_name": 7}], "categories": [{"id": 1}]}', "file_name"),
        ('{"images": [], "categories": [{"id": 1}], "annotations": {}}', "list"),
        ('{"images": [], "categories": [{"id": 1}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4]}]}', "bbox"),
        ('{"images": [], "categories": [{"id": 1}]}', "no usable images"),  # empty dataset
    ],
)
def test_malformed_incomplete_or_empty_annotation_files_are_one_user_error(tmp_path, content, match) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "ann.json").write_text(content)
    with pytest.raises(UserError, match=match):
        CocoDataset(tmp_path / "ann.json", tmp_path / "images")


def test_bad_boxes_and_unknown_categories_are_dropped_with_a_counted_warning(tmp_path) -> None:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},  # good
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},  # zero width
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, -4]},  # negative height
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [100, 5, 10, 10]},  # right of the 40x30 image
        {"id": 5, "image_id": 1, "category_id": 42, "bbox": [2, 2, 10, 10]},  # unknown category
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [30, 20, 50, 50]},  # partly outside: clipped, kept
    ]
    ann, folder = _coco(tmp_path, [_img(1, "a.png"), _img(2, "b.png")], anns, {"a.png": np.zeros((30, 40, 3), np.uint8), "b.png": np.zeros((30, 40, 3), np.uint8)})
    ds, lines = _load(ann, folder)
    assert ds.skipped == {"empty box": 2, "box outside the image": 1, "unknown category": 1}
    assert len(lines) == 4
    s = ds.load_raw(0)
    np.testing.assert_allclose(s["boxes"], [[2, 2, 12, 12], [30, 20, 40, 30]])
    assert len(ds) == 2 and len(ds.load_raw(1)["boxes"]) == 0  # an image without objects is kept for evaluation
    ds_train, _ = _load(ann, folder, filter_empty=True)
    assert ds_train.image_ids == [1]  # ... and left out of training


def test_build_dataset_reports_the_skip_counts_in_one_summary_line(tmp_path) -> None:
    ann, folder = _coco(tmp_path, [_img(1, "a.png"), _img(2, "gone.png")], files={"a.png": np.zeros((30, 40, 3), np.uint8)})
    with pytest.warns(UserWarning) as record:
        build_dataset(ann, folder, split="val")
    assert any("1 images used; skipped or dropped: 1 missing image" in str(w.message) for w in record)


def test_dota_bad_lines_are_dropped_and_the_rest_kept(tmp_path) -> None:
    _png(tmp_path / "images" / "train" / "a.png", np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "images" / "train" / "z.png").write_bytes(b"")
    (tmp_path / "labelTxt" / "train").mkdir(parents=True)
    (tmp_path / "labelTxt" / "train" / "a.txt").write_text(
        "10 10 50 10 50 30 10 30 ship 0\n"
        "10 10 50 10 50 30 ship\n"  # too few fields
        "10 10 nan 10 50 30 10 30 ship 0\n"  # not finite
        "10 10 10 10 10 10 10 10 ship 0\n"  # zero area
        "\x00\xff garbage\n"
    )
    with pytest.warns(UserWarning):
        ds = DotaDataset(tmp_path, "train")
    assert len(ds) == 1 and ds.load_raw(0)["labels"].tolist() == [6]
    assert ds.skipped == {"malformed label line": 3, "empty box": 1, "empty file": 1}


def test_synthetic_data_serves_a_model_of_any_class_count() -> None:
    # An 80-class COCO checkpoint with no COCO data at hand: benchmark speed rows need data with 80 classes.
    ds = build_dataset("synthetic:3", split="val", num_classes=80, imgsz=64)
    assert ds.num_classes == 80 and ds.class_names[11] != "class11" and ds.class_names[79] == "class79"
    labels = np.concatenate([ds.load_raw(i)["labels"] for i in range(len(ds))])
    assert len(labels) and labels.max() < 12  # only the 12 shape classes ever occur
    small = build_dataset("synthetic:3", split="val", num_classes=8, imgsz=64)  # unchanged below 12 classes
    assert small.class_names == ds.class_names[:8]


class _WorkerProbe:
    """A 'dataset' whose samples report the state of the DataLoader worker that loaded them."""

    def __len__(self) -> int:
        return 2

    def load_raw(self, index: int) -> dict:
        import signal

        probe = {"cv2_threads": cv2.getNumThreads(), "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN}
        sample = {"image": np.zeros((8, 8, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
                  "labels": np.zeros(0, np.int64), "image_id": index, "probe": probe}  # fmt: skip
        return sample


def test_loader_workers_run_opencv_single_threaded_and_leave_ctrl_c_to_the_main_process() -> None:
    from rtmdet_edge.data.loader import build_val_loader

    loader = build_val_loader(_WorkerProbe(), imgsz=32, batch_size=1, workers=1)
    probes = [infos[0]["probe"] for _, _, infos in loader]
    assert all(p["cv2_threads"] == 1 for p in probes)  # N workers x all cores of cv2 threads would oversubscribe
    assert all(p["sigint_ignored"] for p in probes)
