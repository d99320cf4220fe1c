"""The user audit's findings: each is one clear line (exit 2) before any work, or now does the right thing.

--imgsz not a multiple of 32 (predict, eval, benchmark), eval --split, an .onnx --weights exported at its own size and
precision, a float --int8-onnx, TensorRT missing, the backend from the weights' suffix, a text file as a checkpoint.
All on a random rtmdet-tiny (3 classes) at 64 px.
"""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtmdet_edge import build_model, save_checkpoint
from rtmdet_edge.checkpoint import read_checkpoint
from rtmdet_edge.cli import main
from rtmdet_edge.errors import UserError
from targets.export import export_onnx, has_qdq, is_quantized

IMGSZ = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint, its fp32 ONNX, a Q/DQ ONNX of it (one Q/DQ pair on the input: an INT8 file to every check,
    converted by OpenVINO in a second) and an image, all at 64 px."""
    folder = tmp_path_factory.mktemp("audit")
    model = build_model("rtmdet-tiny", num_classes=3).eval()
    ckpt = folder / "best.pth"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": model.config.to_dict(), "class_names": ["a", "b", "c"]})
    fp32 = export_onnx(model, folder / "model_fp32.onnx", IMGSZ, simplify=False)
    graph = onnx.load(str(fp32))
    for node in graph.graph.node:
        node.input[:] = ["images_dq" if name == "images" else name for name in node.input]
    graph.graph.initializer.extend(
        [helper.make_tensor("q_scale", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("q_zp", TensorProto.INT8, [], [0])]
    )
    qdq = [
        helper.make_node("QuantizeLinear", ["images", "q_scale", "q_zp"], ["images_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["images_q", "q_scale", "q_zp"], ["images_dq"], name="dq_in"),
    ]
    nodes = [*qdq, *graph.graph.node]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    int8 = folder / "model_int8_onnxruntime.onnx"
    onnx.save(graph, str(int8))
    image = folder / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    return {"ckpt": ckpt, "fp32": fp32, "int8": int8, "image": image}


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# 1. --imgsz must be a multiple of 32, checked before anything is loaded or written


@pytest.mark.parametrize("command", ["predict", "eval", "benchmark"])
def test_imgsz_not_a_multiple_of_32_is_one_line_before_any_work(files, tmp_path, capsys, command) -> None:
    out = tmp_path / "out"
    args = [command, "--weights", str(files["ckpt"]), "--imgsz", "100", "--out", str(out)]
    if command == "predict":
        args += ["--source", str(files["image"])]
    else:
        args += ["--data", "synthetic:2"]
    assert main(args) == 2
    _one_error_line(capsys, "--imgsz", "multiple of 32", "100")
    assert not out.exists()


# 2. eval --split


def test_eval_unknown_synthetic_split_is_one_line(files, tmp_path, capsys) -> None:
    args = ["eval", "--weights", str(files["ckpt"]), "--data", "synthetic:2", "--split", "bogus", "--out", str(tmp_path)]
    assert main(args) == 2
    _one_error_line(capsys, "--split bogus", "train, val, test")


def test_eval_synthetic_test_split_says_what_it_evaluates(files, tmp_path, capsys) -> None:
    args = ["eval", "--weights", str(files["ckpt"]), "--data", "easy:2", "--split", "test", "--imgsz", "64",
            "--device", "cpu", "--workers", "0", "--batch", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert "evaluating on easy:2 split 'test': 2 generated images" in capsys.readouterr().out


# 3. export from an .onnx takes its size and precision from the file


def test_is_quantized_sees_qdq_and_qlinear(files) -> None:
    assert is_quantized(onnx.load(str(files["int8"]))) and has_qdq(onnx.load(str(files["int8"])))
    assert not is_quantized(onnx.load(str(files["fp32"])))
    qlinear = helper.make_graph([helper.make_node("QLinearConv", ["x"], ["y"])], "g", [], [])
    assert is_quantized(helper.make_model(qlinear)) and not has_qdq(helper.make_model(qlinear))


def test_export_from_a_qdq_onnx_is_named_and_checked_at_its_own_size(files, tmp_path, capsys) -> None:
    out = tmp_path / "ov"
    base = ["export", "--weights", str(files["int8"]), "--format", "openvino", "--out", str(out)]
    assert main(base) == 0  # no --imgsz, no --precision: 64 px and int8, from the file
    assert (out / "model_int8_onnxruntime_64_int8.xml").is_file()
    ref = [*base, "--reference", str(files["ckpt"]), "--precision", "int8", "--parity-images", "1"]
    assert main(ref) == 0  # the parity check runs at the file's 64 px (it fed 640 before)
    assert (out / "rtmdet-tiny_64_int8.xml.parity.json").is_file()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("which", "extra", "needles"),
    [
        ("int8", ["--imgsz", "128"], ["--imgsz 128 does not match", "64x64"]),
        ("int8", ["--precision", "fp32"], ["quantized (Q/DQ) INT8", "not fp32"]),
        ("fp32", ["--precision", "int8"], ["not an INT8 model"]),
    ],
)
def test_export_options_that_contradict_the_onnx_are_one_line(files, tmp_path, capsys, which, extra, needles) -> None:
    out = tmp_path / "ov"
    assert main(["export", "--weights", str(files[which]), "--format", "openvino", "--out", str(out), *extra]) == 2
    _one_error_line(capsys, *needles)
    assert not out.exists()


def test_failed_export_removes_its_intermediate_onnx(files, tmp_path, monkeypatch, capsys) -> None:
    import targets.parity

    def drifted(*args, **kwargs):
        raise targets.parity.ParityError("simulated drift")

    monkeypatch.setattr(targets.parity, "compare", drifted)
    out = tmp_path / "ov"
    args = ["export", "--weights", str(files["ckpt"]), "--format", "openvino", "--imgsz", "64", "--no-simplify",
            "--parity-images", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    _one_error_line(capsys, "simulated drift")
    assert not list(out.glob("*.fp32.onnx"))  # the 22 MB intermediate (for rtmdet-tiny at 640) is gone


# 4. benchmark --int8-onnx must be quantized


def test_benchmark_refuses_a_float_int8_onnx_before_any_work(files, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    args = ["benchmark", "--weights", str(files["ckpt"]), "--targets", "onnxruntime", "--precision", "int8",
            "--int8-onnx", str(files["fp32"]), "--data", "synthetic:2", "--imgsz", "64", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    _one_error_line(capsys, "--int8-onnx", "no QuantizeLinear/DequantizeLinear", "float model")
    assert not out.exists()


# 5. TensorRT missing: said first, nothing written


@pytest.mark.parametrize("extra", [[], ["--precision", "int8", "--calib-data", "synthetic:2", "--calib-size", "2"]])
def test_export_tensorrt_without_tensorrt_is_one_line_and_writes_nothing(files, tmp_path, monkeypatch, capsys, extra):
    import targets.tensorrt

    # as on a machine without TensorRT, also where the test runs on one that has it
    monkeypatch.setattr(targets.tensorrt, "available", lambda precision: "not installed (pip install x)")
    out = tmp_path / "trt"
    args = ["export", "--weights", str(files["ckpt"]), "--format", "tensorrt", "--imgsz", "64", "--out", str(out)]
    assert main([*args, *extra]) == 2
    _one_error_line(capsys, "--format tensorrt", "TensorRT not installed", "nothing was written")
    assert not out.exists()


# 6. the backend follows the weights' suffix


def test_backend_for_weights_follows_the_suffix() -> None:
    from rtmdet_edge.inference.predict import backend_for_weights

    assert backend_for_weights("m.onnx") == "onnxruntime" and backend_for_weights("m.XML") == "openvino"
    assert backend_for_weights("m.engine") == backend_for_weights("m.plan") == "tensorrt"
    assert backend_for_weights("best.pth") == "torch" and backend_for_weights("weights.ckpt") is None


def test_predict_on_an_onnx_without_backend(files, tmp_path, capsys) -> None:
    out = tmp_path / "pred"
    args = ["predict", "--weights", str(files["fp32"]), "--source", str(files["image"]), "--imgsz", "64",
            "--device", "cpu", "--no-save-media", "--out", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "img.json").is_file()


# 7. a file that is not a checkpoint at all


def test_text_file_as_weights_is_not_a_checkpoint(files, tmp_path, capsys) -> None:
    text = tmp_path / "w.pth"
    text.write_text("hi\n")
    args = ["predict", "--weights", str(text), "--source", str(files["image"]), "--out", str(tmp_path / "p")]
    assert main(args) == 2
    line = _one_error_line(capsys, "is not a PyTorch checkpoint", "a text file")
    assert "weights_only" not in line and "run code" not in line
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        read_checkpoint(files["fp32"])  # an ONNX given as a checkpoint


class _Calls:
    def __reduce__(self):
        return (print, ("pwned: this must never run",))


def test_a_framed_pickle_that_calls_code_is_refused_unread(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Calls()}, f, protocol=4)  # framed: torch's reader stops at the first opcode
    with pytest.raises(UserError, match=r"refusing to load .*protocol 4 or later.*nothing was executed") as e:
        read_checkpoint(path)
    assert "\n" not in str(e.value)
    assert "pwned" not in capsys.readouterr().out
