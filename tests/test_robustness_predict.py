"""`predict` with corrupt videos, a camera that disappears and Ctrl-C: captures released, files whole, clear ends."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from rtmdet_edge import build_model, save_checkpoint
from rtmdet_edge.cli import main
from rtmdet_edge.inference import predict as predict_mod

REAL_CAPTURE = cv2.VideoCapture  # the tests patch cv2.VideoCapture (predict_mod.cv2 is the cv2 module)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = build_model("rtmdet-tiny", num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, {"model": model.state_dict(), "config": model.config.to_dict(), "class_names": ["a", "b", "c"]})
    return path


class _FakeCapture:
    """A camera or video: `frames` good frames, then either the signal stops (read() -> False) or Ctrl-C arrives."""

    instances: list[_FakeCapture] = []

    def __init__(self, source, frames: int = 2, then: str = "stop") -> None:
        self.source, self.frames, self.then, self.reads, self.released = source, frames, then, 0, False
        _FakeCapture.instances.append(self)

    def isOpened(self) -> bool:
        return True

    def get(self, prop) -> float:
        return 0.0

    def read(self):
        self.reads += 1
        if self.reads <= self.frames:
            return True, np.full((48, 64, 3), 60 * self.reads, np.uint8)
        if self.then == "interrupt":
            raise KeyboardInterrupt
        return False, None

    def release(self) -> None:
        self.released = True


def _predict(ckpt, source, out, *extra) -> int:
    return main(["predict", "--weights", str(ckpt), "--source", str(source), "--out", str(out), "--imgsz", "64",
                 "--device", "cpu", "--preset", "deploy", *extra])  # fmt: skip


def _no_temps(folder) -> bool:
    return not [p for p in os.listdir(folder) if ".tmp-" in p]


def test_corrupt_and_empty_videos_are_one_clear_error(ckpt, tmp_path, capsys) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video at all" * 10)
    assert _predict(ckpt, bad, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and ("cannot open video" in err or "no frame could be read" in err)
    assert not (tmp_path / "out" / "clip.mp4").exists() and _no_temps(tmp_path / "out")


def test_camera_loss_keeps_results_and_releases_the_capture(ckpt, tmp_path, monkeypatch, caplog) -> None:
    _FakeCapture.instances.clear()
    monkeypatch.setattr(predict_mod.cv2, "VideoCapture", lambda src: _FakeCapture(src, frames=2, then="stop"))
    out = tmp_path / "out"
    assert _predict(ckpt, 7, out) == 0
    cap = _FakeCapture.instances[-1]
    assert cap.source == 7 and cap.released
    assert "camera 7 stopped delivering frames after 2 frames" in caplog.text
    assert (out / "camera7.json").is_file() and (out / "camera7.mp4").is_file() and _no_temps(out)


def test_ctrl_c_mid_video_finalises_the_video_and_json_then_exits_130(ckpt, tmp_path, monkeypatch) -> None:
    _FakeCapture.instances.clear()
    monkeypatch.setattr(predict_mod.cv2, "VideoCapture", lambda src: _FakeCapture(src, frames=3, then="interrupt"))
    video = tmp_path / "walk.mp4"
    video.write_bytes(b"placeholder: the fake capture supplies the frames")
    out = tmp_path / "out"
    assert _predict(ckpt, video, out) == 130
    assert _FakeCapture.instances[-1].released
    written = REAL_CAPTURE(str(out / "walk.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3  # a playable file with the 3 processed frames
    written.release()
    assert isinstance(json.loads((out / "walk.json").read_text()), list) and _no_temps(out)


def test_a_failure_mid_video_leaves_no_partial_video(ckpt, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(predict_mod.cv2, "VideoCapture", lambda src: _FakeCapture(src, frames=5, then="stop"))
    from rtmdet_edge.inference import stream

    calls = {"n": 0}
    real = stream.draw_overlay

    def failing_draw(image, fps, latency_ms=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(image, fps, latency_ms)

    monkeypatch.setattr(stream, "draw_overlay", failing_draw)
    video = tmp_path / "walk.mp4"
    video.write_bytes(b"placeholder")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="out of memory"):
        _predict(ckpt, video, out)
    assert not (out / "walk.mp4").exists() and _no_temps(out) and _FakeCapture.instances[-1].released
