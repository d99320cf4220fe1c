"""Train/test transforms of the RTMDet recipe (RTMDET_FACTS.md 3.3/3.4), numpy + OpenCV, one class each.

Every transform takes a sample dict and returns a new one (or None: "reject this image", as mmdet's RandomCrop does;
the dataset then draws another index). Inputs are never modified in place, because the mixing caches hold
references to earlier samples. Randomness comes from `self.rng` (np.random.Generator, seeded at construction) so
a run is reproducible; DataLoader workers should reseed with `reseed(pipeline, seed)` (see pipeline.py).
Boxes are xyxy pixels; polygons and le90 rboxes follow the same geometry as the pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from rtmdet_edge.data.sample import (
    PER_OBJECT_KEYS,
    Sample,
    affine_polygons,
    crop_polygons,
    norm_angle_le90,
    select,
)
from rtmdet_edge.inference.preprocess import letterbox

PAD_VALUE = 114


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def scale_objects(sample: Sample, sx: float, sy: float, tx: float = 0.0, ty: float = 0.0) -> Sample:
    """x' = x*sx + tx, y' = y*sy + ty for boxes, ignore boxes, polygons and rboxes (image untouched)."""
    out = dict(sample)
    mul = np.array([sx, sy, sx, sy], np.float32)
    add = np.array([tx, ty, tx, ty], np.float32)
    out["boxes"] = sample["boxes"] * mul + add
    out["ignore_boxes"] = sample["ignore_boxes"] * mul + add
    out["polygons"] = affine_polygons(sample["polygons"], sx, sy, tx, ty)
    if "rboxes" in sample:
        rb = sample["rboxes"].copy()
        cos, sin = np.cos(rb[:, 4]), np.sin(rb[:, 4])
        if sx != sy:  # anisotropic scale: lengths of the scaled side vectors (exact for the box centre and angle)
            rb[:, 2] *= np.hypot(sx * cos, sy * sin)
            rb[:, 3] *= np.hypot(sx * sin, sy * cos)
            rb[:, 4] = norm_angle_le90(np.arctan2(sy * sin, sx * cos))
        else:
            rb[:, 2:4] *= sx
        rb[:, 0] = rb[:, 0] * sx + tx
        rb[:, 1] = rb[:, 1] * sy + ty
        out["rboxes"] = rb
    return out


def clip_objects(sample: Sample, width: float, height: float, clip_polygons: bool = True) -> Sample:
    """Clip boxes (and polygons) to the image and drop objects that end up outside (mmdet clip_ + is_inside).

    Rotated boxes are not clipped (mmrotate's RotatedBoxes.clip_ leaves them whole); they are dropped with their box.
    clip_polygons=False leaves polygon parts outside the image (rasterising clips them anyway); the mosaic uses it
    because the crop that follows it in every pipeline clips them once, at a quarter of the cost.
    """
    boxes = sample["boxes"]
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    inside = (clipped[:, 0] < width) & (clipped[:, 1] < height) & (clipped[:, 2] > 0) & (clipped[:, 3] > 0)
    out = dict(sample)
    out["boxes"] = clipped
    if sample["polygons"] and clip_polygons:
        keep = np.flatnonzero(inside)  # clip only the survivors
        out = select(out, keep)
        out["polygons"] = crop_polygons(out["polygons"], width, height)
    else:
        out = select(out, inside)
    ign = sample["ignore_boxes"].copy()
    np.clip(ign[:, 0::2], 0, width, out=ign[:, 0::2])
    np.clip(ign[:, 1::2], 0, height, out=ign[:, 1::2])
    out["ignore_boxes"] = ign[(ign[:, 2] > ign[:, 0]) & (ign[:, 3] > ign[:, 1])]
    return out


def _resize_image(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    if image.shape[1] == new_w and image.shape[0] == new_h:
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def rescale_keep_ratio(sample: Sample, scale: tuple[int, int]) -> Sample:
    """mmcv imrescale: the largest keep-ratio size that fits (w, h) = scale; objects follow, clipped to the image."""
    h, w = sample["image"].shape[:2]
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
    if (new_w, new_h) == (w, h):
        return sample
    out = scale_objects(sample, new_w / w, new_h / h)
    out["image"] = _resize_image(sample["image"], new_w, new_h)
    return clip_objects(out, new_w, new_h)


def _concat(samples: Sequence[Sample], image: np.ndarray) -> Sample:
    out = dict(samples[0])
    out["image"] = image
    out["boxes"] = np.concatenate([s["boxes"] for s in samples]).astype(np.float32)
    out["labels"] = np.concatenate([s["labels"] for s in samples]).astype(np.int64)
    out["ignore_boxes"] = np.concatenate([s["ignore_boxes"] for s in samples]).astype(np.float32)
    if any(s["polygons"] for s in samples):
        out["polygons"] = [p for s in samples for p in (s["polygons"] or [[]] * len(s["boxes"]))]
    else:
        out["polygons"] = []
    for key in PER_OBJECT_KEYS:
        if all(key in s for s in samples):
            out[key] = np.concatenate([s[key] for s in samples])
        else:
            out.pop(key, None)
    return out


class Compose:
    """Apply transforms in order; stop at the first that rejects the sample (returns None)."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample | None]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample | None:
        for t in self.transforms:
            sample = t(sample)
            if sample is None:
                return None
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class _Random:
    def __init__(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)


def _mosaic_paste(
    tiles: Sequence[Sample], img_scale: tuple[int, int], center: tuple[int, int], pad_val: int
) -> Sample:
    """Paste 4 samples (already keep-ratio resized to fit img_scale) around `center` on a 2x canvas.

    mmdet CachedMosaic._mosaic_combine: tile i goes top-left/top-right/bottom-left/bottom-right of the centre.
    """
    sw, sh = img_scale
    cw, ch = 2 * sw, 2 * sh
    cx, cy = center
    canvas = np.full((ch, cw, 3), pad_val, np.uint8)
    placed = []
    for loc, tile in enumerate(tiles):
        img = tile["image"]
        h, w = img.shape[:2]
        if loc == 0:  # top left
            x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
            crop = (w - (x2 - x1), h - (y2 - y1), w, h)
        elif loc == 1:  # top right
            x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, cw), cy
            crop = (0, h - (y2 - y1), min(w, x2 - x1), h)
        elif loc == 2:  # bottom left
            x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(ch, cy + h)
            crop = (w - (x2 - x1), 0, w, min(y2 - y1, h))
        else:  # bottom right
            x1, y1, x2, y2 = cx, cy, min(cx + w, cw), min(ch, cy + h)
            crop = (0, 0, min(w, x2 - x1), min(y2 - y1, h))
        canvas[y1:y2, x1:x2] = img[crop[1] : crop[3], crop[0] : crop[2]]
        placed.append(scale_objects(tile, 1.0, 1.0, x1 - crop[0], y1 - crop[1]))
    return clip_objects(_concat(placed, canvas), cw, ch, clip_polygons=False)


