"""`rtmdet-edge benchmark`: accuracy and speed of one model on every target x precision available here.

For each row: COCO mAP with the same evaluation code as `eval` (rtmdet_edge.evaluation.coco, official test settings) and its
difference to PyTorch FP32, parity of the raw outputs against PyTorch FP32, latency (median and p90) of the model call
alone and end to end (letterbox + normalise + model + decode/NMS with the deploy settings), FPS, batch throughput,
model file size and peak memory. Rows that cannot run here say why.

How it measures (recorded in report.json "meta"):
- Every runtime gets the same CPU thread count (default 2): torch.set_num_threads, ONNX Runtime intra-op threads
  (sequential execution, so no inter-op pool), OpenVINO INFERENCE_NUM_THREADS with the latency hint and one stream.
- Latency: warm-up calls first, then the model-only, end-to-end, pre and post loops are timed in interleaved rounds,
  so load from other processes on a shared machine hits them alike and their ratios stay meaningful.
- Peak memory: each row is loaded again in a fresh Python process that imports the runtime, records its RSS
  high-water mark (ru_maxrss), loads the model and runs three batch-1 inferences, and reports the new high-water mark
  (peak_rss_mb) and the growth caused by the model (model_rss_mb). A fresh process is needed because ru_maxrss never
  goes down: measured in-process, a row would inherit the peak of every row before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.postprocess import DEPLOY, OFFICIAL, PostprocessConfig, postprocess
from rtmdet_edge.inference.preprocess import letterbox, normalize_numpy
from targets import outputs_to_dict
from targets.latency import cpu_name, summarize, time_calls
from targets.report import empty_row, write_report

TARGETS = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_REASON = "needs a quantized Q/DQ ONNX (make one with `rtmdet-edge quantize`, then pass --int8-onnx)"


@dataclass
class ModelFiles:
    """The files the rows are built from (all written into <out>/models except a user-supplied int8 ONNX)."""

    checkpoint: Path  # PyTorch weights with their config (save_checkpoint format)
    onnx: Path  # fp32, static batch 1
    xml: Path | None  # OpenVINO IR of `onnx` (f32 weights); None when openvino is not benchmarked
    onnx_batch: Path | None = None  # fp32, static batch B for throughput (None when B is 1)
    xml_batch: Path | None = None
    int8_onnx: Path | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Which rows can run here, and how each is built.


def _cuda() -> bool:
    return torch.cuda.is_available()


def _openvino_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def unavailable_reason(target: str, precision: str, files: ModelFiles | None = None) -> str | None:
    """Why target x precision cannot be measured on this machine, or None when it can."""
    if target == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "not installed (pip install rtmdet-edge[tensorrt])" + ("" if _cuda() else " and no CUDA device")
        if not _cuda():
            return "no CUDA device"
        if precision == "bf16":
            return "bf16 is not a TensorRT build precision here (fp32, fp16, int8)"
        if precision == "int8" and (files is None or files.int8_onnx is None):
            return INT8_REASON
        return None
    if precision == "int8":
        if target == "torch":
            return "PyTorch eager has no INT8 CPU path for this model; the Q/DQ ONNX runs on onnxruntime/openvino"
        if files is None or files.int8_onnx is None:
            return INT8_REASON
        return None
    if target == "torch":
        if precision == "fp16" and not _cuda():
            return "fp16 needs a CUDA device (PyTorch CPU fp16 convolutions are a slow fallback, not a deploy path)"
        if precision == "bf16":
            return "not measured for PyTorch; bf16 is measured on OpenVINO, the CPU deployment runtime"
        return None
    if target == "onnxruntime":
        if precision in ("fp16", "bf16") and not _cuda():
            return (
                f"the CPU execution provider has no {precision} kernels for this graph's convolutions (it would only "
                f"add casts around fp32 kernels); {precision} needs the CUDA or TensorRT execution provider"
            )
        return None
    if target == "openvino":
        try:
            caps = _openvino_capabilities()
        except ImportError:
            return "not installed (pip install openvino)"
        need = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
        if need and need not in caps:
            return f"this CPU has no native {precision} support (OpenVINO CPU capabilities: {', '.join(caps)})"
        return None
    return f"unknown target {target!r}"


def build_backend(
    target: str, precision: str, files: ModelFiles, threads: int, batch: int = 1, model: nn.Module | None = None
):
    """The Backend for one row; batch > 1 builds the throughput variant (static batch export).

    model: the in-memory PyTorch model for the torch rows (loaded from files.checkpoint when None).
    """
    big = batch > 1 and files.onnx_batch is not None
    if target == "torch":
        from rtmdet_edge.checkpoint import load_checkpoint
        from targets.torch_backend import TorchBackend

        model = model if model is not None else load_checkpoint(files.checkpoint)
        return TorchBackend(model, device="cuda" if _cuda() else "cpu", precision=precision)
    if precision == "int8":
        if files.int8_onnx is None:
            raise UserError(INT8_REASON)
        onnx_path = xml_path = files.int8_onnx
    else:
        onnx_path = files.onnx_batch if big else files.onnx
        xml_path = (files.xml_batch if big else files.xml) or onnx_path
    if target == "onnxruntime":
        from targets.onnxruntime import OrtBackend

        providers = ["CPUExecutionProvider"] if not _cuda() else None
        return OrtBackend(onnx_path, providers=providers, num_threads=threads)
    if target == "openvino":
        from targets.openvino import OpenVinoBackend

        # precision int8: the Q/DQ graph decides; the hint stays f32 for the layers left in float
        ov_precision = "bf16" if precision == "bf16" else "fp32"
        return OpenVinoBackend(xml_path, precision=ov_precision, hint="latency", num_threads=threads)
    if target == "tensorrt":
        from targets.tensorrt import TrtBackend, build_engine

        engine = Path(onnx_path).with_suffix(f".{precision}.engine")
        if not engine.is_file():
            build_engine(onnx_path, engine, precision=precision, batch=batch)
        return TrtBackend(engine)
    raise UserError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")


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


# ----------------------------------------------------------------------------------------------------------------------
# Measurements of one row.


def make_predictor(backend: Any, imgsz: int, cfg: PostprocessConfig, strides: Sequence[int]) -> Callable[[np.ndarray], Any]:
    """image BGR uint8 -> Detections in original pixels: the whole deployed pipeline around one backend."""

    def predict(image_bgr: np.ndarray):
        boxed, meta = letterbox(image_bgr, imgsz)
        batch = np.ascontiguousarray(normalize_numpy(boxed))
        return postprocess(outputs_to_dict(backend(batch)), [meta], cfg, strides)[0]

    return predict


def time_row(
    backend: Any,
    image_bgr: np.ndarray,
    imgsz: int,
    cfg: PostprocessConfig,
    strides: Sequence[int],
    warmup: int,
    runs: int,
    rounds: int = 5,
) -> dict[str, Any]:
    """Model-only, end-to-end, pre and post latency of one backend, timed in interleaved rounds."""
    boxed, meta = letterbox(image_bgr, imgsz)
    batch = np.ascontiguousarray(normalize_numpy(boxed))
    raw = backend(batch)
    outputs = outputs_to_dict(raw)

    def pre() -> np.ndarray:
        b, _ = letterbox(image_bgr, imgsz)
        return np.ascontiguousarray(normalize_numpy(b))

    def post() -> Any:
        return postprocess(outputs, [meta], cfg, strides)

    e2e = make_predictor(backend, imgsz, cfg, strides)
    loops = {"model": (backend, (batch,)), "e2e": (e2e, (image_bgr,)), "pre": (pre, ()), "post": (post, ())}
    for fn, args in loops.values():
        for _ in range(warmup):
            fn(*args)
    rounds = max(1, min(rounds, runs))
    per_round = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    times: dict[str, list[float]] = {k: [] for k in loops}
    for n in per_round:
        for key, (fn, args) in loops.items():
            times[key] += time_calls(fn, n, args=args)
    stats = {k: summarize(v, warmup=warmup) for k, v in times.items()}
    return {
        "latency_model": stats["model"].to_dict(),
        "latency_e2e": stats["e2e"].to_dict(),
        "pre_ms": stats["pre"].median_ms,
        "post_ms": stats["post"].median_ms,
        "fps": stats["e2e"].fps,
        # the 15% budget: what pre + post processing add on top of the model call (both measured, same rounds)
        "pre_post_over_model": (stats["pre"].median_ms + stats["post"].median_ms) / stats["model"].median_ms,
        "e2e_over_model": stats["e2e"].median_ms / stats["model"].median_ms - 1.0,
        "num_detections_e2e": len(post()[0]),
    }


def time_throughput(backend: Any, batch_bgr: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
    """Images per second of the model call at batch B (static-batch export)."""
    batch = np.ascontiguousarray(normalize_numpy(batch_bgr))
    for _ in range(warmup):
        backend(batch)
    result = summarize(time_calls(backend, runs, args=(batch,)), warmup=warmup, items_per_call=len(batch))
    return {"batch": len(batch), "images_per_s": result.fps, "latency": result.to_dict()}


def file_size_mb(path: Path) -> float:
    """Size of the file a runtime loads, plus OpenVINO's .bin or ONNX external data beside it."""
    total = path.stat().st_size
    for extra in (path.with_suffix(".bin"), path.with_suffix(path.suffix + ".data")):
        if extra != path and extra.is_file():
            total += extra.stat().st_size
    return total / 2**20


