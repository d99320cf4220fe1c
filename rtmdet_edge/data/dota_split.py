"""Large aerial images <-> fixed-size patches (DOTA devkit / mmrotate img_split, single scale 1024 with gap 200).

Training: `split_sample` cuts an image into overlapping windows; an object goes to every window that holds at least
iof_thr (0.7) of its area, with its whole box (shifted into the window; never clipped, as mmrotate), so an object cut
by a window border is still learned whole from the windows that hold most of it. Windows are padded to the full size.
Inference: rtmdet_edge.inference.large_image runs the detector on the same windows and merges them back.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rtmdet_edge.data.sample import Sample, select
from rtmdet_edge.geometry.rotated import intersection_area

SPLIT_SIZE = 1024  # mmrotate split_configs/ss_*.json
SPLIT_GAP = 200
PATCH_PAD = (104, 116, 124)  # mmrotate padding value (BGR means)


def sliding_windows(height: int, width: int, size: int = SPLIT_SIZE, gap: int = SPLIT_GAP) -> np.ndarray:
    """Windows [K, 4] (x1, y1, x2, y2) of size x size every size - gap pixels; the last one in each direction is moved
    back to end at the image border (mmrotate get_sliding_window); an image smaller than size gets one window."""
    if size <= gap:
        raise ValueError(f"patch size {size} must exceed the gap {gap}")
    step = size - gap

    def starts(length: int) -> list[int]:
        n = 1 if length <= size else math.ceil((length - size) / step + 1)
        s = [step * i for i in range(n)]
        if len(s) > 1 and s[-1] + size > length:
            s[-1] = length - size
        return s

    return np.array([[x, y, x + size, y + size] for x in starts(width) for y in starts(height)], np.int64)


def window_iof(rboxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """[N, 5] objects x [K, 4] windows -> [N, K] fraction of each object's area inside each window."""
    if len(rboxes) == 0 or len(windows) == 0:
        return np.zeros((len(rboxes), len(windows)))
    w = torch.as_tensor(windows, dtype=torch.float64)
    win_rboxes = torch.stack(
        [(w[:, 0] + w[:, 2]) / 2, (w[:, 1] + w[:, 3]) / 2, w[:, 2] - w[:, 0], w[:, 3] - w[:, 1], torch.zeros(len(w), dtype=torch.float64)], 1
    )
    objects = torch.as_tensor(rboxes, dtype=torch.float64)
    inter = intersection_area(objects[:, None, :], win_rboxes[None, :, :])
    area = (objects[:, 2] * objects[:, 3]).abs().clamp(min=1e-6)
    return (inter / area[:, None]).numpy()


def split_sample(
    sample: Sample, size: int = SPLIT_SIZE, gap: int = SPLIT_GAP, iof_thr: float = 0.7
) -> list[tuple[np.ndarray, Sample]]:
    """One sample with "rboxes" -> [(window (x1, y1, x2, y2), patch sample)], patch images padded to size x size."""
    image = sample["image"]
    height, width = image.shape[:2]
    windows = sliding_windows(height, width, size, gap)
    rboxes = np.asarray(sample["rboxes"], np.float32).reshape(-1, 5)
    iof = window_iof(rboxes, windows)
    patches = []
    for k, (x1, y1, x2, y2) in enumerate(windows):
        patch = np.empty((size, size, 3), image.dtype)
        patch[:] = PATCH_PAD
        crop = image[y1:min(y2, height), x1:min(x2, width)]
        patch[: crop.shape[0], : crop.shape[1]] = crop
        keep = iof[:, k] >= iof_thr
        part = select(sample, keep)
        part["image"] = patch
        part["rboxes"] = part["rboxes"] - np.array([x1, y1, 0, 0, 0], np.float32)
        part["boxes"] = part["boxes"] - np.array([x1, y1, x1, y1], np.float32)
        part["polygons"] = [[p - np.array([x1, y1], np.float32) for p in parts] for parts in part["polygons"]]
        part["ori_shape"] = (size, size)
        patches.append((np.array([x1, y1, x2, y2]), part))
    return patches
