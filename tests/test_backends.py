"""Backends behind one Protocol: ONNX Runtime, OpenVINO (f32 / bf16 / f16 weights), PyTorch; load_backend; Detector."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _targets_helpers import IMGSZ, exported, real_images, shared_model

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.compare import match_detections
from rtmdet_edge.models.outputs import flatten_outputs
from targets import Backend, load_backend
from targets.parity import ParityError, check_parity, compare
from targets.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def images():
    return real_images(1)


@pytest.fixture(scope="module")
def ir_paths(tmp_path_factory):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from targets.openvino import convert_to_openvino

    folder = tmp_path_factory.mktemp("ov")
    return {
        "f32": convert_to_openvino(exported("raw"), folder / "f32.xml"),
        "f16": convert_to_openvino(exported("raw"), folder / "f16.xml", compress_to_fp16=True),
    }


def test_onnxruntime_fp32_parity():
    images = real_images(2)
    backend = load_backend(exported("raw"), num_threads=1)
    assert isinstance(backend, Backend) and backend.name == "onnxruntime" and backend.precision == "fp32"
    assert backend.input_shape == (1, 3, IMGSZ, IMGSZ)
    report = check_parity(backend, shared_model(), images_bgr=images)
    assert report.raw_max_abs_norm < 1e-4, report.summary()  # acceptance


def test_openvino_f32_parity_and_explicit_hint(ir_paths, images):
    backend = load_backend(ir_paths["f32"], num_threads=1)
    assert isinstance(backend, Backend) and backend.precision == "fp32"
    # the CPU plugin may default to bf16 (AVX512_BF16/AMX): the backend must pin f32
    assert "f32" in backend.effective_precision or "float32" in backend.effective_precision
    report = check_parity(backend, shared_model(), images_bgr=images)
    assert report.raw_max_abs_norm < 1e-3, report.summary()  # acceptance


def test_openvino_bf16_and_f16_weights(ir_paths, images):
    import openvino as ov

    bf16 = load_backend(ir_paths["f32"], precision="bf16", num_threads=1, hint="throughput")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        assert bf16.precision == "fp32"  # no bf16 on this CPU: labelled as what it runs
    else:
        assert bf16.precision == "bf16"
    f32 = compare(load_backend(ir_paths["f32"], num_threads=1), shared_model(), images)
    r_bf16 = compare(bf16, shared_model(), images)
    assert r_bf16.ok, r_bf16.summary()
    if bf16.precision == "bf16":
        assert r_bf16.raw_max_abs_norm > 10 * f32.raw_max_abs_norm  # really ran in reduced precision
    f16w = load_backend(ir_paths["f16"], num_threads=1)
    assert f16w.precision == "f16-weights"
    r_f16 = compare(f16w, shared_model(), images)
    assert r_f16.ok and r_f16.raw_max_abs_norm > f32.raw_max_abs_norm, r_f16.summary()
    with pytest.raises(UserError, match="f32 weights"):
        load_backend(ir_paths["f32"], precision="f16-weights")


def test_openvino_runs_in_graph_nms(images):
    pytest.importorskip("openvino", reason="openvino is not installed")
    backend = load_backend(exported("nms"), name="openvino", num_threads=1)
    assert backend.has_nms
    report = check_parity(backend, shared_model(), images_bgr=images, imgsz=IMGSZ)
    assert report.det_ref > 0 and report.det_match == 1.0, report.summary()


@pytest.mark.slow
def test_torch_backend_eager_and_compile():
    model = shared_model()
    x = np.random.default_rng(0).standard_normal((1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    with torch.no_grad():
        ref = {name: r.numpy() for name, r in flatten_outputs(model(torch.from_numpy(x))).items()}
    eager = load_backend(model)
    assert isinstance(eager, TorchBackend) and isinstance(eager, Backend) and eager.name == "torch"
    got = eager(x)
    assert list(got) == list(ref) == list(eager.output_names)
    for name, r in ref.items():
        np.testing.assert_array_equal(got[name], r)
    compiled = TorchBackend(model, compile=True, compile_backend="eager")  # wiring only; inductor is for benchmarks
    assert compiled.name == "torch-compile"
    for name, a in compiled(x).items():
        np.testing.assert_allclose(a, ref[name], atol=1e-5)


def test_load_backend_choices_and_errors(tmp_path):
    with pytest.raises(UserError, match="cannot tell the runtime"):
        (tmp_path / "model.bin").write_bytes(b"x")
        load_backend(tmp_path / "model.bin")
    with pytest.raises(UserError, match="not found"):
        load_backend(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="unknown backend"):
        load_backend(exported("raw"), name="tflite")
    with pytest.raises(UserError, match="cannot run"):
        load_backend(exported("raw"), name="torch")


def test_missing_runtime_gives_clear_error_and_others_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(UserError, match="needs the openvino package"):
        load_backend(tmp_path / "m.xml")
    assert load_backend(exported("raw"), num_threads=1).name == "onnxruntime"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        (tmp_path / "m.engine").write_bytes(b"x")
        with pytest.raises(UserError, match="TensorRT"):
            load_backend(tmp_path / "m.engine", device="cuda:0")


def test_parity_fails_loudly_on_drift(images):
    class Broken:
        name, precision, input_shape, has_nms = "broken", "fp32", (1, 3, IMGSZ, IMGSZ), False

        def __init__(self):
            self.inner = load_backend(exported("raw"), num_threads=1)

        def __call__(self, batch):
            outs = self.inner(batch)
            return {**outs, "cls_score_0": outs["cls_score_0"] + 0.01}

    with pytest.raises(ParityError, match="raw outputs differ"):
        check_parity(Broken(), shared_model(), images_bgr=images[:1])


def test_detector_runs_each_available_backend(images):
    from rtmdet_edge import Detector

    model = shared_model()
    ref = Detector(model, imgsz=IMGSZ, backend="torch", device="cpu", postprocess="deploy")(images[0])
    got = Detector(exported("raw"), imgsz=IMGSZ, backend="onnxruntime", device="cpu", postprocess="deploy")(images[0])
    assert len(ref) > 0
    match = match_detections(ref, got, score_atol=1e-4, box_atol=1e-2, score_thr=0.3)
    assert match.ok and match.matched + match.excused_ref == len(ref), match
    # a Backend object goes straight in (what benchmark does with the backends it built)
    backend = load_backend(exported("raw"), num_threads=1)
    again = Detector(backend, imgsz=IMGSZ, postprocess="deploy")(images[0])
    assert match_detections(got, again, score_atol=1e-5, box_atol=1e-3).ok  # thread counts differ: rounding only


def test_backends_return_outputs_by_name(ir_paths):
    x = np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)
    expected = ["cls_score_0", "cls_score_1", "cls_score_2", "bbox_pred_0", "bbox_pred_1", "bbox_pred_2"]
    for backend in (load_backend(exported("raw"), num_threads=1), load_backend(ir_paths["f32"], num_threads=1)):
        out = backend(x)
        assert isinstance(out, dict) and sorted(out) == sorted(expected) == sorted(backend.output_names)
        assert out["cls_score_1"].shape == (1, 80, IMGSZ // 16, IMGSZ // 16)
        assert out["bbox_pred_2"].shape == (1, 4, IMGSZ // 32, IMGSZ // 32)


def test_parity_detections_fail_on_a_score_drift(images):
    """With the raw check off, scores that drifted (not ties) still fail the detection check."""

    class Drift:
        name, precision, input_shape, has_nms = "drift", "fp32", (1, 3, IMGSZ, IMGSZ), False

        def __init__(self):
            self.inner = load_backend(exported("raw"), num_threads=1)

        def __call__(self, batch):
            outs = self.inner(batch)
            return {name: a + 0.5 if name.startswith("cls_score") else a for name, a in outs.items()}

    report = compare(Drift(), shared_model(), images_bgr=images[:1], tolerance=None)
    assert report.det_ref > 0 and not report.ok, report.summary()
    assert report.det_matched == 0 and report.det_excused < report.det_ref, report.summary()


def test_detector_post_processes_on_one_thread_next_to_another_runtime(images):
    """Decode/NMS must not spin torch's OpenMP pool on the cores ONNX Runtime / OpenVINO use (issue 9)."""
    from rtmdet_edge import Detector

    det = Detector(load_backend(exported("raw"), num_threads=1), imgsz=IMGSZ, postprocess="deploy")
    assert det.post_threads == 1
    threads = torch.get_num_threads()
    det(images[0])
    assert torch.get_num_threads() == threads  # restored after post-processing
    assert Detector(TorchBackend(shared_model()), imgsz=IMGSZ).post_threads is None  # torch keeps its own pool


