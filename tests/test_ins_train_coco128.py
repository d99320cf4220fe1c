"""RTMDet-Ins trains and evaluates end to end on real COCO polygons (../shared/data/coco128-seg): box and mask mAP."""

from __future__ import annotations

import csv

import pytest

from rtmdet_edge.cli import main


@pytest.mark.slow
def test_ins_trains_and_evaluates_on_coco128_seg(data_dir, tmp_path, one_thread) -> None:
    data = data_dir / "coco128-seg"
    out = tmp_path / "run"
    args = ["train", "--model", "rtmdet-ins-tiny", "--data", str(data), "--epochs", "1", "--stage2-epochs", "0",
            "--batch", "16", "--imgsz", "64", "--device", "cpu", "--workers", "0", "--eval-interval", "1",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and float(rows[-1]["loss_mask"]) > 0
    assert rows[-1]["AP"] != "" and rows[-1]["mask_AP"] != ""  # both evaluated (pycocotools bbox and segm)
    rc = main(["eval", "--weights", str(out / "last.pth"), "--data", str(data), "--imgsz", "64", "--device", "cpu",
               "--workers", "0", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert rc == 0
    import json

    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(report["segm_metrics"]) == set(report["metrics"])
