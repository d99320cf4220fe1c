"""User-facing ends: warnings and errors as one readable line, exit codes, and COCO's -1 shown as n/a (not 0.0)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from rtmdet_edge import cli
from rtmdet_edge.evaluation.coco import evaluate
from rtmdet_edge.inference.postprocess import Detections

REPO = Path(__file__).resolve().parents[1]


def _fake_command(monkeypatch, run) -> None:
    module = types.ModuleType("_rely_fake_eval")
    module.add_arguments = lambda parser: None
    module.run = run
    monkeypatch.setitem(sys.modules, "_rely_fake_eval", module)
    monkeypatch.setitem(cli.COMMANDS, "eval", ("_rely_fake_eval", "test stand-in"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test


def test_warnings_reach_the_terminal_as_one_readable_line(monkeypatch, capsys) -> None:
    def run(args):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("images/b.png: not an image;\n  skipped")
        return 0

    _fake_command(monkeypatch, run)
    assert cli.main(["eval"]) == 0
    err = capsys.readouterr().err
    assert err == "rtmdet-edge: warning: images/b.png: not an image; skipped\n"


def test_log_warnings_use_the_same_one_line_form() -> None:
    import logging

    record = logging.LogRecord("rtmdet_edge.inference.predict", logging.WARNING, __file__, 1, "camera %d lost", (7,), None)
    assert cli._LogFormatter().format(record) == "rtmdet-edge: warning: camera 7 lost"
    record = logging.LogRecord("rtmdet_edge.x", logging.INFO, __file__, 1, "wrote %s", ("a.json",), None)
    assert cli._LogFormatter().format(record) == "INFO rtmdet_edge.x: wrote a.json"


def test_user_error_and_full_disk_are_one_line_and_nonzero(monkeypatch, capsys) -> None:
    from rtmdet_edge.errors import UserError

    def bad(args):
        raise UserError("checkpoint not found: x.pth")

    _fake_command(monkeypatch, bad)
    assert cli.main(["eval"]) == 2
    assert capsys.readouterr().err == "rtmdet-edge eval: error: checkpoint not found: x.pth\n"

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/eval/metrics.json")

    _fake_command(monkeypatch, full)
    assert cli.main(["eval"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and "Traceback" not in err


def test_real_command_prints_dataset_warnings_and_error_without_traceback(tmp_path) -> None:
    import cv2

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../../etc/passwd"}],
                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]}],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["eval", "--data", str(tmp_path / "ann.json"), "--images", str(tmp_path / "images"), "--weights", str(tmp_path / "none.pth"), "--device", "cpu"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "rtmdet_edge.cli", *args], capture_output=True, text=True, env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "warnings.warn(" not in proc.stderr and "UserWarning" not in proc.stderr
    assert all(line.startswith(("rtmdet-edge: warning: ", "rtmdet-edge eval: error: ")) for line in lines), lines
    assert any("points outside" in line for line in lines) and any("zero, negative or non-finite size" in line for line in lines)
    assert lines[-1] == f"rtmdet-edge eval: error: checkpoint not found: {tmp_path / 'none.pth'}"


class _OneLargeObject:
    class_names = ["thing"]

    def __len__(self) -> int:
        return 2

    def load_raw(self, i: int) -> dict:
        return {
            "image": np.zeros((200, 200, 3), np.uint8),
            "boxes": np.array([[10, 10, 190, 190]], np.float32),
            "labels": np.array([0]),
            "polygons": [],
            "ignore_boxes": np.zeros((0, 4), np.float32),
            "image_id": i,
            "ori_shape": (200, 200),
        }


def test_coco_minus_one_is_not_shown_as_zero() -> None:
    def perfect(image):
        return Detections(np.array([[10, 10, 190, 190]], np.float32), np.array([0.9], np.float32), np.array([0]))

    result = evaluate(perfect, _OneLargeObject(), show_progress=False)
    assert result.metrics["AP"] == pytest.approx(1.0) and result.metrics["APl"] == pytest.approx(1.0)
    assert np.isnan(result.metrics["APs"]) and np.isnan(result.metrics["APm"])  # no small/medium objects at all
    assert result.to_dict()["metrics"]["APs"] is None
    assert json.loads(json.dumps(result.to_dict()))["metrics"]["APm"] is None  # strict JSON, no NaN literal
    row = {line.split()[0]: line.split()[1] for line in result.table().splitlines()[1:13]}
    assert row["APs"] == "n/a" and row["APl"] == "1.0000"
