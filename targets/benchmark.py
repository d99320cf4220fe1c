"""`rtmdet-edge benchmark`: accuracy and speed of one model on every target x precision available here.

For each row: accuracy with the same evaluation code as `eval` (official test settings of the model's kind) and its
difference to PyTorch FP32 (int8 rows also their drop from the fp32 row of the same target): COCO box mAP for RTMDet,
box and mask ("segm") mAP for RTMDet-Ins, DOTA mAP (rotated IoU) for RTMDet-R; parity of the raw outputs and detections against PyTorch FP32 (targets.parity), latency (median and p90) of the
model call alone and end to end (the `Detector` around the same backend: letterbox + normalise + model + decode/NMS
with the deploy settings), FPS, batch throughput, model file size and peak memory (targets.memory). Rows that cannot
run here say why: each backend file answers for itself (`available(precision)`).

Every backend is built by targets.load_backend and timed by targets.latency (model-only, end-to-end, pre and post
in interleaved rounds, so load from other processes hits them alike and their ratios stay meaningful). Every runtime
gets the same CPU thread count (default 2): torch.set_num_threads, ONNX Runtime intra-op threads (its pool stops
spinning when a run returns), OpenVINO INFERENCE_NUM_THREADS with the latency hint. The caller's model and torch's thread count are
left as they were.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.inference.detector import Detector
from rtmdet_edge.inference.kinds import kind_config, model_kind
from rtmdet_edge.inference.postprocess import DEPLOY, OFFICIAL, PostprocessConfig
from rtmdet_edge.inference.preprocess import letterbox, normalize_numpy, preprocess
from rtmdet_edge.models.outputs import group_outputs
from targets import backend_available, load_backend
from targets.latency import cpu_name, measure_latencies, measure_latency
from targets.report import empty_row, write_report

TARGETS = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_REASON = "no INT8 model: run with --data for calibration (the default recipe quantizes) or pass --int8-onnx"


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything a benchmark run is told; the CLI maps its flags onto these fields one to one.

    Kept here rather than in rtmdet_edge/config.py: it is the `benchmark` command's input and names targets, which
    rtmdet_edge does not import.
    """

    targets: tuple[str, ...] = TARGETS
    precisions: tuple[str, ...] = PRECISIONS
    imgsz: int = 640
    threads: int = 2  # CPU threads for every runtime
    warmup: int = 10
    runs: int = 50  # timed calls per latency
    rounds: int = 5  # interleaved timing rounds
    throughput_batch: int = 8
    max_images: int | None = None  # evaluate on the first N images (None: all)
    parity_images: int = 4
    int8_onnx: str | None = None  # a Q/DQ ONNX (from `rtmdet-edge quantize`) for the int8 rows of every target
    # per target, the INT8 model its default recipe made (nncf IR for openvino, Q/DQ ONNX otherwise): (target, path)
    int8_models: tuple[tuple[str, str], ...] = ()
    memory: bool = True  # peak memory per row in a fresh process
    models_dir: str | None = None  # where exported files go (None: OUT/models)
    eval_cfg: PostprocessConfig = OFFICIAL
    latency_cfg: PostprocessConfig = DEPLOY
    weights: str | None = None  # recorded in the report
    data: str | None = None  # recorded in the report
    command: str | None = None  # recorded in the report
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS] + [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise UserError(
                f"unknown target/precision {bad}; targets: {', '.join(TARGETS)}; precisions: {', '.join(PRECISIONS)}"
            )
        if self.threads < 1 or self.runs < 1 or self.warmup < 0 or self.throughput_batch < 1 or self.rounds < 1:
            raise UserError("--threads, --runs and --batch must be >= 1 and --warmup >= 0")
        check_imgsz(self.imgsz)


@dataclass
class ModelFiles:
    """The files the rows are built from (all written into <out>/models except a user-supplied int8 ONNX)."""

    checkpoint: Path | None  # PyTorch weights with their config (save_checkpoint format)
    onnx: Path | None  # fp32, static batch 1
    xml: Path | None = None  # OpenVINO IR of `onnx` (f32 weights); None when openvino is not benchmarked
    onnx_batch: Path | None = None  # fp32, static batch B for throughput (None when B is 1)
    xml_batch: Path | None = None
    int8_onnx: Path | None = None
    int8_by_target: dict[str, Path] = field(default_factory=dict)
    int8_batch_by_target: dict[str, Path] = field(default_factory=dict)  # the int8 models at batch B (throughput)
    int8_batch_errors: dict[str, str] = field(default_factory=dict)  # why a target has none

    def int8_for(self, target: str, batch: int = 1) -> Path | None:
        if batch > 1:
            return self.int8_batch_by_target.get(target)
        return self.int8_by_target.get(target) or self.int8_onnx

    def to_json(self) -> dict[str, Any]:
        """The paths as strings (the memory probe gets them on its command line); from_json reads them back."""
        return {k: _map_paths(v, str) for k, v in asdict(self).items() if k != "int8_batch_errors"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFiles:
        return cls(**{k: _map_paths(v, Path) for k, v in data.items()})


def _map_paths(value: Any, to: Any) -> Any:
    if isinstance(value, dict):
        return {k: to(v) for k, v in value.items()}
    return None if value is None else to(value)


def unavailable_reason(target: str, precision: str, files: ModelFiles | None = None) -> str | None:
    """Why target x precision cannot be measured here (the backend's own answer, then the int8 file), or None."""
    reason = backend_available(target, precision)
    if reason is None and precision == "int8" and (files is None or files.int8_for(target) is None):
        return INT8_REASON
    return reason


# Per-target options for load_backend: one thread count for all, OpenVINO's latency hint, TensorRT on the GPU.
def _backend_options(target: str, precision: str, threads: int) -> dict[str, Any]:
    if target == "onnxruntime":
        return {"num_threads": threads}
    if target == "openvino":  # int8: the Q/DQ graph decides; the hint stays f32 for the layers left in float
        return {"num_threads": threads, "hint": "latency", "precision": "bf16" if precision == "bf16" else "fp32"}
    if target == "tensorrt":
        return {"precision": precision, "device": "cuda"}
    return {"device": "cuda" if torch.cuda.is_available() else "cpu", "precision": precision}


def open_backend(
    target: str, precision: str, files: ModelFiles, threads: int, batch: int = 1, model: nn.Module | None = None
):
    """The Backend of one row through load_backend; batch > 1 opens the throughput export (static batch B).

    model: the in-memory PyTorch model for the torch rows (loaded from files.checkpoint when None).
    """
    if precision == "int8":
        source = files.int8_for(target, batch)
        if source is None:
            raise UserError(INT8_REASON if batch == 1 else f"no int8 model at batch {batch}")
    elif target == "torch":
        source = model if model is not None else files.checkpoint
    else:
        big = batch > 1 and files.onnx_batch is not None
        source = files.onnx_batch if big else files.onnx
        if target == "openvino":
            source = (files.xml_batch if big else files.xml) or source
    return load_backend(source, name=target, **_backend_options(target, precision, threads))


def effective_precision(backend: Any) -> str | None:
    """What the runtime says it computes in, when it says (OpenVINO's INFERENCE_PRECISION_HINT after compiling)."""
    value = getattr(backend, "effective_precision", None)
    if value is None:
        return None
    text = str(value).lower()
    for name, short in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float32", "f32"), ("f32", "f32"), ("float16", "f16")):
        if name in text:
            return short
    return str(value)


def file_size_mb(path: Path) -> float:
    """Size of the file a runtime loads, plus OpenVINO's .bin or ONNX external data beside it."""
    total = path.stat().st_size
    for extra in (path.with_suffix(".bin"), path.with_suffix(path.suffix + ".data")):
        if extra != path and extra.is_file():
            total += extra.stat().st_size
    return total / 2**20


# ----------------------------------------------------------------------------------------------------------------------
# Measurements of one row.


@dataclass
class _Inputs:
    """The images every row is measured on."""

    subset: Any  # _FirstImages: evaluated for mAP
    parity: list[np.ndarray]  # BGR images for targets.parity
    timing: np.ndarray  # one BGR image for the latency loops
    throughput: np.ndarray  # letterboxed uint8 [B, S, S, 3]
    strides: tuple[int, ...] = field(default=(8, 16, 32))


def time_row(backend: Any, image_bgr: np.ndarray, settings: BenchmarkSettings, strides: Sequence[int]) -> dict[str, Any]:
    """Model-only, end-to-end (Detector), pre and post latency of one backend, timed in interleaved rounds."""
    imgsz, cfg = settings.imgsz, settings.latency_cfg  # already the model kind's preset (run_benchmark)
    batch_u8, metas = preprocess([image_bgr], imgsz)
    batch = np.ascontiguousarray(normalize_numpy(batch_u8))
    raw = backend(batch)
    detector = Detector(backend, imgsz=imgsz, postprocess=cfg)
    detector.strides = tuple(strides)

    def pre() -> np.ndarray:
        return normalize_numpy(preprocess([image_bgr], imgsz)[0])

    def post() -> Any:  # what the Detector does after the backend call (same thread settings)
        return detector.postprocess_raw(group_outputs(raw), metas)

    calls = {"model": (backend, (batch,)), "e2e": (detector, (image_bgr,)), "pre": (pre, ()), "post": (post, ())}
    stats = measure_latencies(calls, settings.warmup, settings.runs, settings.rounds)
    model_ms = stats["model"].median_ms
    return {
        "latency_model": stats["model"].to_dict(),
        "latency_e2e": stats["e2e"].to_dict(),
        "pre_ms": stats["pre"].median_ms,
        "post_ms": stats["post"].median_ms,
        "fps": stats["e2e"].fps,
        # the 15% budget: what pre + post processing add on top of the model call (both measured, same rounds)
        "pre_post_over_model": (stats["pre"].median_ms + stats["post"].median_ms) / model_ms,
        "e2e_over_model": stats["e2e"].median_ms / model_ms - 1.0,
        "num_detections_e2e": len(post()[0]),
    }


def time_throughput(backend: Any, batch_u8: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
    """Images per second of the model call at batch B (static-batch export)."""
    batch = np.ascontiguousarray(normalize_numpy(batch_u8))
    result = measure_latency(backend, warmup, runs, args=(batch,), items_per_call=len(batch))
    return {"batch": len(batch), "images_per_s": result.fps, "latency": result.to_dict()}


def measure_row(
    row: dict[str, Any], reference: nn.Module, files: ModelFiles, settings: BenchmarkSettings, inputs: _Inputs
) -> None:
    """Fill one row in place: build, parity, latency, throughput, accuracy (by model kind), memory."""
    from targets.memory import measure_memory
    from targets.parity import compare

    target, precision, threads = row["target"], row["precision"], settings.threads
    backend = open_backend(target, precision, files, threads, model=reference)
    row["effective_precision"] = effective_precision(backend)
    path = getattr(backend, "path", None)
    path = Path(path) if path is not None else files.checkpoint
    row["model_file"] = str(path)
    row["model_size_mb"] = file_size_mb(path)

    parity = compare(backend, reference, images_bgr=inputs.parity, imgsz=settings.imgsz, post_cfg=settings.latency_cfg,
                     precision=precision)  # fmt: skip
    keep = ("num_images", "raw_max_abs", "raw_max_abs_norm", "det_match", "det_excused", "det_box_max_abs", "tolerance",
            "compared", "mask_iou", "ok")  # fmt: skip
    row["parity"] = {k: v for k, v in parity.to_dict().items() if k in keep}
    row["parity"]["reasons"] = list(parity.reasons)

    row.update(time_row(backend, inputs.timing, settings, inputs.strides))

    if len(inputs.throughput) > 1:
        images = inputs.throughput
        if precision == "int8" and files.int8_for(target, len(images)) is None:
            row["notes"].append(f"throughput at batch 1: {files.int8_batch_errors.get(target, 'no re-batched model')}")
            batch_backend, images = backend, images[:1]
        elif target == "torch":
            batch_backend = backend
        else:
            batch_backend = open_backend(target, precision, files, threads, batch=len(images))
        row["throughput"] = time_throughput(batch_backend, images, min(settings.warmup, 3), max(3, settings.runs // 5))
        del batch_backend

    detector = Detector(backend, imgsz=settings.imgsz, postprocess=settings.eval_cfg)
    detector.strides = inputs.strides
    row.update(accuracy(detector, inputs.subset, settings))
    del backend, detector
    if settings.memory:
        spec = {"target": target, "precision": precision, "threads": threads, "imgsz": settings.imgsz}
        spec["files"] = files.to_json()
        row["memory"] = measure_memory(spec)


def accuracy(detector: Detector, subset: Any, settings: BenchmarkSettings) -> dict[str, float]:
    """The accuracy fields of a row, in percent, by the detector's kind: COCO box mAP / mAP50; RTMDet-Ins adds COCO
    segm_mAP / segm_mAP50 (its detections carry masks); RTMDet-R: DOTA mAP .5:.95 / mAP50 (area AP, rotated IoU) and
    mAP50_07 (VOC07 11-point, the paper's DOTA number) instead of COCO."""
    if detector.kind == "rot":
        from rtmdet_edge.evaluation.dota import evaluate_dota_predictor

        dota = evaluate_dota_predictor(detector, subset, subset.class_names, show_progress=settings.progress)
        return {"mAP": 100 * dota.mAP, "mAP50": 100 * dota.mAP50, "mAP50_07": 100 * dota.mAP50_07}
    from rtmdet_edge.evaluation.coco import evaluate

    result = evaluate(detector, subset, imgsz=settings.imgsz, show_progress=settings.progress)
    out = {"mAP": 100 * result.metrics["AP"], "mAP50": 100 * result.metrics["AP50"]}
    if detector.kind == "ins":
        segm = result.segm_metrics or {"AP": float("nan"), "AP50": float("nan")}  # no detections: no masks either
        out |= {"segm_mAP": 100 * segm["AP"], "segm_mAP50": 100 * segm["AP50"]}
    return out


METRIC = {"det": "COCO box mAP", "ins": "COCO box and mask (segm) mAP", "rot": "DOTA mAP (rotated IoU, area AP)"}
# accuracy fields with a difference to torch fp32 (`<field>_delta`) and, on int8 rows, a drop from the fp32 row of the
# same target (`<field>_int8_drop`, positive = INT8 lost accuracy)
COMPARED_FIELDS = {"det": ("mAP",), "ins": ("mAP", "segm_mAP"), "rot": ("mAP", "mAP50")}


def add_differences(rows: Sequence[dict[str, Any]], reference: dict[str, float], kind: str) -> None:
    """Fill `<field>_delta` (vs torch fp32) and, on int8 rows, `<field>_int8_drop` (fp32 row of the target - int8)."""
    fp32 = {r["target"]: r for r in rows if r["precision"] == "fp32" and r["available"]}
    for row in rows:
        if not row["available"]:
            continue
        for name in COMPARED_FIELDS[kind]:
            value = row.get(name)
            if value is None:
                continue
            if reference.get(name) is not None:
                row[f"{name}_delta"] = value - reference[name]
            base = fp32.get(row["target"], {}).get(name)
            if row["precision"] == "int8" and base is not None:
                row[f"{name}_int8_drop"] = base - value


# ----------------------------------------------------------------------------------------------------------------------
# The whole benchmark.


class _FirstImages:
    """The first n samples of a dataset, with the attributes rtmdet_edge.evaluation.coco reads."""

    def __init__(self, dataset: Any, n: int | None) -> None:
        self.dataset = dataset
        self.n = len(dataset) if n is None else min(n, len(dataset))
        self.class_names = dataset.class_names
        self.cat_ids = getattr(dataset, "cat_ids", None)

    def __len__(self) -> int:
        return self.n

    def load_raw(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset.load_raw(index) if hasattr(self.dataset, "load_raw") else self.dataset[index]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("onnxruntime", "openvino", "tensorrt"):
        try:
            out[name] = getattr(__import__(name), "__version__", "?")
        except ImportError:
            pass
    return out


def prepare_files(model: nn.Module, out_dir: Path, settings: BenchmarkSettings) -> ModelFiles:
    """Write the PyTorch checkpoint, the fp32 ONNX exports and their OpenVINO IRs that every row is built from."""
    from rtmdet_edge.checkpoint import save_checkpoint
    from targets.export import export_onnx

    models = Path(settings.models_dir) if settings.models_dir else out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    checkpoint = models / "model.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "config": model.config.to_dict()})
    files = ModelFiles(checkpoint=checkpoint, onnx=export_onnx(model, models / "model.onnx", settings.imgsz, batch=1))
    b = settings.throughput_batch
    if b > 1:
        files.onnx_batch = export_onnx(model, models / f"model_b{b}.onnx", settings.imgsz, batch=b)
    if "openvino" in settings.targets:
        from targets.openvino import convert_to_openvino

        files.xml = convert_to_openvino(files.onnx, files.onnx.with_suffix(".xml"))
        if files.onnx_batch is not None:
            files.xml_batch = convert_to_openvino(files.onnx_batch, files.onnx_batch.with_suffix(".xml"))
    files.int8_by_target = {t: Path(p) for t, p in settings.int8_models}
    if settings.int8_onnx is not None:
        files.int8_onnx = check_int8_onnx(settings.int8_onnx)
    if b > 1 and "int8" in settings.precisions:
        rebatch_int8(files, [t for t in settings.targets if t != "torch"], b, models)
    return files


def check_int8_onnx(path: str | os.PathLike) -> Path:
    """The --int8-onnx file, checked to be a quantized ONNX: a float one would run and be reported as int8 rows."""
    from targets.export import is_quantized, read_onnx_graph

    path = Path(path)
    if not is_quantized(read_onnx_graph(path, "--int8-onnx")):
        raise UserError(
            f"--int8-onnx {path} has no QuantizeLinear/DequantizeLinear (or QLinear*) nodes: it is a float model, "
            "not INT8; pass the model_int8_*.onnx of `rtmdet-edge quantize`"
        )
    return path


def rebatch_int8(files: ModelFiles, targets: Sequence[str], batch: int, models: Path) -> None:
    """The int8 models at the throughput batch, like the fp32 rows' batch-B export: quantize writes batch 1, and the
    Q/DQ graph (or INT8 IR) only needs its input and output shapes changed. A model that cannot be re-batched keeps
    its throughput at batch 1, with the reason in files.int8_batch_errors (the row's notes)."""
    from targets.export import rebatch_onnx

    for target in targets:
        source = files.int8_for(target)
        if source is None or backend_available(target, "int8") is not None:
            continue
        try:
            if target == "openvino":
                from targets.openvino import rebatch_openvino

                dst = models / f"int8_{target}_b{batch}.xml"
                files.int8_batch_by_target[target] = rebatch_openvino(source, dst, batch)
            else:
                dst = models / f"int8_{target}_b{batch}.onnx"
                files.int8_batch_by_target[target] = rebatch_onnx(source, dst, batch)
        except (UserError, RuntimeError, ValueError, OSError) as e:
            files.int8_batch_errors[target] = f"the int8 model could not be re-batched ({str(e).splitlines()[0]})"


def run_benchmark(
    model: nn.Module, dataset: Any, out_dir: str | os.PathLike, settings: BenchmarkSettings = BenchmarkSettings()
) -> dict[str, Any]:
    """Benchmark `model` on every target x precision; writes report.json/.md and plots into out_dir, returns the report.

    The PyTorch FP32 model is the reference for mAP differences and parity, whether or not "torch" is among targets.
    The caller's model (mode, device, dtype) and torch's thread count are left as they were.
    """
    from targets.parity import float_cpu_eval

    out_dir = Path(out_dir)
    subset = _FirstImages(dataset, settings.max_images)
    if len(subset) == 0:
        raise UserError("the benchmark dataset has no images")
    if len(subset.class_names) != model.num_classes:
        raise UserError(
            f"the model predicts {model.num_classes} classes but the data has {len(subset.class_names)}; "
            "benchmark on data with the model's classes"
        )
    # "official" / "deploy" mean the model kind's own presets (RTMDet-Ins and RTMDet-R have their own test_cfg)
    kind = model_kind(model)
    settings = replace(
        settings, eval_cfg=kind_config(kind, settings.eval_cfg), latency_cfg=kind_config(kind, settings.latency_cfg)
    )
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(float_cpu_eval(model), subset, out_dir, settings)
    finally:
        torch.set_num_threads(threads_before)


def _run(reference: nn.Module, subset: _FirstImages, out_dir: Path, settings: BenchmarkSettings) -> dict[str, Any]:
    t_start = time.time()
    files = prepare_files(reference, out_dir, settings)
    inputs = _Inputs(
        subset=subset,
        parity=[subset.load_raw(i)["image"] for i in range(min(settings.parity_images, len(subset)))],
        timing=subset.load_raw(0)["image"],
        throughput=np.stack(
            [letterbox(subset.load_raw(i % len(subset))["image"], settings.imgsz)[0] for i in range(settings.throughput_batch)]
        ),
        strides=tuple(reference.strides),
    )
    plan = [(t, p) for t in settings.targets for p in settings.precisions]
    if ("torch", "fp32") in plan:  # the reference row goes first
        plan.remove(("torch", "fp32"))
        plan.insert(0, ("torch", "fp32"))
    kind = model_kind(reference)
    rows, reference_acc = [], None
    for target, precision in tqdm(plan, desc="benchmark", disable=not settings.progress):
        reason = unavailable_reason(target, precision, files)
        row = empty_row(target, precision, reason)
        rows.append(row)
        if reason is not None:
            continue
        try:
            measure_row(row, reference, files, settings, inputs)
        except (UserError, ImportError, RuntimeError, ValueError, NotImplementedError) as e:
            row.update(empty_row(target, precision, f"failed here: {type(e).__name__}: {str(e).splitlines()[0]}"))
            continue
        if (target, precision) == ("torch", "fp32"):
            reference_acc = {k: row.get(k) for k in COMPARED_FIELDS[kind]}
    if reference_acc is None:  # torch fp32 not asked for: still evaluate it once as the reference
        detector = Detector(reference, imgsz=settings.imgsz, postprocess=settings.eval_cfg, device="cpu")
        reference_acc = accuracy(detector, subset, settings)
    add_differences(rows, reference_acc, kind)
    report = {"meta": _meta(reference, len(subset), reference_acc, settings), "rows": rows}
    report["meta"]["duration_s"] = round(time.time() - t_start, 1)
    report["files"] = {k: str(v) for k, v in write_report(report, out_dir).items()}
    return report


def _meta(reference: nn.Module, num_images: int, reference_acc: dict[str, Any], settings: BenchmarkSettings) -> dict[str, Any]:
    from targets.memory import METHOD

    kind = model_kind(reference)
    return {
        "command": settings.command,
        "model": reference.config.name,
        "kind": kind,
        "metric": METRIC[kind],
        "num_classes": reference.num_classes,
        "weights": settings.weights,
        "data": settings.data,
        "num_images": num_images,
        "imgsz": settings.imgsz,
        "threads": settings.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "warmup": settings.warmup,
        "runs": settings.runs,
        "throughput_batch": settings.throughput_batch,
        "reference": "PyTorch FP32 (eager, this model)",
        "reference_mAP": reference_acc.get("mAP"),
        "reference_accuracy": reference_acc,
        "postprocess_eval": f"official: {asdict(settings.eval_cfg)}",
        "postprocess_latency": f"deploy: {asdict(settings.latency_cfg)}",
        "memory_method": METHOD if settings.memory else "not measured (--no-memory)",
        "timing": (
            f"time.perf_counter per call; model/e2e/pre/post loops interleaved in {settings.rounds} rounds after "
            "warm-up; e2e = rtmdet_edge.Detector around the same backend"
        ),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),  # other users of a shared machine slow every row
        "versions": _versions(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": None,
    }


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchmarkSettings()
    parser.add_argument("--weights", help="checkpoint: this project's, an official OpenMMLab .pth, or a state dict")
    parser.add_argument("--model", help="preset name (needed for bare state dicts; alone: random weights, speed only)")
    parser.add_argument("--targets", type=_csv, default=",".join(d.targets), help="comma-separated targets")
    parser.add_argument("--precision", type=_csv, default=",".join(d.precisions), help="comma-separated precisions")
    parser.add_argument("--data", default="synthetic", help="validation data SPEC")
    parser.add_argument("--images", help="image folder for a COCO json --data")
    parser.add_argument("--imgsz", type=int, default=d.imgsz, help="input size")
    parser.add_argument("--out", default="runs/benchmark", help="output folder")
    parser.add_argument("--threads", type=int, default=d.threads, help="CPU threads for every runtime")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed calls before timing")
    parser.add_argument("--runs", type=int, default=d.runs, help="timed calls per latency")
    parser.add_argument("--batch", type=int, default=d.throughput_batch, help="batch size for throughput")
    parser.add_argument("--max-images", type=int, help="evaluate on the first N validation images (None: all)")
    parser.add_argument("--int8-onnx", help="a quantized Q/DQ ONNX (from `rtmdet-edge quantize`) for the int8 rows "
                        "(default: quantize with each target's default recipe: nncf for openvino, onnxruntime for "
                        "onnxruntime, tensorrt for tensorrt)")  # fmt: skip
    parser.add_argument("--calib-size", type=int, default=64, help="calibration images (train split of --data) for "
                        "the default INT8 recipes")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the per-row peak-memory subprocess")
    parser.add_argument("--models-dir", help="where the exported model files go (None: OUT/models)")


def load_model_for_benchmark(weights: str | None, model_name: str | None) -> nn.Module:
    from rtmdet_edge import build_model, load_checkpoint

    if weights:
        return load_checkpoint(weights, model=build_model(model_name) if model_name else None)
    if model_name:
        model = build_model(model_name)
        warnings.warn(f"no --weights: {model_name} with random weights; latency is real, mAP is meaningless")
        return model
    raise UserError("benchmark needs --weights (or --model for a random-weight speed test)")


def default_int8_models(model: nn.Module, settings: BenchmarkSettings, args: argparse.Namespace) -> tuple:
    """Each int8-capable target's model from its default recipe (quant.ptq.DEFAULT_RECIPE), calibrated on the train
    split of --data. The command reaches into quant/ here, at its entry point: the targets library itself does not."""
    from quant import default_int8_artifact, load_calibration

    wanted = [t for t in settings.targets if t != "torch" and backend_available(t, "int8") is None]
    if not wanted:
        return ()
    calib = load_calibration(args.data, args.images, args.calib_size, settings.imgsz)
    models_dir = Path(settings.models_dir) if settings.models_dir else Path(args.out) / "models"
    return tuple(
        (t, str(default_int8_artifact(t, model, calib, settings.imgsz, out_dir=models_dir / f"int8_{t}")))
        for t in tqdm(wanted, desc="int8 (default recipes)", disable=not settings.progress)
    )


def run(args: argparse.Namespace) -> int:
    from rtmdet_edge.data import build_dataset
    from rtmdet_edge.data.spec import SYNTHETIC_KINDS
    from targets.report import markdown_table

    settings = BenchmarkSettings(
        targets=tuple(args.targets),
        precisions=tuple(args.precision),
        imgsz=args.imgsz,
        threads=args.threads,
        warmup=args.warmup,
        runs=args.runs,
        throughput_batch=args.batch,
        max_images=args.max_images,
        int8_onnx=args.int8_onnx,
        memory=not args.no_memory,
        models_dir=args.models_dir,
        weights=args.weights or f"random ({args.model})",
        data=args.data,
        command="rtmdet-edge benchmark " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None,
    )
    if args.int8_onnx is not None and "int8" in settings.precisions:
        check_int8_onnx(args.int8_onnx)  # before the model loads and anything is exported
    model = load_model_for_benchmark(args.weights, args.model)
    synthetic = str(args.data).split(":", 1)[0] in SYNTHETIC_KINDS
    dataset = build_dataset(
        args.data,
        images=args.images,
        split="val",
        num_classes=model.num_classes if synthetic else None,
        imgsz=args.imgsz,
    )
    if "int8" in settings.precisions and args.int8_onnx is None:
        settings = replace(settings, int8_models=default_int8_models(model, settings, args))
    report = run_benchmark(model, dataset, args.out, settings)
    print(markdown_table(report["rows"], report["meta"]["kind"]))
    print(f"wrote {', '.join(report['files'].values())}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="rtmdet-edge benchmark", description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
