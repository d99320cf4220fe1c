"""Read a Q/DQ ONNX back: which nodes are quantized, their zero points and scale shapes, and TensorRT's rules.

A node counts as quantized when its activation input comes out of a DequantizeLinear (and, for Conv, its weight
too); everything else runs in float, and `float_nodes` says why for the ops that could have been INT8.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops that INT8 kernels exist for in every runtime here; the rest (Sigmoid, HardSigmoid, Resize, ...) may stay float.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that move or select INT8 values without arithmetic: a quantized input stays quantized through them (NNCF puts
# Q/DQ before a Concat's inputs, not after it; OpenVINO and TensorRT run the Concat on INT8 tensors).
PASS_THROUGH_OPS = ("Concat", "MaxPool", "Resize", "Reshape", "Transpose", "Slice", "Split", "Identity", "Flatten")


@dataclass
class QuantizerInfo:
    """One QuantizeLinear/DequantizeLinear: what it quantizes, its type, zero points and scale layout."""

    node: str
    op_type: str
    tensor: str  # the float tensor it reads (Q) or writes (DQ)
    dtype: str  # "int8" / "uint8"
    zero_points: list[int]
    scale_shape: tuple[int, ...]
    axis: int | None  # per-axis quantization axis, None when per-tensor
    is_weight: bool  # the quantized tensor is an initializer (a weight)


@dataclass
class GraphReport:
    op_counts: dict[str, int]
    quantizers: list[QuantizerInfo]
    quantized_nodes: dict[str, str]  # node name -> op type, for non-Q/DQ nodes reading dequantized inputs
    float_nodes: dict[str, str]  # weighted node name -> why it stays float
    notes: list[str] = field(default_factory=list)

    @property
    def num_quantized_convs(self) -> int:
        return sum(1 for t in self.quantized_nodes.values() if t == "Conv")

    def to_dict(self) -> dict:
        weights = [q for q in self.quantizers if q.is_weight]
        acts = [q for q in self.quantizers if not q.is_weight and q.op_type == "QuantizeLinear"]
        return {
            "op_counts": self.op_counts,
            "quantized_nodes": len(self.quantized_nodes),
            "quantized_by_op": dict(Counter(self.quantized_nodes.values())),
            "float_weighted_nodes": self.float_nodes,
            "weight_quantizers": len(weights),
            "weight_per_channel": sum(1 for q in weights if q.axis is not None),
            "activation_quantizers": len(acts),
            "activation_dtypes": dict(Counter(q.dtype for q in acts)),
            "weight_dtypes": dict(Counter(q.dtype for q in weights)),
            "nonzero_zero_points": sum(1 for q in self.quantizers if any(z != 0 for z in q.zero_points)),
        }


def _const_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(a.t)
    return arrays


def inspect_qdq(model: onnx.ModelProto) -> GraphReport:
    g = model.graph
    consts = _const_arrays(g)
    producer = {o: n for n in g.node for o in n.output}
    quantizers: list[QuantizerInfo] = []
    for n in g.node:
        if n.op_type not in QDQ_OPS:
            continue
        scale = consts.get(n.input[1])
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        scale_shape = tuple(scale.shape) if scale is not None else ()
        per_axis = len(scale_shape) == 1 and scale_shape[0] > 1
        if n.op_type == "QuantizeLinear":
            tensor, qtensor = n.input[0], n.output[0]
            dtype = str(zp.dtype) if zp is not None else "uint8"
        else:
            tensor, qtensor = n.output[0], n.input[0]
            q = consts.get(qtensor)
            dtype = str(zp.dtype) if zp is not None else (str(q.dtype) if q is not None else "uint8")
        # a weight is an initializer either quantized by a Q (float weight + Q/DQ) or stored as int8 before a DQ
        is_weight = n.input[0] in consts and (n.op_type == "DequantizeLinear" or n.input[0] in consts)
        if n.op_type == "DequantizeLinear" and n.input[0] not in consts:
            src = producer.get(n.input[0])
            is_weight = src is not None and src.op_type == "QuantizeLinear" and src.input[0] in consts
        quantizers.append(
            QuantizerInfo(
                node=n.name,
                op_type=n.op_type,
                tensor=tensor,
                dtype=dtype,
                zero_points=[int(z) for z in np.atleast_1d(zp)] if zp is not None else [0],
                scale_shape=scale_shape,
                axis=(axis if axis is not None else 1) if per_axis else None,
                is_weight=is_weight,
            )
        )
    dq_outputs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    quantized, floating = {}, {}
    for n in g.node:  # nodes are in topological order, so pass-through propagation is one sweep
        if n.op_type in QDQ_OPS or n.op_type == "Constant":
            continue
        data_inputs = [x for x in n.input if x and (x not in consts or x in dq_outputs)]
        if n.op_type in PASS_THROUGH_OPS and data_inputs and all(x in dq_outputs for x in data_inputs[:1]):
            if n.op_type != "Concat" or all(x in dq_outputs for x in data_inputs):
                dq_outputs.update(n.output)
        if n.op_type in WEIGHTED_OPS:
            act_q = n.input[0] in dq_outputs
            w_q = len(n.input) > 1 and n.input[1] in dq_outputs
            if act_q and w_q:
                quantized[n.name] = n.op_type
            else:
                floating[n.name] = "activation not quantized" if w_q else "weight not quantized" if act_q else "no Q/DQ"
        elif data_inputs and all(x in dq_outputs for x in data_inputs):
            quantized[n.name] = n.op_type
    return GraphReport(dict(Counter(n.op_type for n in g.node)), quantizers, quantized, floating)


def tensorrt_rule_violations(model: onnx.ModelProto) -> list[str]:
    """What in a Q/DQ graph TensorRT's explicit quantization would reject or run badly; empty when it obeys.

    Rules: int8 only, zero point 0 (symmetric); weights per output channel (axis 0, one scale per filter);
    activations per tensor; every Conv reads a dequantized activation and weight; residual Add inputs quantized.
    """
    report = inspect_qdq(model)
    g = model.graph
    consts = _const_arrays(g)
    out: list[str] = []
    if not report.quantizers:
        return ["no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantized model"]
    for q in report.quantizers:
        if q.dtype != "int8":
            out.append(f"{q.node}: {q.dtype} (TensorRT needs int8)")
        if any(z != 0 for z in q.zero_points):
            out.append(f"{q.node}: zero point not 0 (TensorRT is symmetric)")
        if q.is_weight and q.op_type == "DequantizeLinear" and q.axis != 0:
            out.append(f"{q.node}: weight scale {q.scale_shape} axis {q.axis} (TensorRT wants per-channel on axis 0)")
        if not q.is_weight and q.axis is not None:
            out.append(f"{q.node}: activation scale {q.scale_shape} is per-axis (TensorRT wants per-tensor)")
    dq_outputs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    for n in g.node:
        if n.op_type == "Conv" and n.name in report.float_nodes:
            out.append(f"{n.name}: Conv {report.float_nodes[n.name]}")
        if n.op_type == "Add" and not all(x in dq_outputs for x in n.input if x not in consts):
            out.append(f"{n.name}: residual Add with a float input (TensorRT cannot fuse it into the conv)")
    return out
