"""COCO instances dataset (pycocotools) -> the sample dict of rtmdet_edge.data.

Category ids are mapped to contiguous 0-based labels in ascending id order (mmdet's CocoDataset does the same);
`cat_ids[label]` maps back for evaluation. Crowd annotations become ignore_boxes. Segmentations are kept as polygons;
RLE segmentations are decoded and turned into the polygon of their largest contour, and `load_masks(i)` gives full
binary masks when a consumer asks for them (kept lazy: masks at 640x640 cost 400 KB each).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from rtmdet_edge.data.sample import DetectionDataset, Sample, mask_to_polygon, warn_once
from rtmdet_edge.errors import UserError

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"GIF8")


def _looks_like_image(path: Path) -> bool:
    """Cheap corruption check at construction: the file exists and starts with a known image signature."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return any(head.startswith(m) for m in _IMAGE_MAGIC)


def _load_coco(ann_file: Path) -> COCO:
    if not ann_file.is_file():
        raise UserError(f"COCO annotation file not found: {ann_file}")
    try:
        data = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{ann_file} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{ann_file} is not a COCO instances file: it needs an 'images' list")
    data.setdefault("annotations", [])
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise UserError(f"{ann_file} is not a COCO instances file: it needs a non-empty 'categories' list")
    for key, fields in (("images", ("id", "file_name")), ("categories", ("id",)), ("annotations", ("image_id", "category_id", "bbox"))):
        for k, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or any(f not in entry for f in fields):
                raise UserError(f"{ann_file}: {key}[{k}] lacks one of the fields {list(fields)}")
    for k, ann in enumerate(data["annotations"]):
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise UserError(f"{ann_file}: annotations[{k}].bbox must be [x, y, w, h], got {box!r}")
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(box[2] * box[3]))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


class CocoDataset(DetectionDataset):
    """COCO-format detection / instance segmentation dataset.

    Args:
        ann_file: instances JSON.
        images_dir: folder the `file_name` entries are relative to.
        transforms: callable applied by __getitem__ (see rtmdet_edge.data.pipeline).
        filter_empty: drop images with no usable annotation (training does; evaluation must not).
        min_size: boxes with w or h <= min_size pixels are dropped.
    """

    def __init__(
        self,
        ann_file: str | Path,
        images_dir: str | Path,
        transforms=None,
        filter_empty: bool = False,
        min_size: float = 1.0,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise UserError(f"images folder not found: {self.images_dir}")
        self.coco = _load_coco(self.ann_file)
        self.transforms = transforms
        self.min_size = float(min_size)
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [int(c["id"]) for c in cats]
        self.class_names: list[str] = [str(c.get("name", c["id"])) for c in cats]
        self.cat_to_label = {cid: k for k, cid in enumerate(self.cat_ids)}
        unknown = {a["category_id"] for a in self.coco.dataset["annotations"]} - set(self.cat_to_label)
        if unknown:
            n = sum(a["category_id"] in unknown for a in self.coco.dataset["annotations"])
            warnings.warn(f"{self.ann_file}: {n} annotations use category ids {sorted(unknown)} not in 'categories'; dropped")
        self._warned: set = set()
        ids, bad = [], []
        for img in sorted(self.coco.dataset["images"], key=lambda im: im["id"]):
            if not _looks_like_image(self.images_dir / img["file_name"]):
                bad.append(img["file_name"])
                continue
            if filter_empty and not any(a["category_id"] in self.cat_to_label for a in self.coco.imgToAnns[img["id"]]):
                continue
            ids.append(int(img["id"]))
        if bad:
            warnings.warn(
                f"{len(bad)} of {len(self.coco.dataset['images'])} images in {self.images_dir} are missing or not "
                f"images and are skipped (first: {bad[0]})"
            )
        self.image_ids = ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def label_to_cat_id(self, label: int) -> int:
        return self.cat_ids[int(label)]

    def _annotations(self, image_id: int, height: int, width: int) -> dict:
        boxes, labels, polygons, ignore = [], [], [], []
        for ann in self.coco.imgToAnns[image_id]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(width)), min(y + h, float(height))
            if x2 - x1 <= self.min_size or y2 - y1 <= self.min_size:
                continue
            if ann.get("iscrowd", 0):
                ignore.append([x1, y1, x2, y2])
                continue
            label = self.cat_to_label.get(ann["category_id"])
            if label is None:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(label)
            polygons.append(self._polygons(ann, height, width))
        n = len(boxes)
        return {
            "boxes": np.asarray(boxes, np.float32).reshape(n, 4),
            "labels": np.asarray(labels, np.int64).reshape(n),
            "polygons": polygons,
            "ignore_boxes": np.asarray(ignore, np.float32).reshape(-1, 4),
        }

    @staticmethod
    def _polygons(ann: dict, height: int, width: int) -> list[np.ndarray]:
        seg = ann.get("segmentation")
        if not seg:
            return []
        if isinstance(seg, list):  # polygon parts [x1,y1,x2,y2,...]
            return [np.asarray(p, np.float32).reshape(-1, 2) for p in seg if len(p) >= 6]
        # RLE (compressed or uncompressed): decode once and keep the largest contour as the polygon.
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg.get("counts"), list) else seg
        poly = mask_to_polygon(mask_utils.decode(rle))
        return [poly] if len(poly) >= 3 else []

    def load_masks(self, index: int) -> np.ndarray:
        """Binary masks [N,H,W] uint8 of the non-crowd objects of load_raw(index), from the original segmentations."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        h, w = int(info["height"]), int(info["width"])
        masks = []
        for ann in self.coco.imgToAnns[image_id]:
            x, y, bw, bh = ann["bbox"]
            if ann.get("iscrowd", 0) or ann["category_id"] not in self.cat_to_label:
                continue
            if min(x + bw, w) - max(x, 0) <= self.min_size or min(y + bh, h) - max(y, 0) <= self.min_size:
                continue
            masks.append(self.coco.annToMask(ann) if ann.get("segmentation") else np.zeros((h, w), np.uint8))
        return np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)

    def load_raw(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            # Passed the signature check but does not decode: substitute the next image (one warning per file).
            warn_once(self._warned, str(path), f"cannot decode image {path}; using another image instead")
            return self.load_raw((index + 1) % len(self))
        h, w = image.shape[:2]
        sample = self._annotations(image_id, h, w)
        sample.update(image=image, image_id=int(image_id), path=str(path), ori_shape=(h, w))
        return sample
