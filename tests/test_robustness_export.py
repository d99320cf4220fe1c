"""Export: `--out DIR` works, a failed export leaves neither a temporary nor a damaged model, a non-model is one error."""

from __future__ import annotations

import os

import onnx
import pytest

from rtmdet_edge import build_model, save_checkpoint
from rtmdet_edge.cli import main
from rtmdet_edge.errors import UserError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = build_model("rtmdet-tiny", num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, {"model": model.state_dict(), "config": model.config.to_dict(), "class_names": ["a", "b", "c"]})
    return path


def _export(ckpt, out, *extra) -> int:
    return main(["export", "--weights", str(ckpt), "--format", "onnx", "--imgsz", "64", "--no-simplify",
                 "--parity-images", "1", "--out", str(out), *extra])  # fmt: skip


def _temps(folder) -> list[str]:
    return [p for p in os.listdir(folder) if ".tmp" in p]


def test_out_is_a_folder_as_everywhere_else(ckpt, tmp_path) -> None:
    out = tmp_path / "runs" / "x"  # does not exist yet, no suffix: a folder
    assert _export(ckpt, out) == 0
    files = sorted(p.name for p in out.iterdir())
    assert "rtmdet-tiny_64_fp32.onnx" in files and "rtmdet-tiny_64_fp32.onnx.parity.json" in files
    onnx.checker.check_model(onnx.load(str(out / "rtmdet-tiny_64_fp32.onnx")))
    assert _temps(out) == []


def test_out_with_another_formats_suffix_is_one_clear_error(ckpt, tmp_path, capsys) -> None:
    assert _export(ckpt, tmp_path / "model.engine") == 2
    assert "ending in .onnx" in capsys.readouterr().err


def test_failed_export_leaves_the_old_file_and_no_temporary(ckpt, tmp_path, monkeypatch) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous good export")

    def broken_checker(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated failure after the raw export")

    monkeypatch.setattr(onnx.checker, "check_model", broken_checker)
    with pytest.raises(onnx.checker.ValidationError):
        _export(ckpt, target)
    assert target.read_bytes() == b"previous good export"
    assert _temps(tmp_path) == []  # the exporter's raw graph (it was a .raw.tmp left behind) is gone too


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_a_model_file_that_is_not_one_is_a_user_error(tmp_path, suffix) -> None:
    from targets import load_backend

    fake = tmp_path / f"model{suffix}"
    fake.write_bytes(b"this is not a model\x00\xff" * 4)
    with pytest.raises(UserError):
        load_backend(fake)
