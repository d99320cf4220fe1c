"""The video/camera loop behind `rtmdet-edge predict` and demos/video.py, demos/camera.py: read frames, run a Detector, draw, show and/or write.

Three stages overlap when threads make it faster (measured, see README "Demos"): a reader thread decodes the next
frame while the model runs on the current one, and a writer thread encodes annotated frames behind it. What a stage
may drop differs by source:
- a video file never drops a frame: the reader blocks when the model is behind (bounded queue), so the annotated
  video has every input frame;
- a live camera keeps only the newest frame: when the model is slower than the camera, older frames are dropped and
  counted, so the picture stays current instead of lagging further and further behind.
Every resource (capture, writer, window, threads) is released on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.draw import draw_detections, draw_overlay

_END = object()  # sentinel: the source is exhausted or failed


@dataclass
class StreamStats:
    """What one run did; `overhead` is decode + draw + encode time relative to the model's own time."""

    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_written: int = 0
    seconds: float = 0.0
    model_ms: list[float] = field(default_factory=list)  # Detector call (pre + model + post) per frame
    decode_ms: list[float] = field(default_factory=list)
    draw_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    stopped_by: str = "end of stream"

    def summary(self) -> dict[str, Any]:
        def med(x: list[float]) -> float:
            return float(np.median(x)) if x else 0.0

        model = med(self.model_ms)
        demo = med(self.decode_ms) + med(self.draw_ms) + med(self.encode_ms)
        return {
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_written": self.frames_written,
            "fps": self.frames_processed / self.seconds if self.seconds > 0 else 0.0,
            "model_ms_median": model,
            "decode_ms_median": med(self.decode_ms),
            "draw_ms_median": med(self.draw_ms),
            "encode_ms_median": med(self.encode_ms),
            "demo_overhead_ratio": demo / model if model > 0 else 0.0,
            "stopped_by": self.stopped_by,
        }


