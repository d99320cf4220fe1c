"""TensorRT recipe: the explicit-quantization ONNX that TensorRT 10/11 builds an INT8 engine from.

TensorRT's rules (QUANT_NOTES.md section 5): symmetric INT8 only (zero point 0), weights per output channel (axis 0 of
a Conv weight), activations per tensor, Q/DQ on the inputs of Conv and of residual Add (so the Add fuses into the
conv epilogue), outputs left to TensorRT's fusions. NVIDIA's ModelOpt (`modelopt.onnx.quantization`) is the tool made
for this, but `nvidia-modelopt[onnx]` would replace this environment's onnxruntime 1.31 with onnxruntime-gpu 1.22 and
pull cupy/CUDA wheels, so this recipe uses ONNX Runtime's quantizer (calibrating on the CPU) with symmetric settings
and the same placement; tests check the rules on the written graph (tests/test_quant_graph.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quant.recipes import RecipeOutput
from quant.recipes.onnxruntime import quantize_with_ort
from quant.settings import QuantSettings
from rtmdet_edge.errors import UserError

# Q/DQ goes on the inputs of these ops; their outputs stay float (TensorRT fuses SiLU and the next Q into the conv).
OP_TYPES = ["Conv", "Add"]


class TensorRTRecipe:
    name = "tensorrt"

    def quantize(
        self, fp32_onnx: Path, calib_batch: np.ndarray, settings: QuantSettings, out_dir: Path
    ) -> RecipeOutput:
        if settings.granularity != "per-channel":
            raise UserError(
                "--recipe tensorrt quantizes weights per output channel (TensorRT's rule for Conv); "
                "per-tensor weights lose depth-wise convs, drop --granularity per-tensor"
            )
        out = out_dir / "model_int8_tensorrt.onnx"
        output = quantize_with_ort(
            fp32_onnx,
            calib_batch,
            settings,
            out,
            symmetric=True,
            op_types=OP_TYPES,
            extra_options={
                "OpTypesToExcludeOutputQuantization": OP_TYPES,
                "QDQKeepRemovableActivations": True,
                "AddQDQPairToWeight": False,
                "QuantizeBias": False,  # TensorRT takes float biases; it folds them into the INT8 conv itself
            },
        )
        output.notes.append("TensorRT placement: symmetric S8 (zero point 0), Q/DQ on Conv and Add inputs only")
        return output


RECIPE = TensorRTRecipe()
