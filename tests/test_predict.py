"""Detector API and `rtmdet-edge predict` on images, folders, videos; bad inputs are skipped or clear errors."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from rtmdet_edge import Detector, UserError
from rtmdet_edge.cli import main


@pytest.fixture(scope="module")
def tiny_ckpt(official_dir):
    return official_dir / "rtmdet_tiny" / "checkpoint.pth"


def test_detector_single_and_batch(tiny_ckpt, data_dir) -> None:
    det = Detector(tiny_ckpt, imgsz=320, postprocess="deploy", device="cpu")
    img = cv2.imread(str(data_dir / "video" / "demo.jpg"))
    one = det(img)
    assert one.boxes.shape[1] == 4 and one.boxes.dtype == np.float32 and len(one.labels) == len(one.scores)
    many = det([img, img[:200, :300]])
    assert len(many) == 2
    np.testing.assert_allclose(many[0].scores, one.scores, atol=1e-5)
    assert (many[1].boxes[:, [0, 2]] <= 300 + 1e-3).all()
    assert det.class_names[0] == "person"


def test_detector_rejects_unknown_backend(tiny_ckpt) -> None:
    with pytest.raises(UserError, match="unknown backend"):
        Detector(tiny_ckpt, backend="tflite")


def test_predict_folder_with_corrupt_image(tiny_ckpt, data_dir, tmp_path, capsys) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(data_dir / "video" / "demo.jpg", src / "000000000042.jpg")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(tiny_ckpt), "--source", str(src), "--out", str(out), "--imgsz", "320"])
    assert rc == 0
    results = json.loads((out / "000000000042.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
    assert results[0]["image_id"] == 42 and len(results) <= 300
    assert cv2.imread(str(out / "000000000042.jpg")) is not None
    assert not (out / "broken.json").exists()


def test_predict_video(tiny_ckpt, data_dir, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["predict", "--weights", str(tiny_ckpt), "--source", str(data_dir / "video" / "demo.mp4")]
    rc = main(args + ["--out", str(out), "--imgsz", "256", "--max-frames", "3", "--preset", "deploy"])
    assert rc == 0
    frames = {r["image_id"] for r in json.loads((out / "demo.json").read_text())}
    assert frames <= {0, 1, 2}
    cap = cv2.VideoCapture(str(out / "demo.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_predict_missing_source_is_clear(tiny_ckpt, tmp_path, capsys) -> None:
    rc = main(["predict", "--weights", str(tiny_ckpt), "--source", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err
