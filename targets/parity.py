"""Parity of a backend with the PyTorch model on real images: raw outputs and final detections.

Raw outputs are compared per output as max |backend - torch| (`raw_max_abs`, in each output's units). The tolerance
applies to `raw_max_abs_norm`, the same difference on the scale of the values the last convs produce: box distances
divided by their stride (they are reg * stride pixels), then divided by max(1, max |reference|) of that output, so an
image whose logits reach 15 is held to the same relative float32 rounding as one whose logits stay within 1.
Detections go through rtmdet_edge.inference.postprocess on both sides (or the in-graph NMS outputs on the backend side) and
are matched as sets by rtmdet_edge.inference.compare.match_detections: same label, IoU >= 0.9 and score within the
precision's DET_SCORE_TOLERANCE, order ignored; a swap at the cut-off counts as reproduced only when the two scores
tie within that tolerance. Outputs are compared by name (rtmdet_edge.models.outputs), never by position.

Each model kind is post-processed as it is deployed (rtmdet_edge.inference.kinds; `compared` in the report says what
was compared): RTMDet-Ins detections also carry masks, and the report adds `mask_iou`, the mean mask IoU of the torch
masks with the backend's (geometry.masks.matched_mask_iou: instances paired by label and box, a missing or extra
instance counts as 0), held to MIN_MASK_IOU; RTMDet-R detections are rotated boxes, matched with rotated IoU.
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

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.compare import match_detections
from rtmdet_edge.geometry.masks import matched_mask_iou
from rtmdet_edge.inference.kinds import kind_config, kind_from_names, postprocess_outputs
from rtmdet_edge.inference.postprocess import DEPLOY, PostprocessConfig, postprocess
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess
from rtmdet_edge.models.outputs import flatten_outputs, group_outputs

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
# Min fraction of the reference detections the backend must reproduce (same label, IoU >= 0.9, score within
# DET_SCORE_TOLERANCE; ties at the cut-off count as reproduced).
MIN_DET_MATCH: dict[str, float | None] = {"fp32": 0.98, "f16-weights": 0.85, "fp16": 0.85, "bf16": None, "int8": None}
DET_MIN_IOU = 0.9
# Largest score difference of a matched detection, and the width of a tie at the cut-off. fp32: scores agree to
# ~1e-6 (measured 2.4e-7 on the fixture); reduced precisions round the logits themselves.
DET_SCORE_TOLERANCE: dict[str, float] = {"fp32": 1e-3, "f16-weights": 5e-2, "fp16": 5e-2, "bf16": 0.1, "int8": 0.1}
# Min mean mask IoU (RTMDet-Ins) with the torch masks; issue #11's acceptance bound for fp32 deployment. Other
# precisions: report only (their masks are judged by the segm mAP they keep in the benchmark).
MIN_MASK_IOU: dict[str, float | None] = {"fp32": 0.99}
COMPARED = {"det": "boxes", "ins": "boxes + masks (mean mask IoU)", "rot": "rotated boxes (rotated IoU)"}


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
    det_excused: int = 0  # reference detections not matched but tied at a cut-off (see match_detections)
    det_extra: int = 0  # backend detections with no reference and no tie
    det_box_max_abs: float = 0.0  # original-image pixels, over matched pairs
    det_score_max_abs: float = 0.0
    tolerance: float | None = None
    min_det_match: float | None = None
    compared: str = COMPARED["det"]  # what the detections carry: boxes, boxes + masks, rotated boxes
    mask_iou: float | None = None  # RTMDet-Ins: mean mask IoU with the torch masks over the images
    min_mask_iou: float | None = None
    ok: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def det_match(self) -> float:
        """Fraction of the reference detections reproduced (matched, or excused as a tie at a cut-off)."""
        return (self.det_matched + self.det_excused) / self.det_ref if self.det_ref else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "det_match": self.det_match}

    def summary(self) -> str:
        raw = "n/a (in-graph NMS)" if math.isnan(self.raw_max_abs_norm) else f"{self.raw_max_abs_norm:.3g}"
        tol = "report only" if self.tolerance is None else f"tol {self.tolerance:g}"
        s = (
            f"{self.backend} {self.precision}: raw max|diff| {raw} ({tol}); detections {self.det_got} vs "
            f"{self.det_ref} torch, {self.det_match:.1%} matched ({self.det_excused} as ties at the cut-off, "
            f"{self.det_extra} extra), box {self.det_box_max_abs:.3g} px, "
            f"score {self.det_score_max_abs:.3g} over {self.num_images} images"
        )
        if self.mask_iou is not None:
            s += f"; mean mask IoU {self.mask_iou:.4f}"
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


def _run_batched(backend, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run a batch through a backend whose batch size may be static: in chunks, the last one padded by repetition."""
    fixed = backend.input_shape[0] if backend.input_shape and backend.input_shape[0] > 0 else len(batch)
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, len(batch), fixed):
        part = batch[start : start + fixed]
        n = len(part)
        if n < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
        chunks.append({name: np.asarray(o)[:n] for name, o in backend(np.ascontiguousarray(part)).items()})
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def _conv_units(name: str, strides: Sequence[int]) -> float:
    """What an output is divided by to get back to its last conv's units: box distances are reg * stride pixels."""
    if name.startswith("bbox_pred_"):
        return float(strides[int(name.rsplit("_", 1)[1])])
    return 1.0


