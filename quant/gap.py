"""`rtmdet-edge gap`: the INT8 gap study. For each block family (a checkpoint) x quantization method x target:
FP32 mAP, INT8 mAP, the drop with a 95% paired bootstrap interval over images, latency FP32 / INT8, model size;
then the per-layer evidence behind the numbers (quant/evidence.py). Writes report.json, report.md and PNG plots.

    rtmdet-edge gap --weights runs/study/dw5/best.pth runs/study/rep3/best.pth --data study --imgsz 256 \
        --targets onnxruntime,openvino --out runs/gap

Methods (`--methods`, comma-separated; default: every one below):
    nncf                           NNCF PTQ (MIXED preset, min-max ranges, per-channel weights, fast bias correction)
    nncf-performance               the same with NNCF's PERFORMANCE preset (symmetric activations too)
    ort-<calibrator>-<pc|pt>       ONNX Runtime static QDQ (U8S8) of every conv, with calibrator minmax / entropy /
                                   percentile and per-channel (pc) or per-tensor (pt) weights
    onnxruntime                    the onnxruntime recipe as `quantize` runs it by default: ort-minmax-pc, but the
                                   convs ONNX Runtime runs slower in INT8 (depth-wise, < 16 output channels) stay float
    tensorrt                       TensorRT's explicit-quantization form (symmetric int8, per-channel weights),
                                   run in ONNX Runtime and OpenVINO here
    qat                            quantization-aware fine-tuning (quant.qat), when available in this version
Each INT8 model runs on every target: ONNX Runtime runs the Q/DQ ONNX, OpenVINO its INT8 IR (nncf) or the Q/DQ ONNX.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rtmdet_edge.errors import UserError

TARGETS = ("onnxruntime", "openvino", "tensorrt")
CALIBRATOR_CODES = ("minmax", "entropy", "percentile", "mse")


@dataclass(frozen=True)
class Method:
    """One way to get an INT8 model; recipe None means QAT."""

    name: str
    recipe: str | None
    calibrator: str = "minmax"
    granularity: str = "per-channel"
    preset: str = "mixed"  # NNCF's preset (nncf recipe only)
    float_slow_convs: bool = False  # onnxruntime recipe only; False measures every conv in INT8 (the study's point)

    @staticmethod
    def parse(name: str) -> Method:
        if name in ("nncf", "nncf-mixed", "nncf-performance"):
            return Method(name, "nncf", preset=name.removeprefix("nncf-") if "-" in name else "mixed")
        if name == "tensorrt":
            return Method(name, "tensorrt")
        if name == "onnxruntime":
            return Method(name, "onnxruntime", float_slow_convs=True)
        if name == "qat":
            return Method(name, None)
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == "ort" and parts[1] in CALIBRATOR_CODES and parts[2] in ("pc", "pt"):
            return Method(name, "onnxruntime", parts[1], "per-channel" if parts[2] == "pc" else "per-tensor")
        raise UserError(f"unknown gap method {name!r}; use nncf, nncf-performance, onnxruntime, tensorrt, qat or "
                        "ort-<minmax|entropy|percentile>-<pc|pt>")


DEFAULT_METHODS = (
    "nncf",
    "ort-minmax-pc",
    "ort-minmax-pt",
    "ort-entropy-pc",
    "ort-entropy-pt",
    "ort-percentile-pc",
    "ort-percentile-pt",
    "tensorrt",
    "qat",
)


@dataclass(frozen=True)
class GapSettings:
    data: str = "study"
    images: str | None = None
    model: str | None = None
    targets: tuple[str, ...] = ("onnxruntime", "openvino")
    methods: tuple[str, ...] = DEFAULT_METHODS
    imgsz: int = 256
    val_size: int | None = None  # None: the whole validation split
    calib_size: int = 64
    threads: int = 2
    bootstrap: int = 1000
    warmup: int = 5
    runs: int = 30
    evidence: bool = True
    qat_epochs: int = 3
    qat_lr: float = 1e-5
    seed: int = 0


@dataclass
class FamilyRun:
    """What one checkpoint contributes: its FP32 rows, INT8 rows and evidence."""

    label: str
    weights: str
    block: str
    model_name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


def _file_mb(path: Path) -> float:
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size / 2**20


def _backend_options(target: str, threads: int) -> dict[str, Any]:
    options: dict[str, Any] = {"num_threads": threads}
    if target == "openvino":
        options["precision"] = "fp32"  # f32 inference hint: on AVX512-BF16 CPUs "fp32" would silently run bf16
    return options


def measure_model_file(target: str, model_file: Path, dataset, settings: GapSettings, meta: dict) -> dict[str, Any]:
    """mAP (with the match table for the bootstrap) and model-only latency of one model file on one target."""
    from rtmdet_edge.evaluation.coco import evaluate
    from rtmdet_edge.inference.detector import Detector
    from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess
    from targets.latency import measure_latency

    detector = Detector(model_file, imgsz=settings.imgsz, backend=target, device="cpu", postprocess="official",
                        class_names=meta.get("class_names"), **_backend_options(target, settings.threads))  # fmt: skip
    result = None
    if dataset is not None:
        result = evaluate(detector, dataset, imgsz=settings.imgsz, show_progress=False)
    image = dataset.load_raw(0)["image"] if dataset is not None else np.full((settings.imgsz,) * 2 + (3,), 114, np.uint8)
    batch = normalize_numpy(preprocess([image], settings.imgsz)[0])
    latency = measure_latency(detector.backend, settings.warmup, settings.runs, args=(batch,))
    return {
        "mAP": None if result is None else 100 * result.metrics["AP"],
        "mAP50": None if result is None else 100 * result.metrics["AP50"],
        "latency_ms": latency.median_ms,
        "latency_p90_ms": latency.p90_ms,
        "size_mb": _file_mb(model_file),
        "_matches": None if result is None else result.matches,
    }


def _validation_set(settings: GapSettings, model: nn.Module):
    """The held-out split, or None (speed and evidence only) when its classes cannot match the model's."""
    from rtmdet_edge.data.spec import build_dataset

    num_classes = int(model.num_classes)
    synthetic = settings.data.split(":", 1)[0] in ("synthetic", "study")
    try:
        ds = build_dataset(settings.data, images=settings.images, split="val", imgsz=settings.imgsz,
                           num_classes=num_classes if synthetic else None, seed=settings.seed)  # fmt: skip
    except (UserError, ValueError) as e:
        warnings.warn(f"no accuracy rows for a {num_classes}-class model on --data {settings.data} ({e}); "
                      "latency and evidence only")  # fmt: skip
        return None
    if len(ds.class_names) != num_classes:
        warnings.warn(f"the model predicts {num_classes} classes but --data {settings.data} has "
                      f"{len(ds.class_names)}; latency and evidence only")  # fmt: skip
        return None
    if settings.val_size is not None and settings.val_size < len(ds):
        from torch.utils.data import Subset

        subset = Subset(ds, range(settings.val_size))
        subset.class_names, subset.load_raw = ds.class_names, ds.load_raw
        subset.cat_ids = getattr(ds, "cat_ids", None)
        return subset
    return ds


