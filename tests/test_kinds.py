"""Model kinds at inference time: read from configs or output names, and the presets each kind uses."""

from __future__ import annotations

import numpy as np

from rtmdet_edge import build_model
from rtmdet_edge.inference import rotated_postprocess
from rtmdet_edge.inference.detector import Detector
from rtmdet_edge.inference.kinds import kind_config, kind_from_names, model_kind
from rtmdet_edge.inference.postprocess import DEPLOY, OFFICIAL, PostprocessConfig
from rtmdet_edge.inference.postprocess_ins import INS_DEPLOY, INS_OFFICIAL
from rtmdet_edge.models.outputs import flatten_outputs


class _FileBackend:
    """What a model file gives a Detector: output names, no config (as ONNX Runtime / OpenVINO backends)."""

    name, precision, has_nms = "onnxruntime", "fp32", False
    input_shape = (1, 3, 64, 64)

    def __init__(self, model) -> None:
        import torch

        with torch.inference_mode():
            self.outputs = {k: v.numpy() for k, v in flatten_outputs(model.eval()(torch.zeros(1, 3, 64, 64))).items()}
        self.output_names = tuple(self.outputs)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.outputs


def test_kind_from_output_names_and_configs():
    assert kind_from_names(["cls_score_0", "bbox_pred_0"]) == "det"
    assert kind_from_names(["cls_score_0", "bbox_pred_0", "kernel_pred_0", "mask_feat"]) == "ins"
    assert kind_from_names(["cls_score_0", "bbox_pred_0", "angle_pred_0"]) == "rot"
    assert model_kind(build_model("rtmdet-r-tiny", num_classes=2)) == "rot"
    assert model_kind(object()) == "det"


def test_presets_map_to_the_kind_and_custom_configs_stay():
    assert kind_config("ins", OFFICIAL) == INS_OFFICIAL and kind_config("ins", DEPLOY) == INS_DEPLOY
    assert kind_config("rot", OFFICIAL) == rotated_postprocess.OFFICIAL
    assert kind_config("det", DEPLOY) == DEPLOY
    custom = PostprocessConfig(score_thr=0.2, nms_pre=10, iou_thr=0.5, max_per_img=5)
    assert kind_config("rot", custom) == custom


def test_detector_on_a_model_file_backend_knows_it_is_rotated():
    """A Detector built from a backend (no PyTorch config) reads the kind from its output names: RTMDet-R gets
    rotated boxes and mmrotate's test settings, as the same Detector on the PyTorch model does."""
    model = build_model("rtmdet-r-tiny", num_classes=2)
    det = Detector(_FileBackend(model), imgsz=64, postprocess="official")
    assert det.kind == "rot" and det.rotated and det.post_cfg == rotated_postprocess.OFFICIAL
    result = det(np.zeros((64, 64, 3), np.uint8))
    assert result.boxes.shape[1:] == (5,)
    ins = Detector(_FileBackend(build_model("rtmdet-ins-tiny", num_classes=2)), imgsz=64)
    assert ins.kind == "ins" and not ins.rotated
    assert Detector(model, imgsz=64).kind == "rot"