def test_backend_from_a_model_leaves_no_temporary_files(tmp_path, monkeypatch) -> None:
    """A module given to load_backend is exported into a temporary folder that is gone once the runtime loaded it."""
    import tempfile

    from rtmdet_edge import build_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    backend = load_backend(build_model("rtmdet-tiny", num_classes=2).eval(), "onnxruntime", imgsz=64, num_threads=1)
    out = backend(np.zeros((1, 3, 64, 64), np.float32))
    assert set(out) >= {"cls_score_0", "bbox_pred_2"}
    assert list(tmp_path.iterdir()) == []


def test_openvino_normalises_letterboxed_uint8_inside_the_runtime(ir_paths, images):
    """run_letterboxed (what Detector calls on OpenVINO) gives the outputs of the float path with numpy's
    normalisation, and the Detector's detections match the PyTorch model's."""
    from rtmdet_edge import Detector
    from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess

    backend = load_backend(ir_paths["f32"], num_threads=1)
    boxed, _ = preprocess(images[:1], IMGSZ)
    ref, got = backend(normalize_numpy(boxed)), backend.run_letterboxed(boxed)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert got[name].shape == ref[name].shape
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4 * np.abs(ref[name]).max())
    torch_dets = Detector(shared_model(), imgsz=IMGSZ, backend="torch", device="cpu", postprocess="deploy")(images[0])
    ov_dets = Detector(backend, imgsz=IMGSZ, postprocess="deploy")(images[0])
    assert len(torch_dets) > 0
    match = match_detections(torch_dets, ov_dets, score_atol=1e-3, box_atol=1e-2, score_thr=0.3)
    assert match.ok and match.matched + match.excused_ref == len(torch_dets), match