def open_source(source: str | int) -> tuple[cv2.VideoCapture, bool]:
    """A capture for a camera index ("0", "/dev/video2") or a video file; (capture, is_live). One clear line when it
    cannot open (a file that opens but yields no frame is reported by run_stream). OpenCV's own logging is silenced
    meanwhile: a missing camera or a broken file makes it print several WARN/ERROR lines (one per capture backend it
    tries) before that line says the same."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return _open_source(str(source))
    finally:
        cv2.utils.logging.setLogLevel(level)


def _open_source(text: str) -> tuple[cv2.VideoCapture, bool]:
    if (text.isdigit() and not Path(text).exists()) or text.startswith("/dev/video"):
        cap = cv2.VideoCapture(int(text) if text.isdigit() else text)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"cannot open camera {text} (no such device, or it is in use)")
        return cap, True
    path = Path(text)
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot open video {path} (corrupt, truncated or an unsupported codec)")
    return cap, False


class _Reader(threading.Thread):
    """Decodes frames into a queue: blocking for files (no drops), newest-only for live cameras (drops counted)."""

    def __init__(self, cap: cv2.VideoCapture, live: bool, stats: StreamStats, max_frames: int, name: str) -> None:
        super().__init__(daemon=True, name="demo-reader")
        self.cap, self.live, self.stats, self.max_frames, self.source_name = cap, live, stats, max_frames, name
        self.frames: queue.Queue = queue.Queue(maxsize=1 if live else 4)
        self.stop = threading.Event()
        self.failed: str | None = None
        self.interrupted = False

    def run(self) -> None:
        try:
            while not self.stop.is_set() and (self.max_frames <= 0 or self.stats.frames_read < self.max_frames):
                t0 = time.perf_counter()
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    if self.live:
                        self.failed = f"{self.source_name} stopped delivering frames after {self.stats.frames_read} frames"
                    break
                self.stats.decode_ms.append((time.perf_counter() - t0) * 1e3)
                self.stats.frames_read += 1
                if self.live:
                    try:  # keep only the newest frame
                        self.frames.get_nowait()
                        self.stats.frames_dropped += 1
                    except queue.Empty:
                        pass
                    self.frames.put(frame)
                else:
                    while not self.stop.is_set():
                        try:
                            self.frames.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except KeyboardInterrupt:  # Ctrl-C landing in a blocking read: end the stream as the main thread would
            self.interrupted = True
        except Exception as e:  # a decoder error must end the stream cleanly, not hang the consumer
            self.failed = f"reading frames failed: {e}"
        finally:
            self._put_end()

    def _put_end(self) -> None:
        while True:
            try:
                self.frames.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    try:
                        self.frames.get_nowait()
                    except queue.Empty:
                        pass


class _Writer(threading.Thread):
    """Encodes annotated frames into a temporary file, renamed over the target only when the stream ends cleanly."""

    def __init__(self, path: Path, fps: float, stats: StreamStats) -> None:
        super().__init__(daemon=True, name="demo-writer")
        self.path, self.fps, self.stats = path, fps, stats
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        self.frames: queue.Queue = queue.Queue(maxsize=8)
        self.writer: cv2.VideoWriter | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            while (frame := self.frames.get()) is not _END:
                t0 = time.perf_counter()
                if self.writer is None:
                    h, w = frame.shape[:2]
                    self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                    if not self.writer.isOpened():
                        raise OSError(f"cannot write {self.tmp}")
                self.writer.write(frame)
                self.stats.encode_ms.append((time.perf_counter() - t0) * 1e3)
                self.stats.frames_written += 1
        except Exception as e:
            self.error = str(e)
            while self.frames.get() is not _END:  # drain so the producer never blocks on a dead writer
                pass
        finally:
            if self.writer is not None:
                self.writer.release()

    def finish(self, keep: bool) -> Path | None:
        self.frames.put(_END)
        self.join()
        if keep and self.error is None and self.tmp.is_file() and self.stats.frames_written:
            os.replace(self.tmp, self.path)
            return self.path
        self.tmp.unlink(missing_ok=True)
        if self.error:
            raise UserError(f"writing {self.path} failed: {self.error}")
        return None


def has_display() -> bool:
    """A window can be opened: a display server on Linux (DISPLAY or WAYLAND_DISPLAY), always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run_stream(
    detector: Callable[[np.ndarray], Any],
    source: str | int,
    class_names: list[str] | tuple[str, ...],
    out: Path | None = None,
    show: bool = False,
    score_thr: float = 0.3,
    max_frames: int = 0,
    title: str = "rtmdet-edge",
    fps_smoothing: float = 0.9,
    capture: tuple[cv2.VideoCapture, bool] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    progress: str | None = None,
    log: Callable[[str], None] = lambda s: print(f"rtmdet-edge: warning: {s}", file=sys.stderr),
) -> StreamStats:
    """Run `detector` over a video file or camera; write the annotated video to `out` and/or show a window.

    `capture` (capture, is_live) replaces open_source(source), e.g. for a device opened by other means.
    `progress`: a label for a progress bar (frames of a file, or a running count for a camera); None for none.
    `on_result(frame_index, detections)` sees every processed frame's detections (e.g. to collect JSON results).
    Returns the statistics; a failing camera or decoder ends the stream with one line through `log`.
    """
    cap, live = capture if capture is not None else open_source(source)
    stats = StreamStats()
    fps_in = cap.get(cv2.CAP_PROP_FPS)
    fps_in = fps_in if fps_in and 1 <= fps_in <= 240 else 30.0
    name = f"camera {source}" if live else Path(str(source)).name
    reader = _Reader(cap, live, stats, max_frames, name)
    writer = _Writer(out, fps_in, stats) if out is not None else None
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
    total = min(total, max_frames) if total > 0 and max_frames > 0 else total
    bar = tqdm(total=total or None, desc=progress, unit="frame", disable=progress is None)
    window = False
    completed = False
    smoothed_ms = 0.0
    t_start = time.perf_counter()
    try:
        reader.start()
        if writer is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            writer.start()
        while (frame := reader.frames.get()) is not _END:
            t0 = time.perf_counter()
            det = detector(frame)
            dt_ms = (time.perf_counter() - t0) * 1e3
            stats.model_ms.append(dt_ms)
            if on_result is not None:
                on_result(stats.frames_processed, det)
            smoothed_ms = dt_ms if smoothed_ms == 0 else fps_smoothing * smoothed_ms + (1 - fps_smoothing) * dt_ms
            stats.frames_processed += 1
            bar.update()
            if writer is None and not show:
                continue
            t1 = time.perf_counter()
            # the frame belongs to this loop: draw on it in place instead of copying every frame
            drawn = draw_detections(frame, det, class_names, score_thr, copy=False)
            draw_overlay(drawn, 1e3 / smoothed_ms, smoothed_ms)
            stats.draw_ms.append((time.perf_counter() - t1) * 1e3)
            if writer is not None:
                writer.frames.put(drawn)
            if show:
                cv2.imshow(title, drawn)
                window = True
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stats.stopped_by = "user (q)"
                    break
        if reader.interrupted:
            stats.stopped_by = "interrupted (Ctrl-C)"
        elif reader.failed:
            stats.stopped_by = reader.failed
            log(f"{reader.failed}; stopping cleanly, results so far are kept")
        elif stats.frames_read == 0 and not live:
            raise UserError(f"{source}: no frame could be read (corrupt file, unsupported codec)")
        elif stats.stopped_by == "end of stream" and 0 < max_frames <= stats.frames_read:
            stats.stopped_by = f"frame limit (--max-frames {max_frames})"  # the reader stopped before the end
        completed = True
    except KeyboardInterrupt:
        stats.stopped_by = "interrupted (Ctrl-C)"
        completed = True  # what was written so far is a valid video: keep it
    finally:
        stats.seconds = time.perf_counter() - t_start
        bar.close()
        reader.stop.set()
        reader.join(timeout=5)
        cap.release()
        if writer is not None:
            writer.finish(keep=completed)
        if window:
            cv2.destroyAllWindows()
    return stats
