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
from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.postprocess import Detections
from rtmdet_edge.data.sample import rbox_corners

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
    """COCO results format: one dict per box with bbox = [x, y, w, h] in original-image pixels.

    Rotated detections ([N, 5] boxes) give bbox = the axis-aligned hull and "rbox" = [cx, cy, w, h, angle radians].
    """
    results = []
    for box, score, label in zip(det.boxes, det.scores, det.labels):
        rbox = None
        if len(box) == 5:
            rbox = [round(float(v), 5) for v in box]
            corners = rbox_corners(np.asarray(box, np.float32)[None])[0]
            box = [*corners.min(0), *corners.max(0)]
        x1, y1, x2, y2 = (float(v) for v in box)
        cat = int(category_ids[int(label)]) if category_ids is not None else int(label)
        results.append(
            {
                "image_id": image_id,
                "category_id": cat,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 5),
            }
            | ({"rbox": rbox} if rbox is not None else {})
        )
    return results


def to_dota_lines(det: Detections, image_name: str, class_names: Sequence[str]) -> dict[str, list[str]]:
    """DOTA task-1 result lines per class name: `image score x1 y1 x2 y2 x3 y3 x4 y4` (corner pixels)."""
    lines: dict[str, list[str]] = {}
    if len(det) == 0 or np.asarray(det.boxes).shape[1] != 5:
        return lines
    for corners, score, label in zip(rbox_corners(np.asarray(det.boxes, np.float32)), det.scores, det.labels):
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        coords = " ".join(f"{v:.2f}" for v in corners.reshape(-1))
        lines.setdefault(name, []).append(f"{image_name} {float(score):.5f} {coords}")
    return lines


def write_dota_results(lines: dict[str, list[str]], class_names: Sequence[str], out: Path) -> Path:
    """One Task1_<class>.txt per class (empty files for classes without detections), as the DOTA server expects."""
    folder = out / "dota_task1"
    folder.mkdir(parents=True, exist_ok=True)
    for name in class_names:
        body = "\n".join(lines.get(name, []))
        (folder / f"Task1_{name}.txt").write_text(body + ("\n" if body else ""))
    return folder


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
    dota_lines: dict[str, list[str]] = {}
    for index, path in enumerate(tqdm(paths, desc="predict", unit="img", disable=len(paths) < 2)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            log.warning("skipping %s: not a readable image", path)
            continue
        det = detector(image)
        results = to_coco_results(det, _image_id(path, index), cat_ids)
        (out / f"{path.stem}.json").write_text(json.dumps(results))
        for name, lines in to_dota_lines(det, path.stem, detector.class_names).items():
            dota_lines.setdefault(name, []).extend(lines)
        if save_media:
            drawn = draw_detections(image, det.boxes, det.scores, det.labels, detector.class_names, show_thr)
            cv2.imwrite(str(out / f"{path.stem}.jpg"), drawn)
        done += 1
    if getattr(detector, "rotated", False):
        write_dota_results(dota_lines, detector.class_names, out)
    return done


def predict_stream(
    detector: Detector, cap: cv2.VideoCapture, name: str, out: Path, show_thr: float, save_media: bool, max_frames: int
) -> int:
    cat_ids = _category_ids(detector)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if total and max_frames > 0:
        total = min(total, max_frames)
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    results: list[dict] = []
    smoothed_fps = 0.0
    n = 0
    for n, frame in enumerate(tqdm(_iter_frames(cap, max_frames), total=total, desc=name, unit="frame"), start=1):
        t0 = time.perf_counter()
        det = detector(frame)
        dt = time.perf_counter() - t0
        smoothed_fps = 1.0 / dt if smoothed_fps == 0 else 0.9 * smoothed_fps + 0.1 / dt
        results.extend(to_coco_results(det, n - 1, cat_ids))
        if save_media:
            drawn = draw_detections(frame, det.boxes, det.scores, det.labels, detector.class_names, show_thr)
            draw_fps(drawn, smoothed_fps)
            if writer is None:
                h, w = drawn.shape[:2]
                writer = cv2.VideoWriter(str(out / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
            writer.write(drawn)
    if writer is not None:
        writer.release()
    (out / f"{name}.json").write_text(json.dumps(results))
    return n


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
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise UserError(f"cannot open camera {source}")
        n = predict_stream(detector, cap, f"camera{source}", out, args.show_thr, save_media, args.max_frames)
        print(f"{n} frames -> {out}")
        return 0
    if not path.exists():
        raise UserError(f"--source {source}: no such file, folder or camera")
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise UserError(f"--source {source}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        n = predict_images(detector, paths, out, args.show_thr, save_media)
        print(f"{n}/{len(paths)} images -> {out}")
        return 0
    if path.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise UserError(f"cannot open video {path}")
        n = predict_stream(detector, cap, path.stem, out, args.show_thr, save_media, args.max_frames)
        print(f"{n} frames -> {out}")
        return 0
    if predict_images(detector, [path], out, args.show_thr, save_media) == 0:
        raise UserError(f"--source {source}: not a readable image or video")
    print(f"1 image -> {out}")
    return 0
