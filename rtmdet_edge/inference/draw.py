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
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of the image with every detection at or above score_thr drawn (and its mask, [N,H,W] bool, tinted in
    the class colour when masks are given)."""
    out = image_bgr.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 600))
    if masks is not None:
        for mask, score, label in zip(masks, scores, labels):
            if score >= score_thr and mask.any():
                color = np.array(class_color(int(label)), np.float32)
                out[mask] = (0.5 * out[mask] + 0.5 * color).astype(np.uint8)
    for box, score, label in zip(boxes_xyxy, scores, labels):
        if score < score_thr:
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y_text = max(y1, th + base)
        cv2.rectangle(out, (x1, y_text - th - base), (x1 + tw, y_text), color, -1)
        cv2.putText(out, text, (x1, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def draw_fps(image_bgr: np.ndarray, fps: float) -> np.ndarray:
    cv2.putText(image_bgr, f"{fps:5.1f} FPS", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image_bgr, f"{fps:5.1f} FPS", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
    return image_bgr
