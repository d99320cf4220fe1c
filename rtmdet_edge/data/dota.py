"""DOTA-v1.0 oriented boxes: labelTxt lines `x1 y1 x2 y2 x3 y3 x4 y4 class difficult` -> le90 rboxes.

Layout: root/images/{split}/*.png|jpg and root/labelTxt*/{split}/*.txt (the first labelTxt* folder that has the split).
rbox = cv2.minAreaRect of the 4 corners in le90 (mmrotate poly2obb_le90); boxes = axis-aligned hull of the corners;
polygons = the 4 corners. Difficult objects are kept as training targets (mmrotate does too) and flagged in
sample["difficult"].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from rtmdet_edge.data.coco import image_problem, read_image
from rtmdet_edge.data.sample import DetectionDataset, Sample, SkipLog, points_to_rbox_le90
from rtmdet_edge.errors import UserError

# mmrotate DOTADataset METAINFO order (the class order of the official RTMDet-R checkpoints).
DOTA_CLASSES = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def find_label_dir(root: Path, split: str) -> Path | None:
    for d in sorted(root.glob("labelTxt*")):
        if (d / split).is_dir():
            return d / split
    if split in ("", ".") and (root / "labelTxt").is_dir():
        return root / "labelTxt"
    return None


def parse_label_file(
    path: Path, class_to_label: dict[str, int], skips: SkipLog | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> corners [N,4,2] float32, labels [N] int64, difficult [N] bool.

    A bad line (too few fields, coordinates that are not finite numbers, an unknown class, a quad of zero area) raises
    UserError when `skips` is None; with a SkipLog it is dropped with one counted warning and the rest of the file kept.
    """
    corners, labels, difficult = [], [], []
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise UserError(f"cannot read label file {path}: {e.strerror or e}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or line.startswith(("imagesource", "gsd")):
            continue
        problem, reason = None, ""
        pts = None
        if len(parts) < 9:
            problem, reason = f"expected 'x1 y1 ... x4 y4 class [difficult]', got {line!r}", "malformed label line"
        else:
            try:
                pts = np.asarray([float(v) for v in parts[:8]], np.float64).reshape(4, 2)
            except ValueError:
                pts = None
            if pts is None or not np.isfinite(pts).all() or np.abs(pts).max() > 1e7:
                problem, reason = f"corner coordinates are not finite numbers: {line!r}", "malformed label line"
            elif parts[8] not in class_to_label:
                problem = f"unknown class {parts[8]!r}; known: {', '.join(sorted(set(class_to_label)))}"
                reason = "unknown class"
            elif cv2.contourArea(pts.astype(np.float32)) <= 0:
                problem, reason = f"the quad has zero area: {line!r}", "empty box"
        if problem is not None:
            if skips is None:
                raise UserError(f"{path}:{lineno}: {problem}")
            skips.skip(reason, f"{path}:{lineno}: {problem}; object dropped")
            continue
        corners.append(pts.astype(np.float32))
        labels.append(class_to_label[parts[8]])
        difficult.append(len(parts) > 9 and parts[9] not in ("0", "0.0"))
    n = len(corners)
    return (
        np.asarray(corners, np.float32).reshape(n, 4, 2),
        np.asarray(labels, np.int64).reshape(n),
        np.asarray(difficult, bool).reshape(n),
    )


class DotaDataset(DetectionDataset):
    """Oriented-box dataset in DOTA labelTxt format.

    Args:
        root: folder holding images/ and labelTxt*/.
        split: sub-folder name (train, val, ...).
        class_names: defaults to the 15 DOTA-v1.0 classes in mmrotate order.
    """

    def __init__(self, root: str | Path, split: str = "train", class_names=None, transforms=None) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = list(class_names or DOTA_CLASSES)
        self.transforms = transforms
        label_dir = find_label_dir(self.root, split)
        image_dir = self.root / "images" / split
        if label_dir is None or not image_dir.is_dir():
            raise UserError(f"{self.root} is not a DOTA root with images/{split} and labelTxt*/{split}")
        cls_map = {n: k for k, n in enumerate(self.class_names)}
        # DOTA files use hyphens; some exports (e.g. dota8.yaml) use spaces. Accept both spellings.
        cls_map.update({v: k for n, k in list(cls_map.items()) for v in (n.replace("-", " "), n.replace(" ", "-"))})
        self._warned: set = set()
        self.skips = SkipLog()
        self.items: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []
        missing = 0
        for img_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS):
            problem = image_problem(img_path)
            if problem:
                self.skips.skip(problem, f"{img_path}: {problem}; skipped")
                continue
            txt = label_dir / (img_path.stem + ".txt")
            if not txt.is_file():
                missing += 1
                corners, labels, diff = np.zeros((0, 4, 2), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
            else:
                corners, labels, diff = parse_label_file(txt, cls_map, self.skips)
            self.items.append((img_path, corners, labels, diff))
        if not self.items:
            why = f" ({self.skips.summary()})" if self.skips.total() else ""
            raise UserError(f"no usable images found in {image_dir}{why}")
        if missing:
            warnings.warn(f"{missing} images in {image_dir} have no label file in {label_dir}; kept as background")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.skips.counts)

    def load_raw(self, index: int) -> Sample:
        index, image = self.first_decodable(index, lambda i: self.items[i][0], f"of {self.root}")
        path, corners, labels, difficult = self.items[index]
        n = len(labels)
        rboxes = np.stack([points_to_rbox_le90(c) for c in corners]) if n else np.zeros((0, 5), np.float32)
        boxes = np.concatenate([corners.min(1), corners.max(1)], 1) if n else np.zeros((0, 4), np.float32)
        return {
            "image": image,
            "boxes": boxes.astype(np.float32),
            "labels": labels.copy(),
            "polygons": [[c.copy()] for c in corners],
            "rboxes": rboxes.astype(np.float32),
            "difficult": difficult.copy(),
            "ignore_boxes": np.zeros((0, 4), np.float32),
            "image_id": index,
            "path": str(path),
            "ori_shape": image.shape[:2],
        }
