"""ONNX Runtime recipe: `quant_pre_process` + `quantize_static` (QDQ) over the project's own pre-processing.

Defaults follow what runs fast on an x86 CPU: U8 activations (asymmetric) with S8 per-channel weights. S8S8 QDQ
graphs run ~2x *slower* than FP32 in ONNX Runtime 1.31 here (QUANT_NOTES.md section 9: ORT's x86 int8 kernels are U8S8,
so S8 activations fall back to slower paths), which is why `activation_type` defaults to u8 for this recipe only.
Two more choices follow ONNX Runtime's x86 kernels: the convs it runs slower in INT8 than in float stay float
(`slow_int8_convs`; `--int8-everywhere` quantizes them), and Concat inputs share the output's scale so QLinearConcat
copies them (`share_concat_scales`). README "INT8 speed" has the measurements behind both.
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
# A k x k conv with fewer output channels than this runs slower as INT8 than as float on ONNX Runtime's x86 CPU
# provider (rtmdet-tiny's 12-channel stem convs: benchmarks/int8_speed.py, "Convs the onnxruntime recipe keeps float").
MIN_INT8_OUT_CHANNELS = 16


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


def slow_int8_convs(model: onnx.ModelProto) -> dict[str, str]:
    """Conv name -> why its INT8 kernel on ONNX Runtime's x86 CPU provider is slower than its float one.

    Depth-wise convs: MLAS's INT8 depth-wise kernel loses to its float NCHWc one at every width measured on rtmdet-tiny
    (1.1x-7x slower, worst at 24 channels). k x k convs with few output channels (the 12-channel stem): 1.5x-2.9x.
    Keeping them float costs a Q/DQ pair each and makes the whole model faster (README "INT8 speed").
    """
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    slow: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in weights:
            continue
        out_ch, _, *kernel = weights[n.input[1]]
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if group > 1:
            slow[n.name] = "depth-wise conv: ONNX Runtime's x86 INT8 depth-wise kernel is slower than its float one"
        elif out_ch < MIN_INT8_OUT_CHANNELS and int(np.prod(kernel)) > 1:
            slow[n.name] = (
                f"{out_ch} output channels: ONNX Runtime's x86 INT8 kernel is slower than float below "
                f"{MIN_INT8_OUT_CHANNELS}"
            )
    return slow


# Activations that follow a conv inside one ConvModule (SiLU is Sigmoid + Mul once exported).
ACTIVATION_OPS = ("Sigmoid", "Mul", "Relu", "LeakyRelu", "HardSwish", "HardSigmoid", "Clip")


def with_activations(model: onnx.ModelProto, convs: list[str]) -> list[str]:
    """The convs plus the activation nodes that read only their outputs (e.g. SiLU's Sigmoid and Mul).

    A conv kept float must also keep its activation float: when the activation is quantized, the conv's output gets
    a Q/DQ pair, and ONNX Runtime's optimizer (WeightBiasQuantization) then quantizes the float weight itself and runs
    the conv as QLinearConv after all."""
    by_name = {n.name: n for n in model.graph.node}
    out = list(convs)
    for conv in convs:
        produced = set(by_name[conv].output)
        for n in model.graph.node:
            if n.op_type in ACTIVATION_OPS and n.input and all(x in produced for x in n.input if x):
                produced.update(n.output)
                out.append(n.name)
    return out


def share_concat_scales(model: onnx.ModelProto) -> list[str]:
    """Quantize each Concat input straight to the Concat output's scale and zero point; returns the Concats changed.

    ONNX Runtime's QLinearConcat copies an input whose scale and zero point equal the output's and requantizes any
    other through a lookup table, byte by byte. ORT's quantizer calibrates every tensor on its own, so every CSP
    block's Concat paid that pass. Under min-max calibration the output range is the union of the input ranges, so
    one rounding to the output's grid replaces the two roundings (input grid, then the table): no precision is lost.
    Only a Q/DQ pair that feeds this Concat alone is changed, and never one behind a MaxPool/Resize (those run on
    INT8 only while their input and output share a scale).
    """
    from quant.graph import PASS_THROUGH_OPS

    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    changed = []
    for concat in (n for n in model.graph.node if n.op_type == "Concat"):
        after = consumers.get(concat.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        out_params = list(after[0].input[1:3])
        rewired = False
        for x in concat.input:
            dq = producer.get(x)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            source = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if q is None or len(consumers.get(x, [])) != 1 or len(consumers.get(q.output[0], [])) != 1:
                continue
            if source is None or source.op_type in PASS_THROUGH_OPS or list(q.input[1:3]) == out_params:
                continue
            for node in (q, dq):
                node.input[1:3] = out_params
            rewired = True
        if rewired:
            changed.append(concat.name)
    used = {x for n in model.graph.node for x in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for t in unused:
        model.graph.initializer.remove(t)
    return changed


def quantize_with_ort(
    fp32_onnx: Path,
    calib_batch: np.ndarray,
    settings: QuantSettings,
    out_path: Path,
    *,
    symmetric: bool,
    op_types: list[str] | None = None,
    extra_options: dict | None = None,
    float_slow_convs: bool = False,
    share_concat: bool = False,
) -> RecipeOutput:
    """Pre-process, calibrate and write a QDQ ONNX, with notes on the choices made and why convs stayed float.

    float_slow_convs: keep float the convs `slow_int8_convs` names (on top of settings.ignore).
    share_concat: give Concat inputs the output's scale (`share_concat_scales`)."""
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
    reasons = dict.fromkeys(exclude, "kept float by --ignore")
    if float_slow_convs:
        reasons |= {k: v for k, v in slow_int8_convs(model).items() if k not in reasons}
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
        nodes_to_exclude=with_activations(model, list(reasons)) or None,
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[settings.calibrator]),
        extra_options=options,
    )
    prep.unlink(missing_ok=True)
    shared = []
    if share_concat:
        qdq = onnx.load(str(out_path))
        shared = share_concat_scales(qdq)
        onnx.save(qdq, str(out_path))
    notes = [
        f"onnxruntime quantize_static QDQ, activations {'S8' if act == QuantType.QInt8 else 'U8'} per-tensor, weights S8 "
        f"{settings.granularity}, calibration {CALIBRATION_METHODS[settings.calibrator]}"
        + (f" {PERCENTILE}" if settings.calibrator == "percentile" else ""),
    ]
    if exclude:
        notes.append(f"kept float by --ignore: {', '.join(exclude)}")
    if len(reasons) > len(exclude):
        notes.append(
            f"kept float because ONNX Runtime runs them slower in INT8 than in float on x86 (--int8-everywhere "
            f"quantizes them): {', '.join(k for k in reasons if k not in exclude)}"
        )
    if shared:
        notes.append(
            f"{len(shared)} Concats take their inputs on the output's scale (ONNX Runtime then copies instead of "
            "requantizing each input)"
        )
    return RecipeOutput(qdq_onnx=out_path, notes=notes, float_reasons=reasons)


class OnnxRuntimeRecipe:
    name = "onnxruntime"

    def quantize(
        self, fp32_onnx: Path, calib_batch: np.ndarray, settings: QuantSettings, out_dir: Path
    ) -> RecipeOutput:
        out = out_dir / "model_int8_onnxruntime.onnx"
        return quantize_with_ort(
            fp32_onnx,
            calib_batch,
            settings,
            out,
            symmetric=False,
            float_slow_convs=settings.float_slow_convs,
            share_concat=True,
        )


RECIPE = OnnxRuntimeRecipe()
