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
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from rtmdet_edge.data.sample import DetectionDataset, Sample, SkipLog, mask_to_polygon
from rtmdet_edge.errors import UserError

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"GIF8")


def image_problem(path: Path) -> str | None:
    """Cheap check at construction (no decoding): None when the file exists and starts with an image signature."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except FileNotFoundError:
        return "missing image"
    except OSError:
        return "unreadable image"
    if not head:
        return "empty file"
    return None if any(head.startswith(m) for m in _IMAGE_MAGIC) else "not an image"


def read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """BGR uint8 HxWx3 for any image OpenCV reads (grayscale, BGRA and 16-bit become 8-bit BGR), or (None, why).

    A JPEG without its end-of-image marker is reported as truncated: OpenCV would otherwise decode it with the missing
    rows filled grey, silently training on half an image.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    # The end-of-image marker must follow the last start-of-scan (EXIF thumbnails have their own, earlier pair).
    if data.startswith(b"\xff\xd8\xff") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return None, "truncated JPEG"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None or image.size == 0:
        return None, "cannot decode"
    return image, ""


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    if not isinstance(data["annotations"], list):
        raise UserError(f"{ann_file}: 'annotations' must be a list")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise UserError(f"{ann_file} is not a COCO instances file: it needs a non-empty 'categories' list")
    required = (("images", ("id", "file_name")), ("categories", ("id",)), ("annotations", ("image_id", "category_id", "bbox")))
    for key, fields in required:
        for k, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or any(f not in entry for f in fields):
                raise UserError(f"{ann_file}: {key}[{k}] lacks one of the fields {list(fields)}")
    for key, fields in (("images", ("id",)), ("categories", ("id",)), ("annotations", ("image_id", "category_id"))):
        for k, entry in enumerate(data[key]):
            for f in fields:
                if not isinstance(entry[f], int) or isinstance(entry[f], bool):
                    raise UserError(f"{ann_file}: {key}[{k}].{f} must be an integer, got {entry[f]!r}")
    for k, img in enumerate(data["images"]):
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise UserError(f"{ann_file}: images[{k}].file_name must be a non-empty string, got {img['file_name']!r}")
    for k, ann in enumerate(data["annotations"]):
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
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
        self.skips = SkipLog()
        self._warned: set = set()
        self._check_annotations()
        ids = []
        root = self.images_dir.resolve()
        for img in sorted(self.coco.dataset["images"], key=lambda im: im["id"]):
            name = str(img["file_name"])
            path = (self.images_dir / name).resolve()
            if not path.is_relative_to(root):
                # Never open a file outside the images folder ("../../etc/passwd", an absolute path): refuse it.
                message = f"{self.ann_file}: image {img['id']} file_name {name!r} points outside {self.images_dir}; skipped"
                self.skips.skip("outside the images folder", message)
                continue
            problem = image_problem(path)
            if problem:
                self.skips.skip(problem, f"{path}: {problem}; skipped")
                continue
            if filter_empty and not any(a["category_id"] in self.cat_to_label for a in self.coco.imgToAnns[img["id"]]):
                continue
            ids.append(int(img["id"]))
        self.image_ids = ids
        if not ids:
            listed = len(self.coco.dataset["images"])
            why = f" ({self.skips.summary()})" if self.skips.total() else ""
            empty = ", none with objects" if filter_empty and listed else ""
            raise UserError(f"{self.ann_file}: no usable images: {listed} listed{why}{empty}")

    def _check_annotations(self) -> None:
        """Warn (one line each, counted) about annotations that cannot become a box; they are dropped at load."""
        sizes = {im["id"]: (im.get("width"), im.get("height")) for im in self.coco.dataset["images"]}
        for ann in self.coco.dataset["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            where = f"{self.ann_file}: annotation {ann['id']} (image {ann['image_id']})"
            if ann["category_id"] not in self.cat_to_label:
                message = f"{where} uses category id {ann['category_id']} not in 'categories'; dropped"
                self.skips.skip("unknown category", message)
            elif not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
                message = f"{where} has a box of zero, negative or non-finite size {ann['bbox']}; dropped"
                self.skips.skip("empty box", message)
            else:
                iw, ih = sizes.get(ann["image_id"], (None, None))
                known = isinstance(iw, (int, float)) and isinstance(ih, (int, float))
                if known and (x >= iw or y >= ih or x + w <= 0 or y + h <= 0):
                    message = f"{where} box {ann['bbox']} lies outside the {iw}x{ih} image; dropped"
                    self.skips.skip("box outside the image", message)

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.skips.counts)

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
        # An image that passed the signature check but does not decode is replaced by the next good one (one
        # counted warning per file), so a training epoch keeps its length.
        k, image = self.first_decodable(
            index, lambda i: self.images_dir / self.coco.imgs[self.image_ids[i]]["file_name"], f"in {self.images_dir}"
        )
        image_id = self.image_ids[k]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        h, w = image.shape[:2]
        sample = self._annotations(image_id, h, w)
        sample.update(image=image, image_id=int(image_id), path=str(path), ori_shape=(h, w))
        return sample
