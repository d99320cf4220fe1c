"""INT8 vs FP32 on real images: per-output SQNR (dB) and detection agreement as sets.

SQNR = 10 log10(sum ref^2 / sum (ref - int8)^2) per named output. Detections (deploy post-processing) agree when the
same class is found with IoU >= 0.5; agreement = matched / (fp32 + int8 - matched), i.e. the Jaccard index of the two
detection sets, 1.0 when both find exactly the same objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rtmdet_edge.geometry.boxes import box_iou
from rtmdet_edge.inference.postprocess import DEPLOY, postprocess
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess
from rtmdet_edge.models.outputs import group_outputs

IOU_MATCH = 0.5


def run_onnxruntime(path: str | os.PathLike, batch: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    runs = [sess.run(names, {sess.get_inputs()[0].name: batch[i : i + 1]}) for i in range(len(batch))]
    return {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}


def run_openvino(path: str | os.PathLike, batch: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]
    runs = []
    for i in range(len(batch)):
        request.infer({0: batch[i : i + 1]})
        runs.append([request.get_output_tensor(k).data.copy() for k in range(len(names))])
    return {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    noise = float(((ref - got) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10(float((ref**2).sum()) / noise))


def _agreement(ref, got) -> tuple[int, int, int]:
    """(matched, n_ref, n_got): greedy one-to-one matching of same-class boxes at IoU >= IOU_MATCH."""
    if len(ref) == 0 or len(got) == 0:
        return 0, len(ref), len(got)
    iou = box_iou(torch.as_tensor(ref.boxes), torch.as_tensor(got.boxes))
    iou[torch.as_tensor(ref.labels)[:, None] != torch.as_tensor(got.labels)[None, :]] = 0
    matched = 0
    for i in range(len(ref)):
        j = int(iou[i].argmax())
        if iou[i, j] >= IOU_MATCH:
            matched += 1
            iou[:, j] = 0
    return matched, len(ref), len(got)


@dataclass
class QuantParity:
    runtime: str
    sqnr_db: dict[str, float]
    matched: int
    fp32_detections: int
    int8_detections: int
    images: int

    @property
    def agreement(self) -> float:
        union = self.fp32_detections + self.int8_detections - self.matched
        return 1.0 if union == 0 else self.matched / union

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "images": self.images,
            "sqnr_db": {k: round(v, 2) for k, v in self.sqnr_db.items()},
            "min_sqnr_db": round(min(self.sqnr_db.values()), 2),
            "detections_fp32": self.fp32_detections,
            "detections_int8": self.int8_detections,
            "detections_matched": self.matched,
            "detection_agreement": round(self.agreement, 4),
        }


def compare_int8(
    fp32_onnx: Path, int8_model: Path, images_bgr: list[np.ndarray], imgsz: int, runtime: str, strides=(8, 16, 32)
) -> QuantParity:
    """FP32 ONNX on ONNX Runtime vs the INT8 model on `runtime` ("onnxruntime" or "openvino") on the same images."""
    boxed, metas = preprocess(images_bgr, imgsz)
    batch = normalize_numpy(boxed)
    ref = run_onnxruntime(fp32_onnx, batch)
    got = (run_onnxruntime if runtime == "onnxruntime" else run_openvino)(int8_model, batch)
    sqnr = {name: sqnr_db(ref[name], got[name]) for name in ref}
    ref_dets = postprocess(group_outputs(ref), metas, DEPLOY, strides)
    got_dets = postprocess(group_outputs(got), metas, DEPLOY, strides)
    totals = np.sum([_agreement(r, g) for r, g in zip(ref_dets, got_dets)], axis=0)
    return QuantParity(runtime, sqnr, int(totals[0]), int(totals[1]), int(totals[2]), len(images_bgr))
