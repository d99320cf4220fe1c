"""`rtmdet-edge predict`: images, folders, videos or a camera -> annotated images/videos + COCO-results JSON."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from rtmdet_edge.inference.draw import draw_detections, draw_fps
from rtmdet_edge.classes import COCO_CATEGORY_IDS
from rtmdet_edge.inference.detector import BACKENDS, Detector
from rtmdet_edge.data.coco import read_image
from rtmdet_edge.errors import UserError
from rtmdet_edge.io import atomic_path, atomic_write_text, commit_temp, temp_path_beside
from rtmdet_edge.inference.postprocess import Detections

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth) or exported model (.onnx/.xml/.engine)")
    p.add_argument("--model", default=None, help="preset name, needed only when the checkpoint does not record it")
    p.add_argument("--source", required=True, help="an image, a folder of images, a video file or a camera index")
    p.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    p.add_argument("--imgsz", type=int, default=640, help="network input size (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="runtime (default: %(default)s)")
    p.add_argument(
        "--preset",
        default="official",
        choices=("official", "deploy"),
        help="post-processing: official test settings or the faster deploy settings (default: %(default)s)",
    )
    p.add_argument("--show-thr", type=float, default=0.3, help="draw boxes at or above this score (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, help="stop a video/camera after N frames; 0 = all (default: 0)")
    p.add_argument("--no-save-media", action="store_true", help="write only the JSON files, no annotated images/video")


def to_coco_results(det: Detections, image_id: int, category_ids: Sequence[int] | None) -> list[dict]:
    """COCO results format: one dict per box with bbox = [x, y, w, h] in original-image pixels."""
    results = []
    for box, score, label in zip(det.boxes, det.scores, det.labels):
        x1, y1, x2, y2 = (float(v) for v in box)
        cat = int(category_ids[int(label)]) if category_ids is not None else int(label)
        results.append(
            {
                "image_id": image_id,
                "category_id": cat,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 5),
            }
        )
    return results


def _image_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def _category_ids(detector: Detector) -> Sequence[int] | None:
    ids = getattr(detector.model, "category_ids", None)
    if ids is not None:
        return list(ids)
    return COCO_CATEGORY_IDS if len(detector.class_names) == len(COCO_CATEGORY_IDS) else None


def _iter_frames(cap: cv2.VideoCapture, max_frames: int) -> Iterator[np.ndarray]:
    n = 0
    while max_frames <= 0 or n < max_frames:
        ok, frame = cap.read()
        if not ok:
            return
        n += 1
        yield frame


def predict_images(detector: Detector, paths: Sequence[Path], out: Path, show_thr: float, save_media: bool) -> int:
    cat_ids = _category_ids(detector)
    done = 0
    for index, path in enumerate(tqdm(paths, desc="predict", unit="img", disable=len(paths) < 2)):
        image, why = read_image(path)
        if image is None:
            log.warning("skipping %s: %s", path, why)
            continue
        det = detector(image)
        results = to_coco_results(det, _image_id(path, index), cat_ids)
        atomic_write_text(out / f"{path.stem}.json", json.dumps(results))
        if save_media:
            drawn = draw_detections(image, det.boxes, det.scores, det.labels, detector.class_names, show_thr)
            with atomic_path(out / f"{path.stem}.jpg") as tmp:
                cv2.imwrite(str(tmp), drawn)
        done += 1
    return done


def predict_stream(
    detector: Detector, cap: cv2.VideoCapture, name: str, out: Path, show_thr: float, save_media: bool, max_frames: int
) -> int:
    """Detect on every frame; writes OUT/NAME.mp4 (annotated) and OUT/NAME.json (COCO results, image_id = frame).

    Both files appear whole (written beside, then renamed). Ctrl-C keeps what was processed: the video is finalised
    and both files are written before the KeyboardInterrupt goes on. Any other error leaves no partial video.
    """
    cat_ids = _category_ids(detector)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if total and max_frames > 0:
        total = min(total, max_frames)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 30.0
    if not 0 < fps_in < 1000:  # some streams report 0, NaN or 90000 (a timebase)
        fps_in = 30.0
    writer = tmp_video = None
    results: list[dict] = []
    smoothed_fps = 0.0
    n = 0
    interrupted = False
    try:
        for n, frame in enumerate(tqdm(_iter_frames(cap, max_frames), total=total, desc=name, unit="frame"), start=1):
            t0 = time.perf_counter()
            det = detector(frame)
            dt = max(time.perf_counter() - t0, 1e-9)
            smoothed_fps = 1.0 / dt if smoothed_fps == 0 else 0.9 * smoothed_fps + 0.1 / dt
            results.extend(to_coco_results(det, n - 1, cat_ids))
            if save_media:
                drawn = draw_detections(frame, det.boxes, det.scores, det.labels, detector.class_names, show_thr)
                draw_fps(drawn, smoothed_fps)
                if writer is None:
                    h, w = drawn.shape[:2]
                    tmp_video = temp_path_beside(out / f"{name}.mp4")
                    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
                writer.write(drawn)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted after %d frames: keeping what was processed", n)
    except BaseException:
        if writer is not None:
            writer.release()
        if tmp_video is not None:
            tmp_video.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.release()
        commit_temp(tmp_video, out / f"{name}.mp4")
    atomic_write_text(out / f"{name}.json", json.dumps(results))
    if interrupted:
        raise KeyboardInterrupt
    return n


def _open_capture(source: int | str, what: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot open {what}")
    return cap


def _run_stream(
    detector: Detector, source: int | str, what: str, name: str, args: argparse.Namespace, out: Path
) -> int:
    cap = _open_capture(source, what)
    try:
        n = predict_stream(detector, cap, name, out, args.show_thr, not args.no_save_media, args.max_frames)
    finally:
        cap.release()
    if n == 0:
        raise UserError(f"{what}: no frame could be read (corrupt file, unsupported codec or no camera signal)")
    if isinstance(source, int) and (args.max_frames <= 0 or n < args.max_frames):
        log.warning("%s stopped delivering frames after %d frames (disconnected?); results so far are saved", what, n)
    print(f"{n} frames -> {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = Detector(
        args.weights, imgsz=args.imgsz, backend=args.backend, device=args.device, postprocess=args.preset,
        model=args.model,
    )  # fmt: skip
    source = str(args.source)
    save_media = not args.no_save_media
    path = Path(source)
    if source.isdigit() and not path.exists():
        return _run_stream(detector, int(source), f"camera {source}", f"camera{source}", args, out)
    if not path.exists():
        raise UserError(f"--source {source}: no such file, folder or camera")
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise UserError(f"--source {source}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        n = predict_images(detector, paths, out, args.show_thr, save_media)
        skipped = f" ({len(paths) - n} unreadable, skipped)" if n < len(paths) else ""
        print(f"{n}/{len(paths)} images -> {out}{skipped}")
        return 0
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _run_stream(detector, str(path), f"video {path}", path.stem, args, out)
    if predict_images(detector, [path], out, args.show_thr, save_media) == 0:
        raise UserError(f"--source {source}: not a readable image or video")
    print(f"1 image -> {out}")
    return 0
