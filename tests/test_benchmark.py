from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from rtmdet_edge import UserError, build_model  # noqa: E402
from rtmdet_edge.data import build_dataset  # noqa: E402
from targets.benchmark import (  # noqa: E402
    INT8_REASON,
    BenchmarkSettings,
    ModelFiles,
    add_arguments,
    run_benchmark,
    unavailable_reason,
)
from targets.memory import measure_memory  # noqa: E402
from targets.report import ROW_FIELDS, empty_row, markdown_table  # noqa: E402

IMGSZ = 64
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("rtmdet-tiny", num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    dataset = build_dataset("synthetic:3", split="val", num_classes=NUM_CLASSES, imgsz=IMGSZ)
    # threads=1 keeps the test quick on a loaded 2-core machine; the CLI default is 2
    settings = BenchmarkSettings(
        targets=("torch", "onnxruntime", "openvino", "tensorrt"),
        precisions=("fp32", "int8"),
        imgsz=IMGSZ,
        threads=1,
        warmup=1,
        runs=3,
        throughput_batch=2,
        max_images=2,
        parity_images=1,
        memory=False,
        progress=False,
        command="pytest",
    )
    threads_before = torch.get_num_threads()
    tiny_model.train()  # the benchmark must leave the caller's model as it found it
    report = run_benchmark(tiny_model, dataset, out, settings)
    assert tiny_model.training and torch.get_num_threads() == threads_before
    tiny_model.eval()
    return report


@pytest.mark.slow
def test_report_files_and_rows(report, tmp_path):
    files = report["files"]
    on_disk = json.loads(open(files["json"]).read())
    assert on_disk["meta"]["threads"] == 1 and on_disk["meta"]["warmup"] == 1 and on_disk["meta"]["runs"] == 3
    assert on_disk["meta"]["num_images"] == 2
    for key in ("latency_vs_map", "latency_bars"):
        with open(files[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = {(r["target"], r["precision"]): r for r in on_disk["rows"]}
    assert set(rows) == {(t, p) for t in ("torch", "onnxruntime", "openvino", "tensorrt") for p in ("fp32", "int8")}
    for key in (("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")):
        row = rows[key]
        assert set(ROW_FIELDS) <= set(row)
        assert row["available"] and row["reason"] is None, row["reason"]
        for lat in (row["latency_model"], row["latency_e2e"]):
            assert lat["runs"] == 3 and lat["warmup"] == 1
            assert 0 < lat["median_ms"] <= lat["p90_ms"]
        # end to end = pre + model + post, so it cannot be faster than the model alone by more than noise
        assert row["pre_ms"] > 0 and row["post_ms"] > 0
        assert row["fps"] == pytest.approx(1000 / row["latency_e2e"]["median_ms"])
        assert row["throughput"]["batch"] == 2 and row["throughput"]["images_per_s"] > 0
        assert row["model_size_mb"] > 0.1
        assert 0 <= row["mAP"] <= 100 and math.isfinite(row["mAP_delta"])
        assert row["parity"]["ok"], row["parity"]
        assert row["parity"]["raw_max_abs_norm"] < 1e-3
    assert rows[("torch", "fp32")]["mAP_delta"] == 0.0
    # fp32 backends compute the same function: mAP equal to PyTorch's within 0.1 (acceptance criterion)
    assert abs(rows[("onnxruntime", "fp32")]["mAP_delta"]) <= 0.1
    assert abs(rows[("openvino", "fp32")]["mAP_delta"]) <= 0.1
    assert rows[("openvino", "fp32")]["effective_precision"] == "f32"  # the f32 hint is really set
    assert rows[("openvino", "fp32")]["model_file"].endswith(".xml")
    assert not rows[("onnxruntime", "int8")]["available"] and "quantize" in rows[("onnxruntime", "int8")]["reason"]
    assert not rows[("tensorrt", "fp32")]["available"] and rows[("tensorrt", "fp32")]["reason"]
    md = open(files["md"]).read()
    assert "| onnxruntime | fp32 |" in md and "tensorrt fp32:" in md and "`pytest`" in md


@pytest.mark.slow
def test_memory_probe_runs_in_a_fresh_process(report):
    models = Path(report["files"]["json"]).parent / "models"
    files = {"checkpoint": str(models / "model.pt"), "onnx": str(models / "model.onnx"), "xml": str(models / "model.xml")}
    mem = measure_memory({"target": "onnxruntime", "precision": "fp32", "files": files, "threads": 1, "imgsz": IMGSZ})
    assert "error" not in mem, mem
    assert mem["peak_rss_mb"] >= mem["baseline_rss_mb"] > 50  # python + torch + onnxruntime alone are > 50 MB
    assert mem["model_rss_mb"] == pytest.approx(mem["peak_rss_mb"] - mem["baseline_rss_mb"])
    assert mem["model_rss_mb"] >= 0


def test_unavailable_reasons():
    files = ModelFiles(checkpoint=None, onnx=None, xml=None)
    assert unavailable_reason("onnxruntime", "int8", files) == INT8_REASON
    assert unavailable_reason("openvino", "int8", files) == INT8_REASON
    assert "CUDA" in unavailable_reason("torch", "fp16", files) or torch.cuda.is_available()
    assert unavailable_reason("onnxruntime", "fp32", files) is None
    assert unavailable_reason("openvino", "fp32", files) is None
    assert unavailable_reason("nope", "fp32", files).startswith("unknown target")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "not installed" in unavailable_reason("tensorrt", "fp32", files)


def test_unknown_target_and_class_mismatch_are_user_errors(tiny_model, tmp_path):
    dataset = build_dataset("synthetic:2", split="val", num_classes=NUM_CLASSES, imgsz=IMGSZ)
    with pytest.raises(UserError, match="unknown target"):
        BenchmarkSettings(targets=("coreml",), imgsz=IMGSZ)
    other = build_dataset("synthetic:2", split="val", num_classes=NUM_CLASSES + 1, imgsz=IMGSZ)
    with pytest.raises(UserError, match="classes"):
        run_benchmark(tiny_model, other, tmp_path, BenchmarkSettings(targets=("onnxruntime",), imgsz=IMGSZ))


def test_markdown_lists_unavailable_rows_with_reasons():
    ok = empty_row("onnxruntime", "fp32")
    ok.update(
        mAP=12.345,
        mAP_delta=0.0,
        latency_model={"median_ms": 10.0, "p90_ms": 11.0},
        latency_e2e={"median_ms": 11.5, "p90_ms": 12.0},
        pre_ms=0.5,
        post_ms=1.0,
        fps=87.0,
        model_size_mb=4.2,
    )
    text = markdown_table([ok, empty_row("tensorrt", "fp16", "no CUDA device")])
    assert "| onnxruntime | fp32 | 12.35 | 0.00 |" in text
    assert "10.0 / 11.0" in text and "11.5 / 12.0" in text
    assert "- tensorrt fp16: no CUDA device" in text


def test_cli_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--weights", "w.pt", "--targets", "onnxruntime,openvino", "--precision", "fp32,bf16"])
    assert args.targets == ["onnxruntime", "openvino"] and args.precision == ["fp32", "bf16"]
    assert args.threads == 2 and args.imgsz == 640 and args.data == "synthetic"
    assert np.isclose(args.runs, 50) and args.warmup == 10


@pytest.mark.slow
def test_int8_rows_from_the_default_recipes(tmp_path, one_thread) -> None:
    """Without --int8-onnx, `benchmark --precision int8` quantizes with each target's default recipe."""
    import json

    from rtmdet_edge.cli import main

    out = tmp_path / "bench"
    rc = main(["benchmark", "--model", "rtmdet-tiny", "--targets", "onnxruntime,openvino", "--precision", "fp32,int8",
               "--data", "synthetic:8", "--imgsz", "64", "--runs", "2", "--warmup", "1", "--batch", "2", "--no-memory",
               "--calib-size", "8", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = {(r["target"], r["precision"]): r for r in json.loads((out / "report.json").read_text())["rows"]}
    models = out / "models"
    for target in ("onnxruntime", "openvino"):
        int8 = rows[(target, "int8")]
        assert int8["available"], int8
        assert int8["model_size_mb"] < rows[(target, "fp32")]["model_size_mb"] / 2  # int8 weights
        # INT8 rows carry every column: throughput at the same batch as fp32, from the re-batched int8 model
        assert int8["throughput"]["batch"] == rows[(target, "fp32")]["throughput"]["batch"] == 2, int8["notes"]
        assert int8["throughput"]["images_per_s"] > 0 and not int8["notes"]
    assert (models / "int8_openvino").is_dir() and (models / "int8_onnxruntime").is_dir()
    assert (models / "int8_openvino_b2.xml").is_file() and (models / "int8_onnxruntime_b2.onnx").is_file()

    # the memory probe (a fresh process) opens the int8 rows' files too
    files = prepare_files_for_probe(models)
    for target in ("onnxruntime", "openvino"):
        spec = {"target": target, "precision": "int8", "files": files, "threads": 1, "imgsz": 64}
        mem = measure_memory(spec)
        assert "error" not in mem and mem["model_rss_mb"] >= 0, mem


def prepare_files_for_probe(models: Path) -> dict:
    """The ModelFiles of a finished benchmark run as the memory probe receives them (ModelFiles.to_json)."""
    files = ModelFiles(checkpoint=models / "model.pt", onnx=models / "model.onnx", xml=models / "model.xml")
    files.int8_by_target = {
        "onnxruntime": next((models / "int8_onnxruntime").glob("*int8*.onnx")),
        "openvino": next((models / "int8_openvino").glob("*int8*.xml")),
    }
    assert ModelFiles.from_json(files.to_json()) == files
    return files.to_json()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rtmdet-ins-tiny", "rtmdet-r-tiny"])
def test_int8_rows_for_ins_and_rotated_models(name, tmp_path, one_thread) -> None:
    """`benchmark --precision fp32,int8` with the default recipes on an RTMDet-Ins and an RTMDet-R model: every row
    reports its kind's accuracy (box + mask mAP / DOTA mAP), int8 rows their drop from the fp32 row of the same target,
    and parity compares masks (mean mask IoU) or rotated boxes."""
    from rtmdet_edge.checkpoint import save_checkpoint
    from rtmdet_edge.cli import main

    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():  # random weights with confident classes: detections (and masks) to compare at 0.3
        for conv in model.bbox_head.rtm_cls:
            conv.bias.normal_(0.0, 1.0)
    weights = tmp_path / "model.pth"
    save_checkpoint(weights, {"model": model.state_dict(), "config": model.config.to_dict()})
    out = tmp_path / "bench"
    rc = main(["benchmark", "--weights", str(weights), "--targets", "torch,onnxruntime,openvino", "--precision",
               "fp32,int8", "--data", "easy:8", "--imgsz", "128", "--runs", "2", "--warmup", "1", "--batch", "1",
               "--no-memory", "--calib-size", "8", "--max-images", "4", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    rows = {(r["target"], r["precision"]): r for r in report["rows"]}
    kind = "ins" if "ins" in name else "rot"
    assert report["meta"]["kind"] == kind
    text = (out / "report.md").read_text()
    for target in ("onnxruntime", "openvino"):
        fp32, int8 = rows[(target, "fp32")], rows[(target, "int8")]
        assert fp32["available"] and int8["available"], (fp32["reason"], int8["reason"])
        assert fp32["parity"]["ok"], fp32["parity"]
        # judged as INT8 (report only), not by the FP32 tolerances the runtime's own precision label would pick
        assert int8["parity"]["ok"] and int8["parity"]["tolerance"] is None, int8["parity"]
        assert int8["model_size_mb"] < fp32["model_size_mb"] / 2  # int8 weights
        assert math.isclose(int8["mAP_int8_drop"], fp32["mAP"] - int8["mAP"])
        if kind == "ins":
            assert "mask" in fp32["parity"]["compared"] and fp32["parity"]["mask_iou"] >= 0.99
            assert 0 <= int8["parity"]["mask_iou"] <= 1
            assert 0 <= int8["segm_mAP"] <= 100
            assert math.isclose(int8["segm_mAP_int8_drop"], fp32["segm_mAP"] - int8["segm_mAP"])
            assert abs(fp32["segm_mAP_delta"]) <= 0.1
        else:
            assert "rotated" in fp32["parity"]["compared"] and fp32["parity"]["det_match"] >= 0.98
            assert 0 <= int8["mAP50_07"] <= 100 and math.isclose(int8["mAP50_int8_drop"], fp32["mAP50"] - int8["mAP50"])
            assert abs(fp32["mAP50_delta"]) <= 0.1
    assert ("mask mAP (%)" if kind == "ins" else "DOTA mAP50 (%)") in text and "INT8 drop vs fp32" in text


def test_markdown_columns_follow_the_model_kind():
    row = empty_row("onnxruntime", "int8")
    row.update(mAP=10.0, segm_mAP=8.0, segm_mAP50=20.0, segm_mAP_delta=-1.5, mAP_int8_drop=0.5, segm_mAP_int8_drop=1.5,
               parity={"raw_max_abs_norm": 0.1, "det_match": 0.9, "mask_iou": 0.95, "ok": True})  # fmt: skip
    text = markdown_table([row], "ins")
    assert "mask mAP (%)" in text and "| 8.00 | 20.00 | -1.50 | 0.50 / 1.50 |" in text and "/ 0.950" in text
    row.update(mAP=30.0, mAP50=60.0, mAP50_07=55.0, mAP50_delta=-2.0, mAP50_int8_drop=2.0, segm_mAP=None)
    text = markdown_table([row], "rot")
    assert "DOTA mAP50 (%)" in text and "| 30.00 | 60.00 | 55.00 | -2.00 | 0.50 / 2.00 |" in text
    assert "mAP (%) | ΔmAP vs torch fp32" in markdown_table([row])  # detectors keep their columns
