"""Q/DQ graph inspection, TensorRT's rules and the input checks of quant, on hand-built ONNX graphs (fast)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant import QuantSettings, load_calibration, ptq
from quant.graph import inspect_qdq, tensorrt_rule_violations
from quant.recipes.onnxruntime import match_nodes, share_concat_scales, slow_int8_convs
from quant.settings import check_recipe_settings
from rtmdet_edge.errors import UserError


def qdq_conv_add(act_dtype=np.int8, act_zp=0, weight_axis=0, per_channel=True, quantize_add=True) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ int8 weight) -> y; y + x -> out (a residual block with explicit quantization)."""
    c = 4
    inits = [
        numpy_helper.from_array(np.asarray(0.05, np.float32), "a_scale"),
        numpy_helper.from_array(np.asarray(act_zp, act_dtype), "a_zp"),
        numpy_helper.from_array(np.ones((c, c, 3, 3), np.int8), "w_q"),
        numpy_helper.from_array(np.full((c,) if per_channel else (), 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros((c,) if per_channel else (), np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xdq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=weight_axis),
        helper.make_node("Conv", ["xdq", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    if quantize_add:
        nodes += [
            helper.make_node("QuantizeLinear", ["y", "a_scale", "a_zp"], ["yq"], name="y_q"),
            helper.make_node("DequantizeLinear", ["yq", "a_scale", "a_zp"], ["ydq"], name="y_dq"),
            helper.make_node("Add", ["ydq", "xdq"], ["out"], name="residual_add"),
        ]
    else:
        nodes.append(helper.make_node("Add", ["y", "x"], ["out"], name="residual_add"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_inspect_finds_quantized_nodes_zero_points_and_scale_axes():
    report = inspect_qdq(qdq_conv_add())
    assert report.quantized_nodes == {"conv": "Conv", "residual_add": "Add"}
    weight = next(q for q in report.quantizers if q.is_weight)
    assert weight.node == "w_dq" and weight.axis == 0 and weight.scale_shape == (4,) and weight.dtype == "int8"
    acts = [q for q in report.quantizers if not q.is_weight]
    assert all(q.scale_shape == () and q.axis is None and q.zero_points == [0] for q in acts)
    d = report.to_dict()
    assert d["weight_per_channel"] == 1 and d["nonzero_zero_points"] == 0


def test_tensorrt_rules_accept_symmetric_per_channel_axis0():
    assert tensorrt_rule_violations(qdq_conv_add()) == []


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(act_dtype=np.uint8, act_zp=128), "zero point not 0"),
        (dict(act_dtype=np.uint8, act_zp=0), "uint8"),
        (dict(weight_axis=1), "axis 0"),
        (dict(quantize_add=False), "residual Add with a float input"),
    ],
)
def test_tensorrt_rules_reject(kwargs, expected):
    violations = tensorrt_rule_violations(qdq_conv_add(**kwargs))
    assert any(expected in v for v in violations), violations


def test_tensorrt_rules_reject_float_graph():
    model = qdq_conv_add()
    assert tensorrt_rule_violations(onnx.shape_inference.infer_shapes(model)) == []
    float_graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["out"], name="r")],
            "f",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
        )
    )
    assert "not an explicitly quantized model" in tensorrt_rule_violations(float_graph)[0]


def test_already_quantized_onnx_is_refused(tmp_path):
    path = tmp_path / "q.onnx"
    onnx.save(qdq_conv_add(), str(path))
    calib = np.zeros((8, 3, 64, 64), np.float32)
    with pytest.raises(UserError, match="already quantized"):
        ptq(str(path), calib, recipe="onnxruntime", out_dir=tmp_path, imgsz=64)


@pytest.mark.parametrize(
    "recipe, settings, match",
    [
        ("tensorrt", QuantSettings(granularity="per-tensor"), "per output channel"),
        ("onnxruntime", QuantSettings(calibrator="mse"), "no mse calibrator"),
        ("nncf", QuantSettings(calibrator="entropy"), "no entropy calibrator"),
        ("tflite", QuantSettings(), "unknown recipe"),
    ],
)
def test_impossible_recipe_settings(recipe, settings, match):
    with pytest.raises(UserError, match=match):
        check_recipe_settings(recipe, settings)


def test_bad_settings_values():
    with pytest.raises(UserError, match="calibrator"):
        QuantSettings(calibrator="kl")
    with pytest.raises(UserError, match="granularity"):
        QuantSettings(granularity="per-group")


def test_ignore_patterns_match_node_names():
    model = qdq_conv_add()
    assert match_nodes(model, ("^conv$", "residual")) == ["conv", "residual_add"]
    with pytest.raises(UserError, match="matches no node"):
        match_nodes(model, ("rtm_cls",))
    with pytest.raises(UserError, match="not a regular expression"):
        match_nodes(model, ("(",))


def test_calibration_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="holds no images") as e:
        load_calibration(None, str(tmp_path / "empty"), 8, 64)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="too few"):
        load_calibration("synthetic", None, 2, 64)
    with pytest.raises(UserError, match="too few"):
        ptq(str(tmp_path / "missing.onnx"), np.zeros((3, 3, 64, 64), np.float32), out_dir=tmp_path, imgsz=64)
    import cv2

    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        cv2.imwrite(str(few / f"{i}.png"), np.full((40, 60, 3), 50 * i, np.uint8))
    with pytest.raises(UserError, match="only 3 calibration images"):
        load_calibration(None, str(few), 8, 64)
    with pytest.raises(UserError, match="not found"):
        load_calibration(None, str(tmp_path / "nowhere"), 8, 64)


