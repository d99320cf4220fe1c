"""ONNX export of the fused model, the optional in-graph NMS tail, and the ONNX rewrites the compilers need.

`export_onnx` writes the raw network (input `images`, outputs named as rtmdet_edge.models.outputs: `cls_score_0..2`,
`bbox_pred_0..2`, ...), or with `nms=NMSConfig(...)` the network
followed by decode + class-aware NMS built from standard ONNX ops, so ONNX Runtime, OpenVINO and TensorRT (whose ONNX
parser maps NonMaxSuppression onto its own INMSLayer) all run the same graph. The NMS variant's outputs are:

    num_dets   int32 [B, 1]           number of valid rows per image
    det_boxes  float [B, max_det, 4]  xyxy in *network-input* (letterboxed) pixels; divide by the scale factor
    det_scores float [B, max_det]     sigmoid scores, descending; 0 in padding rows
    det_labels int32 [B, max_det]     0-based class; -1 in padding rows

It reproduces rtmdet_edge.inference.postprocess (per-level top nms_pre of the (prior, class) pairs, offset-0 priors, clip to the
padded input, drop empty boxes, class-aware NMS with IoU > iou_thr suppressing, keep max_det by score), except that NMS
runs on boxes in input pixels rather than after the rescale to the original image: with the letterbox's nearly
isotropic scale factors this changes IoUs by ~1e-4 relative, so only a pair sitting exactly at the threshold can differ.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.io import atomic_write_with, temp_path_beside
from rtmdet_edge.geometry.boxes import make_priors
from rtmdet_edge.models.outputs import flatten_outputs
from targets import INPUT_NAME

NMS_OUTPUT_NAMES = ("num_dets", "det_boxes", "det_scores", "det_labels")
DEFAULT_OPSET = 17
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class NMSConfig:
    """In-graph post-processing settings; defaults are rtmdet_edge.inference.postprocess.DEPLOY."""

    score_thr: float = 0.3
    iou_thr: float = 0.65
    nms_pre: int = 1000  # per level, before NMS
    max_det: int = 100

    def __post_init__(self) -> None:
        if self.score_thr < 0:
            raise ValueError(f"score_thr must be >= 0 (zero marks dropped candidates), got {self.score_thr}")
        if self.max_det < 1 or self.nms_pre < 1:
            raise ValueError("max_det and nms_pre must be >= 1")

    @classmethod
    def from_postprocess(cls, cfg: Any) -> NMSConfig:
        """From a rtmdet_edge.inference.postprocess.PostprocessConfig (min_bbox_size 0 is what the graph implements)."""
        if getattr(cfg, "min_bbox_size", 0.0) != 0.0:
            raise ValueError("the in-graph NMS implements min_bbox_size=0 (drop empty boxes) only")
        return cls(score_thr=cfg.score_thr, iou_thr=cfg.iou_thr, nms_pre=cfg.nms_pre, max_det=cfg.max_per_img)


class _RawOutputs(nn.Module):
    """The model with a flat tuple output in flatten_outputs order; `names` are what the exporter calls them."""

    def __init__(self, model: nn.Module, sample: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        with torch.inference_mode():
            self.names = tuple(flatten_outputs(model(sample)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = flatten_outputs(self.model(images))
        return tuple(flat[n] for n in self.names)


def deployment_model(model: nn.Module) -> nn.Module:
    """A fused float32 CPU copy in eval mode; the caller's model is left untouched."""
    model = copy.deepcopy(model).float().cpu().eval()
    try:
        from rtmdet_edge.models.fuse import fuse_model
    except ImportError:  # fuse.py not present in this checkout: the unfused graph computes the same thing
        return model
    if not getattr(model, "fused", False):
        fuse_model(model)
    return model


