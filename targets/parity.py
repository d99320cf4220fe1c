"""Parity of a backend with the PyTorch model on real images: raw outputs and final detections.

Raw outputs are compared per output as max |backend - torch| (`raw_max_abs`, in each output's units). The tolerance
applies to `raw_max_abs_norm`, the same difference on the scale of the values the last convs produce: box distances
divided by their stride (they are reg * stride pixels), then divided by max(1, max |reference|) of that output, so an
image whose logits reach 15 is held to the same relative float32 rounding as one whose logits stay within 1.
Detections go through rtmdet_edge.inference.postprocess on both sides (or the in-graph NMS outputs on the backend side) and
are matched greedily: same label and IoU >= 0.9.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from rtmdet_edge.geometry.boxes import box_iou
from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.postprocess import DEPLOY, Detections, PostprocessConfig, postprocess
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess
from targets import OUTPUT_NAMES, outputs_to_dict

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Max normalised raw difference per precision (None: report only), measured on the rtmdet-tiny fixture checkpoint
# at 320 on demo.jpg + 3 coco128 images (random weights: the hardest case), with a margin.
RAW_TOLERANCE: dict[str, float | None] = {
    "fp32": 1e-3,  # measured <= 1.4e-4 (ORT, OpenVINO f32): the rounding of another kernel library
    "f16-weights": 5e-2,  # measured <= 3.3e-2: the weights rounded to float16
    "fp16": 5e-2,
    # bf16 is its own precision (8 mantissa bits; 0.36 measured on the random-weight fixture at 640): this bound only
    # catches a broken graph (unrelated outputs give ~1 and more), not precision loss.
    "bf16": 1.0,
    "int8": None,
}
# Min fraction of the reference detections the backend must reproduce (same label, IoU >= 0.9).
MIN_DET_MATCH: dict[str, float | None] = {"fp32": 0.98, "f16-weights": 0.85, "fp16": 0.85, "bf16": None, "int8": None}


class ParityError(UserError):
    """A backend's outputs drifted from PyTorch beyond the tolerance."""


@dataclass
class ParityReport:
    backend: str
    precision: str
    num_images: int
    raw_max_abs: dict[str, float] = field(default_factory=dict)  # per output, in its own units (pixels for boxes)
    raw_max_abs_norm: float = math.nan  # max over outputs, box distances divided by the stride
    det_ref: int = 0
    det_got: int = 0
    det_matched: int = 0
    det_box_max_abs: float = 0.0  # original-image pixels, over matched pairs
    det_score_max_abs: float = 0.0
    tolerance: float | None = None
    min_det_match: float | None = None
    ok: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def det_match(self) -> float:
        return self.det_matched / self.det_ref if self.det_ref else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "det_match": self.det_match}

    def summary(self) -> str:
        raw = "n/a (in-graph NMS)" if math.isnan(self.raw_max_abs_norm) else f"{self.raw_max_abs_norm:.3g}"
        tol = "report only" if self.tolerance is None else f"tol {self.tolerance:g}"
        s = (
            f"{self.backend} {self.precision}: raw max|diff| {raw} ({tol}); detections {self.det_got} vs "
            f"{self.det_ref} torch, {self.det_match:.1%} matched, box {self.det_box_max_abs:.3g} px, "
            f"score {self.det_score_max_abs:.3g} over {self.num_images} images"
        )
        return s + ("" if self.ok else " -> FAIL: " + "; ".join(self.reasons))


def parity_images(max_images: int = 4, data_root: Path = SHARED_DATA) -> list[np.ndarray]:
    """Real BGR images: the mmdetection demo image and the first coco128 images; a synthetic one if none exist."""
    paths = [data_root / "video" / "demo.jpg"]
    coco = data_root / "coco128-seg" / "images"
    if coco.is_dir():
        paths += sorted(p for p in coco.rglob("*.jpg"))[: max(max_images - 1, 0)]
    images = [im for im in (cv2.imread(str(p)) for p in paths if p.is_file()) if im is not None][:max_images]
    return images or [synthetic_image()]


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A deterministic scene of filled rectangles and circles on noise (fallback when no real image is present)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 5)
    for _ in range(8):
        x, y = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 80))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(30, 80)), y + int(rng.integers(30, 80))), color, -1)
        else:
            cv2.circle(image, (x + 40, y + 40), int(rng.integers(15, 40)), color, -1)
    return image


