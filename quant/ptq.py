"""Post-training quantization of the fused deployment form: `ptq(model, calib_images, recipe=...)`.

export the fused FP32 ONNX -> the recipe writes a Q/DQ ONNX (+ an OpenVINO INT8 IR for nncf) -> onnx.checker ->
graph inspection -> which convs the runtimes really run in INT8 -> parity with FP32 on real images -> summary.
QAT (quant/qat.py) describes its exported Q/DQ ONNX with the same `describe_int8`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from quant.calibration import CalibrationSet
from quant.graph import inspect_qdq, tensorrt_rule_violations
from quant.kernels import cpu_int8_features, onnxruntime_kernels, openvino_kernels
from quant.parity import compare_int8
from quant.recipes import RecipeOutput, get_recipe
from quant.settings import MIN_CALIB_IMAGES, QuantSettings, check_recipe_settings
from quant.summary import write_summary
from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess

# The runtime each target's benchmark row uses, and the recipe made for it.
DEFAULT_RECIPE = {"openvino": "nncf", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


@dataclass
class PTQResult:
    """What a quantization wrote and its summary; QAT (quant.qat.run_qat) returns the same (openvino_xml None)."""

    fp32_onnx: Path
    qdq_onnx: Path
    openvino_xml: Path | None
    summary: dict
    summary_json: Path
    summary_md: Path


def _calibration_batch(calib_images, imgsz: int) -> tuple[np.ndarray, dict]:
    if isinstance(calib_images, CalibrationSet):
        return calib_images.batch, {
            "count": len(calib_images),
            "description": calib_images.description,
            "sources": calib_images.sources,
        }
    if isinstance(calib_images, np.ndarray) and calib_images.ndim == 4 and calib_images.dtype == np.float32:
        return calib_images, {"count": len(calib_images), "description": "pre-processed array", "sources": []}
    boxed, _ = preprocess(list(calib_images), imgsz)  # BGR uint8 images of any size
    return normalize_numpy(boxed), {"count": len(boxed), "description": "BGR images", "sources": []}


def fp32_onnx_for(model: nn.Module | str | os.PathLike, out_dir: Path, imgsz: int) -> Path:
    """The fused FP32 graph every recipe starts from (an .onnx path is checked and used as is)."""
    if isinstance(model, nn.Module):
        from targets.export import export_onnx

        return export_onnx(model, out_dir / "model_fp32.onnx", imgsz=imgsz)
    path = Path(model)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for n in onnx.load(str(path), load_external_data=False).graph.node
    ):
        raise UserError(
            f"{path} is already quantized (it holds QuantizeLinear/DequantizeLinear nodes); give the FP32 model"
        )
    return path


def ptq(
    model: nn.Module | str | os.PathLike,
    calib_images: CalibrationSet | np.ndarray | list[np.ndarray],
    recipe: str = "onnxruntime",
    settings: QuantSettings | None = None,
    out_dir: str | os.PathLike = "runs/quantize",
    imgsz: int = 640,
    parity_images: list[np.ndarray] | None = None,
    check_kernels: bool = True,
    meta: dict | None = None,
) -> PTQResult:
    """Quantize the fused deployment form of `model` and describe the result.

    Args:
        model: an RTMDet (fused inside export) or the path of its FP32 raw-output ONNX.
        calib_images: a CalibrationSet, a pre-processed [N,3,H,W] float32 batch or BGR uint8 images.
        parity_images: BGR images for the INT8 vs FP32 check (None: skip the check).
        check_kernels: ask ONNX Runtime and OpenVINO which convolutions run as INT8 kernels.
    """
    settings = settings or QuantSettings()
    check_recipe_settings(recipe, settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    batch, calib_info = _calibration_batch(calib_images, imgsz)
    if len(batch) < MIN_CALIB_IMAGES:
        raise UserError(f"{len(batch)} calibration images are too few; give at least {MIN_CALIB_IMAGES}")
    fp32 = fp32_onnx_for(model, out_dir, imgsz)
    h, w = (
        d.dim_value
        for d in onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[2:]
    )
    if batch.shape[2:] != (h, w):
        raise UserError(f"calibration images are {batch.shape[2]}x{batch.shape[3]} but the model takes {h}x{w}")
    output = get_recipe(recipe).quantize(fp32, batch, settings, out_dir)
    summary, json_path, md_path = describe_int8(
        model,
        fp32,
        output,
        method="ptq",
        recipe=recipe,
        settings=settings,
        calib_info=calib_info,
        out_dir=out_dir,
        parity_images=parity_images,
        check_kernels=check_kernels,
        start=start,
        meta=meta,
    )
    return PTQResult(fp32, output.qdq_onnx, output.openvino_xml, summary, json_path, md_path)


def describe_int8(
    model: nn.Module | str | os.PathLike,
    fp32: Path,
    output: RecipeOutput,
    *,
    method: str,
    recipe: str,
    settings: QuantSettings,
    calib_info: dict,
    out_dir: Path,
    parity_images: list[np.ndarray] | None,
    check_kernels: bool,
    start: float,
    meta: dict | None = None,
) -> tuple[dict, Path, Path]:
    """Check and describe a written INT8 model the same way for PTQ and QAT: onnx.checker, graph inspection, the
    convs each runtime really runs as INT8 kernels, parity with `fp32` on real images; writes summary.json + .md.

    Returns (summary, json path, markdown path); `start` is the perf_counter value the run's time is counted from."""
    qdq = onnx.load(str(output.qdq_onnx))
    onnx.checker.check_model(qdq, full_check=True)
    h = onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    graph = inspect_qdq(qdq)
    graph.float_nodes.update({k: v for k, v in output.float_reasons.items() if k in graph.float_nodes})
    kernels = []
    if check_kernels:
        kernels.append({**onnxruntime_kernels(output.qdq_onnx).to_dict(), "model": output.qdq_onnx.name})
        ov_model = output.openvino_xml or output.qdq_onnx
        kernels.append({**openvino_kernels(ov_model).to_dict(), "model": ov_model.name})
        for kernel in kernels:
            _explain_float_convs(kernel, output.float_reasons)
    parity = []
    if parity_images:
        strides = tuple(getattr(model, "strides", (8, 16, 32)))
        parity.append(compare_int8(fp32, output.qdq_onnx, parity_images, h, "onnxruntime", strides).to_dict())
        parity.append(
            compare_int8(fp32, output.openvino_xml or output.qdq_onnx, parity_images, h, "openvino", strides).to_dict()
        )
    summary = {
        "method": method,
        "recipe": recipe,
        "model": getattr(getattr(model, "config", None), "name", Path(str(fp32)).stem),
        "imgsz": h,
        "settings": settings.to_dict(),
        "calibration": {**calib_info, "sources": calib_info["sources"][:50]},
        "artefacts": {
            "fp32_onnx": str(fp32),
            "qdq_onnx": str(output.qdq_onnx),
            "openvino_int8_xml": str(output.openvino_xml or ""),
        },
        "notes": output.notes,
        "graph": graph.to_dict(),
        "kernels": kernels,
        "cpu": cpu_int8_features(),
        "parity": parity,
        "tensorrt_rule_violations": tensorrt_rule_violations(qdq) if recipe == "tensorrt" else None,
        **(meta or {}),
    }
    summary["seconds"] = time.perf_counter() - start
    json_path, md_path = write_summary(summary, out_dir)
    return summary, json_path, md_path