def test_calibration_from_a_plain_folder(tmp_path):
    import cv2

    for i in range(9):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((50 + i, 70, 3), i * 20, np.uint8))
    calib = load_calibration(str(tmp_path), None, 8, 64)
    assert calib.batch.shape == (8, 3, 64, 64) and calib.batch.dtype == np.float32
    assert len(set(calib.sources)) == 8
    # the project's pre-processing: letterbox pad value 114 normalised with the BGR mean/std
    from rtmdet_edge.inference.preprocess import MEAN_BGR, STD_BGR

    assert np.isclose(calib.batch[0, 0, -1, -1], (114 - MEAN_BGR[0]) / STD_BGR[0], atol=1e-4)


def test_synthetic_calibration_uses_the_inference_preprocessing():
    calib = load_calibration("synthetic:20", None, 8, 64)
    assert calib.batch.shape == (8, 3, 64, 64)
    assert len(set(calib.sources)) == 8  # spread over the 20 images, no repeats


def test_quantize_cli_bad_input_is_exit_2_and_one_line(tmp_path, capsys):
    from rtmdet_edge.cli import main

    path = tmp_path / "q.onnx"
    onnx.save(qdq_conv_add(), str(path))
    base = [
        "quantize",
        "--weights",
        str(path),
        "--data",
        "synthetic",
        "--calib-size",
        "8",
        "--imgsz",
        "64",
        "--out",
        str(tmp_path),
    ]
    assert main(base) == 2
    assert main([*base, "--recipe", "tensorrt", "--granularity", "per-tensor"]) == 2
    assert main(["quantize", "--weights", str(tmp_path / "missing.pth"), "--data", "synthetic"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 3 and all(line.startswith("rtmdet-edge quantize: error:") for line in errors)
    assert "already quantized" in errors[0] and "per output channel" in errors[1] and "not found" in errors[2]


def test_slow_int8_convs_are_depthwise_and_narrow_kxk_convs():
    """The onnxruntime recipe keeps float the convs ORT's x86 INT8 kernels lose on: depth-wise ones and k x k ones
    with fewer than 16 output channels; 1x1 convs and wide k x k convs stay INT8 candidates."""
    shapes = {  # name -> (weight shape, group)
        "dw": ((32, 1, 5, 5), 32),
        "stem": ((12, 3, 3, 3), 1),
        "narrow_1x1": ((4, 32, 1, 1), 1),
        "wide_3x3": ((16, 12, 3, 3), 1),
    }
    inits = [numpy_helper.from_array(np.zeros(s, np.float32), f"{n}_w") for n, (s, _) in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", f"{n}_w"], [f"{n}_y"], name=n, group=g) for n, (_, g) in shapes.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                              [helper.make_tensor_value_info(f"{n}_y", TensorProto.FLOAT, None) for n in shapes],
                              inits)  # fmt: skip
    slow = slow_int8_convs(helper.make_model(graph))
    assert set(slow) == {"dw", "stem"}
    assert "depth-wise" in slow["dw"] and "12 output channels" in slow["stem"]


def test_share_concat_scales_rewires_single_use_inputs_only():
    """Concat inputs computed by an op (Mul) take the output's scale; one behind a MaxPool keeps its own (MaxPool runs
    on INT8 only with equal input and output scales), and unused initializers are dropped."""
    params = {
        "a": (0.1, 10),  # Mul output
        "b": (0.2, 20),  # MaxPool output
        "c": (0.3, 30),  # Concat output
    }
    inits = []
    for t, (scale, zp) in params.items():
        inits += [numpy_helper.from_array(np.asarray(scale, np.float32), f"{t}_scale"),
                  numpy_helper.from_array(np.asarray(zp, np.uint8), f"{t}_zp")]  # fmt: skip
    qdq = [
        node
        for t in params
        for node in (
            helper.make_node("QuantizeLinear", [t, f"{t}_scale", f"{t}_zp"], [f"{t}_q"], name=f"{t}_Q"),
            helper.make_node("DequantizeLinear", [f"{t}_q", f"{t}_scale", f"{t}_zp"], [f"{t}_dq"], name=f"{t}_DQ"),
        )
    ]
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["a"], name="mul"),
        helper.make_node("MaxPool", ["x"], ["b"], name="pool", kernel_shape=[1, 1]),
        *qdq[:4],
        helper.make_node("Concat", ["a_dq", "b_dq"], ["c"], name="concat", axis=1),
        *qdq[4:],
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("c_dq", TensorProto.FLOAT, [1, 4, 4, 4])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert share_concat_scales(model) == ["concat"]
    by_name = {n.name: n for n in model.graph.node}
    assert list(by_name["a_Q"].input[1:]) == list(by_name["a_DQ"].input[1:]) == ["c_scale", "c_zp"]
    assert list(by_name["b_Q"].input[1:]) == ["b_scale", "b_zp"]
    assert {t.name for t in model.graph.initializer} == {"b_scale", "b_zp", "c_scale", "c_zp"}
    onnx.checker.check_model(model, full_check=True)