def _run_batched(backend, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch through a backend whose batch size may be static: in chunks, the last one padded by repetition."""
    fixed = backend.input_shape[0] if backend.input_shape and backend.input_shape[0] > 0 else len(batch)
    chunks = []
    for start in range(0, len(batch), fixed):
        part = batch[start : start + fixed]
        n = len(part)
        if n < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
        chunks.append([np.asarray(o)[:n] for o in backend(np.ascontiguousarray(part))])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _match(ref: Detections, got: Detections, iou_thr: float = 0.9) -> tuple[int, float, float]:
    """Greedy match in reference score order: (matched count, max box |diff|, max score |diff|) over matches."""
    rb, rs, rl = (torch.as_tensor(x) for x in (ref.boxes, ref.scores, ref.labels))
    gb, gs, gl = (torch.as_tensor(x) for x in (got.boxes, got.scores, got.labels))
    if len(rs) == 0 or len(gs) == 0:
        return 0, 0.0, 0.0
    iou = box_iou(rb.float(), gb.float())
    iou[rl[:, None] != gl[None, :]] = -1
    used = torch.zeros(len(gs), dtype=torch.bool)
    matched, box_diff, score_diff = 0, 0.0, 0.0
    for i in range(len(rs)):
        cand = iou[i].masked_fill(used, -1)
        j = int(cand.argmax())
        if cand[j] >= iou_thr:
            used[j] = True
            matched += 1
            box_diff = max(box_diff, float((rb[i] - gb[j]).abs().max()))
            score_diff = max(score_diff, float((rs[i] - gs[j]).abs()))
    return matched, box_diff, score_diff


def compare(
    backend,
    reference: nn.Module,
    images_bgr: Sequence[np.ndarray] | None = None,
    imgsz: int | None = None,
    post_cfg: PostprocessConfig = DEPLOY,
    tolerance: float | None | str = "auto",
    min_det_match: float | None | str = "auto",
) -> ParityReport:
    """Compare `backend` with the PyTorch `reference` model (fp32, CPU, eval) on real images.

    Args:
        imgsz: network input size; defaults to the backend's static input size.
        tolerance / min_det_match: "auto" picks RAW_TOLERANCE / MIN_DET_MATCH by the backend's precision.
    """
    images_bgr = list(images_bgr) if images_bgr is not None else parity_images()
    shape = tuple(getattr(backend, "input_shape", ()) or ())
    if imgsz is None:
        if len(shape) != 4 or shape[2] <= 0:
            raise ValueError("pass imgsz for a backend without a static input size")
        imgsz = (shape[2], shape[3])
    uint8, metas = preprocess(images_bgr, imgsz)
    batch = normalize_numpy(uint8)
    ref_raw = _reference_outputs(reference, batch)
    got = _run_batched(backend, batch)
    precision = getattr(backend, "precision", "fp32")
    report = ParityReport(getattr(backend, "name", type(backend).__name__), precision, len(images_bgr))
    report.tolerance = RAW_TOLERANCE.get(precision) if tolerance == "auto" else tolerance
    report.min_det_match = MIN_DET_MATCH.get(precision) if min_det_match == "auto" else min_det_match
    ref_dets = postprocess(outputs_to_dict(ref_raw), metas, post_cfg)
    if getattr(backend, "has_nms", False):
        from targets.export import nms_outputs_to_detections

        got_dets = nms_outputs_to_detections(got, metas)
    else:
        strides = tuple(getattr(reference, "strides", (8, 16, 32)))
        levels = len(OUTPUT_NAMES) // 2
        norm = []
        for i, (name, a, r) in enumerate(zip(OUTPUT_NAMES, got, ref_raw)):
            r = r.numpy().astype(np.float64)
            diff = float(np.abs(a.astype(np.float64) - r).max())
            report.raw_max_abs[name] = diff
            scale = strides[i - levels] if i >= levels else 1.0  # box distances back to the conv's own units
            norm.append(diff / scale / max(1.0, float(np.abs(r).max()) / scale))
        report.raw_max_abs_norm = max(norm)
        got_raw = outputs_to_dict([torch.from_numpy(np.asarray(a, np.float32)) for a in got])
        got_dets = postprocess(got_raw, metas, post_cfg)
    for r, g in zip(ref_dets, got_dets):
        m, bd, sd = _match(r, g)
        report.det_ref += len(r)
        report.det_got += len(g)
        report.det_matched += m
        report.det_box_max_abs = max(report.det_box_max_abs, bd)
        report.det_score_max_abs = max(report.det_score_max_abs, sd)
    if report.tolerance is not None and not report.raw_max_abs_norm <= report.tolerance:  # NaN (NMS) is skipped
        if not math.isnan(report.raw_max_abs_norm):
            report.reasons.append(f"raw outputs differ by {report.raw_max_abs_norm:.3g} > {report.tolerance:g}")
    if report.min_det_match is not None and report.det_match < report.min_det_match:
        report.reasons.append(f"only {report.det_match:.1%} of the torch detections reproduced")
    report.ok = not report.reasons
    return report


_REFERENCE_CACHE: dict[tuple, list[torch.Tensor]] = {}


def _reference_outputs(reference: nn.Module, batch: np.ndarray) -> list[torch.Tensor]:
    """PyTorch outputs image by image, memoised on (model, its weights version, input bytes): checking several
    backends of one export against the same images runs the reference once."""
    key = (id(reference), sum(p._version for p in reference.parameters()), hashlib.sha1(batch.tobytes()).hexdigest())
    if key not in _REFERENCE_CACHE:
        if len(_REFERENCE_CACHE) >= 8:
            _REFERENCE_CACHE.clear()
        model = reference.float().cpu().eval()
        with torch.inference_mode():
            outs = [_flat(model(torch.from_numpy(x[None]))) for x in batch]
        _REFERENCE_CACHE[key] = [torch.cat(o) for o in zip(*outs)]
    return _REFERENCE_CACHE[key]


def _flat(outputs) -> list[torch.Tensor]:
    from targets import dict_to_outputs

    return dict_to_outputs(outputs) if isinstance(outputs, dict) else list(outputs)


def check_parity(backend, reference: nn.Module, **kwargs) -> ParityReport:
    """compare(), raising ParityError when the backend drifted beyond the tolerance."""
    report = compare(backend, reference, **kwargs)
    if not report.ok:
        raise ParityError(f"parity check failed: {report.summary()}")
    return report
