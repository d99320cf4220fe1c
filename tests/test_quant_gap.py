"""`rtmdet-edge gap` end to end on tiny models: rows per family x method x target, intervals, evidence, plots."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from quant.gap import GapSettings, Method, run_gap
from rtmdet_edge import build_model, save_checkpoint
from rtmdet_edge.errors import UserError

pytestmark = pytest.mark.slow


def _checkpoint(path, block: str, num_classes: int = 3, name: str = "rtmdet-tiny"):
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, block=block)
    save_checkpoint(path, {"model": model.state_dict(), "config": model.config.to_dict()})
    return path


def test_methods_parse() -> None:
    assert Method.parse("ort-entropy-pt") == Method("ort-entropy-pt", "onnxruntime", "entropy", "per-tensor")
    assert Method.parse("nncf").recipe == "nncf" and Method.parse("qat").recipe is None
    assert Method.parse("nncf").preset == "mixed" and Method.parse("nncf-performance").preset == "performance"
    # the study quantizes every conv; "onnxruntime" is the recipe as `quantize` runs it (slow INT8 convs float)
    assert not Method.parse("ort-minmax-pc").float_slow_convs and Method.parse("onnxruntime").float_slow_convs
    with pytest.raises(UserError):
        Method.parse("ort-magic-pc")


def test_gap_two_families(tmp_path, one_thread) -> None:
    weights = [str(_checkpoint(tmp_path / "dw5.pth", "dw5")), str(_checkpoint(tmp_path / "rep3.pth", "rep3"))]
    settings = GapSettings(data="study:12", methods=("ort-minmax-pc", "tensorrt"), imgsz=64, calib_size=8,
                           threads=1, bootstrap=50, warmup=1, runs=3)  # fmt: skip
    report = run_gap(weights, settings, tmp_path / "gap")
    rows = [r for r in report["rows"] if r["method"] != "fp32"]
    assert {(r["family"].split()[0], r["method"], r["target"]) for r in rows} == {
        (b, m, t) for b in ("dw5", "rep3") for m in ("ort-minmax-pc", "tensorrt") for t in ("onnxruntime", "openvino")
    }
    for r in rows:
        assert r["available"], r
        assert r["drop_low"] <= r["drop"] + 1e-9 and r["drop"] <= r["drop_high"] + 1e-9
        assert r["latency_ms"] > 0 and r["size_mb"] < r["fp32_size_mb"]  # int8 weights are smaller
    ev = report["evidence"]
    assert set(ev) == {r["family"] for r in rows}
    assert any("depthwise 5x5" in b for b in ev[rows[0]["family"]]["by_block"]["kurtosis"])
    clip = ev[rows[0]["family"]]["clipping"]  # FP32 with conv inputs clamped to the calibration ranges
    assert clip["calib_images"] == 8 and clip["drop_low"] <= clip["drop"] + 1e-9 <= clip["drop_high"] + 2e-9
    for name in ("report.json", "report.md", "gap_drop.png", "gap_latency_vs_map.png", "evidence_sensitivity.png"):
        assert (tmp_path / "gap" / name).is_file(), name
    assert json.loads((tmp_path / "gap" / "report.json").read_text())["rows"]
    md = (tmp_path / "gap" / "report.md").read_text()
    assert "| dw5 (dw5) | tensorrt | openvino |" in md and "Ten most sensitive layers" in md
    assert "What this run shows" in md and "range clipping alone explains" in md


def test_gap_on_a_checkpoint_of_another_class_count(tmp_path, one_thread) -> None:
    """An 80-class rtmdet-s (a COCO layout it did not train) on synthetic data: every row and the evidence come."""
    w = str(_checkpoint(tmp_path / "s80.pth", "dw5", num_classes=80, name="rtmdet-s"))
    settings = GapSettings(data="synthetic:8", methods=("ort-minmax-pc",), targets=("onnxruntime",), imgsz=64,
                           calib_size=8, threads=1, bootstrap=10, warmup=1, runs=2, evidence=False)  # fmt: skip
    report = run_gap([w], settings, tmp_path / "gap")
    (row,) = [r for r in report["rows"] if r["method"] != "fp32"]
    assert row["available"] and row["family"].startswith("dw5") and row["latency_ms"] > 0
    assert row["mAP"] is not None and row["drop_low"] <= row["drop_high"]


def test_gap_without_matching_labels_gives_speed_rows(tmp_path, monkeypatch, one_thread) -> None:
    """Data whose classes cannot match the model: no accuracy, but latency rows (and a warning saying so)."""
    from quant import gap

    w = str(_checkpoint(tmp_path / "t3.pth", "dw5"))
    monkeypatch.setattr(gap, "_validation_set", lambda settings, model: warnings.warn(
        "the model predicts 3 classes but --data x has 80; latency and evidence only") or None)  # fmt: skip
    settings = GapSettings(data="synthetic:8", methods=("tensorrt",), targets=("onnxruntime",), imgsz=64,
                           calib_size=8, threads=1, bootstrap=10, warmup=1, runs=2, evidence=False)  # fmt: skip
    with pytest.warns(UserWarning, match="latency and evidence only"):
        report = run_gap([w], settings, tmp_path / "gap")
    (row,) = [r for r in report["rows"] if r["method"] != "fp32"]
    assert row["mAP"] is None and "drop" not in row and row["latency_ms"] > 0


def test_gap_bad_input(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        run_gap([str(tmp_path / "missing.pth")], GapSettings(), tmp_path)
    with pytest.raises(UserError, match="unknown target"):
        run_gap([str(tmp_path / "x.pth")], GapSettings(targets=("coreml",)), tmp_path)
