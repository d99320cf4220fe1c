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

from rtmdet_edge.data.sample import DetectionDataset, Sample, points_to_rbox_le90, warn_once
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


def parse_label_file(path: Path, class_to_label: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> corners [N,4,2] float32, labels [N] int64, difficult [N] bool. Unknown classes raise UserError."""
    corners, labels, difficult = [], [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.startswith(("imagesource", "gsd")):
            continue
        if len(parts) < 9:
            raise UserError(f"{path}:{lineno}: expected 'x1 y1 ... x4 y4 class [difficult]', got {line!r}")
        try:
            pts = np.asarray([float(v) for v in parts[:8]], np.float32).reshape(4, 2)
        except ValueError:
            raise UserError(f"{path}:{lineno}: corner coordinates are not numbers: {line!r}") from None
        name = parts[8]
        if name not in class_to_label:
            raise UserError(f"{path}:{lineno}: unknown class {name!r}; known: {', '.join(class_to_label)}")
        corners.append(pts)
        labels.append(class_to_label[name])
        difficult.append(len(parts) > 9 and parts[9] not in ("0", "0.0"))
    n = len(corners)
    return (
        np.asarray(corners, np.float32).reshape(n, 4, 2),
        np.asarray(labels, np.int64),
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
        self.items: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []
        missing = 0
        for img_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS):
            txt = label_dir / (img_path.stem + ".txt")
            if not txt.is_file():
                missing += 1
                corners, labels, diff = np.zeros((0, 4, 2), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
            else:
                corners, labels, diff = parse_label_file(txt, cls_map)
            self.items.append((img_path, corners, labels, diff))
        if not self.items:
            raise UserError(f"no images found in {image_dir}")
        if missing:
            warnings.warn(f"{missing} images in {image_dir} have no label file in {label_dir}; kept as background")

    def __len__(self) -> int:
        return len(self.items)

    def load_raw(self, index: int) -> Sample:
        path, corners, labels, difficult = self.items[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            warn_once(self._warned, str(path), f"cannot decode image {path}; using another image instead")
            return self.load_raw((index + 1) % len(self))
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
