"""RTMDet-R through predict (JSON + DOTA task-1 files + drawn rotated boxes) and training end to end on dota8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rtmdet_edge
from rtmdet_edge.data.dota import DOTA_CLASSES, DotaDataset
from rtmdet_edge.inference.draw import draw_detections
from rtmdet_edge.inference.postprocess import Detections
from rtmdet_edge.inference.predict import predict_images
from rtmdet_edge.training.rotated_train import RotatedTrainConfig, evaluate_rotated, train_rotated


def test_draw_rotated_boxes() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    det = Detections(np.array([[50.0, 50.0, 60.0, 20.0, 0.7]]), np.array([0.9]), np.array([1]))
    drawn = draw_detections(image, det, ["a", "b"])
    assert drawn.any() and not image.any()
    # the outline follows the rotated box: the axis-aligned corner (20, 40) of the unrotated box stays dark
    assert drawn[40, 20].sum() == 0


def test_predict_writes_json_and_dota_files(data_dir: Path, official_dir: Path, tmp_path: Path) -> None:
    detector = rtmdet_edge.Detector(official_dir / "rtmdet-r_tiny" / "checkpoint.pth", imgsz=256, device="cpu")
    image = data_dir / "dota8" / "images" / "val" / "P1470__1024__3296___1648.jpg"
    assert predict_images(detector, [image], tmp_path, show_thr=0.3, save_media=True) == 1
    results = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert results and all(len(r["rbox"]) == 5 and len(r["bbox"]) == 4 for r in results)
    files = sorted(p.name for p in (tmp_path / "dota_task1").iterdir())
    assert files == sorted(f"Task1_{c}.txt" for c in DOTA_CLASSES)
    lines = [line.split() for p in (tmp_path / "dota_task1").iterdir() for line in p.read_text().splitlines()]
    assert len(lines) == len(results) and all(len(x) == 10 and x[0] == image.stem for x in lines)
    assert (tmp_path / f"{image.stem}.jpg").is_file()


@pytest.mark.slow
def test_dota8_trains_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train = DotaDataset(data_dir / "dota8", "train")
    val = DotaDataset(data_dir / "dota8", "val")
    cfg = RotatedTrainConfig(epochs=1, batch=2, imgsz=256, lr=1e-3, eval_epochs=(1,))
    rows = train_rotated(cfg, train, val, tmp_path, DOTA_CLASSES)
    assert len(rows) == 1 and np.isfinite(rows[0]["loss"]) and rows[0]["loss_bbox"] > 0
    assert 0.0 <= rows[0]["mAP50_07"] <= 1.0
    ckpt = rtmdet_edge.load_checkpoint(tmp_path / "last.pth")
    assert ckpt.config.kind == "rot"
    result = evaluate_rotated(ckpt, val, 256, DOTA_CLASSES)
    assert sum(r["num_gts"] for r in result.per_class.values()) > 0


def test_dota_devkit_flat_layout(tmp_path: Path, data_dir: Path) -> None:
    """images/ + labelTxt/ without split folders (DOTA devkit), headers, and an image without a label file."""
    import shutil
    import warnings

    from rtmdet_edge.data import build_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    src = data_dir / "dota8" / "images" / "train"
    for k, img in enumerate(sorted(src.iterdir())[:2]):
        shutil.copy(img, tmp_path / "images" / img.name)
        if k == 0:
            body = (data_dir / "dota8" / "labelTxt_dota" / "train" / f"{img.stem}.txt").read_text()
            (tmp_path / "labelTxt" / f"{img.stem}.txt").write_text("imagesource:GoogleEarth\ngsd:0.146\n" + body)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = build_dataset(str(tmp_path), split="train")
    assert len(ds) == 2
    counts = sorted(len(ds.load_raw(i)["rboxes"]) for i in range(2))
    assert counts[0] == 0 and counts[1] > 0


@pytest.mark.slow
def test_cli_train_and_eval_rotated(data_dir: Path, tmp_path: Path, capsys) -> None:
    from rtmdet_edge.cli import main

    dota8 = str(data_dir / "dota8")
    assert main(["train", "--model", "rtmdet-r-tiny", "--data", dota8, "--epochs", "1", "--batch", "2", "--imgsz", "128",
                 "--device", "cpu", "--workers", "0", "--eval-interval", "1", "--out", str(tmp_path / "r")]) == 0
    assert main(["eval", "--weights", str(tmp_path / "r" / "last.pth"), "--data", dota8, "--imgsz", "128",
                 "--device", "cpu", "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert report["per_class"]["plane"]["AP50"] is None and report["mAP50_07"] is not None
    assert "mAP50(07)" in capsys.readouterr().out