def compare(
    backend,
    reference: nn.Module,
    images_bgr: Sequence[np.ndarray] | None = None,
    imgsz: int | None = None,
    post_cfg: PostprocessConfig = DEPLOY,
    tolerance: float | None | str = "auto",
    min_det_match: float | None | str = "auto",
    precision: str | None = None,
) -> ParityReport:
    """Compare `backend` with the PyTorch `reference` model (fp32, CPU, eval) on real images.

    Args:
        imgsz: network input size; defaults to the backend's static input size.
        tolerance / min_det_match: "auto" picks RAW_TOLERANCE / MIN_DET_MATCH by the backend's precision.
        precision: the precision the tolerances are chosen for (None: the backend's own). A runtime does not always
            know it runs an INT8 model: an OpenVINO backend is opened with its f32 hint for the layers left in float,
            and a Q/DQ ONNX keeps the FP32 export's metadata, so the benchmark says which row it measures.
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
    precision = precision or getattr(backend, "precision", "fp32")
    report = ParityReport(getattr(backend, "name", type(backend).__name__), precision, len(images_bgr))
    report.tolerance = RAW_TOLERANCE.get(precision) if tolerance == "auto" else tolerance
    report.min_det_match = MIN_DET_MATCH.get(precision) if min_det_match == "auto" else min_det_match
    strides = tuple(getattr(reference, "strides", (8, 16, 32)))
    kind = kind_from_names(ref_raw)
    if getattr(backend, "has_nms", False):
        from targets.export import nms_outputs_to_detections

        # the NMS graph decodes axis-aligned boxes only: compare those, whatever else the model predicts
        ref_dets = postprocess(group_outputs(ref_raw), metas, post_cfg, strides)
        report.compared = COMPARED["det"] + ("" if kind == "det" else " only (the NMS graph has no masks or angles)")
        kind = "det"
    else:
        post_cfg = kind_config(kind, post_cfg)
        report.compared = COMPARED[kind]
        ref_dets = postprocess_outputs(group_outputs(ref_raw), metas, post_cfg, strides)
    if getattr(backend, "has_nms", False):
        got_dets = nms_outputs_to_detections(got, metas)
    else:
        missing = [name for name in ref_raw if name not in got]
        if missing:
            raise ParityError(f"{report.backend} returns no {missing} (it returns {sorted(got)})")
        norm = []
        for name, r in ref_raw.items():
            r = r.numpy().astype(np.float64)
            diff = float(np.abs(np.asarray(got[name], np.float64) - r).max())
            report.raw_max_abs[name] = diff
            scale = _conv_units(name, strides)
            norm.append(diff / scale / max(1.0, float(np.abs(r).max()) / scale))
        report.raw_max_abs_norm = max(norm)
        got_raw = group_outputs({name: np.asarray(a, np.float32) for name, a in got.items()})
        got_dets = postprocess_outputs(got_raw, metas, post_cfg, strides)
    score_atol = DET_SCORE_TOLERANCE.get(precision, DET_SCORE_TOLERANCE["int8"])
    for r, g in zip(ref_dets, got_dets):
        m = match_detections(r, g, score_atol=score_atol, min_iou=DET_MIN_IOU, score_thr=post_cfg.score_thr)
        report.det_ref += m.num_ref
        report.det_got += m.num_got
        report.det_matched += m.matched
        report.det_excused += m.excused_ref
        report.det_extra += len(m.extra)
        report.det_box_max_abs = max(report.det_box_max_abs, m.box_max_abs)
        report.det_score_max_abs = max(report.det_score_max_abs, m.score_max_abs)
    if kind == "ins":
        report.mask_iou = float(np.mean([matched_mask_iou(r.numpy(), g.numpy()) for r, g in zip(ref_dets, got_dets)]))
        report.min_mask_iou = MIN_MASK_IOU.get(precision) if min_det_match == "auto" else None
        if report.min_mask_iou is not None and report.mask_iou < report.min_mask_iou:
            report.reasons.append(f"mean mask IoU {report.mask_iou:.4f} < {report.min_mask_iou:g}")
    if report.tolerance is not None and not report.raw_max_abs_norm <= report.tolerance:  # NaN (NMS) is skipped
        if not math.isnan(report.raw_max_abs_norm):
            report.reasons.append(f"raw outputs differ by {report.raw_max_abs_norm:.3g} > {report.tolerance:g}")
    if report.min_det_match is not None and report.det_match < report.min_det_match:
        report.reasons.append(f"only {report.det_match:.1%} of the torch detections reproduced")
    if report.min_det_match is not None and report.det_extra > (1 - report.min_det_match) * max(report.det_ref, 1):
        report.reasons.append(f"{report.det_extra} backend detections have no torch counterpart")
    report.ok = not report.reasons
    return report


_REFERENCE_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _reference_outputs(reference: nn.Module, batch: np.ndarray) -> dict[str, torch.Tensor]:
    """PyTorch outputs {name: tensor} image by image, memoised on (model, its weights version, input bytes): checking
    several backends of one export against the same images runs the reference once."""
    key = (id(reference), sum(p._version for p in reference.parameters()), hashlib.sha1(batch.tobytes()).hexdigest())
    if key not in _REFERENCE_CACHE:
        if len(_REFERENCE_CACHE) >= 8:
            _REFERENCE_CACHE.clear()
        model = float_cpu_eval(reference)
        with torch.inference_mode():
            outs = [flatten_outputs(model(torch.from_numpy(x[None]))) for x in batch]
        _REFERENCE_CACHE[key] = {name: torch.cat([o[name] for o in outs]) for name in outs[0]}
    return _REFERENCE_CACHE[key]


def float_cpu_eval(model: nn.Module) -> nn.Module:
    """The model itself when it already is float32, on the CPU and in eval mode, else such a copy (the caller's
    model keeps its mode, device and dtype)."""
    params = list(model.parameters())
    if not model.training and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params):
        return model
    import copy

    return copy.deepcopy(model).float().cpu().eval()


def check_parity(backend, reference: nn.Module, **kwargs) -> ParityReport:
    """compare(), raising ParityError when the backend drifted beyond the tolerance."""
    report = compare(backend, reference, **kwargs)
    if not report.ok:
        raise ParityError(f"parity check failed: {report.summary()}")
    return report