class CachedMosaic(_Random):
    """mmdet CachedMosaic: 4-image mosaic on a 2x canvas from a cache of recent samples.

    The cache holds samples already keep-ratio resized to img_scale: the resize is deterministic, so doing it once
    at insertion gives the same pixels as mmdet (which re-resizes every cached partner each time) for a quarter
    of the work.
    """

    def __init__(
        self,
        img_scale: int | tuple[int, int] = 640,
        max_cached_images: int = 40,
        random_pop: bool = True,
        pad_val: int = PAD_VALUE,
        prob: float = 1.0,
        center_ratio_range: tuple[float, float] = (0.5, 1.5),
        seed: int | None = 0,
    ) -> None:
        super().__init__(seed)
        if max_cached_images < 4:
            raise ValueError(f"max_cached_images must be >= 4, got {max_cached_images}")
        self.img_scale = _pair(img_scale)  # (w, h)
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.pad_val = pad_val
        self.prob = prob
        self.center_ratio_range = center_ratio_range
        self.cache: list[Sample] = []

    def __call__(self, sample: Sample) -> Sample:
        resized = rescale_keep_ratio(sample, self.img_scale)
        self.cache.append(resized)
        if len(self.cache) > self.max_cached_images:
            pop = int(self.rng.integers(len(self.cache))) if self.random_pop else 0
            self.cache.pop(pop)
        if len(self.cache) <= 4 or self.rng.uniform() > self.prob:
            return sample
        partners = [self.cache[int(self.rng.integers(len(self.cache)))] for _ in range(3)]
        return self._combine(resized, partners)

    def _combine(self, first: Sample, partners: Sequence[Sample]) -> Sample:
        sw, sh = self.img_scale
        cx = int(self.rng.uniform(*self.center_ratio_range) * sw)
        cy = int(self.rng.uniform(*self.center_ratio_range) * sh)
        return _mosaic_paste([first, *partners], self.img_scale, (cx, cy), self.pad_val)


