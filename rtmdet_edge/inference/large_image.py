"""Rotated detection on images larger than the network input: the same 1024/200 windows as the DOTA split
(rtmdet_edge.data.dota_split), each window's detections shifted back, and the copies of objects seen by several
windows removed with class-aware rotated NMS (IoU 0.1, mmrotate's DOTA merge)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rtmdet_edge.data.dota_split import SPLIT_GAP, SPLIT_SIZE, sliding_windows
from rtmdet_edge.inference.postprocess import Detections
from rtmdet_edge.inference.rotated_postprocess import batched_rotated_nms


def merge_detections(
    windows: Sequence[np.ndarray], detections: Sequence[Detections], iou_thr: float = 0.1, max_per_img: int = -1
) -> Detections:
    """Window detections (boxes [N, 5] in window pixels) -> one Detections in image pixels, copies removed."""
    boxes, scores, labels = [], [], []
    for (x1, y1, _, _), det in zip(windows, detections):
        b = torch.as_tensor(np.asarray(det.boxes), dtype=torch.float32).reshape(-1, 5)
        boxes.append(b + b.new_tensor([float(x1), float(y1), 0.0, 0.0, 0.0]))
        scores.append(torch.as_tensor(np.asarray(det.scores), dtype=torch.float32).reshape(-1))
        labels.append(torch.as_tensor(np.asarray(det.labels), dtype=torch.long).reshape(-1))
    if not boxes:
        return Detections(np.zeros((0, 5), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    b, s, l = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_rotated_nms(b, s, l, iou_thr, max_per_img)
    return Detections(b[keep].numpy(), s[keep].numpy(), l[keep].numpy())


def detect_large(detector, image_bgr: np.ndarray, size: int = SPLIT_SIZE, gap: int = SPLIT_GAP) -> Detections:
    """Run a rotated Detector window by window over a large image and merge (mmrotate's split-test-merge)."""
    height, width = image_bgr.shape[:2]
    windows = sliding_windows(height, width, size, gap)
    crops = [image_bgr[y1:min(y2, height), x1:min(x2, width)] for x1, y1, x2, y2 in windows]
    dets = detector(crops)
    return merge_detections(windows, dets, iou_thr=detector.post_cfg.iou_thr, max_per_img=detector.post_cfg.max_per_img)
