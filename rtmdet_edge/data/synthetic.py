"""Synthetic shapes dataset: deterministic, generated on the fly, hard enough that a tiny detector needs real training.

Each image is a pure function of (seed, split, index), so any DataLoader worker renders the same pixels and nothing big
is cached. Classes are shape families; colour and texture are random and carry no class information:

    0 ellipse      filled ellipse (aspect 0.4-1)           6 arrow        block arrow
    1 rectangle    filled rectangle (aspect 0.3-1)         7 crescent     disc minus an offset disc
    2 triangle     random non-degenerate triangle          8 hexagon      regular hexagon, squashed
    3 star         five-pointed star                       9 l-shape      "L" block
    4 cross        plus sign, arm width 0.3-0.45           10 t-shape     "T" block
    5 ring         annulus, inner radius 0.45-0.7          11 half-disc   half of an ellipse

With num_classes < 12, the remaining families are still drawn, as distractors with no label ("objects of no class").
Other clutter: lines, polylines, irregular blobs, letters, textured background, gradients, sensor noise, blur.
Objects range from about 8 px to half the image, are rotated, partly occluded by later objects (those more than
70% hidden, counting the part outside the image, are dropped) and the labels describe the visible region only:
box = tight box of the visible mask, polygon = its largest outer contour, rbox = cv2.minAreaRect of the visible
contours (+1 px to w/h so a box covers pixel areas, not pixel centres) in le90.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from rtmdet_edge.data.sample import DetectionDataset, Sample, points_to_rbox_le90

SHAPES = (
    "ellipse",
    "rectangle",
    "triangle",
    "star",
    "cross",
    "ring",
    "arrow",
    "crescent",
    "hexagon",
    "l-shape",
    "t-shape",
    "half-disc",
)
MAX_VISIBLE_DROP = 0.7  # objects hidden by more than this fraction are dropped
MIN_VISIBLE_PIXELS = 12
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_SUBPIXEL = 4  # cv2 drawing shift: coordinates in 1/16 pixel


@dataclass(frozen=True)
class SyntheticStyle:
    """Difficulty knobs. They scale values after they are drawn, so every style consumes the same random stream and
    HARD (all 1.0, min_radius 4) renders exactly the images this generator always rendered.

    clutter / distractors: multipliers of the number of clutter strokes and of unlabelled distractor shapes.
    min_radius: smallest object half-size in pixels (objects span min_radius*2 px to half the image).
    noise: multiplier of the sensor-noise strength.
    textures: False paints objects and backgrounds in solid colours / gradients (the texture is still drawn from the
        random stream, then discarded, so turning textures off changes nothing else: same shapes, boxes and labels).
    """

    clutter: float = 1.0
    distractors: float = 1.0
    min_radius: float = 4.0
    noise: float = 1.0
    textures: bool = True


HARD = SyntheticStyle()
# The INT8 gap study's task (benchmarks/gap_study.py): a detector must still localise precisely (mAP over IoU
# 0.5:0.95), but without the clutter and tiny objects that keep a CPU-trained tiny model far from convergence.
STUDY = SyntheticStyle(clutter=0.25, distractors=0.25, min_radius=8.0, noise=0.5)
# The Ins and R learning curves (benchmarks/ins_learning_curve.py, rotated_learning_curve.py): objects 24 px to half
# the image in plain colours, nothing else drawn, so a tiny model trained from scratch for a few hundred iterations
# at 128 px generalises to held-out images instead of only memorising its training set.
EASY = SyntheticStyle(clutter=0.0, distractors=0.0, min_radius=12.0, noise=0.25, textures=False)
STYLES = {"hard": HARD, "study": STUDY, "easy": EASY}


def _unit_shape(kind: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Polygons (filled, holes) of shape `kind` in a unit frame roughly spanning [-1,1]^2."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    holes: list[np.ndarray] = []
    name = SHAPES[kind]
    if name == "ellipse":
        fill = circle * [1.0, rng.uniform(0.4, 1.0)]
    elif name == "rectangle":
        a = rng.uniform(0.3, 1.0)
        fill = np.array([[-1, -a], [1, -a], [1, a], [-1, a]], float)
    elif name == "triangle":
        while True:
            ang = np.sort(rng.uniform(0, 2 * np.pi, 3))
            gaps = np.diff(np.r_[ang, ang[0] + 2 * np.pi])
            if gaps.min() > 0.6:  # no sliver triangles
                break
        fill = np.stack([np.cos(ang), np.sin(ang)], 1)
    elif name == "star":
        k = np.arange(10)
        r = np.where(k % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
        fill = np.stack([r * np.cos(k * np.pi / 5), r * np.sin(k * np.pi / 5)], 1)
    elif name == "cross":
        w = rng.uniform(0.3, 0.45)
        fill = np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]
        )
    elif name == "ring":
        fill = circle.copy()
        holes = [circle * rng.uniform(0.45, 0.7)]
    elif name == "arrow":
        s, h = rng.uniform(0.2, 0.35), rng.uniform(0.5, 0.8)
        fill = np.array([[-1, -s], [0.1, -s], [0.1, -h], [1, 0], [0.1, h], [0.1, s], [-1, s]])
    elif name == "crescent":
        fill = circle.copy()
        holes = [circle * rng.uniform(0.7, 0.9) + [rng.uniform(0.35, 0.6), 0]]
    elif name == "hexagon":
        a = np.arange(6) * np.pi / 3
        fill = np.stack([np.cos(a), np.sin(a) * rng.uniform(0.6, 1.0)], 1)
    elif name == "l-shape":
        w = rng.uniform(0.35, 0.6)
        fill = np.array([[-1, -1], [-1 + w, -1], [-1 + w, 1 - w], [1, 1 - w], [1, 1], [-1, 1]], float)
    elif name == "t-shape":
        w = rng.uniform(0.2, 0.3)
        fill = np.array([[-1, -1], [1, -1], [1, -1 + 2 * w], [w, -1 + 2 * w], [w, 1], [-w, 1], [-w, -1 + 2 * w], [-1, -1 + 2 * w]])
    else:  # half-disc
        tt = np.linspace(0, np.pi, 25)
        fill = np.stack([np.cos(tt), np.sin(tt) * rng.uniform(0.6, 1.4) - 0.5], 1)
    return [fill], holes


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


class SyntheticDataset(DetectionDataset):
    """Procedural shapes; see the module docstring for the class definitions and difficulty knobs.

    Args:
        num_images: dataset length.
        num_classes: first num_classes entries of SHAPES are classes (1..12); the rest are unlabelled distractors.
            More than 12 (e.g. 80, for a COCO checkpoint's speed rows) adds classes "class12".. that never occur.
        imgsz: image size, int or (H, W).
        seed: dataset seed; split "val"/"test" draws from a different stream than "train".
        max_objects: upper bound of labelled objects drawn per image (before occlusion drops).
        style: difficulty knobs (HARD by default; STUDY for the gap study), or a name from STYLES.
    """

    def __init__(
        self,
        num_images: int = 1000,
        num_classes: int = 8,
        imgsz: int | tuple[int, int] = 640,
        seed: int = 0,
        split: str = "train",
        max_objects: int = 24,
        transforms=None,
        style: SyntheticStyle | str = HARD,
    ) -> None:
        if isinstance(style, str):
            if style not in STYLES:
                raise ValueError(f"unknown synthetic style {style!r}; choose one of {', '.join(STYLES)}")
            style = STYLES[style]
        self.style = style
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {list(_SPLIT_CODE)}, got {split!r}")
        self.num_images = int(num_images)
        self.class_names = list(SHAPES[:num_classes]) + [f"class{k}" for k in range(len(SHAPES), num_classes)]
        self.imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
        self.seed = int(seed)
        self.split = split
        self.max_objects = max_objects
        self.transforms = transforms
        # One small noise tile per dataset (deterministic from the seed); crops of it give textures and sensor noise.
        tile_rng = np.random.default_rng([self.seed, 12345])
        self._noise = tile_rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return self.num_images

    def load_raw(self, index: int) -> Sample:
        return self.render(index)[0]

    # ---------------------------------------------------------------------------------------------------------------
    def _texture(self, rng: np.random.Generator, h: int, w: int, color: tuple[int, int, int]) -> np.ndarray | None:
        """A (h,w,3) texture for an object or background, or None for a solid colour.

        Built from a 0/1 index map with cv2 ops (warpAffine, resize, LUT): numpy boolean indexing at 640x640 would
        cost more than the whole image budget.
        """
        kind = rng.integers(0, 5)
        if kind == 0:
            return None
        color2 = _random_color(rng)
        if kind == 1:  # stripes at any angle: sample a 1-row 0/1 pattern along the rotated axis
            period = rng.uniform(3, 24)
            ang = rng.uniform(0, np.pi)
            length = int(math.hypot(h, w)) + 2
            row = ((np.arange(length) // (period / 2)) % 2).astype(np.uint8)[None]
            m = np.array([[math.cos(ang), math.sin(ang), length / 2], [0, 0, 0]], np.float32)
            index = cv2.warpAffine(row, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
        elif kind == 2:  # checker
            period = int(rng.integers(3, 20))
            sh, sw = -(-h // period), -(-w // period)
            small = ((np.arange(sh)[:, None] + np.arange(sw)[None]) % 2).astype(np.uint8)
            index = cv2.resize(small, (sw * period, sh * period), interpolation=cv2.INTER_NEAREST)[:h, :w]
        elif kind == 3:  # blotchy noise: upsampled crop of the noise tile
            cell = int(rng.integers(4, 32))
            sh, sw = min(max(h // cell, 2), 255), min(max(w // cell, 2), 255)
            y0, x0 = rng.integers(0, 256 - sh), rng.integers(0, 256 - sw)
            small = np.ascontiguousarray(self._noise[y0 : y0 + sh, x0 : x0 + sw, 0])
            index = (cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 128).view(np.uint8)
        else:  # two-colour gradient
            corners = np.array([[color, color2], [color2, color]], np.uint8)
            return cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[0, 0], lut[1, 0] = color, color2
        return cv2.LUT(cv2.merge([index, index, index]), lut)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        H, W = self.imgsz
        corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
        img = cv2.resize(corners, (W, H), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.6:
            tex = self._texture(rng, H, W, _random_color(rng))
            if tex is not None:
                a = rng.uniform(0.1, 0.5)
                if self.style.textures:
                    img = cv2.addWeighted(img, 1 - a, tex, a, 0)
        return img

    def _clutter(self, rng: np.random.Generator, img: np.ndarray, count: int) -> None:
        """Things that are not objects: lines, polylines, irregular blobs, letters."""
        H, W = img.shape[:2]
        for _ in range(count):
            kind = rng.integers(0, 4)
            color = _random_color(rng)
            if kind == 0:
                p = rng.integers(0, [W, H, W, H])
                cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), color, int(rng.integers(1, 5)), cv2.LINE_AA)
            elif kind == 1:
                n = int(rng.integers(3, 7))
                pts = (rng.uniform(0, 1, (n, 2)) * [W, H]).astype(np.int32)
                cv2.polylines(img, [pts], False, color, int(rng.integers(1, 4)), cv2.LINE_AA)
            elif kind == 2:  # irregular non-convex blob
                n = int(rng.integers(7, 14))
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                r = rng.uniform(0.3, 1.0, n) * math.exp(rng.uniform(math.log(4), math.log(min(H, W) / 6)))
                c = rng.uniform(0, 1, 2) * [W, H]
                pts = np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1).astype(np.int32)
                cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
            else:
                text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(1, 5))))
                org = (int(rng.integers(0, W)), int(rng.integers(0, H)))
                cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 2.0), color, int(rng.integers(1, 4)))

    def _draw_shape(
        self, rng: np.random.Generator, img: np.ndarray, kind: int, id_map: np.ndarray | None, obj_id: int
    ) -> int:
        """Draw one shape of family `kind`; write obj_id into id_map under it. Returns its full area in pixels."""
        H, W = img.shape[:2]
        # 2 * min_radius px (8 px by default) to half the image across
        radius = math.exp(rng.uniform(math.log(self.style.min_radius), math.log(min(H, W) / 4)))
        aspect = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, 2 * np.pi)
        center = rng.uniform(-0.05, 1.05, 2) * [W, H]
        fills, holes = _unit_shape(kind, rng)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        scale = np.array([radius, radius * aspect])

        def to_image(p: np.ndarray) -> np.ndarray:
            return (p * scale) @ rot.T + center

        fills = [to_image(p) for p in fills]
        holes = [to_image(p) for p in holes]
        allp = np.concatenate(fills)
        x0, y0 = np.floor(allp.min(0)).astype(int) - 1
        x1, y1 = np.ceil(allp.max(0)).astype(int) + 2
        lw, lh = x1 - x0, y1 - y0
        local = np.zeros((lh, lw), np.uint8)
        off = np.array([x0, y0])
        to_fixed = lambda p: np.round((p - off) * (1 << _SUBPIXEL)).astype(np.int32)  # noqa: E731
        cv2.fillPoly(local, [to_fixed(p) for p in fills], 255, cv2.LINE_8, _SUBPIXEL)
        if holes:
            cv2.fillPoly(local, [to_fixed(p) for p in holes], 0, cv2.LINE_8, _SUBPIXEL)
        area = cv2.countNonZero(local)
        # Paste the part inside the image.
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if cx1 <= cx0 or cy1 <= cy0 or area == 0:
            return 0
        mask = local[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        color = _random_color(rng)
        roi = img[cy0:cy1, cx0:cx1]
        tex = self._texture(rng, cy1 - cy0, cx1 - cx0, color)
        if tex is None or not self.style.textures:
            roi[mask > 0] = color
        else:
            cv2.copyTo(tex, mask, roi)
        if id_map is not None:
            id_map[cy0:cy1, cx0:cx1][mask > 0] = obj_id
        return area

    def render(self, index: int) -> tuple[Sample, np.ndarray]:
        """Render image `index`; returns (sample, instance id map [H,W] uint8: 0 = no labelled object, k = object k-1)."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], int(index)])
        H, W = self.imgsz
        difficulty = rng.uniform(0, 1)  # more clutter, lower contrast, more noise
        img = self._background(rng)
        self._clutter(rng, img, round(int(rng.integers(0, 4 + 16 * difficulty)) * self.style.clutter))
        id_map = np.zeros((H, W), np.uint8)
        num_objects = int(rng.integers(1, self.max_objects + 1)) if rng.random() < 0.7 else int(rng.integers(1, 6))
        num_distractors = round(int(rng.integers(0, 2 + 6 * difficulty)) * self.style.distractors)
        C = min(len(self.class_names), len(SHAPES))  # classes past the 12 shapes have no objects
        # Labelled objects and unlabelled distractor shapes are interleaved so they occlude each other.
        order = rng.permutation(num_objects + num_distractors) < num_objects
        labels, areas = [], []
        for is_object in order:
            if is_object:
                kind = int(rng.integers(0, C))
                areas.append(self._draw_shape(rng, img, kind, id_map, len(labels) + 1))
                labels.append(kind)
            else:
                kind = int(rng.integers(C, len(SHAPES))) if C < len(SHAPES) and rng.random() < 0.7 else -1
                if kind >= 0:
                    self._draw_shape(rng, img, kind, id_map, 0)  # 0 erases labels underneath: it occludes
                else:
                    self._clutter(rng, img, 1)  # clutter drawn over objects does not occlude labels (thin)
        self._lighting(rng, img, difficulty)
        return self._annotate(index, img, id_map, labels, areas), id_map

    def _lighting(self, rng: np.random.Generator, img: np.ndarray, difficulty: float) -> None:
        gamma = math.exp(rng.uniform(-0.5, 0.5))
        contrast = rng.uniform(0.6, 1.3)
        brightness = rng.uniform(-40, 40)
        lut = np.clip(((np.arange(256) / 255.0) ** gamma * 255 - 128) * contrast + 128 + brightness, 0, 255)
        cv2.LUT(img, lut.astype(np.uint8), dst=img)
        H, W = img.shape[:2]
        if rng.random() < 0.5:  # uneven illumination
            shade = rng.uniform(0.5, 1.3, (2, 2)).astype(np.float32)
            shade = cv2.resize(shade, (W, H), interpolation=cv2.INTER_LINEAR)
            cv2.multiply(img, cv2.merge([shade] * 3), dst=img, dtype=cv2.CV_8U)
        sigma = 40 * difficulty * rng.uniform(0, 1) * self.style.noise
        if sigma > 2:  # sensor noise: a random window of a tiled noise tile
            y0, x0 = rng.integers(0, 256, 2)
            reps = (-(-(H + y0) // 256), -(-(W + x0) // 256), 1)
            noise = np.tile(self._noise, reps)[y0 : y0 + H, x0 : x0 + W]
            k = sigma / 74.0  # std of uniform(0,255) is 73.6
            cv2.addWeighted(img, 1.0, noise, k, -127.5 * k, dst=img)
        if rng.random() < 0.25:
            cv2.GaussianBlur(img, (3, 3), 0, dst=img)

    def _annotate(self, index: int, img: np.ndarray, id_map: np.ndarray, labels: list[int], areas: list[int]) -> Sample:
        boxes, keep_labels, polygons, rboxes = [], [], [], []
        for k, (label, area) in enumerate(zip(labels, areas)):
            if area == 0:
                continue
            vis = (id_map == k + 1).view(np.uint8)
            x, y, w, h = cv2.boundingRect(vis)
            if w == 0:
                continue
            vis_roi = vis[y : y + h, x : x + w]
            visible = cv2.countNonZero(vis_roi)
            if visible < MIN_VISIBLE_PIXELS or visible < (1 - MAX_VISIBLE_DROP) * area:
                continue
            contours, _ = cv2.findContours(vis_roi, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            largest = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32) + [x, y]
            pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32) + [x, y]
            rb = points_to_rbox_le90(pts)
            rb[2:4] += 1.0  # cover pixel areas rather than pixel centres
            boxes.append([x, y, x + w, y + h])
            keep_labels.append(label)
            polygons.append([largest.astype(np.float32)])
            rboxes.append(rb)
        n = len(boxes)
        return {
            "image": img,
            "boxes": np.asarray(boxes, np.float32).reshape(n, 4),
            "labels": np.asarray(keep_labels, np.int64).reshape(n),
            "polygons": polygons,
            "rboxes": np.asarray(rboxes, np.float32).reshape(n, 5),
            "ignore_boxes": np.zeros((0, 4), np.float32),
            "image_id": int(index),
            "path": None,
            "ori_shape": (int(img.shape[0]), int(img.shape[1])),
        }


def export_coco(dataset, json_path: str | Path, images_dir: str | Path, ext: str = ".png") -> Path:
    """Write every image of `dataset` (raw, untransformed) to images_dir and a COCO instances JSON to json_path.

    Category ids are 1-based (label + 1), like COCO; image ids are index + 1. Polygons become COCO segmentations.
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in tqdm(range(len(dataset)), desc="export coco", leave=False):
        s = dataset.load_raw(i)
        name = f"{i:06d}{ext}"
        cv2.imwrite(str(images_dir / name), s["image"])
        h, w = s["image"].shape[:2]
        images.append({"id": i + 1, "file_name": name, "width": int(w), "height": int(h)})
        for box, label, parts in zip(s["boxes"], s["labels"], s["polygons"] or [[]] * len(s["boxes"])):
            x1, y1, x2, y2 = (float(v) for v in box)
            seg = [p.reshape(-1).astype(float).round(2).tolist() for p in parts if len(p) >= 3]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float((x2 - x1) * (y2 - y1)),
                    "iscrowd": 0,
                    "segmentation": seg,
                }
            )
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(dataset.class_names)]
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def export_dota(dataset, root: str | Path, split: str = "train", ext: str = ".png") -> Path:
    """Write DOTA-style root/images/{split}/*.png and root/labelTxt/{split}/*.txt (4 rbox corners, class, difficult 0)."""
    from rtmdet_edge.data.sample import rbox_corners

    root = Path(root)
    img_dir, lbl_dir = root / "images" / split, root / "labelTxt" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(dataset)), desc="export dota", leave=False):
        s = dataset.load_raw(i)
        cv2.imwrite(str(img_dir / f"{i:06d}{ext}"), s["image"])
        lines = []
        for corners, label in zip(rbox_corners(s["rboxes"]), s["labels"]):
            coords = " ".join(f"{v:.1f}" for v in corners.reshape(-1))
            lines.append(f"{coords} {dataset.class_names[int(label)]} 0")
        (lbl_dir / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return root
