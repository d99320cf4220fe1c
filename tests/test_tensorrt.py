"""TensorRT: the ONNX a strongly typed build consumes (always, in ONNX Runtime) and the engine path (where tensorrt
imports and a CUDA GPU exists; skipped with the reason elsewhere)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from _targets_helpers import IMGSZ, exported, real_images, shared_model
from onnx import TensorProto, helper, numpy_helper

from rtmdet_edge.errors import UserError
from targets.export import convert_onnx_to_fp16, has_qdq
from targets.parity import compare
from targets.tensorrt import prepare_onnx


def _with_input_qdq(src, dst):
    """The fp32 ONNX with one Q/DQ pair on its input: the smallest explicitly quantized graph."""
    m = onnx.load(str(src))
    g = m.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(0.05, np.float32), "q_scale"),
            numpy_helper.from_array(np.asarray(0, np.int8), "q_zp"),
        ]
    )
    for node in g.node:
        node.input[:] = ["images_dq" if x == "images" else x for x in node.input]
    g.node.insert(0, helper.make_node("DequantizeLinear", ["images_q", "q_scale", "q_zp"], ["images_dq"]))
    g.node.insert(0, helper.make_node("QuantizeLinear", ["images", "q_scale", "q_zp"], ["images_q"]))
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(dst))
    return dst


def test_fp16_onnx_is_checked_typed_and_runs_in_onnxruntime(tmp_path):
    from targets.onnxruntime import OrtBackend

    m = prepare_onnx(exported("raw"), "fp16")
    onnx.checker.check_model(m, full_check=True)
    assert not has_qdq(m)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 interface
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in m.graph.output)
    assert all(i.data_type != TensorProto.FLOAT for i in m.graph.initializer if i.dims and np.prod(i.dims) > 8)
    path = tmp_path / "fp16.onnx"
    onnx.save(m, str(path))
    backend = OrtBackend(path, num_threads=1)
    assert backend.precision == "fp16"
    report = compare(backend, shared_model(), real_images(1))
    assert report.ok and 1e-5 < report.raw_max_abs_norm < 5e-2, report.summary()


def test_fp16_nms_onnx_keeps_float32_nms_inputs(tmp_path):
    from targets.onnxruntime import OrtBackend

    with pytest.warns(UserWarning, match="float32"):
        m = convert_onnx_to_fp16(onnx.load(str(exported("nms"))))
    nms = next(n for n in m.graph.node if n.op_type == "NonMaxSuppression")
    inits = {i.name: i for i in m.graph.initializer}
    assert inits[nms.input[3]].data_type == TensorProto.FLOAT  # thresholds stay exact
    onnx.save(m, str(tmp_path / "nms16.onnx"))
    report = compare(OrtBackend(tmp_path / "nms16.onnx", num_threads=1), shared_model(), real_images(1), imgsz=IMGSZ)
    assert report.det_ref > 0 and report.det_match >= 0.9, report.summary()


def test_int8_needs_explicit_qdq(tmp_path):
    from targets.onnxruntime import OrtBackend

    with pytest.raises(UserError, match="QuantizeLinear/DequantizeLinear"):
        prepare_onnx(exported("raw"), "int8")
    with pytest.raises(UserError, match="unknown TensorRT precision"):
        prepare_onnx(exported("raw"), "fp8")
    qdq = _with_input_qdq(exported("raw"), tmp_path / "qdq.onnx")
    assert has_qdq(prepare_onnx(qdq, "int8"))
    with pytest.raises(UserError, match="Q/DQ"):
        prepare_onnx(qdq, "fp16")
    backend = OrtBackend(qdq, num_threads=1)  # the Q/DQ graph TensorRT would consume runs in ONNX Runtime
    assert backend.precision == "fp32" or backend.precision == "int8"
    x = np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)
    assert backend(x)["cls_score_0"].shape == (1, 80, IMGSZ // 8, IMGSZ // 8)


# ---- below: needs TensorRT and a GPU -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed (pip install 'rtmdet-edge[tensorrt]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU; torch.cuda.is_available() is False")
    return trt


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_parity(trt, tmp_path, precision):
    from targets.tensorrt import TrtBackend, build_engine

    engine = build_engine(exported("raw"), tmp_path / f"tiny_{precision}.engine", precision)
    backend = TrtBackend(engine)
    assert backend.precision == precision and backend.input_shape == (1, 3, IMGSZ, IMGSZ)
    report = compare(backend, shared_model(), real_images(2))
    assert report.ok, report.summary()
    if precision == "fp32":  # TF32 may be on for convs: allow its 10-bit mantissa
        assert report.raw_max_abs_norm < 1e-2, report.summary()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_with_nms_dynamic_batch_and_int8(trt, tmp_path):
    from targets.tensorrt import TrtBackend, build_engine

    engine = build_engine(exported("nms"), tmp_path / "nms.engine", "fp32", batch=2, max_batch=4)
    backend = TrtBackend(engine)
    assert backend.has_nms and backend.input_shape[0] == -1
    report = compare(backend, shared_model(), real_images(3), imgsz=IMGSZ)
    assert report.det_ref > 0 and report.det_match >= 0.98, report.summary()
    qdq = _with_input_qdq(exported("raw"), tmp_path / "qdq.onnx")
    int8 = TrtBackend(build_engine(qdq, tmp_path / "qdq.engine", "int8"))
    assert int8.precision == "int8" and "bbox_pred_2" in int8(np.zeros((1, 3, IMGSZ, IMGSZ), np.float32))


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_torch_tensorrt_compile(trt):
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    from targets.tensorrt import TorchTensorRTBackend

    backend = TorchTensorRTBackend(shared_model(), imgsz=IMGSZ, precision="fp16")
    report = compare(backend, shared_model(), real_images(1), imgsz=IMGSZ)
    assert report.ok, report.summary()
