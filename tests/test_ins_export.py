"""RTMDet-Ins deployed: the fused network exported to ONNX with its named mask outputs (kernel_pred_0..2, mask_feat)
gives the same masks on ONNX Runtime and OpenVINO as PyTorch (mean matched mask IoU >= 0.99, FP32).

Masks are assembled in post-processing (rtmdet_edge.inference.postprocess_ins) from the raw outputs, for the kept
instances only; the graph itself is the plain network. The export here is the plain torch.onnx call with the names of
rtmdet_edge.models.outputs, so the check does not depend on the targets/ package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtmdet_edge import load_checkpoint
from rtmdet_edge.geometry.masks import matched_mask_iou
from rtmdet_edge.inference.postprocess_ins import INS_OFFICIAL, postprocess_ins
from rtmdet_edge.inference.preprocess import normalize, preprocess
from rtmdet_edge.models.outputs import flatten_outputs, group_outputs, output_names


class _Flat(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.model(x)).values())


@pytest.fixture(scope="module")
def exported(official_dir, tmp_path_factory):
    folder = official_dir / "rtmdet-ins_tiny"
    model = load_checkpoint(folder / "checkpoint.pth").eval()
    image = np.load(folder / "predict.npz")["image_bgr"]
    batch, metas = preprocess([image], 640)
    x = normalize(torch.from_numpy(batch))
    with torch.no_grad():
        ref_out = model(x)
    names = output_names(ref_out)
    assert names[-4:] == ["kernel_pred_0", "kernel_pred_1", "kernel_pred_2", "mask_feat"]
    path = tmp_path_factory.mktemp("ins_onnx") / "ins.onnx"
    fused = load_checkpoint(folder / "checkpoint.pth").fuse()
    torch.onnx.export(_Flat(fused), (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=names)  # fmt: skip
    reference = postprocess_ins(ref_out, metas, INS_OFFICIAL)[0]
    return path, x.numpy(), metas, reference


def _check(named: dict[str, np.ndarray], metas, reference) -> float:
    det = postprocess_ins(group_outputs(named), metas, INS_OFFICIAL)[0]
    assert abs(len(det) - len(reference)) <= 2
    return matched_mask_iou(reference, det)


@pytest.mark.slow
def test_onnxruntime_masks_match_pytorch(exported) -> None:
    import onnxruntime as ort

    path, x, metas, reference = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    named = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))
    assert "mask_feat" in named and named["mask_feat"].shape == (1, 8, 80, 80)
    assert len(reference) == 100
    assert _check(named, metas, reference) >= 0.99


@pytest.mark.slow
def test_openvino_masks_match_pytorch(exported) -> None:
    ov = pytest.importorskip("openvino")
    path, x, metas, reference = exported
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(x)
    named = {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}
    assert _check(named, metas, reference) >= 0.99


def test_matched_mask_iou_counts_missing_and_extra() -> None:
    from rtmdet_edge.inference.postprocess import Detections

    masks = np.zeros((2, 10, 10), bool)
    masks[0, :5], masks[1, 5:] = True, True
    boxes = np.array([[0, 0, 10, 5], [0, 5, 10, 10]], np.float32)
    a = Detections(boxes, np.array([0.9, 0.8]), np.array([0, 1]), masks)
    assert matched_mask_iou(a, a) == 1.0
    b = Detections(boxes[:1], np.array([0.9]), np.array([0]), masks[:1])
    assert matched_mask_iou(a, b) == 0.5
    assert matched_mask_iou(b, a) == 0.5
