"""ONNX Runtime recipe: `quant_pre_process` + `quantize_static` (QDQ) over the project's own pre-processing.

Defaults follow what runs fast on an x86 CPU: U8 activations (asymmetric) with S8 per-channel weights. S8S8 QDQ
graphs run ~2x *slower* than FP32 in ONNX Runtime 1.31 here (QUANT_NOTES.md section 9: ORT's x86 int8 kernels are U8S8,
so S8 activations fall back to slower paths), which is why `activation_type` defaults to u8 for this recipe only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx

from quant.recipes import RecipeOutput
from quant.settings import QuantSettings
from rtmdet_edge.errors import UserError

# Project calibrator name -> ONNX Runtime CalibrationMethod name. ORT has no MSE search (its "Distribution" method
# fits a distribution for float8, it does not minimise the int8 error), so "mse" is refused rather than faked.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
PERCENTILE = 99.999  # ORT's default; the 1e-5 tail of SiLU outputs is what a min-max range wastes codes on


class BatchReader:
    """CalibrationDataReader over a [N,3,H,W] float32 array, one image per call (the exported graph has batch 1)."""

    def __init__(self, batch: np.ndarray, input_name: str) -> None:
        self.batch = batch
        self.input_name = input_name
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batch):
            return None
        self.index += 1
        return {self.input_name: self.batch[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0


def match_nodes(onnx_model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """Names of the nodes matching any regular expression (re.search); an unmatched pattern is a user error."""
    names = [n.name for n in onnx_model.graph.node]
    matched: list[str] = []
    for pattern in patterns:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise UserError(f"--ignore {pattern!r} is not a regular expression: {e}") from None
        hits = [n for n in names if rx.search(n)]
        if not hits:
            raise UserError(f"--ignore {pattern!r} matches no node of the model (e.g. {', '.join(names[:3])})")
        matched += [h for h in hits if h not in matched]
    return matched


def quantize_with_ort(
    fp32_onnx: Path,
    calib_batch: np.ndarray,
    settings: QuantSettings,
    out_path: Path,
    *,
    symmetric: bool,
    op_types: list[str] | None = None,
    extra_options: dict | None = None,
) -> list[str]:
    """Pre-process, calibrate and write a QDQ ONNX; returns notes on the choices made."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if settings.calibrator not in CALIBRATION_METHODS:
        raise UserError(
            f"the onnxruntime quantizer has no {settings.calibrator} calibrator; choose one of "
            f"{', '.join(CALIBRATION_METHODS)} (or --recipe nncf, whose histogram search minimises the MSE)"
        )
    prep = out_path.with_name(out_path.stem + ".prep.onnx")
    # Shape inference + ORT's basic optimisations, as ORT's docs require before quantize_static; symbolic shape
    # inference is skipped because the exported graph is static.
    quant_pre_process(str(fp32_onnx), str(prep), skip_symbolic_shape=True)
    model = onnx.load(str(prep))
    input_name = model.graph.input[0].name
    exclude = match_nodes(model, settings.ignore)
    options = {"CalibPercentile": PERCENTILE} if settings.calibrator == "percentile" else {}
    if symmetric:
        options.update(ActivationSymmetric=True, WeightSymmetric=True)
    options.update(extra_options or {})
    act = QuantType.QInt8 if symmetric or settings.activation_type == "s8" else QuantType.QUInt8
    quantize_static(
        str(prep),
        str(out_path),
        BatchReader(calib_batch, input_name),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=settings.granularity == "per-channel",
        activation_type=act,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or None,
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[settings.calibrator]),
        extra_options=options,
    )
    prep.unlink(missing_ok=True)
    notes = [
        f"onnxruntime quantize_static QDQ, activations {'S8' if act == QuantType.QInt8 else 'U8'} per-tensor, weights S8 "
        f"{settings.granularity}, calibration {CALIBRATION_METHODS[settings.calibrator]}"
        + (f" {PERCENTILE}" if settings.calibrator == "percentile" else ""),
    ]
    if exclude:
        notes.append(f"kept float by --ignore: {', '.join(exclude)}")
    return notes


class OnnxRuntimeRecipe:
    name = "onnxruntime"

    def quantize(
        self, fp32_onnx: Path, calib_batch: np.ndarray, settings: QuantSettings, out_dir: Path
    ) -> RecipeOutput:
        out = out_dir / "model_int8_onnxruntime.onnx"
        notes = quantize_with_ort(fp32_onnx, calib_batch, settings, out, symmetric=False)
        return RecipeOutput(qdq_onnx=out, notes=notes)


RECIPE = OnnxRuntimeRecipe()