def _hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    return check_imgsz(h), check_imgsz(w)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    imgsz: int | Sequence[int] = 640,
    batch: int = 1,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    nms: NMSConfig | None = None,
    simplify: bool = True,
) -> Path:
    """Write the fused model as ONNX, checked by onnx.checker, simplified by onnxslim when that keeps the outputs.

    Args:
        model: an RTMDet (fused or not; a fused copy is exported).
        imgsz: input size (H, W) or one int; multiples of 32.
        batch: the static batch size (ignored with dynamic=True, where the batch axis is named "batch").
        nms: append decode + class-aware NonMaxSuppression (see the module docstring) when given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = _hw(imgsz)
    dummy = torch.zeros(batch, 3, h, w)
    net = _RawOutputs(deployment_model(model), dummy)
    # The exporter's raw graph goes to a temporary file beside the target, removed whatever happens (it used to be
    # left behind when export failed); the final file is written atomically below.
    tmp = temp_path_beside(path, suffix=".raw.onnx")
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice; onnxscript is not a dependency
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(net.names),
                dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *net.names)} if dynamic else None,
                do_constant_folding=True,
            )
        onnx_model = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    strides = tuple(getattr(model, "strides", (8, 16, 32)))
    if nms is not None:
        append_nms(onnx_model, nms, (h, w), strides)
    onnx.checker.check_model(onnx_model, full_check=True)
    if simplify:
        onnx_model = simplify_onnx(onnx_model, dummy.numpy())
    cfg = getattr(model, "config", None)
    meta = {
        "rtmdet_edge": "1",
        "imgsz": json.dumps([h, w]),
        "strides": json.dumps(list(strides)),
        "num_classes": str(getattr(model, "num_classes", "")),
        "model": getattr(cfg, "name", ""),
        "outputs": "nms" if nms is not None else "raw",
        "precision": "fp32",
    }
    if nms is not None:
        meta["nms"] = json.dumps(asdict(nms))
    set_metadata(onnx_model, meta)
    atomic_write_with(path, lambda tmp_path: onnx.save(onnx_model, str(tmp_path)))  # a kill never leaves half a file
    return path


def set_metadata(onnx_model: onnx.ModelProto, meta: dict[str, str]) -> None:
    old = {p.key: p.value for p in onnx_model.metadata_props}
    old.update(meta)
    del onnx_model.metadata_props[:]
    for k, v in old.items():
        onnx_model.metadata_props.add(key=k, value=v)


def read_metadata(onnx_model: onnx.ModelProto | str | os.PathLike) -> dict[str, str]:
    if not isinstance(onnx_model, onnx.ModelProto):
        onnx_model = onnx.load(str(onnx_model), load_external_data=False)
    return {p.key: p.value for p in onnx_model.metadata_props}


def _ort_outputs(onnx_model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare the graphs as written
    sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x})


def simplify_onnx(onnx_model: onnx.ModelProto, sample: np.ndarray, atol: float = 1e-5) -> onnx.ModelProto:
    """onnxslim, kept only if it passes the checker and its outputs match the unsimplified graph within atol."""
    import onnxslim

    try:
        slim = onnxslim.slim(copy.deepcopy(onnx_model))
        onnx.checker.check_model(slim, full_check=True)
        rng = np.random.default_rng(0)
        x = (sample + rng.standard_normal(sample.shape)).astype(np.float32)
        ref, got = _ort_outputs(onnx_model, x), _ort_outputs(slim, x)
        diff = max(float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) for a, b in zip(ref, got))
        if [o.name for o in slim.graph.output] != [o.name for o in onnx_model.graph.output] or diff > atol:
            raise RuntimeError(f"outputs changed (max abs diff {diff:.3g})")
    except Exception as e:  # a simplifier bug must not cost the export: keep the checked, unsimplified graph
        warnings.warn(f"onnxslim skipped: {e}", stacklevel=2)
        return onnx_model
    return slim


# ----------------------------------------------------------------------------------------------------------------------
# In-graph decode + NMS (plain onnx.helper surgery on the exported graph, so it does not depend on the exporter).


class _Builder:
    """Appends nodes to a graph with unique names."""

    def __init__(self, graph: onnx.GraphProto, prefix: str = "nms") -> None:
        self.graph = graph
        self.prefix = prefix
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, n_out: int = 1, **attrs: Any):
        outs = [self.name(hint or op_type) for _ in range(n_out)]
        self.graph.node.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs


def append_nms(
    onnx_model: onnx.ModelProto, cfg: NMSConfig, input_hw: tuple[int, int], strides: Sequence[int] = (8, 16, 32)
) -> None:
    """Replace the raw outputs of an exported graph by decode + class-aware NMS (outputs NMS_OUTPUT_NAMES), in place.

    Shapes use Reshape's "0 = copy this dim" so a dynamic batch axis stays dynamic.
    """
    g = onnx_model.graph
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in g.output}
    levels = len(strides)
    needed = [f"{prefix}_{i}" for prefix in ("cls_score", "bbox_pred") for i in range(levels)]
    missing = [n for n in needed if n not in shapes]
    if missing:
        raise ValueError(f"graph has no raw outputs {missing}; append_nms needs the export of export_onnx")
    b = _Builder(g)
    h_in, w_in = input_hw
    num_classes = shapes["cls_score_0"][1]
    sizes = [tuple(shapes[f"cls_score_{i}"][2:]) for i in range(levels)]
    priors = make_priors(sizes, strides[:levels])[:, :2].numpy().astype(np.float32)  # [N, 2] (x, y), offset 0
    i64 = lambda *v: np.asarray(v, dtype=np.int64)  # noqa: E731

    scores_per_level, boxes_per_level, start = [], [], 0
    for level, (hl, wl) in enumerate(sizes):
        hw = hl * wl
        cls, reg = f"cls_score_{level}", f"bbox_pred_{level}"
        s = b.op("Sigmoid", [cls])
        s = b.op("Reshape", [s, b.const(i64(0, num_classes, hw))])
        s = b.op("Transpose", [s], perm=[0, 2, 1])  # [B, HW, C]: mmdet's (prior, class) row-major pair order
        s = b.op("Reshape", [s, b.const(i64(0, hw * num_classes))])
        k = min(cfg.nms_pre, hw * num_classes)
        if k < hw * num_classes:  # keep the top nms_pre pairs of this level, zero the rest
            vals, idx = b.op("TopK", [s, b.const(i64(k))], n_out=2, axis=-1, largest=1, sorted=1)
            zeros = b.op("Mul", [s, b.const(np.zeros((), np.float32))])
            s = b.op("ScatterElements", [zeros, idx, vals], axis=1)
        s = b.op("Reshape", [s, b.const(i64(0, hw, num_classes))])
        scores_per_level.append(b.op("Transpose", [s], perm=[0, 2, 1]))  # [B, C, HW]
        d = b.op("Reshape", [reg, b.const(i64(0, 4, hw))])
        d = b.op("Transpose", [d], perm=[0, 2, 1])  # [B, HW, 4] (l, t, r, b)
        p = b.const(priors[None, start : start + hw], "priors")  # [1, HW, 2]
        lt = b.op("Slice", [d, b.const(i64(0)), b.const(i64(2)), b.const(i64(2))])
        rb = b.op("Slice", [d, b.const(i64(2)), b.const(i64(4)), b.const(i64(2))])
        boxes_per_level.append(b.op("Concat", [b.op("Sub", [p, lt]), b.op("Add", [p, rb])], axis=2))
        start += hw
    scores = b.op("Concat", scores_per_level, "scores", axis=2)  # [B, C, N]
    boxes = b.op("Concat", boxes_per_level, axis=1)  # [B, N, 4] xyxy
    # clip to the padded input, as DistancePointBBoxCoder with max_shape=img_shape (= padded shape after mmcv Pad)
    boxes = b.op("Max", [boxes, b.const(np.zeros((), np.float32))])
    boxes = b.op("Min", [boxes, b.const(np.asarray([w_in, h_in, w_in, h_in], np.float32))], "boxes")
    # min_bbox_size=0: boxes with zero width or height (fully clipped) are dropped before NMS
    lo = b.op("Slice", [boxes, b.const(i64(0)), b.const(i64(2)), b.const(i64(2))])
    hi = b.op("Slice", [boxes, b.const(i64(2)), b.const(i64(4)), b.const(i64(2))])
    wh_ok = b.op("Cast", [b.op("Greater", [b.op("Sub", [hi, lo]), b.const(np.zeros((), np.float32))])], to=1)
    valid = b.op("ReduceMin", [wh_ok], axes=[2], keepdims=1)  # [B, N, 1]
    valid = b.op("Transpose", [valid], perm=[0, 2, 1])  # [B, 1, N]
    scores = b.op("Mul", [scores, valid], "scores_valid")
    selected = b.op(
        "NonMaxSuppression",
        [
            boxes,
            scores,
            b.const(i64(cfg.max_det)),
            b.const(np.asarray([cfg.iou_thr], np.float32)),
            b.const(np.asarray([cfg.score_thr], np.float32)),
        ],
        "selected",
        center_point_box=0,
    )  # [K, 3] (batch, class, box)
    picked = b.op("GatherND", [scores, selected])  # [K]
    dense = b.op("ScatterND", [b.op("Mul", [scores, b.const(np.zeros((), np.float32))]), selected, picked])
    num_boxes = priors.shape[0]
    flat = b.op("Reshape", [dense, b.const(i64(0, num_classes * num_boxes))])  # [B, C*N], class-major
    k = min(cfg.max_det, num_classes * num_boxes)
    top_scores, top_idx = b.op("TopK", [flat, b.const(i64(k))], n_out=2, axis=-1, largest=1, sorted=1)
    keep = b.op("Greater", [top_scores, b.const(np.zeros((), np.float32))])  # [B, k] bool
    labels = b.op("Div", [top_idx, b.const(np.asarray(num_boxes, np.int64))])
    box_idx = b.op("Mod", [top_idx, b.const(np.asarray(num_boxes, np.int64))])
    det_boxes = b.op("GatherND", [boxes, b.op("Unsqueeze", [box_idx, b.const(i64(-1))])], batch_dims=1)
    keep_f = b.op("Cast", [keep], to=1)
    det_boxes = b.op("Mul", [det_boxes, b.op("Unsqueeze", [keep_f, b.const(i64(-1))])])
    det_scores = b.op("Mul", [top_scores, keep_f])
    det_labels = b.op("Where", [keep, labels, b.const(np.asarray(-1, np.int64))])
    num_dets = b.op("ReduceSum", [b.op("Cast", [keep], to=TensorProto.INT64), b.const(i64(1))], keepdims=1)

    finals = {
        "num_dets": (b.op("Cast", [num_dets], to=TensorProto.INT32), TensorProto.INT32, ["batch", 1]),
        "det_boxes": (det_boxes, TensorProto.FLOAT, ["batch", k, 4]),
        "det_scores": (det_scores, TensorProto.FLOAT, ["batch", k]),
        "det_labels": (b.op("Cast", [det_labels], to=TensorProto.INT32), TensorProto.INT32, ["batch", k]),
    }
    batch_dim = g.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_param or batch_dim.dim_value
    del g.output[:]
    for name, (src, dtype, shape) in finals.items():
        g.node.append(helper.make_node("Identity", [src], [name], name=b.name(f"out_{name}")))
        g.output.append(helper.make_tensor_value_info(name, dtype, [batch if d == "batch" else d for d in shape]))


def nms_outputs_to_detections(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> list:
    """NMS-graph outputs {NMS_OUTPUT_NAMES: array} -> one Detections per image in original-image pixels."""
    from rtmdet_edge.inference.postprocess import Detections

    num, boxes, scores, labels = (np.asarray(outputs[name]) for name in NMS_OUTPUT_NAMES)
    out = []
    for i, meta in enumerate(metas):
        n = int(num[i].reshape(-1)[0])
        w_scale, h_scale = meta.scale_factor
        scale = np.asarray([w_scale, h_scale, w_scale, h_scale], np.float32)
        out.append(
            Detections(
                torch.from_numpy(boxes[i, :n].astype(np.float32) / scale),
                torch.from_numpy(scores[i, :n].astype(np.float32)),
                torch.from_numpy(labels[i, :n].astype(np.int64)),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Rewrites for strongly typed compilers (TensorRT 10/11): FP16 by casting the graph, INT8 only from explicit Q/DQ.

# Inputs that ONNX defines as float32 only, whatever the data type of the rest of the node.
_FLOAT32_ONLY_INPUTS = {"Resize": (1, 2), "NonMaxSuppression": (0, 1, 3, 4), "Upsample": (1,)}


def rebatch_onnx(src: str | os.PathLike, dst: str | os.PathLike, batch: int) -> Path:
    """A copy of a static-batch ONNX file with batch `batch` on its image input and its outputs (e.g. a batch-1 Q/DQ
    model from `quantize`, timed at the throughput batch). The intermediate shapes are dropped for the runtime to infer
    again; a graph that bakes its batch into a constant (a Reshape to [1, ...]) fails shape inference here, so the
    caller learns it before timing anything."""
    model = onnx.load(str(src))
    initializers = {t.name for t in model.graph.initializer}
    for value in [*(i for i in model.graph.input if i.name not in initializers), *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            raise UserError(f"{Path(src).name}: {value.name} has no shape to re-batch")
        dims[0].Clear()
        dims[0].dim_value = batch
    del model.graph.value_info[:]
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as e:
        raise UserError(f"{Path(src).name} cannot run at batch {batch}: {str(e).splitlines()[0]}") from None
    return atomic_write_with(dst, lambda tmp: onnx.save(model, str(tmp)))


def has_qdq(onnx_model: onnx.ModelProto) -> bool:
    """True when the graph carries explicit QuantizeLinear/DequantizeLinear nodes (an explicitly quantized model)."""
    return any(n.op_type in QDQ_OPS for n in onnx_model.graph.node)


def read_onnx_graph(path: Path, option: str) -> onnx.ModelProto:
    """The ONNX model a command option names (without external data), or one UserError saying what is wrong."""
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as e:
        raise UserError(f"{option} {path} is not a readable ONNX model ({str(e).splitlines()[0] if str(e) else e})")


def is_quantized(onnx_model: onnx.ModelProto) -> bool:
    """True for an INT8 graph in either ONNX form: Q/DQ nodes (what `quantize` writes) or ONNX Runtime's operator
    format (QLinearConv, ConvInteger, ...). TensorRT needs the first (has_qdq); naming and checking an INT8 file
    accept both."""
    ops = {n.op_type for n in onnx_model.graph.node}
    return bool(ops & {*QDQ_OPS, "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}) or any(
        op.startswith("QLinear") for op in ops
    )


def convert_onnx_to_fp16(onnx_model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every float32 tensor in float16, keeping float32 graph inputs and outputs.

    For a strongly typed TensorRT network the ONNX types *are* the precision: initializers and constants become
    float16, Cast(to=float) becomes Cast(to=float16), a Cast at the input and before each float output keeps the
    interface in float32, and the few inputs ONNX defines as float32-only (Resize scales, NMS boxes/scores and
    thresholds) get a Cast back to float32.

    Why not a library: both converters were tried on this graph (rtmdet-tiny raw and NMS exports, 2026-11) and
    neither output loads. onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) (ORT 1.31)
    writes duplicate node names (`/model/neck/Constant_output_0_cast_to_fp32_node`, one per consumer of a shared
    constant) and puts the input Cast after its consumers (not topologically sorted); onnxconverter-common 1.16
    leaves the neck's Resize output float32 beside float16 inputs of the following Concat (a type error).
    """
    m = copy.deepcopy(onnx_model)
    g = m.graph
    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    if any(n.op_type in QDQ_OPS for n in g.node):
        raise UserError("the ONNX already holds Q/DQ nodes (INT8); build it with precision int8, not fp16")

    def to_half(t: onnx.TensorProto) -> onnx.TensorProto:
        arr = numpy_helper.to_array(t)
        with np.errstate(over="ignore"):
            half = np.clip(arr, -65504, 65504).astype(np.float16)
        return numpy_helper.from_array(half, t.name)

    f32_slots = {
        (n, idx): node.input[idx]
        for n, node in enumerate(g.node)
        for idx in _FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        if idx < len(node.input) and node.input[idx]
    }
    other_uses = {x for n, node in enumerate(g.node) for i, x in enumerate(node.input) if (n, i) not in f32_slots}
    keep32 = {name for name in f32_slots.values() if name not in other_uses}  # e.g. NMS thresholds stay exact
    for i, init in enumerate(g.initializer):
        if init.data_type == f32 and init.name not in keep32:
            g.initializer[i].CopyFrom(to_half(init))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f32:
                attr.t.CopyFrom(to_half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                attr.i = f16
    new_nodes = []
    float_inputs = [i for i in g.input if i.type.tensor_type.elem_type == f32]
    for inp in float_inputs:  # graph input stays float32; consumers read a float16 copy
        cast_name = f"{inp.name}_fp16"
        for node in g.node:
            node.input[:] = [cast_name if x == inp.name else x for x in node.input]
        new_nodes.append(helper.make_node("Cast", [inp.name], [cast_name], name=f"cast_in/{inp.name}", to=f16))
    for node in g.node:
        for idx in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx] and node.input[idx] not in keep32:
                src = node.input[idx]
                cast_name = f"{src}_fp32_for_{node.name or node.op_type}_{idx}"
                new_nodes.append(helper.make_node("Cast", [src], [cast_name], name=f"cast32/{cast_name}", to=f32))
                node.input[idx] = cast_name
        new_nodes.append(node)
    if any(n.op_type == "NonMaxSuppression" for n in g.node):
        warnings.warn("NMS inputs are cast back to float32 (ONNX NonMaxSuppression is float32-only)", stacklevel=2)
    for out in g.output:
        if out.type.tensor_type.elem_type != f32:
            continue
        half_name = f"{out.name}_fp16"
        for node in new_nodes:
            node.output[:] = [half_name if x == out.name else x for x in node.output]
            node.input[:] = [half_name if x == out.name else x for x in node.input]
        new_nodes.append(helper.make_node("Cast", [half_name], [out.name], name=f"cast_out/{out.name}", to=f32))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale float32 annotations; shape inference below redoes them
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    set_metadata(m, {"precision": "fp16"})
    onnx.checker.check_model(m, full_check=True)
    return m
