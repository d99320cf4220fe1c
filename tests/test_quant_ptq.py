"""PTQ recipes on a tiny model at 64 px: checker-valid Q/DQ ONNX that ONNX Runtime and OpenVINO run, graph contents,
TensorRT's rules, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _quant_helpers import lively_model

from quant import QuantSettings, load_calibration, ptq
from quant.graph import inspect_qdq, tensorrt_rule_violations
from quant.parity import run_onnxruntime, run_openvino
from quant.recipes.onnxruntime import slow_int8_convs

IMGSZ = 64
RECIPES = ("onnxruntime", "tensorrt", "nncf")


@pytest.fixture(scope="module")
def model():
    return lively_model(imgsz=IMGSZ)


@pytest.fixture(scope="module")
def calib():
    return load_calibration("synthetic", None, 8, IMGSZ)


@pytest.fixture(scope="module")
def results(model, calib, tmp_path_factory):
    out = {}
    for recipe in RECIPES:
        images = [np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)]
        out[recipe] = ptq(
            model, calib, recipe=recipe, out_dir=tmp_path_factory.mktemp(recipe), imgsz=IMGSZ, parity_images=images
        )
    out["onnxruntime-everywhere"] = ptq(
        model, calib, recipe="onnxruntime", settings=QuantSettings(float_slow_convs=False),
        out_dir=tmp_path_factory.mktemp("everywhere"), imgsz=IMGSZ,
    )  # fmt: skip
    return out


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_qdq_onnx_checks_and_runs(results, calib, recipe):
    r = results[recipe]
    onnx.checker.check_model(onnx.load(str(r.qdq_onnx)), full_check=True)
    ref = run_onnxruntime(r.fp32_onnx, calib.batch[:2])
    for got in (run_onnxruntime(r.qdq_onnx, calib.batch[:2]), run_openvino(r.qdq_onnx, calib.batch[:2])):
        assert set(got) == set(ref)
        for name in ref:
            assert got[name].shape == ref[name].shape and np.isfinite(got[name]).all()
            # INT8 tracks FP32: the error is well below the signal (random weights, 8 synthetic images)
            assert np.abs(got[name] - ref[name]).mean() < np.abs(ref[name]).mean() + 1e-6
    assert r.summary_json.is_file() and r.summary_md.is_file()
    assert {p["runtime"] for p in r.summary["parity"]} == {"onnxruntime", "openvino"}
    # the CPU's INT8 features: the same model gains far less over float without VNNI
    assert r.summary["cpu"]["note"] and f"This CPU: {r.summary['cpu']['cpu']}" in r.summary_md.read_text()


_CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {}\nbugs\t\t: none\n"


@pytest.mark.parametrize(
    ("extra", "flags", "says"),
    [
        ("avx avx2 fma", ["avx2", "fma"], "no VNNI"),
        ("avx2 fma avx512f avx512_vnni", ["avx2", "fma", "avx512f", "avx512_vnni"], "VNNI: "),
        ("avx2 avx_vnni", ["avx2", "avx_vnni"], "VNNI: "),
        ("avx2 avx512_vnni amx_int8", ["avx2", "avx512_vnni", "amx_int8"], "AMX-INT8 and VNNI"),
        ("", [], "unknown"),
    ],
)
def test_cpu_flags_and_int8_note(extra, flags, says):
    from quant.kernels import cpu_flags, int8_cpu_note

    got = cpu_flags(_CPUINFO.format(extra))
    assert got == flags  # only the INT8-relevant flags, in a fixed order; "avx" alone is not "avx2"
    assert says in int8_cpu_note(got)
    assert cpu_flags("no flags line here") == []


@pytest.mark.slow
def test_onnxruntime_recipe_keeps_slow_int8_convs_float(results):
    """By default the convs ORT runs slower in INT8 (rtmdet-tiny: 8 depth-wise, the two 12-channel stem convs) stay
    float, the summary says why for each, and every other conv runs as QLinearConv."""
    r = results["onnxruntime"]
    qdq = onnx.load(str(r.qdq_onnx))
    slow = slow_int8_convs(onnx.load(str(r.fp32_onnx)))
    assert sum("depth-wise" in why for why in slow.values()) == 8
    assert sum("output channels" in why for why in slow.values()) == 2
    report = inspect_qdq(qdq)
    assert set(report.float_nodes) == set(slow)  # exactly these stay float...
    assert r.summary["graph"]["float_weighted_nodes"] == slow  # ...and the summary gives the recipe's reason
    convs = sum(1 for n in qdq.graph.node if n.op_type == "Conv")
    kernels = {k["runtime"]: k for k in r.summary["kernels"]}
    assert report.num_quantized_convs == kernels["onnxruntime"]["int8_convs"] == convs - len(slow)
    assert kernels["onnxruntime"]["float_convs"] == len(slow)
    assert kernels["onnxruntime"]["why_float"].startswith("kept float by the recipe")
    assert any("slower in INT8" in n for n in r.summary["notes"])
    # CSP Concats take their inputs on the output's scale, so QLinearConcat copies them
    producers = {o: n for n in qdq.graph.node for o in n.output}
    consumers = {x: n for n in qdq.graph.node for x in n.input}
    shared = [
        n for n in qdq.graph.node if n.op_type == "Concat" and consumers[n.output[0]].op_type == "QuantizeLinear"
        and all(producers[x].input[1] == consumers[n.output[0]].input[1] for x in n.input)
    ]  # fmt: skip
    assert len(shared) >= 4 and any("Concats take their inputs" in n for n in r.summary["notes"])


@pytest.mark.slow
def test_onnxruntime_recipe_graph(results):
    """--int8-everywhere: every conv quantized (the form the gap study measures)."""
    r = results["onnxruntime-everywhere"]
    qdq = onnx.load(str(r.qdq_onnx))
    report = inspect_qdq(qdq)
    convs = sum(1 for n in qdq.graph.node if n.op_type == "Conv")
    assert report.num_quantized_convs == convs and not report.float_nodes
    weights = [q for q in report.quantizers if q.is_weight and q.dtype == "int8"]
    assert len(weights) == convs
    # per-channel weights: one scale per output channel on axis 0, symmetric (zero point 0)
    init = {t.name: t for t in qdq.graph.initializer}
    for q in weights:
        assert q.axis == 0 and len(q.scale_shape) == 1 and all(z == 0 for z in q.zero_points)
    acts = [q for q in report.quantizers if q.op_type == "QuantizeLinear" and not q.is_weight]
    assert acts and all(q.dtype == "uint8" and q.scale_shape == () for q in acts)  # U8 per-tensor activations
    assert init  # weights are stored quantized
    kernels = {k["runtime"]: k for k in r.summary["kernels"]}
    assert kernels["onnxruntime"]["int8_convs"] == convs  # QLinearConv for every conv
    assert kernels["openvino"]["int8_convs"] == convs


@pytest.mark.slow
def test_tensorrt_recipe_obeys_tensorrt_rules(results):
    qdq = onnx.load(str(results["tensorrt"].qdq_onnx))
    assert tensorrt_rule_violations(qdq) == []
    report = inspect_qdq(qdq)
    assert all(q.dtype == "int8" and set(q.zero_points) == {0} for q in report.quantizers)
    weights = [q for q in report.quantizers if q.is_weight]
    assert weights and all(q.axis == 0 for q in weights)
    assert all(q.scale_shape == () for q in report.quantizers if not q.is_weight)
    producers = {o: n for n in qdq.graph.node for o in n.output}
    for n in qdq.graph.node:
        if n.op_type in ("Conv", "Add"):  # Q/DQ at every Conv input (activation and weight) and residual Add input
            assert all(producers[x].op_type == "DequantizeLinear" for x in n.input[:2] if x in producers), n.name
    # outputs stay float: no Q/DQ placed on other ops' inputs
    assert set(report.quantized_nodes.values()) <= {"Conv", "Add", "Concat", "MaxPool", "Resize"}
    assert results["tensorrt"].summary["tensorrt_rule_violations"] == []


@pytest.mark.slow
def test_nncf_recipe_writes_openvino_int8_ir(results, calib):
    r = results["nncf"]
    assert r.openvino_xml is not None and r.openvino_xml.is_file()
    got = run_openvino(r.openvino_xml, calib.batch[:1])
    assert set(got) == {"cls_score_0", "cls_score_1", "cls_score_2", "bbox_pred_0", "bbox_pred_1", "bbox_pred_2"}
    kernels = {k["runtime"]: k for k in r.summary["kernels"]}
    convs = sum(1 for n in onnx.load(str(r.fp32_onnx)).graph.node if n.op_type == "Conv")
    assert kernels["openvino"]["int8_convs"] == convs and kernels["openvino"]["float_convs"] == 0


@pytest.mark.slow
def test_tensorrt_rules_flag_the_onnxruntime_recipe(results):
    """The onnxruntime recipe's U8 asymmetric activations are not TensorRT-buildable, and the check says so."""
    violations = tensorrt_rule_violations(onnx.load(str(results["onnxruntime"].qdq_onnx)))
    assert any("zero point not 0" in v for v in violations) and any("uint8" in v for v in violations)


@pytest.mark.slow
def test_ignore_keeps_nodes_float(model, calib, tmp_path):
    r = ptq(
        model,
        calib,
        recipe="onnxruntime",
        settings=QuantSettings(ignore=("rtm_cls",)),
        out_dir=tmp_path,
        imgsz=IMGSZ,
        check_kernels=False,
    )
    floats = r.summary["graph"]["float_weighted_nodes"]  # name -> why, the recipe's reasons merged in
    ignored = {name for name, why in floats.items() if why == "kept float by --ignore"}
    assert ignored and all("rtm_cls" in name for name in ignored)
    assert set(floats) - ignored == set(slow_int8_convs(onnx.load(str(r.fp32_onnx))))
    assert any("kept float by --ignore" in n for n in r.summary["notes"])
