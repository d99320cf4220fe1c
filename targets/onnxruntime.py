"""ONNX Runtime backend: CPU, plus the CUDA and TensorRT execution providers when the installed build has them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtmdet_edge.errors import UserError

# Preference order when providers=None; only those present in the installed onnxruntime build are used.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        msg = f"the onnxruntime backend needs the onnxruntime package ({e}); pip install onnxruntime"
        raise UserError(msg) from None
    return onnxruntime


def available_providers() -> list[str]:
    return list(_import_ort().get_available_providers())


def available(precision: str) -> str | None:
    """None when ONNX Runtime can run `precision` here, else why not (int8 also needs a Q/DQ ONNX file)."""
    try:
        have = available_providers()
    except UserError:
        return "not installed (pip install onnxruntime)"
    gpu = any(p in have for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    if precision in ("fp16", "bf16") and not gpu:
        return (
            f"the CPU execution provider has no {precision} kernels for this graph's convolutions (it would only "
            f"add casts around fp32 kernels); {precision} needs the CUDA or TensorRT execution provider"
        )
    if precision not in ("fp32", "fp16", "bf16", "int8"):
        return f"unknown precision {precision!r}"
    return None


class OrtBackend:
    """Runs an .onnx file. `__call__` feeds one float32 batch and returns {output name: array}.

    The session, the feed dict and the output names are built once; a call is one `session.run`.

    Args:
        spin_after_run: let intra-op threads keep busy-waiting for work after `session.run` returned (ORT's
            default). Off here (`session.force_spinning_stop`): a detector post-processes right after the network on
            the same cores, and pool threads still spinning took CPU time from it. Spinning *during* a run stays on
            (turning it off, `session.intra_op.allow_spinning=0`, makes every parallel op wake sleeping threads).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        optimization: str = "all",
        spin_after_run: bool = False,
    ) -> None:
        ort = _import_ort()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}")
        have = ort.get_available_providers()
        if providers is None:
            providers = [p for p in _PREFERRED if p in have]
        missing = [p for p in providers if p not in have]
        if missing:
            raise UserError(f"onnxruntime providers {missing} are not in this build (available: {', '.join(have)})")
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        opts.add_session_config_entry("session.force_spinning_stop", "0" if spin_after_run else "1")
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=list(providers))
        except Exception as e:  # ORT raises its own exception types for corrupt or unsupported files
            raise UserError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        self.path = path
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        meta = self.session.get_modelmeta().custom_metadata_map
        self.precision = meta.get("precision", "int8" if _is_qdq(path) else "fp32")
        self.has_nms = meta.get("outputs") == "nms"
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        self._names = list(self.output_names)
        self._feed: dict[str, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._feed[self.input_name] = batch
        return dict(zip(self.output_names, self.session.run(self._names, self._feed)))

    def __repr__(self) -> str:
        return f"OrtBackend({self.path.name}, {self.precision}, providers={self.providers})"


def _is_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
