"""INT8 quantization as functions applied to a model (STYLE.md rule 11), never flags inside blocks.

    from quant import ptq, QuantSettings, load_calibration
    calib = load_calibration("synthetic", None, count=64, imgsz=640)
    result = ptq(model, calib, recipe="nncf", settings=QuantSettings(calibrator="minmax"), out_dir="runs/q")
    result.qdq_onnx, result.openvino_xml, result.summary

QAT: `quant.qat.prepare(model, calib)` returns the model with fake quantization inserted; train it with the normal
training step (rtmdet_edge.training.engine.train_one_epoch), then `quant.qat.export_qdq_onnx`.
"""

from quant.calibration import CalibrationSet, load_calibration
from quant.ptq import PTQResult, default_int8_artifact, ptq
from quant.settings import QuantSettings

__all__ = ["CalibrationSet", "PTQResult", "QuantSettings", "default_int8_artifact", "load_calibration", "ptq"]
