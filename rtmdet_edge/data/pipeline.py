"""Per-size RTMDet train pipelines (RTMDET_FACTS.md 3.3/3.4) and the test pipeline.

Stage 1 (epochs 0..max-20): CachedMosaic -> RandomResize(2x scale) -> RandomCrop -> HSV -> Flip -> Pad -> CachedMixUp.
Stage 2 (last 20 epochs, "LSJ" fine-tune): RandomResize(1x scale) -> RandomCrop -> HSV -> Flip -> Pad. No mixing.
Sizes differ only in the scale-jitter range and, for tiny, smaller FIFO caches and mixup prob 0.5; nano (RTMPose's
detector config) has jitter 0.5-1.5, tiny's FIFO mosaic cache and no MixUp at all.
A FilterAnnotations(min_gt_bbox_wh=(1,1)) ends every train pipeline (as in the official RTMDet-Ins configs): crops
can leave sub-pixel slivers that only add noise to the assigner.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmdet_edge.data.transforms import (
    CachedMixUp,
    CachedMosaic,
    Compose,
    FilterAnnotations,
    LetterboxResize,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    RandomResizeCrop,
    YOLOXHSVRandomAug,
)


@dataclass(frozen=True)
class AugmentConfig:
    """The per-size differences of the official configs."""

    ratio_range: tuple[float, float]
    mosaic_cache: int = 40
    mixup_cache: int = 20
    random_pop: bool = True
    mixup_prob: float = 1.0


AUGMENT = {
    # tiny: FIFO caches 20/10 "for stability" and mixup half the time [MMD-tiny]
    "tiny": AugmentConfig((0.5, 2.0), mosaic_cache=20, mixup_cache=10, random_pop=False, mixup_prob=0.5),
    "s": AugmentConfig((0.5, 2.0)),  # standard scale jitter for small models
    "m": AugmentConfig((0.1, 2.0)),  # large-scale jitter for m/l/x
    "l": AugmentConfig((0.1, 2.0)),
    "x": AugmentConfig((0.1, 2.0)),
    # nano: mmpose rtmdet_nano_320-8xb32_*.py: CachedMosaic(20 images, FIFO), jitter 0.5-1.5, no CachedMixUp
    "nano": AugmentConfig((0.5, 1.5), mosaic_cache=20, random_pop=False, mixup_prob=0.0),
}


def size_key(size: str) -> str:
    """'rtmdet-tiny', 'rtmdet-ins-s', 'rtmdet-r-m' or 'tiny' -> 'nano'/'tiny'/'s'/'m'/'l'/'x'."""
    key = size.rsplit("-", 1)[-1]
    if key not in AUGMENT:
        raise ValueError(f"unknown model size {size!r}; expected one of {', '.join(AUGMENT)} (or a preset name)")
    return key


def build_train_pipeline(size: str, imgsz: int, stage: int, dataset=None, seed: int = 0) -> Compose:
    """The official train pipeline for `size` at input imgsz, stage 1 (mosaic + mixup) or 2 (no mixing).

    `dataset` is accepted for the uncached variants (benchmarks); the official cached pipeline does not need it.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    aug = AUGMENT[size_key(size)]
    # RTMDet-Ins configs crop with recompute_bbox=True (boxes = bounds of the cropped polygons) and keep crops
    # without objects (allow_negative_crop=True) [MMD-ins-l]; detection crops keep boxes as they are.
    ins = "-ins-" in size
    crop = RandomCrop(imgsz, allow_negative_crop=ins, recompute_bbox=ins, seed=seed + 2)
    # RandomResize + RandomCrop fused into one warp of the cropped window (same random draws, same result).
    resize_crop = RandomResizeCrop(RandomResize((2 if stage == 1 else 1) * imgsz, aug.ratio_range, seed=seed + 1), crop)
    common = [
        resize_crop,
        YOLOXHSVRandomAug(seed=seed + 3),
        RandomFlip(0.5, seed=seed + 4),
        Pad(imgsz),
    ]
    if stage == 2:
        return Compose([*common, FilterAnnotations((1, 1))])
    mixup = [] if aug.mixup_prob == 0 else [  # nano's config has no MixUp stage (not even a cache)
        CachedMixUp(
            imgsz,
            max_cached_images=aug.mixup_cache,
            random_pop=aug.random_pop,
            prob=aug.mixup_prob,
            seed=seed + 5,
        )
    ]
    return Compose(
        [
            CachedMosaic(imgsz, max_cached_images=aug.mosaic_cache, random_pop=aug.random_pop, seed=seed),
            *common,
            *mixup,
            FilterAnnotations((1, 1)),
        ]
    )


def build_test_pipeline(imgsz: int = 640) -> Compose:
    """Keep-ratio resize (long side imgsz) + bottom/right pad 114, via rtmdet_edge.inference.preprocess.letterbox."""
    return Compose([LetterboxResize(imgsz)])