def _int8_file(target: str, result) -> Path:
    return result.openvino_xml if target == "openvino" and result.openvino_xml is not None else result.qdq_onnx


def _qat_model_file(model: nn.Module, settings: GapSettings, out: Path) -> Path:
    """QAT (quant.qat.run_qat, NNCF PyTorch fake quantization + the project's training loop) -> its Q/DQ ONNX.

    The fine-tuning data is the train split of the study's --data; the held-out split stays unseen."""
    import argparse as _argparse

    from quant.qat import run_qat
    from quant.settings import QuantSettings

    args = _argparse.Namespace(
        data=settings.data, images=settings.images, calib_size=settings.calib_size, imgsz=settings.imgsz,
        epochs=settings.qat_epochs, batch=8, lr=settings.qat_lr, out=str(out), resume=False,
    )  # fmt: skip
    return run_qat(model, args, QuantSettings(), recipe="nncf", check_kernels=False).qdq_onnx


def run_family(weights: str, settings: GapSettings, out: Path, progress) -> FamilyRun:
    from quant import QuantSettings, load_calibration, ptq
    from quant.ptq import fp32_onnx_for
    from rtmdet_edge import build_model, load_checkpoint
    from rtmdet_edge.evaluation.bootstrap import paired_bootstrap

    model = load_checkpoint(weights, build_model(settings.model) if settings.model else None).float().eval()
    cfg = model.config
    label = f"{cfg.block} ({Path(weights).stem})"
    run = FamilyRun(label, str(weights), cfg.block, cfg.name)
    folder = out / f"{Path(weights).stem}_{cfg.block}"
    folder.mkdir(parents=True, exist_ok=True)
    dataset = _validation_set(settings, model)
    meta = {"class_names": list(dataset.class_names) if dataset is not None else None}
    calib = load_calibration(settings.data, settings.images, settings.calib_size, settings.imgsz)
    fp32_onnx = fp32_onnx_for(model, folder, settings.imgsz)
    fp32: dict[str, dict] = {}
    for target in settings.targets:
        progress(f"{label}: FP32 on {target}")
        fp32[target] = measure_model_file(target, fp32_onnx, dataset, settings, meta)
        run.rows.append({"family": label, "block": cfg.block, "method": "fp32", "target": target,
                         **{k: v for k, v in fp32[target].items() if not k.startswith("_")}})  # fmt: skip
    for name in settings.methods:
        method = Method.parse(name)
        progress(f"{label}: {name}")
        start = time.perf_counter()
        row_base = {"family": label, "block": cfg.block, "method": name, "recipe": method.recipe or "qat",
                    "calibrator": method.calibrator, "granularity": method.granularity}  # fmt: skip
        try:
            if method.recipe is None:
                files = dict.fromkeys(settings.targets, _qat_model_file(model, settings, folder / name))
            else:
                qs = QuantSettings(calibrator=method.calibrator, granularity=method.granularity, preset=method.preset,
                                   float_slow_convs=method.float_slow_convs)  # fmt: skip
                result = ptq(model, calib, recipe=method.recipe, settings=qs, out_dir=folder / name,
                             imgsz=settings.imgsz, check_kernels=False)  # fmt: skip
                files = {t: _int8_file(t, result) for t in settings.targets}
        except (ImportError, UserError, RuntimeError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            for target in settings.targets:
                run.rows.append({**row_base, "target": target, "available": False, "reason": reason})
            continue
        quantize_s = time.perf_counter() - start
        for target in settings.targets:
            if target == "tensorrt":
                run.rows.append({**row_base, "target": target, "available": False,
                                 "reason": "TensorRT runs only with an NVIDIA GPU"})  # fmt: skip
                continue
            got = measure_model_file(target, files[target], dataset, settings, meta)
            ref = fp32[target]
            row = {**row_base, "target": target, "available": True, "quantize_s": quantize_s,
                   "model_file": str(files[target]),
                   **{k: v for k, v in got.items() if not k.startswith("_")},
                   "fp32_mAP": ref["mAP"], "fp32_latency_ms": ref["latency_ms"], "fp32_size_mb": ref["size_mb"],
                   "speedup": ref["latency_ms"] / got["latency_ms"] if got["latency_ms"] else None}  # fmt: skip
            if got["_matches"] is not None and ref["_matches"] is not None:
                gap = paired_bootstrap(ref["_matches"], got["_matches"], settings.bootstrap, seed=settings.seed)
                row.update(drop=100 * gap.value, drop_low=100 * gap.low, drop_high=100 * gap.high)
            run.rows.append(row)
    if settings.evidence:
        progress(f"{label}: per-layer evidence")
        run.evidence = family_evidence(model, calib.batch)
        if dataset is not None:
            progress(f"{label}: FP32 with activations clipped to the calibration ranges")
            run.evidence["clipping"] = clipping_effect(model, calib.batch, dataset, fp32[settings.targets[0]], settings)
    return run


def clipping_effect(model: nn.Module, calib_batch: np.ndarray, dataset, fp32: dict, settings: GapSettings) -> dict:
    """mAP of the FP32 model with every conv input clamped to its calibration range (no rounding), and its drop
    against FP32 with the paired interval: how much of INT8's change comes from activation clipping alone."""
    from quant.evidence import activation_stats, clipped_to_calibration
    from rtmdet_edge.evaluation.bootstrap import paired_bootstrap
    from rtmdet_edge.evaluation.coco import evaluate
    from targets.export import deployment_model

    fused = deployment_model(model).eval()
    batches = [torch.from_numpy(calib_batch[i : i + 8]) for i in range(0, len(calib_batch), 8)]
    acts = activation_stats(fused, batches)
    with clipped_to_calibration(fused, acts), torch.no_grad():
        result = evaluate(fused, dataset, imgsz=settings.imgsz, show_progress=False)
    gap = paired_bootstrap(fp32["_matches"], result.matches, settings.bootstrap, seed=settings.seed)
    return {"calib_images": len(calib_batch), "fp32_mAP": fp32["mAP"], "mAP": 100 * result.metrics["AP"],
            "drop": 100 * gap.value, "drop_low": 100 * gap.low, "drop_high": 100 * gap.high}  # fmt: skip


def family_evidence(model: nn.Module, calib_batch: np.ndarray, max_images: int = 16) -> dict[str, Any]:
    """Weight statistics, activation ranges and one-layer-at-a-time sensitivity of the fused model."""
    from quant.evidence import activation_stats, layer_sensitivity, summarize_by_block, to_records, weight_stats
    from targets.export import deployment_model

    fused = deployment_model(model)
    batches = [torch.from_numpy(calib_batch[i : i + 4]) for i in range(0, min(len(calib_batch), max_images), 4)]
    weights = weight_stats(fused)
    acts = activation_stats(fused, batches)
    per_channel = layer_sensitivity(fused, batches, acts, per_channel=True)
    per_tensor = layer_sensitivity(fused, batches, acts, per_channel=False)
    return {
        "weights": to_records(weights),
        "activations": to_records(acts),
        "sensitivity_per_channel": to_records(per_channel),
        "sensitivity_per_tensor": to_records(per_tensor),
        "by_block": {
            "channel_range_ratio": summarize_by_block(weights, "channel_range_ratio"),
            "kurtosis": summarize_by_block(weights, "kurtosis"),
            "weight_sqnr_per_tensor_db": summarize_by_block(weights, "sqnr_per_tensor_db"),
            "weight_sqnr_per_channel_db": summarize_by_block(weights, "sqnr_per_channel_db"),
            "activation_max_over_p9999": summarize_by_block(acts, "max_over_p9999"),
            "sensitivity_per_channel_db": summarize_by_block(per_channel, "sqnr_db"),
            "sensitivity_per_tensor_db": summarize_by_block(per_tensor, "sqnr_db"),
        },
    }


def run_gap(weights: Sequence[str], settings: GapSettings, out: str | Path) -> dict[str, Any]:
    """The whole study; returns the report (also written to out/report.json, report.md and PNGs)."""
    from tqdm import tqdm

    from quant.gap_report import write_gap_report

    for t in settings.targets:
        if t not in TARGETS:
            raise UserError(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    for m in settings.methods:
        Method.parse(m)
    if not weights:
        raise UserError("give at least one checkpoint with --weights")
    for w in weights:
        if not Path(w).is_file():
            raise UserError(f"checkpoint not found: {w}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    bar = tqdm(total=len(weights) * (len(settings.methods) + len(settings.targets) + int(settings.evidence)),
               desc="gap", unit="step")  # fmt: skip

    def progress(text: str) -> None:
        bar.set_postfix_str(text[-60:])
        bar.update()

    try:
        families = [run_family(w, settings, out, progress) for w in weights]
    finally:
        bar.close()
        torch.set_num_threads(threads)
    report = {
        "settings": {**asdict(settings), "weights": [str(w) for w in weights]},
        "rows": [r for f in families for r in f.rows],
        "evidence": {f.label: f.evidence for f in families},
        "seconds": time.perf_counter() - start,
        "meta": _meta(settings),
    }
    write_gap_report(report, out)
    return report


def _meta(settings: GapSettings) -> dict[str, Any]:
    import platform

    import onnxruntime
    import openvino

    from targets.latency import cpu_name

    return {
        "cpu": cpu_name(),
        "threads": settings.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.add_argument("--weights", nargs="+", required=True, help="one checkpoint per block family (dw5, rep3, ...)")
    p.add_argument("--model", default=None, help="preset name, for checkpoints that do not record their config")
    p.add_argument("--data", default="study", help="dataset SPEC: its val split is scored, its train split calibrates")
    p.add_argument("--images", default=None, help="image folder for a COCO JSON --data")
    p.add_argument("--targets", default="onnxruntime,openvino", help="comma-separated: onnxruntime, openvino, tensorrt")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated methods (see above)")
    p.add_argument("--imgsz", type=int, default=256, help="network input size")
    p.add_argument("--val-size", type=int, default=None, help="score only the first N validation images (default: all)")
    p.add_argument("--calib-size", type=int, default=64, help="calibration images")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for the drop's 95%% interval")
    p.add_argument("--runs", type=int, default=30, help="timed calls per latency")
    p.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs")
    p.add_argument("--no-evidence", action="store_true", help="skip the per-layer evidence")
    p.add_argument("--out", default="runs/gap", help="report folder")


def run(args: argparse.Namespace) -> int:
    settings = GapSettings(
        data=args.data, images=args.images, model=args.model,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        imgsz=args.imgsz, val_size=args.val_size, calib_size=args.calib_size, threads=args.threads,
        bootstrap=args.bootstrap, runs=args.runs, evidence=not args.no_evidence, qat_epochs=args.qat_epochs,
    )  # fmt: skip
    report = run_gap(args.weights, settings, args.out)
    print(f"gap study: {len(report['rows'])} rows in {report['seconds']:.0f} s -> {Path(args.out) / 'report.md'}")
    return 0


__all__ = ["DEFAULT_METHODS", "GapSettings", "Method", "family_evidence", "run_gap"]
