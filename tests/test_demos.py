"""The demo scripts, headless, on short generated clips: every backend here, bad videos, a camera that fails."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from demos import camera, video
from rtmdet_edge import build_model, save_checkpoint
from rtmdet_edge.inference import stream

IMGSZ = 160


def _frames(n: int, h: int = 120, w: int = 160) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        cv2.rectangle(f, (10 + 4 * i, 20), (60 + 4 * i, 80), (0, 200, 255), -1)
        out.append(f)
    return out


def _write_clip(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for f in _frames(n):
        writer.write(f)
    writer.release()
    return path


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """A tiny random 3-class model as checkpoint, ONNX and OpenVINO IR."""
    from targets.export import export_onnx
    from targets.openvino import convert_to_openvino

    folder = tmp_path_factory.mktemp("demo_weights")
    torch.manual_seed(0)
    model = build_model("rtmdet-tiny", num_classes=3).eval()
    pth = folder / "tiny.pth"
    save_checkpoint(pth, {"model": model.state_dict(), "config": model.config.to_dict(), "class_names": ["a", "b", "c"]})
    onnx = export_onnx(model, folder / "tiny.onnx", IMGSZ)
    xml = convert_to_openvino(onnx, folder / "tiny.xml")
    return {"torch": pth, "onnxruntime": onnx, "openvino": xml}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 9)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_video_headless_writes_every_frame(backend, weights, clip, tmp_path, capsys) -> None:
    out = tmp_path / "annotated.mp4"
    stats = tmp_path / "stats.json"
    code = video.main([str(clip), "--weights", str(weights[backend]), "--imgsz", str(IMGSZ), "--headless",
                       "--out", str(out), "--stats", str(stats), "--threads", "1"])  # fmt: skip
    assert code == 0
    assert _count_frames(out) == _count_frames(clip) == 9
    import json

    s = json.loads(stats.read_text())
    assert s["frames_processed"] == 9 and s["frames_dropped"] == 0 and s["fps"] > 0
    assert "FPS" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*part*"))  # the temporary file was renamed, not left behind


def test_bad_videos_give_one_line(weights, tmp_path, capsys) -> None:
    missing = video.main([str(tmp_path / "nope.mp4"), "--weights", str(weights["torch"]), "--headless"])
    err = capsys.readouterr().err.strip()
    assert missing == 2 and err.count("\n") == 0 and "not found" in err
    good = _write_clip(tmp_path / "good.mp4", 6).read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 5])  # header cut: not decodable
    code = video.main([str(tmp_path / "trunc.mp4"), "--weights", str(weights["torch"]), "--imgsz", str(IMGSZ),
                       "--headless", "--out", str(tmp_path / "o.mp4")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and ("cannot open video" in err or "no frame could be read" in err)
    assert not (tmp_path / "o.mp4").exists()


class _FlakyCamera:
    """A camera that delivers `good` frames and then stops answering (unplugged)."""

    instances: list[_FlakyCamera] = []

    def __init__(self, index, good: int = 5) -> None:
        self.frames = _frames(good)
        self.released = False
        _FlakyCamera.instances.append(self)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop, value) -> bool:
        return True

    def release(self) -> None:
        self.released = True


def test_camera_lost_mid_stream_stops_cleanly(weights, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(stream.cv2, "VideoCapture", _FlakyCamera)
    out = tmp_path / "cam.mp4"
    code = camera.main(["--camera", "0", "--weights", str(weights["onnxruntime"]), "--headless", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "camera 0 stopped delivering frames after 5 frames" in captured.err
    assert _FlakyCamera.instances[-1].released
    written = _count_frames(out)
    assert 1 <= written <= 5  # a live camera may drop frames when the model is slower, never invent them
    assert "dropped" in captured.out


def test_interrupt_keeps_written_video_and_releases(tmp_path, monkeypatch) -> None:
    cam = _FlakyCamera(0, good=6)
    calls = []

    def detector(frame):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        from rtmdet_edge.inference.postprocess import Detections

        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    out = tmp_path / "int.mp4"
    stats = stream.run_stream(detector, "0", ["a"], out=out, capture=(cam, False))
    assert stats.stopped_by.startswith("interrupted") and cam.released
    assert _count_frames(out) == 2


def test_max_frames_is_reported_as_the_stop_reason(weights, tmp_path, capsys) -> None:
    """A limit reached before the end of the file is what stopped the run, in the last line and in --stats."""
    import json

    clip = _write_clip(tmp_path / "long.mp4", 12)
    stats = tmp_path / "stats.json"
    code = video.main([str(clip), "--weights", str(weights["onnxruntime"]), "--imgsz", str(IMGSZ), "--headless",
                       "--out", str(tmp_path / "o.mp4"), "--max-frames", "5", "--stats", str(stats)])  # fmt: skip
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "stopped by frame limit (--max-frames 5)" in last
    s = json.loads(stats.read_text())
    assert s["frames_processed"] == 5 and s["stopped_by"] == "frame limit (--max-frames 5)"
    video.main([str(clip), "--weights", str(weights["onnxruntime"]), "--imgsz", str(IMGSZ), "--headless",
                "--out", str(tmp_path / "o.mp4"), "--max-frames", "50", "--stats", str(stats)])  # fmt: skip
    assert json.loads(stats.read_text())["stopped_by"] == "end of stream"  # a limit the file never reached


def test_missing_camera_is_one_line_without_opencv_logging(weights, tmp_path) -> None:
    """OpenCV's own WARN/ERROR lines (printed by its C++ code, so run in a subprocess) are silenced around the open."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "demos" / "camera.py"
    run = subprocess.run([sys.executable, str(script), "--source", "7", "--weights", str(weights["onnxruntime"]),
                          "--headless", "--out", str(tmp_path / "c.mp4")], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 2
    error = "camera.py: error: cannot open camera 7 (no such device, or it is in use)"
    assert run.stderr.strip().splitlines() == [error]
