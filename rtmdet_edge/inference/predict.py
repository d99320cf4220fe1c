"""`rtmdet-edge predict`: images, folders, videos or a camera -> annotated images/videos + COCO-results JSON."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from rtmdet_edge.inference.draw import draw_detections
from rtmdet_edge.inference.stream import run_stream
from rtmdet_edge.classes import COCO_CATEGORY_IDS
from rtmdet_edge.inference.detector import BACKENDS, Detector
from rtmdet_edge.data.coco import read_image
from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.io import atomic_path, atomic_write_text
from rtmdet_edge.inference.postprocess import Detections
from rtmdet_edge.data.sample import rbox_corners

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth) or exported model (.onnx/.xml/.engine/.plan)")
    p.add_argument("--model", default=None, help="preset name, needed only when the checkpoint does not record it")
    p.add_argument("--source", required=True, help="an image, a folder of images, a video file or a camera index")
    p.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    p.add_argument("--imgsz", type=int, default=640, help="network input size, a multiple of 32 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument(
        "--backend",
        default=None,
        choices=BACKENDS,
        help="runtime (default: by the --weights suffix: .onnx onnxruntime, .xml openvino, .engine/.plan tensorrt, "
        "anything else torch)",
    )
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
    """COCO results format: one dict per box with bbox = [x, y, w, h] in original-image pixels; for instance masks,
    "segmentation" as COCO RLE of the original image; rotated detections ([N, 5] boxes) give bbox = the axis-aligned
    hull and "rbox" = [cx, cy, w, h, angle radians]."""
    results = []
    rles = None
    if getattr(det, "masks", None) is not None:
        from rtmdet_edge.geometry.masks import masks_to_rle

        rles = masks_to_rle(np.asarray(det.masks))
    for j, (box, score, label) in enumerate(zip(det.boxes, det.scores, det.labels)):
        rbox = None
        if len(box) == 5:
            rbox = [round(float(v), 5) for v in box]
            corners = rbox_corners(np.asarray(box, np.float32)[None])[0]
            box = [*corners.min(0), *corners.max(0)]
        x1, y1, x2, y2 = (float(v) for v in box)
        cat = int(category_ids[int(label)]) if category_ids is not None else int(label)
        result = {
            "image_id": image_id,
            "category_id": cat,
            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
            "score": round(float(score), 5),
        }
        if rles is not None:
            result["segmentation"] = rles[j]
        if rbox is not None:
            result["rbox"] = rbox
        results.append(result)
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


def predict_images(detector: Detector, paths: Sequence[Path], out: Path, show_thr: float, save_media: bool) -> int:
    cat_ids = _category_ids(detector)
    done = 0
    dota_lines: dict[str, list[str]] = {}
    for index, path in enumerate(tqdm(paths, desc="predict", unit="img", disable=len(paths) < 2)):
        image, why = read_image(path)
        if image is None:
            log.warning("skipping %s: %s", path, why)
            continue
        det = detector(image)
        results = to_coco_results(det, _image_id(path, index), cat_ids)
        atomic_write_text(out / f"{path.stem}.json", json.dumps(results))
        for name, lines in to_dota_lines(det, path.stem, detector.class_names).items():
            dota_lines.setdefault(name, []).extend(lines)
        if save_media:
            drawn = draw_detections(image, det, detector.class_names, show_thr)
            with atomic_path(out / f"{path.stem}.jpg") as tmp:
                cv2.imwrite(str(tmp), drawn)
        done += 1
    if getattr(detector, "rotated", False):
        write_dota_results(dota_lines, detector.class_names, out)
    return done


def predict_stream(
    detector: Detector, source: str, name: str, out: Path, show_thr: float, save_media: bool, max_frames: int
) -> int:
    """Detections of every frame -> OUT/NAME.json (COCO results, image_id = frame index) and the annotated video
    OUT/NAME.mp4 unless save_media is False, through the demo scripts' loop (rtmdet_edge.inference.stream).

    Both files appear whole (written beside, then renamed). Ctrl-C keeps what was processed: the video is finalised
    and both files are written before the KeyboardInterrupt goes on. Any other error leaves no partial video.
    """
    cat_ids = _category_ids(detector)
    results: list[dict] = []
    stats = run_stream(
        detector, source, detector.class_names, out=out / f"{name}.mp4" if save_media else None,
        score_thr=show_thr, max_frames=max_frames, progress=name, log=log.warning,
        on_result=lambda i, det: results.extend(to_coco_results(det, i, cat_ids)),
    )  # fmt: skip
    atomic_write_text(out / f"{name}.json", json.dumps(results))
    if stats.stopped_by.startswith("interrupted"):
        raise KeyboardInterrupt
    return stats.frames_processed


def backend_for_weights(weights: str | Path) -> str | None:
    """The runtime a model file is for, by its suffix (targets.BACKEND_BY_SUFFIX: .pth/.pt torch, .onnx onnxruntime,
    .xml openvino, .engine/.plan tensorrt), or None for any other suffix. The demos pick their default backend by the
    same rule (demos/common.py)."""
    # imported here: rtmdet_edge imports targets only when a backend is asked for (see detector._is_backend)
    from targets import BACKEND_BY_SUFFIX

    return BACKEND_BY_SUFFIX.get(Path(weights).suffix.lower())


def run(args: argparse.Namespace) -> int:
    check_imgsz(args.imgsz)
    # no --backend: the file says which runtime it is for; an unknown suffix stays a PyTorch checkpoint, as before
    backend = args.backend or backend_for_weights(args.weights) or "torch"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = Detector(
        args.weights, imgsz=args.imgsz, backend=backend, device=args.device, postprocess=args.preset, model=args.model,
    )  # fmt: skip
    source = str(args.source)
    save_media = not args.no_save_media
    path = Path(source)
    if source.isdigit() and not path.exists():
        n = predict_stream(detector, source, f"camera{source}", out, args.show_thr, save_media, args.max_frames)
        print(f"{n} frames -> {out}")
        return 0
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
        n = predict_stream(detector, str(path), path.stem, out, args.show_thr, save_media, args.max_frames)
        print(f"{n} frames -> {out}")
        return 0
    if predict_images(detector, [path], out, args.show_thr, save_media) == 0:
        raise UserError(f"--source {source}: not a readable image or video")
    print(f"1 image -> {out}")
    return 0
