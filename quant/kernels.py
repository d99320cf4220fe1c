"""Do the convolutions really run as INT8 kernels? Ask each runtime, not the graph.

OpenVINO: the compiled model's runtime graph reports every executed layer's `runtimePrecision` (u8/i8 = an INT8
kernel). ONNX Runtime: the optimized graph it actually runs (SessionOptions.optimized_model_filepath) holds
QLinearConv / ConvInteger for INT8 convolutions and Conv / FusedConv for float ones. ONNX Runtime's CPU provider
fuses DQ -> Conv -> Q into QLinearConv only when the conv's *output* is quantized too; a graph with Q/DQ on conv
inputs only (the TensorRT placement, NNCF's) runs dequantize + float conv on ORT.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

INT8_PRECISIONS = ("u8", "i8")
ORT_INT8_CONV_OPS = ("QLinearConv", "ConvInteger")
ORT_FLOAT_CONV_OPS = ("Conv", "FusedConv", "NchwcConv")


# The x86 features that decide how much INT8 gains over float (VNNI: one instruction for a u8 x s8 dot product).
X86_INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # AMX-INT8 CPUs have AVX512-VNNI too


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """This CPU's X86_INT8_FLAGS, from /proc/cpuinfo (empty off Linux x86 or when it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    line = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in X86_INT8_FLAGS if f in have]


def int8_cpu_note(flags: list[str]) -> str:
    """What these CPU flags mean for CPU INT8 speed, in one sentence (README "INT8 speed" has the measurements)."""
    if any(f in flags for f in VNNI_FLAGS):
        kind = "AMX-INT8 and VNNI" if "amx_int8" in flags else "VNNI"
        return (f"{kind}: INT8 dot products are one instruction here, so INT8 convolutions run at about a third of "
                "their float time (README, INT8 speed)")  # fmt: skip
    if "avx2" in flags:
        return ("no VNNI (AVX2 only): INT8 dot products take three instructions here, so INT8 convolutions run at "
                "only about 0.6x of their float time and the whole model gains far less than on a CPU with "
                "AVX512-VNNI or AVX-VNNI (README, INT8 speed)")  # fmt: skip
    return "INT8 features of this CPU unknown (not an x86 Linux machine, or /proc/cpuinfo unreadable)"


def cpu_int8_features() -> dict:
    """{"cpu", "flags", "vnni", "note"}: recorded in every quantization summary, because the same INT8 model gains
    about twice as much over float on a CPU with VNNI as on one without (README, INT8 speed). vnni is None where the
    flags are unknown."""
    from targets.latency import cpu_name

    flags = cpu_flags()
    vnni = any(f in flags for f in VNNI_FLAGS) if flags else None
    return {"cpu": cpu_name(), "flags": flags, "vnni": vnni, "note": int8_cpu_note(flags)}


@dataclass
class KernelReport:
    runtime: str
    int8_convs: int
    float_convs: int
    float_conv_names: list[str] = field(default_factory=list)
    why_float: str = ""
    other_float_layers: dict[str, int] = field(default_factory=dict)  # layer type -> count of float layers

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "int8_convs": self.int8_convs,
            "float_convs": self.float_convs,
            "float_conv_names": self.float_conv_names,
            "why_float": self.why_float,
            "other_float_layers": self.other_float_layers,
        }


def openvino_kernels(path: str | os.PathLike, num_threads: int = 1) -> KernelReport:
    """Per-layer execution precision of a compiled OpenVINO model (IR or ONNX) on the CPU plugin."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path), "CPU", {"INFERENCE_NUM_THREADS": num_threads, "INFERENCE_PRECISION_HINT": "f32"}
    )
    int8, floating, others = 0, [], Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        if layer in ("Const", "Input", "Output", "Reorder", "Reshape"):
            continue
        if layer == "Convolution":
            if precision in INT8_PRECISIONS:
                int8 += 1
            else:
                floating.append(
                    info["originalLayersNames"].astype(str) if "originalLayersNames" in info else op.get_friendly_name()
                )
        elif precision not in INT8_PRECISIONS:
            others[layer] += 1
    why = (
        "no FakeQuantize on the input, or OpenVINO could not propagate one through the preceding ops"
        if floating
        else ""
    )
    return KernelReport("openvino", int8, len(floating), floating, why, dict(others))


def onnxruntime_kernels(path: str | os.PathLike) -> KernelReport:
    """Kernels of the graph ONNX Runtime's CPU provider runs after its optimisations (extended level: the QDQ fusions)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        # EXTENDED already applies every QDQ -> QLinear* fusion; ALL adds layout rewrites the saved file can't express
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    counts = Counter(n.op_type for n in optimized.graph.node)
    float_convs = [n.name for n in optimized.graph.node if n.op_type in ORT_FLOAT_CONV_OPS]
    why = (
        "ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv only when the conv output is quantized; these convs run "
        "dequantize + float conv"
        if float_convs
        else ""
    )
    others = {
        op: c
        for op, c in counts.items()
        if not op.startswith("QLinear")
        and op not in (*ORT_FLOAT_CONV_OPS, *ORT_INT8_CONV_OPS, "QuantizeLinear", "DequantizeLinear")
    }
    return KernelReport(
        "onnxruntime", sum(counts[op] for op in ORT_INT8_CONV_OPS), len(float_convs), float_convs, why, others
    )


def conv_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Conv node name -> kind ("dw5x5", "full3x3", "full1x1", ...), reading the weight through a DequantizeLinear."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    kinds = {}
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = inits.get(n.input[1])
        if w is None and n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear":
            w = inits.get(producer[n.input[1]].input[0])
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if w is not None and len(w.dims) == 4:
            kinds[n.name] = f"{'dw' if group > 1 and w.dims[1] == 1 else 'full'}{w.dims[2]}x{w.dims[3]}"
    return kinds


def onnxruntime_time_by_node(path: str | os.PathLike, x, threads: int = 2, runs: int = 10) -> dict[str, tuple[str, float]]:
    """Node name (as ONNX Runtime runs it, after its fusions) -> (op type, milliseconds per run), from its profiler."""
    import json

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x})  # warm-up outside the profile
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sess.run(None, {name: x})
        sess.end_profiling()  # the first profiled run carries the session's warm-up; restart the count below
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    out: dict[str, tuple[str, float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            op, ms = out.get(node, (e["args"]["op_name"], 0.0))
            out[node] = (op, ms + e["dur"] / 1e3 / runs)
    return out


def onnxruntime_times(
    path: str | os.PathLike, x, threads: int = 2, runs: int = 10
) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per run from one profile of ONNX Runtime: (by kernel, by conv). By kernel: convolutions (float or
    INT8) grouped by kind (depth-wise / full, kernel size), every other op by its type, which shows *which* layers
    INT8 speeds up on this CPU. By conv: each of the graph's convs under its original name."""
    kinds = conv_kinds(onnx.load(str(path)))
    by_kind: Counter = Counter()
    by_conv: Counter = Counter()
    for node, (op, ms) in onnxruntime_time_by_node(path, x, threads, runs).items():
        if op in (*ORT_FLOAT_CONV_OPS, *ORT_INT8_CONV_OPS):
            conv = _original_conv(node, kinds)
            by_conv[conv] += ms
            op = f"conv {kinds.get(conv, 'other')}"
        by_kind[op] += ms
    return dict(by_kind.most_common()), dict(by_conv)


def _original_conv(node: str, kinds: dict[str, str]) -> str:
    """The graph's conv a runtime node ran: fused nodes keep the original name as a prefix ("<conv>_token_12")."""
    return node if node in kinds else next((n for n in kinds if node.startswith(n)), node)