def model_file(target: str, precision: str, files: ModelFiles, backend: Any) -> Path:
    path = getattr(backend, "path", None)
    if path is not None and Path(path).is_file():
        return Path(path)
    if target == "torch":
        return files.checkpoint
    return files.int8_onnx if precision == "int8" and files.int8_onnx else files.onnx


def measure_memory(target: str, precision: str, files: ModelFiles, threads: int, imgsz: int) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads this row and runs three inferences (see the module docstring)."""
    spec = {
        "target": target,
        "precision": precision,
        "files": {k: (str(v) if v is not None else None) for k, v in asdict(files).items()},
        "threads": threads,
        "imgsz": imgsz,
    }
    cmd = [sys.executable, "-m", "targets.benchmark", "--memory-probe", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "memory probe timed out"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(lines[-1])


def _status_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0: clear_refs value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_probe(spec_json: str) -> int:
    spec = json.loads(spec_json)
    files = ModelFiles(**{k: (Path(v) if v else None) for k, v in spec["files"].items()})
    threads = spec["threads"]
    torch.set_num_threads(threads)
    target = spec["target"]
    # import the runtime first so the baseline includes its libraries: model_rss is what the model itself costs
    if target == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif target == "openvino":
        import openvino  # noqa: F401
    elif target == "tensorrt":
        import tensorrt  # noqa: F401
    x = np.zeros((1, 3, spec["imgsz"], spec["imgsz"]), np.float32)
    baseline = _status_mb("VmRSS")
    # Importing libraries can briefly use more memory than the model ever does; without resetting the high-water
    # mark that transient would hide the model's peak (ru_maxrss cannot be reset, so it is only the fallback).
    if baseline is not None and _reset_peak_rss():
        method = "VmHWM after reset (/proc/self/clear_refs 5)"
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        method = "ru_maxrss (high-water mark not resettable here: model_rss may read 0)"
    backend = build_backend(target, spec["precision"], files, threads)
    for _ in range(3):
        backend(x)
    peak = _status_mb("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak, "baseline_rss_mb": baseline, "model_rss_mb": peak - baseline, "method": method}))
    return 0


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
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return out


def prepare_files(
    model: nn.Module,
    out_dir: Path,
    imgsz: int,
    throughput_batch: int,
    int8_onnx: str | os.PathLike | None,
    openvino: bool = True,
    models_dir: Path | None = None,
) -> ModelFiles:
    """Write the PyTorch checkpoint, the fp32 ONNX exports and their OpenVINO IRs that every row is built from."""
    from rtmdet_edge.checkpoint import save_checkpoint
    from targets.export import export_onnx

    models = models_dir or out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    checkpoint = models / "model.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "config": model.config.to_dict()})
    files = ModelFiles(checkpoint=checkpoint, onnx=export_onnx(model, models / "model.onnx", imgsz, batch=1), xml=None)
    if throughput_batch > 1:
        files.onnx_batch = export_onnx(model, models / f"model_b{throughput_batch}.onnx", imgsz, batch=throughput_batch)
    if openvino:
        from targets.openvino import convert_to_openvino

        files.xml = convert_to_openvino(files.onnx, files.onnx.with_suffix(".xml"))
        if files.onnx_batch is not None:
            files.xml_batch = convert_to_openvino(files.onnx_batch, files.onnx_batch.with_suffix(".xml"))
    if int8_onnx is not None:
        files.int8_onnx = Path(int8_onnx)
        if not files.int8_onnx.is_file():
            raise UserError(f"--int8-onnx not found: {files.int8_onnx}")
    return files


def run_benchmark(
    model: nn.Module,
    dataset: Any,
    out_dir: str | os.PathLike,
    *,
    targets: Sequence[str] = TARGETS,
    precisions: Sequence[str] = PRECISIONS,
    imgsz: int = 640,
    threads: int = 2,
    warmup: int = 10,
    runs: int = 50,
    throughput_batch: int = 8,
    max_images: int | None = None,
    parity_images: int = 4,
    int8_onnx: str | os.PathLike | None = None,
    memory: bool = True,
    models_dir: str | os.PathLike | None = None,
    eval_cfg: PostprocessConfig = OFFICIAL,
    latency_cfg: PostprocessConfig = DEPLOY,
    weights: str | None = None,
    data: str | None = None,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark `model` on every target x precision; writes report.json/.md and plots into out_dir, returns the report.

    The PyTorch FP32 model is the reference for mAP differences and parity, whether or not "torch" is among targets.
    """
    bad = [t for t in targets if t not in TARGETS] + [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise UserError(f"unknown target/precision {bad}; targets: {', '.join(TARGETS)}; precisions: {', '.join(PRECISIONS)}")
    out_dir = Path(out_dir)
    models_dir = Path(models_dir) if models_dir is not None else None
    torch.set_num_threads(threads)
    model = model.float().cpu().eval()
    strides = tuple(model.strides)
    subset = _FirstImages(dataset, max_images)
    if len(subset) == 0:
        raise UserError("the benchmark dataset has no images")
    if len(subset.class_names) != model.num_classes:
        raise UserError(
            f"the model predicts {model.num_classes} classes but the data has {len(subset.class_names)}; "
            "benchmark on data with the model's classes"
        )
    t_start = time.time()
    files = prepare_files(
        model, out_dir, imgsz, throughput_batch, int8_onnx, openvino="openvino" in targets, models_dir=models_dir
    )

    parity_imgs = [subset.load_raw(i)["image"] for i in range(min(parity_images, len(subset)))]
    timing_image = subset.load_raw(0)["image"]
    throughput_images = np.stack(
        [letterbox(subset.load_raw(i % len(subset))["image"], imgsz)[0] for i in range(throughput_batch)]
    )

    plan = [(t, p) for t in targets for p in precisions]
    if ("torch", "fp32") in plan:  # the reference row goes first
        plan.remove(("torch", "fp32"))
        plan.insert(0, ("torch", "fp32"))
    rows, reference_map = [], None
    for target, precision in tqdm(plan, desc="benchmark", disable=not progress):
        reason = unavailable_reason(target, precision, files)
        row = empty_row(target, precision, reason)
        rows.append(row)
        if reason is not None:
            continue
        try:
            _measure_row(
                row, model, files, threads, imgsz, subset, parity_imgs, timing_image, throughput_images,
                warmup, runs, eval_cfg, latency_cfg, memory, progress,
            )
        except (UserError, ImportError, RuntimeError, ValueError, NotImplementedError) as e:
            row.update(empty_row(target, precision, f"failed here: {type(e).__name__}: {str(e).splitlines()[0]}"))
            continue
        if (target, precision) == ("torch", "fp32"):
            reference_map = row["mAP"]
    if reference_map is None:  # torch fp32 not asked for: still evaluate it once as the reference
        from rtmdet_edge.evaluation.coco import evaluate

        predictor = make_predictor(_TorchModelBackend(model), imgsz, eval_cfg, strides)
        ref = evaluate(predictor, subset, imgsz=imgsz, show_progress=progress)
        reference_map = 100 * ref.metrics["AP"]
    for row in rows:
        if row["available"] and row["mAP"] is not None:
            row["mAP_delta"] = row["mAP"] - reference_map

    report = {
        "meta": {
            "command": command,
            "model": model.config.name,
            "num_classes": model.num_classes,
            "weights": weights,
            "data": data,
            "num_images": len(subset),
            "imgsz": imgsz,
            "threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
            "warmup": warmup,
            "runs": runs,
            "throughput_batch": throughput_batch,
            "reference": "PyTorch FP32 (eager, this model)",
            "reference_mAP": reference_map,
            "postprocess_eval": f"official: {asdict(eval_cfg)}",
            "postprocess_latency": f"deploy: {asdict(latency_cfg)}",
            "memory_method": (
                "fresh process per row: RSS after importing the runtime (baseline), then the peak RSS (VmHWM, reset "
                "at the baseline) while loading the model and running 3 batch-1 inferences; peak_rss = whole "
                "process, model_rss = peak - baseline"
                if memory
                else "not measured (--no-memory)"
            ),
            "timing": "time.perf_counter per call; model/e2e/pre/post loops interleaved in 5 rounds after warm-up",
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),  # other users of a shared machine slow every row
            "versions": _versions(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "duration_s": None,
        },
        "rows": rows,
    }
    report["meta"]["duration_s"] = round(time.time() - t_start, 1)
    report["files"] = {k: str(v) for k, v in write_report(report, out_dir).items()}
    return report


def _flat(outputs: dict[str, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    return [*outputs["cls_scores"], *outputs["bbox_preds"]]


class _TorchModelBackend:
    """The in-memory PyTorch model behind the Backend call signature (the reference when torch is not a row)."""

    name = "torch"
    precision = "fp32"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.input_shape = (-1, 3, -1, -1)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in _flat(self.model(torch.from_numpy(batch)))]


def _measure_row(
    row: dict[str, Any],
    model: nn.Module,
    files: ModelFiles,
    threads: int,
    imgsz: int,
    subset: _FirstImages,
    parity_imgs: list[np.ndarray],
    timing_image: np.ndarray,
    throughput_images: np.ndarray,
    warmup: int,
    runs: int,
    eval_cfg: PostprocessConfig,
    latency_cfg: PostprocessConfig,
    memory: bool,
    progress: bool,
) -> None:
    """Fill one row in place: build, parity, latency, throughput, mAP, memory."""
    from rtmdet_edge.evaluation.coco import evaluate
    from targets.parity import compare

    target, precision = row["target"], row["precision"]
    strides = tuple(model.strides)
    backend = build_backend(target, precision, files, threads, model=model)
    row["effective_precision"] = effective_precision(backend)
    path = model_file(target, precision, files, backend)
    row["model_file"] = str(path)
    row["model_size_mb"] = file_size_mb(path)

    parity = compare(backend, model, images_bgr=parity_imgs, imgsz=imgsz, post_cfg=latency_cfg)
    row["parity"] = {
        k: v
        for k, v in parity.to_dict().items()
        if k in ("num_images", "raw_max_abs", "raw_max_abs_norm", "det_match", "det_box_max_abs", "tolerance", "ok")
    }
    row["parity"]["reasons"] = list(parity.reasons)

    row.update(time_row(backend, timing_image, imgsz, latency_cfg, strides, warmup, runs))

    if len(throughput_images) > 1:
        if precision == "int8":  # the user's int8 ONNX keeps its own batch size
            row["notes"].append("throughput at batch 1: the int8 ONNX is used as given")
            batch_backend, batch_images = backend, throughput_images[:1]
        else:
            batch_backend = backend if target == "torch" else build_backend(
                target, precision, files, threads, batch=len(throughput_images)
            )
            batch_images = throughput_images
        row["throughput"] = time_throughput(batch_backend, batch_images, min(warmup, 3), max(3, runs // 5))
        del batch_backend

    predictor = make_predictor(backend, imgsz, eval_cfg, strides)
    result = evaluate(predictor, subset, imgsz=imgsz, show_progress=progress)
    row["mAP"] = 100 * result.metrics["AP"]
    row["mAP50"] = 100 * result.metrics["AP50"]
    del backend, predictor
    if memory:
        row["memory"] = measure_memory(target, precision, files, threads, imgsz)


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="checkpoint: this project's, an official OpenMMLab .pth, or a state dict")
    parser.add_argument("--model", help="preset name (needed for bare state dicts; alone: random weights, speed only)")
    parser.add_argument("--targets", type=_csv, default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument(
        "--precision", type=_csv, default=",".join(PRECISIONS), help="comma-separated precisions"
    )
    parser.add_argument("--data", default="synthetic", help="validation data SPEC")
    parser.add_argument("--images", help="image folder for a COCO json --data")
    parser.add_argument("--imgsz", type=int, default=640, help="input size")
    parser.add_argument("--out", default="runs/benchmark", help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per latency")
    parser.add_argument("--batch", type=int, default=8, help="batch size for throughput")
    parser.add_argument("--max-images", type=int, help="evaluate on the first N validation images (None: all)")
    parser.add_argument("--int8-onnx", help="a quantized Q/DQ ONNX (from `rtmdet-edge quantize`) for the int8 rows")
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


def run(args: argparse.Namespace) -> int:
    from rtmdet_edge.data import build_dataset

    if args.threads < 1 or args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise UserError("--threads, --runs and --batch must be >= 1 and --warmup >= 0")
    model = load_model_for_benchmark(args.weights, args.model)
    synthetic = str(args.data).startswith("synthetic")
    dataset = build_dataset(
        args.data,
        images=args.images,
        split="val",
        num_classes=model.num_classes if synthetic and model.num_classes <= 12 else None,
        imgsz=args.imgsz,
    )
    command = "rtmdet-edge benchmark " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
    report = run_benchmark(
        model,
        dataset,
        args.out,
        targets=args.targets,
        precisions=args.precision,
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
        command=command,
    )
    from targets.report import markdown_table

    print(markdown_table(report["rows"]))
    print(f"wrote {', '.join(report['files'].values())}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        raise SystemExit(_memory_probe(sys.argv[2]))
    parser = argparse.ArgumentParser(prog="rtmdet-edge benchmark", description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
