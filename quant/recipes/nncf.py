"""NNCF recipe: `nncf.quantize` on the OpenVINO model (-> INT8 IR) and on the ONNX model (-> Q/DQ ONNX).

Both runs share one setting: preset (mixed = symmetric weights + asymmetric activations, the accurate choice for SiLU
outputs; performance = all symmetric), subset size = the calibration images given, fast or full bias correction,
the range estimator mapped from the calibrator, and an IgnoredScope for what must stay float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from quant.recipes import RecipeOutput
from quant.recipes.onnxruntime import match_nodes
from quant.settings import QuantSettings
from rtmdet_edge.errors import UserError

# Project calibrator -> NNCF activation range estimator. HISTOGRAM is NNCF's port of the HistogramObserver, whose
# search minimises the L2 (MSE) quantization error; NNCF has no KL-entropy estimator.
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM"}


def nncf_parameters(settings: QuantSettings, num_images: int, names: list[str]) -> dict:
    """Keyword arguments for nncf.quantize (without model and dataset)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if settings.calibrator not in RANGE_ESTIMATORS:
        raise UserError(
            f"NNCF has no {settings.calibrator} range estimator; choose one of {', '.join(RANGE_ESTIMATORS)} "
            "(or --recipe onnxruntime for entropy)"
        )
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[settings.calibrator]),
        weights_quantization_params=QuantizationParameters(per_channel=settings.granularity == "per-channel"),
        disable_bias_correction=settings.bias_correction == "none",
    )
    return dict(
        preset=nncf.QuantizationPreset.MIXED if settings.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU,
        subset_size=num_images,
        fast_bias_correction=settings.bias_correction != "full",
        ignored_scope=nncf.IgnoredScope(names=names) if names else None,
        advanced_parameters=advanced,
    )


class NNCFRecipe:
    name = "nncf"

    def quantize(
        self, fp32_onnx: Path, calib_batch: np.ndarray, settings: QuantSettings, out_dir: Path
    ) -> RecipeOutput:
        import nncf
        import openvino as ov

        fp32 = onnx.load(str(fp32_onnx))
        ignored = match_nodes(fp32, settings.ignore)
        samples = [calib_batch[i : i + 1] for i in range(len(calib_batch))]
        kwargs = nncf_parameters(settings, len(samples), ignored)

        # ONNX backend: NNCF calibrates through ONNX Runtime and writes QuantizeLinear/DequantizeLinear pairs.
        input_name = fp32.graph.input[0].name
        q_onnx = nncf.quantize(fp32, nncf.Dataset(samples, lambda x: {input_name: x}), **kwargs)
        onnx_path = out_dir / "model_int8_nncf.onnx"
        onnx.save(q_onnx, str(onnx_path))

        # OpenVINO backend: the IR gets FakeQuantize ops that the CPU plugin runs as INT8 kernels. Node names carry
        # over from ONNX, so the same ignored names apply.
        ov_model = ov.convert_model(str(fp32_onnx))
        q_ov = nncf.quantize(ov_model, nncf.Dataset(samples), **kwargs)
        xml = out_dir / "model_int8_nncf.xml"
        ov.save_model(q_ov, str(xml), compress_to_fp16=False)
        notes = [
            f"nncf.quantize preset {settings.preset}, range estimator {RANGE_ESTIMATORS[settings.calibrator]}, "
            f"weights {settings.granularity}, bias correction {settings.bias_correction}, subset {len(samples)}",
        ]
        if ignored:
            notes.append(f"kept float by --ignore (IgnoredScope): {', '.join(ignored)}")
        return RecipeOutput(qdq_onnx=onnx_path, openvino_xml=xml, notes=notes)


RECIPE = NNCFRecipe()
