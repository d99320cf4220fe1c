"""ONNX export: checker, names, static/dynamic batch, in-graph NMS against rtmdet_edge.inference.postprocess, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest
import torch
from _targets_helpers import IMGSZ, exported, real_images, shared_model

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.compare import match_detections
from rtmdet_edge.inference.postprocess import DEPLOY, postprocess
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess
from rtmdet_edge.models.outputs import flatten_outputs
from targets import INPUT_NAME
from targets.export import (
    NMS_OUTPUT_NAMES,
    NMSConfig,
    export_onnx,
    nms_outputs_to_detections,
    read_metadata,
    rebatch_onnx,
)
from targets.onnxruntime import OrtBackend
from targets.parity import compare


@pytest.fixture(scope="module")
def model():
    return shared_model()


@pytest.fixture(scope="module")
def images():
    return real_images(2)


@pytest.fixture(scope="module")
def raw_onnx():
    return exported("raw")


@pytest.fixture(scope="module")
def nms_onnx():
    return exported("nms")


def test_raw_export_is_checked_named_and_static(raw_onnx, model):
    m = onnx.load(str(raw_onnx))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == [INPUT_NAME]
    with torch.no_grad():
        names = list(flatten_outputs(model(torch.zeros(1, 3, 64, 64))))
    assert [o.name for o in m.graph.output] == names  # the model's own output names, in flatten_outputs order
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, IMGSZ, IMGSZ]
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 80, IMGSZ // 8, IMGSZ // 8]
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node), "the fused model is exported"
    meta = read_metadata(m)
    assert meta["outputs"] == "raw" and json.loads(meta["imgsz"]) == [IMGSZ, IMGSZ]
    assert not getattr(model, "fused", False), "export must not fuse the caller's model"


def test_rebatch_onnx_runs_at_the_new_batch_and_refuses_a_baked_batch(raw_onnx, tmp_path):
    """The benchmark times int8 models at its throughput batch by re-batching their batch-1 file: every image of the
    batch must come out as it does alone, and a graph with its batch baked into a constant must say so."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    batched = OrtBackend(rebatch_onnx(raw_onnx, tmp_path / "b3.onnx", 3), num_threads=1)
    single = OrtBackend(raw_onnx, num_threads=1)
    x = np.random.default_rng(0).standard_normal((3, 3, IMGSZ, IMGSZ)).astype(np.float32)
    out = batched(x)
    assert batched.input_shape[0] == 3 and out[single.output_names[0]].shape[0] == 3
    for i in range(3):
        alone = single(x[i : i + 1])
        for name, value in alone.items():
            np.testing.assert_allclose(out[name][i : i + 1], value, rtol=1e-4, atol=1e-4)

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "baked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(np.array([1, 48], np.int64), "shape")],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "baked.onnx"))
    with pytest.raises(UserError, match="cannot run at batch 2"):
        rebatch_onnx(tmp_path / "baked.onnx", tmp_path / "baked_b2.onnx", 2)


def test_raw_export_matches_torch_on_real_images(raw_onnx, model, images):
    report = compare(OrtBackend(raw_onnx, num_threads=1), model, images)
    assert report.raw_max_abs_norm < 1e-4, report.summary()  # acceptance: ORT fp32 within 1e-4 of PyTorch
    assert report.det_ref > 0 and report.det_match == 1.0, report.summary()


def test_nms_graph_matches_postprocess_deploy(nms_onnx, model, images):
    backend = OrtBackend(nms_onnx, num_threads=1)
    assert backend.output_names == NMS_OUTPUT_NAMES and backend.has_nms and backend.input_shape[0] == -1
    batch_u8, metas = preprocess(images, IMGSZ)
    outs = backend(normalize_numpy(batch_u8))  # one dynamic batch of len(images)
    assert outs["num_dets"].shape == (len(images), 1)
    assert outs["det_boxes"].shape == (len(images), DEPLOY.max_per_img, 4)
    with torch.no_grad():
        ref = postprocess(model(torch.from_numpy(normalize_numpy(batch_u8))), metas, DEPLOY)
    got = nms_outputs_to_detections(outs, metas)
    assert sum(len(r) for r in ref) > 0, "the deploy threshold left nothing to compare"
    for r, g in zip(ref, got):
        # as sets: same label, score within 1e-4, box within 1e-2 px; only ties at the cut-off may swap
        match = match_detections(r, g, score_atol=1e-4, box_atol=1e-2, score_thr=DEPLOY.score_thr)
        assert match.ok and match.matched + match.excused_ref == len(r), match
    n = int(outs["num_dets"][0, 0])  # padding rows are zero / -1
    assert (outs["det_labels"][0, n:] == -1).all() and (outs["det_scores"][0, n:] == 0).all()


def test_nms_graph_nms_pre_and_low_threshold(model, images, tmp_path):
    """A config where per-level top-k and the max_det cut both bind (many candidates above a tiny threshold)."""
    cfg = replace(DEPLOY, score_thr=0.01, nms_pre=50, max_per_img=30)
    nms = NMSConfig.from_postprocess(cfg)
    path = export_onnx(model, tmp_path / "nms_low.onnx", IMGSZ, nms=nms, simplify=False)
    report = compare(OrtBackend(path, num_threads=1), model, images[:1], post_cfg=cfg)
    assert report.det_ref == 30 and report.det_got == 30 and report.det_match == 1.0, report.summary()


def test_bad_imgsz_and_config_errors(model, tmp_path):
    with pytest.raises(UserError, match="multiple of 32"):
        export_onnx(model, tmp_path / "x.onnx", 300)
    with pytest.raises(ValueError):
        NMSConfig(score_thr=-0.1)


def test_export_cli_writes_file_and_parity_report(tmp_path):
    from conftest import OFFICIAL

    from rtmdet_edge.cli import main

    ckpt = OFFICIAL / "rtmdet_tiny" / "checkpoint.pth"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} not found: the shared fixtures folder must sit beside the repository")
    out = tmp_path / "tiny.onnx"
    args = ["export", "--weights", str(ckpt), "--imgsz", str(IMGSZ), "--out", str(out)]
    args += ["--parity-images", "1", "--no-simplify"]
    assert main(args) == 0
    report = json.loads((tmp_path / "tiny.onnx.parity.json").read_text())
    assert report["ok"] and report["raw_max_abs_norm"] < 1e-4
    # INT8 from a checkpoint is a clear user error (it needs the Q/DQ ONNX of `rtmdet-edge quantize`)
    assert main(["export", "--weights", str(ckpt), "--precision", "int8", "--out", str(out)]) == 2