class Mosaic(CachedMosaic):
    """Uncached mosaic (mmdet Mosaic): the 3 partners are loaded from `dataset` and pre-transformed every time."""

    def __init__(self, img_scale, dataset, pad_val: int = PAD_VALUE, prob: float = 1.0, center_ratio_range=(0.5, 1.5), seed=0):
        super().__init__(img_scale, 4, True, pad_val, prob, center_ratio_range, seed)
        self.dataset = dataset

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.uniform() > self.prob:
            return sample
        idx = self.rng.integers(len(self.dataset), size=3)
        partners = [rescale_keep_ratio(self.dataset.load_raw(int(i)), self.img_scale) for i in idx]
        return self._combine(rescale_keep_ratio(sample, self.img_scale), partners)


class RandomResize(_Random):
    """mmdet RandomResize(scale, ratio_range, keep_ratio=True): target = scale * U(ratio_range), then keep-ratio fit."""

    def __init__(
        self,
        scale: int | tuple[int, int] = 1280,
        ratio_range: tuple[float, float] = (0.1, 2.0),
        keep_ratio: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(seed)
        self.scale = _pair(scale)  # (w, h)
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio

    def __call__(self, sample: Sample) -> Sample:
        ratio = self.rng.uniform(*self.ratio_range)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        if self.keep_ratio:
            return rescale_keep_ratio(sample, target)
        h, w = sample["image"].shape[:2]
        out = scale_objects(sample, target[0] / w, target[1] / h)
        out["image"] = _resize_image(sample["image"], *target)
        return clip_objects(out, *target)


class RandomCrop(_Random):
    """mmdet RandomCrop(crop_size) of type 'absolute': a random window of at most crop_size (h, w).

    Returns None when no object survives and allow_negative_crop is False (the dataset then draws another image).
    recompute_bbox: boxes become the bounds of the cropped polygons, where an object has polygons.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 640,
        allow_negative_crop: bool = False,
        recompute_bbox: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(seed)
        self.crop_size = _pair(crop_size)  # (h, w)
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox

    def __call__(self, sample: Sample) -> Sample | None:
        h, w = sample["image"].shape[:2]
        off_x, off_y = self.draw_offset(h, w)
        crop = sample["image"][off_y : off_y + self.crop_size[0], off_x : off_x + self.crop_size[1]]
        return self.crop_objects(sample, crop, off_x, off_y)

    def draw_offset(self, h: int, w: int) -> tuple[int, int]:
        ch, cw = self.crop_size
        off_y = int(self.rng.integers(0, max(h - ch, 0) + 1))
        off_x = int(self.rng.integers(0, max(w - cw, 0) + 1))
        return off_x, off_y

    def crop_objects(self, sample: Sample, crop: np.ndarray, off_x: int, off_y: int) -> Sample | None:
        out = clip_objects(scale_objects(sample, 1.0, 1.0, -off_x, -off_y), crop.shape[1], crop.shape[0])
        if len(out["boxes"]) == 0 and not self.allow_negative_crop:
            return None
        out["image"] = crop
        if self.recompute_bbox and out["polygons"]:
            boxes = out["boxes"].copy()
            for k, parts in enumerate(out["polygons"]):
                if parts:
                    pts = np.concatenate(parts)
                    boxes[k] = [*pts.min(0), *pts.max(0)]
            out["boxes"] = boxes
        return out


class RandomResizeCrop:
    """RandomResize followed by RandomCrop, computing only the cropped window (one cv2.warpAffine).

    Draws the same random numbers from the same generators in the same order as the two separate transforms and
    maps pixels with the same bilinear sampling as cv2.resize (x_src = (x_dst + 0.5) / scale - 0.5), so the result
    matches them up to interpolation rounding, while skipping the resize of the whole image: after a mosaic,
    RandomResize(2x) would write up to 2560x2560 pixels of which the crop keeps 640x640.
    """

    def __init__(self, resize: RandomResize, crop: RandomCrop) -> None:
        if not resize.keep_ratio:
            raise ValueError("RandomResizeCrop supports keep_ratio=True only")
        self.resize, self.crop = resize, crop

    @property
    def transforms(self) -> list:  # so reseed() reaches the two generators
        return [self.resize, self.crop]

    def __call__(self, sample: Sample) -> Sample | None:
        ratio = self.resize.rng.uniform(*self.resize.ratio_range)
        target = (int(self.resize.scale[0] * ratio), int(self.resize.scale[1] * ratio))
        h, w = sample["image"].shape[:2]
        factor = min(max(target) / max(h, w), min(target) / min(h, w))
        new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
        sx, sy = new_w / w, new_h / h
        resized = sample if (new_w, new_h) == (w, h) else clip_objects(scale_objects(sample, sx, sy), new_w, new_h)
        off_x, off_y = self.crop.draw_offset(new_h, new_w)
        out_h, out_w = min(self.crop.crop_size[0], new_h - off_y), min(self.crop.crop_size[1], new_w - off_x)
        if (new_w, new_h) == (w, h):
            crop = sample["image"][off_y : off_y + out_h, off_x : off_x + out_w]
        else:
            m = np.array([[1 / sx, 0, (off_x + 0.5) / sx - 0.5], [0, 1 / sy, (off_y + 0.5) / sy - 0.5]], np.float64)
            crop = cv2.warpAffine(
                sample["image"], m, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
        return self.crop.crop_objects(resized, crop, off_x, off_y)


class YOLOXHSVRandomAug(_Random):
    """mmdet YOLOXHSVRandomAug: each of H/S/V gets, with probability 1/2, an integer shift in +-delta.

    Implemented with per-channel lookup tables (the same integer arithmetic as mmdet's int16 version, a fraction of
    the cost).
    """

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30, seed: int | None = 0):
        super().__init__(seed)
        self.deltas = np.array([hue_delta, saturation_delta, value_delta], np.float64)

    def __call__(self, sample: Sample) -> Sample:
        gains = self.rng.uniform(-1, 1, 3) * self.deltas
        gains = (gains * self.rng.integers(0, 2, 3)).astype(np.int16)
        if not gains.any():
            return sample
        hsv = cv2.cvtColor(sample["image"], cv2.COLOR_BGR2HSV)
        idx = np.arange(256, dtype=np.int16)
        h_lut = ((idx + gains[0]) % 180).astype(np.uint8)
        s_lut = np.clip(idx + gains[1], 0, 255).astype(np.uint8)
        v_lut = np.clip(idx + gains[2], 0, 255).astype(np.uint8)
        lut = np.stack([h_lut, s_lut, v_lut], 1).reshape(256, 1, 3)
        out = dict(sample)
        out["image"] = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
        return out


def hflip_objects(sample: Sample, width: float) -> Sample:
    """Mirror boxes, polygons and rboxes about the vertical axis of an image `width` pixels wide."""
    out = dict(sample)
    b = sample["boxes"]
    out["boxes"] = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1).astype(np.float32)
    ig = sample["ignore_boxes"]
    out["ignore_boxes"] = np.stack([width - ig[:, 2], ig[:, 1], width - ig[:, 0], ig[:, 3]], 1).astype(np.float32)
    out["polygons"] = [[np.stack([width - p[:, 0], p[:, 1]], 1) for p in parts] for parts in sample["polygons"]]
    if "rboxes" in sample:
        rb = sample["rboxes"].copy()
        rb[:, 0] = width - rb[:, 0]
        rb[:, 4] = norm_angle_le90(-rb[:, 4])
        out["rboxes"] = rb
    return out


class RandomFlip(_Random):
    """Horizontal flip with probability prob (mmdet RandomFlip, direction 'horizontal')."""

    def __init__(self, prob: float = 0.5, seed: int | None = 0) -> None:
        super().__init__(seed)
        self.prob = prob

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.uniform() >= self.prob:
            return sample
        out = hflip_objects(sample, sample["image"].shape[1])
        out["image"] = cv2.flip(sample["image"], 1)
        return out


class Pad:
    """Pad bottom/right to size (h, w) with pad_val (mmdet Pad(size=...))."""

    def __init__(self, size: int | tuple[int, int] = 640, pad_val: int = PAD_VALUE) -> None:
        self.size = _pair(size)  # (h, w)
        self.pad_val = pad_val

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[:2]
        th, tw = self.size
        if h == th and w == tw:
            return sample
        if h > th or w > tw:
            raise ValueError(f"Pad to {self.size} got a larger image {sample['image'].shape[:2]}")
        out = dict(sample)
        out["image"] = cv2.copyMakeBorder(
            sample["image"], 0, th - h, 0, tw - w, cv2.BORDER_CONSTANT, value=(self.pad_val,) * 3
        )
        return out


class CachedMixUp(_Random):
    """mmdet CachedMixUp: blend 0.5/0.5 with a cached earlier sample (scaled by U(ratio_range), maybe flipped)."""

    def __init__(
        self,
        img_scale: int | tuple[int, int] = 640,
        ratio_range: tuple[float, float] = (1.0, 1.0),
        max_cached_images: int = 20,
        random_pop: bool = True,
        prob: float = 1.0,
        flip_ratio: float = 0.5,
        pad_val: int = PAD_VALUE,
        max_iters: int = 15,
        seed: int | None = 0,
    ) -> None:
        super().__init__(seed)
        if max_cached_images < 2:
            raise ValueError(f"max_cached_images must be >= 2, got {max_cached_images}")
        self.img_scale = _pair(img_scale)  # (w, h)
        self.ratio_range = ratio_range
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.prob = prob
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.cache: list[Sample] = []

    def __call__(self, sample: Sample) -> Sample:
        self.cache.append(sample)
        if len(self.cache) > self.max_cached_images:
            pop = int(self.rng.integers(len(self.cache))) if self.random_pop else 0
            self.cache.pop(pop)
        if len(self.cache) <= 1 or self.rng.uniform() > self.prob:
            return sample
        for _ in range(self.max_iters):
            other = self.cache[int(self.rng.integers(len(self.cache)))]
            if len(other["boxes"]):
                break
        return self._mix(sample, other)

    def _mix(self, sample: Sample, other: Sample) -> Sample:
        if len(other["boxes"]) == 0:
            return sample
        jit = self.rng.uniform(*self.ratio_range)
        flip = self.rng.uniform() > self.flip_ratio
        sw, sh = self.img_scale
        oimg = other["image"]
        oh, ow = oimg.shape[:2]
        scale = min(sh / oh, sw / ow)
        rw, rh = int(ow * scale), int(oh * scale)
        canvas = _resize_image(oimg, rw, rh)
        if (rw, rh) != (sw, sh):
            canvas = cv2.copyMakeBorder(canvas, 0, sh - rh, 0, sw - rw, cv2.BORDER_CONSTANT, value=(self.pad_val,) * 3)
        canvas = _resize_image(canvas, int(sw * jit), int(sh * jit))
        if flip:
            canvas = cv2.flip(canvas, 1)
        ch, cw = canvas.shape[:2]
        img = sample["image"]
        th, tw = img.shape[:2]
        if ch < th or cw < tw:
            canvas = cv2.copyMakeBorder(
                canvas, 0, max(th - ch, 0), 0, max(tw - cw, 0), cv2.BORDER_CONSTANT, value=(self.pad_val,) * 3
            )
        y_off = int(self.rng.integers(0, canvas.shape[0] - th + 1))
        x_off = int(self.rng.integers(0, canvas.shape[1] - tw + 1))
        crop = canvas[y_off : y_off + th, x_off : x_off + tw]
        scale *= jit
        moved = clip_objects(scale_objects(other, scale, scale), cw, ch)
        if flip:
            moved = hflip_objects(moved, cw)
        moved = clip_objects(scale_objects(moved, 1.0, 1.0, -x_off, -y_off), tw, th)
        # mmdet computes 0.5*a + 0.5*b in float and truncates; addWeighted rounds instead (at most 1 level apart).
        mixed = cv2.addWeighted(img, 0.5, crop, 0.5, 0)
        return _concat([sample, moved], mixed)


class MixUp(CachedMixUp):
    """Uncached mixup (mmdet MixUp): the partner is loaded from `dataset` and run through pre_transform each time."""

    def __init__(self, img_scale, dataset, pre_transform: Callable[[Sample], Sample | None], seed=0, **kwargs) -> None:
        super().__init__(img_scale, seed=seed, **kwargs)
        self.dataset = dataset
        self.pre_transform = pre_transform

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.uniform() > self.prob:
            return sample
        for _ in range(self.max_iters):
            other = self.pre_transform(self.dataset.load_raw(int(self.rng.integers(len(self.dataset)))))
            if other is not None and len(other["boxes"]):
                break
        return self._mix(sample, other) if other is not None else sample


class FilterAnnotations:
    """Drop boxes with w or h <= min (mmdet FilterAnnotations); None if nothing is left and keep_empty is False."""

    def __init__(self, min_gt_bbox_wh: tuple[float, float] = (1.0, 1.0), keep_empty: bool = True) -> None:
        self.min_w, self.min_h = min_gt_bbox_wh
        self.keep_empty = keep_empty

    def __call__(self, sample: Sample) -> Sample | None:
        b = sample["boxes"]
        keep = ((b[:, 2] - b[:, 0]) > self.min_w) & ((b[:, 3] - b[:, 1]) > self.min_h)
        if keep.all():
            return sample
        if not keep.any() and not self.keep_empty:
            return None
        return select(sample, keep)


class LetterboxResize:
    """Test-time resize + pad via rtmdet_edge.inference.preprocess.letterbox; adds sample['meta'] (LetterboxMeta)."""

    def __init__(self, imgsz: int | tuple[int, int] = 640) -> None:
        self.imgsz = imgsz

    def __call__(self, sample: Sample) -> Sample:
        image, meta = letterbox(sample["image"], self.imgsz)
        out = scale_objects(sample, *meta.scale_factor)
        out["image"] = image
        out["meta"] = meta
        return out


def reseed(pipeline: Compose | Callable, seed: int) -> None:
    """Give every random transform in a pipeline a fresh generator from `seed` (call in each DataLoader worker)."""
    transforms = pipeline.transforms if isinstance(pipeline, Compose) else [pipeline]
    transforms = [u for t in transforms for u in (t.transforms if isinstance(t, RandomResizeCrop) else [t])]
    for k, t in enumerate(transforms):
        if isinstance(t, _Random):
            t.rng = np.random.default_rng([seed, k])
        if isinstance(t, MixUp):
            reseed(t.pre_transform, seed + 7919)


__all__ = [
    "CachedMixUp",
    "CachedMosaic",
    "Compose",
    "FilterAnnotations",
    "LetterboxResize",
    "MixUp",
    "Mosaic",
    "Pad",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "RandomResizeCrop",
    "YOLOXHSVRandomAug",
    "reseed",
]
