"""Draw detections (boxes, rotated boxes, masks, with class and score) and an FPS/latency overlay on BGR images.

Shared by `rtmdet-edge predict` and the demo scripts; it reads any detections object with `boxes` ([N,4] xyxy or
[N,5] cx,cy,w,h,angle in radians), `scores`, `labels` and, when present, `masks` ([N,H,W] bool).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from rtmdet_edge.data.sample import rbox_corners


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    y = max(y, th + base)
    cv2.rectangle(image, (x, y - th - base), (x + tw, y), color, -1)
    cv2.putText(image, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def draw_detections(
    image_bgr: np.ndarray,
    det: Any,
    class_names: Sequence[str],
    score_thr: float = 0.3,
    copy: bool = True,
    mask_alpha: float = 0.45,
) -> np.ndarray:
    """Every detection at or above score_thr drawn on the image (on a copy unless copy=False)."""
    out = image_bgr.copy() if copy else image_bgr
    boxes, scores, labels = (np.asarray(x) for x in (det.boxes, det.scores, det.labels))
    masks = getattr(det, "masks", None)
    thickness = max(1, round(sum(out.shape[:2]) / 600))
    keep = np.flatnonzero(scores >= score_thr)
    if masks is not None and len(keep):
        masks = np.asarray(masks)
        for i in keep:  # blend each mask's pixels only: cost grows with the mask area, not the image
            m = masks[i].astype(bool)
            if m.shape != out.shape[:2] or not m.any():
                continue
            color = np.array(class_color(int(labels[i])), np.float32)
            out[m] = (out[m] * (1 - mask_alpha) + color * mask_alpha).astype(np.uint8)
    for i in keep:
        label, score, box = int(labels[i]), float(scores[i]), boxes[i]
        color = class_color(label)
        if len(box) == 5:  # rotated: cx, cy, w, h, angle (radians, le90); label at the top-most corner
            corners = rbox_corners(np.asarray(box, np.float64)[None])[0]
            cv2.polylines(out, [np.round(corners).astype(np.int32)], True, color, thickness, cv2.LINE_AA)
            x1, y1 = (int(round(v)) for v in corners[np.argmin(corners[:, 1])])
        else:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        _label(out, f"{name} {score:.2f}", x1, y1, color)
    return out


def draw_overlay(image_bgr: np.ndarray, fps: float, latency_ms: float | None = None) -> np.ndarray:
    """FPS (and latency) in the top-left corner, white on a black outline so it reads on any background; in place."""
    text = f"{fps:5.1f} FPS" + (f"  {latency_ms:5.1f} ms" if latency_ms is not None else "")
    cv2.putText(image_bgr, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image_bgr, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return image_bgr
