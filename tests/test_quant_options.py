"""`quantize` options that would do nothing with the chosen method or recipe end in one error line, before any work;
the same options left at their defaults never do."""

from __future__ import annotations

import argparse

import pytest

from quant.cli import add_arguments, explicit_options
from quant.settings import check_explicit_options


def _parse(*extra: str) -> tuple[argparse.Namespace, set[str]]:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--weights", "w.pth", *extra])
    return args, explicit_options(args)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--recipe", "nncf", "--activation-type", "s8"], "--recipe nncf does not take --activation-type"),
        (["--recipe", "tensorrt", "--activation-type", "s8"], "--recipe tensorrt does not take --activation-type"),
        (["--recipe", "tensorrt", "--int8-everywhere"], "--recipe tensorrt does not take --int8-everywhere"),
        (["--recipe", "nncf", "--int8-everywhere"], "--recipe nncf does not take --int8-everywhere"),
        (["--recipe", "onnxruntime", "--preset", "performance"], "--recipe onnxruntime does not take --preset"),
        (["--recipe", "tensorrt", "--preset", "mixed"], "--recipe tensorrt does not take --preset"),
        (["--recipe", "tensorrt", "--bias-correction", "full"], "--recipe tensorrt does not take --bias-correction"),
        (["--recipe", "onnxruntime", "--bias-correction", "fast"], "does not take --bias-correction"),
        (["--epochs", "2"], "--epochs is a QAT option"),
        (["--resume"], "--resume is a QAT option"),
        (["--method", "qat", "--recipe", "tensorrt"], "--method qat cannot follow the tensorrt recipe"),
        (["--method", "qat", "--ignore", "rtm_cls"], "--method qat does not take --ignore"),
        (["--method", "qat", "--max-drop", "1"], "--method qat does not take --max-drop"),
        (["--method", "qat", "--activation-type", "u8"], "--method qat does not take --activation-type"),
        (["--method", "qat", "--calibrator", "minmax"], "--method qat does not take --calibrator"),
    ],
)
def test_explicit_option_without_effect_is_refused(extra, message):
    from rtmdet_edge.errors import UserError

    args, explicit = _parse(*extra)
    with pytest.raises(UserError, match=message.replace("-", r"\-")):
        check_explicit_options(args.method, args.recipe, explicit)


@pytest.mark.parametrize("recipe", ["nncf", "onnxruntime", "tensorrt"])
@pytest.mark.parametrize("method", ["ptq", "qat"])
def test_defaults_are_never_refused(method, recipe):
    args, explicit = _parse("--method", method, "--recipe", recipe)
    assert explicit == set()
    assert (args.preset, args.activation_type, args.bias_correction, args.epochs, args.batch) == (
        "mixed", "u8", "fast", 3, 8
    )  # fmt: skip
    if method == "qat" and recipe == "tensorrt":
        return  # refused whatever the options (test above)
    check_explicit_options(method, recipe, explicit)


@pytest.mark.parametrize(
    "extra",
    [
        ["--recipe", "onnxruntime", "--activation-type", "s8", "--int8-everywhere"],
        ["--recipe", "nncf", "--preset", "performance", "--bias-correction", "none", "--calibrator", "mse"],
        ["--method", "qat", "--recipe", "nncf", "--preset", "performance", "--epochs", "1", "--resume"],
    ],
)
def test_options_that_act_are_accepted(extra):
    args, explicit = _parse(*extra)
    check_explicit_options(args.method, args.recipe, explicit)


def test_cli_refuses_with_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import quant.calibration
    from rtmdet_edge.cli import main

    def no_work(*a, **k):
        raise AssertionError("calibration started before the options were checked")

    monkeypatch.setattr(quant.calibration, "load_calibration", no_work)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not loaded")  # the checks come before the checkpoint is read
    base = ["quantize", "--weights", str(weights), "--data", "synthetic:8", "--calib-size", "8", "--imgsz", "64"]
    assert main([*base, "--recipe", "nncf", "--activation-type", "s8"]) == 2
    assert main([*base, "--recipe", "tensorrt", "--int8-everywhere"]) == 2
    assert main([*base, "--method", "qat", "--resume", "--out", str(tmp_path / "fresh")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 3 and all(line.startswith("rtmdet-edge quantize: error:") for line in errors)
    assert "qat_last.pth not found" in errors[2]
