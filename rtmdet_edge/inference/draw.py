"""Draw detections (boxes with class and score) and an FPS overlay on BGR images."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    score_thr: float = 0.3,
) -> np.ndarray:
    """A copy of the image with every detection at or above score_thr drawn.

    boxes_xyxy may also be rotated boxes [N, 5] (cx, cy, w, h, angle radians): they are drawn as polygons.
    """
    out = image_bgr.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 600))
    for box, score, label in zip(boxes_xyxy, scores, labels):
        if score < score_thr:
            continue
        color = class_color(int(label))
        if len(box) == 5:  # rotated: outline the 4 corners, label at the top-most corner
            corners = _rbox_corners(np.asarray(box, np.float64))
            cv2.polylines(out, [np.round(corners).astype(np.int32)], True, color, thickness, cv2.LINE_AA)
            x1, y1 = (int(round(v)) for v in corners[np.argmin(corners[:, 1])])
        else:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y_text = max(y1, th + base)
        cv2.rectangle(out, (x1, y_text - th - base), (x1 + tw, y_text), color, -1)
        cv2.putText(out, text, (x1, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _rbox_corners(rbox: np.ndarray) -> np.ndarray:
    cx, cy, w, h, a = rbox
    c, s = np.cos(a), np.sin(a)
    half_w, half_h = np.array([w / 2 * c, w / 2 * s]), np.array([-h / 2 * s, h / 2 * c])
    center = np.array([cx, cy])
    return np.stack([center - half_w - half_h, center + half_w - half_h, center + half_w + half_h, center - half_w + half_h])


def draw_fps(image_bgr: np.ndarray, fps: float) -> np.ndarray:
    cv2.putText(image_bgr, f"{fps:5.1f} FPS", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image_bgr, f"{fps:5.1f} FPS", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
    return image_bgr
