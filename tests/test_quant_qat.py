"""QAT end to end on a tiny model at 64 px: prepare (NNCF fake quantization on the fused form), the project's own
training step, a resumable checkpoint, and a Q/DQ ONNX that ONNX Runtime and OpenVINO run."""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import pytest
import torch
from _quant_helpers import lively_model

IMGSZ = 64
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first run compiles NNCF's torch extension


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    from quant.qat import run_qat
    from quant.settings import QuantSettings
    from targets.parity import parity_images

    pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("qat")
    model = lively_model(imgsz=IMGSZ)
    args = argparse.Namespace(
        data="synthetic:8",
        images=None,
        calib_size=8,
        imgsz=IMGSZ,
        batch=4,
        epochs=1,
        lr=1e-4,
        out=str(out),
        resume=False,
    )
    result = run_qat(model, args, QuantSettings(), recipe="onnxruntime", parity_images=parity_images(2))
    return model, args, out, result


def test_qat_exports_qdq_onnx_that_runs(qat_run):
    from quant.graph import inspect_qdq
    from quant.parity import run_onnxruntime, run_openvino

    _, _, out, result = qat_run
    onnx_path = result.qdq_onnx
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    report = inspect_qdq(model)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    # NNCF's torch backend leaves the input of the channel-attention 1x1 convs (after GlobalAveragePool) in float
    assert set(report.float_nodes) <= {n for n in convs if "attention" in n}
    assert report.num_quantized_convs >= len(convs) - 4
    x = np.random.default_rng(0).standard_normal((1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    a, b = run_onnxruntime(onnx_path, x), run_openvino(onnx_path, x)
    assert set(a) == set(b) and "cls_score_0" in a
    for name in a:
        assert a[name].shape == b[name].shape and np.isfinite(a[name]).all() and np.isfinite(b[name]).all()
    assert (out / "qat_last.pth").is_file()


def test_qat_summary_is_ptqs_with_parity_and_kernels(qat_run):
    """QAT writes the same summary.json + summary.md as PTQ (graph, kernels, parity vs FP32) plus its fine-tuning."""
    import json

    _, _, out, result = qat_run
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(result.summary, default=str))
    assert s["method"] == "qat" and s["recipe"] == "onnxruntime"
    # what was actually done: the onnxruntime recipe's scheme (asymmetric U8 activations), every conv quantized
    assert s["settings"]["preset"] == "mixed" and s["settings"]["bias_correction"] == "fast"
    assert not s["settings"]["float_slow_convs"] and s["graph"]["activation_dtypes"].get("uint8", 0) > 0
    assert [k["runtime"] for k in s["kernels"]] == ["onnxruntime", "openvino"]
    assert [p["runtime"] for p in s["parity"]] == ["onnxruntime", "openvino"]
    from targets.parity import parity_images

    shown = len(parity_images(2))  # 2 real images with ../shared, the synthetic stand-in without
    assert all(p["images"] == shown and p["min_sqnr_db"] > 0 for p in s["parity"])
    assert s["qat"]["epochs"] == 1 and [h["epoch"] for h in s["qat"]["history"]] == [0]
    md = (out / "summary.md").read_text()
    assert md.startswith("# INT8 QAT:") and "Fine-tuning (QAT)" in md and "Parity with FP32" in md


def test_qat_resumes_from_its_checkpoint(qat_run):
    from quant.qat import run_qat
    from quant.settings import QuantSettings
    from rtmdet_edge.checkpoint import read_checkpoint

    model, args, out, _ = qat_run
    first = read_checkpoint(out / "qat_last.pth")
    assert first["epoch"] == 0 and first["qat"]
    resumed = argparse.Namespace(**{**vars(args), "epochs": 2, "resume": True})
    result = run_qat(model, resumed, QuantSettings(), recipe="onnxruntime", check_kernels=False)
    assert result.summary["qat"]["resumed_after_epoch"] == 0
    second = read_checkpoint(out / "qat_last.pth")
    assert second["epoch"] == 1 and [h["epoch"] for h in second["history"]] == [0, 1]


def test_freeze_batchnorm():
    from quant.qat import freeze_batchnorm

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    assert freeze_batchnorm(net) == 1
    assert not net[1].training and not net[1].weight.requires_grad