def _explain_float_convs(kernel: dict, reasons: dict[str, str]) -> None:
    """Convs the recipe kept float on purpose get its reason instead of the runtime's guess at why a conv is float.

    Runtimes rename fused nodes but keep the original name inside (ORT: a prefix; OpenVINO: originalLayersNames)."""
    names = kernel["float_conv_names"]
    kept = [n for n in names if any(r in n for r in reasons)]
    if not kept:
        return
    why = "kept float by the recipe (the float nodes in the graph section say why, one by one)"
    kernel["why_float"] = why if len(kept) == len(names) else f"{len(kept)} {why}; the others: {kernel['why_float']}"


def default_int8_artifact(
    target: str, model: nn.Module, calib_images, imgsz: int = 640, out_dir: str | os.PathLike | None = None
) -> Path:
    """The INT8 model the benchmark runs for `target`: the IR (.xml) for openvino, the Q/DQ ONNX otherwise."""
    if target not in DEFAULT_RECIPE:
        raise UserError(f"no INT8 recipe for target {target!r}; choose one of {', '.join(DEFAULT_RECIPE)}")
    import tempfile

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"rtmdet_int8_{target}_"))
    result = ptq(model, calib_images, recipe=DEFAULT_RECIPE[target], out_dir=out, imgsz=imgsz, check_kernels=False)
    return result.openvino_xml if target == "openvino" else result.qdq_onnx
