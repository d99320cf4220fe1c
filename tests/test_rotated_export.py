"""RTMDet-R exports to ONNX with named angle outputs (no rotated op in the graph; rotated NMS stays outside) and
ONNX Runtime gives the same raw outputs and the same detections. targets/ builds the deployable files; this checks
that the rotated model itself is exportable and that the fused form is exact."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rtmdet_edge
from conftest import randomize_bn
from rtmdet_edge.inference.preprocess import preprocess
from rtmdet_edge.inference.rotated_postprocess import postprocess_rotated
from rtmdet_edge.models.outputs import flatten_outputs, group_outputs, output_names

ort = pytest.importorskip("onnxruntime")


class _Named(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.model(x)).values())


def test_fused_rotated_model_onnx_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(rtmdet_edge.build_model("rtmdet-r-tiny", num_classes=4)).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = flatten_outputs(model(x))
        fused = model.fuse()
        got = flatten_outputs(fused(x))
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-4), k
    names = list(ref)  # flatten_outputs order = export order
    assert names == output_names({"cls_scores": 0, "bbox_preds": 0, "angle_preds": 0})
    assert names[-3:] == ["angle_pred_0", "angle_pred_1", "angle_pred_2"]
    path = tmp_path / "r.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Named(fused), (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x.numpy()})))
    assert set(arrays) == set(names)
    for k in names:
        np.testing.assert_allclose(arrays[k], got[k].numpy(), atol=1e-4)
    # the same detections from the ONNX Runtime outputs, grouped by name
    image = (np.random.default_rng(0).random((100, 120, 3)) * 255).astype(np.uint8)
    _, metas = preprocess([image], 128)
    dets_torch = postprocess_rotated({k: [t for t in v] for k, v in group_outputs(got).items()}, metas)[0]
    dets_ort = postprocess_rotated(group_outputs(arrays), metas)[0]
    assert len(dets_torch) == len(dets_ort)
    np.testing.assert_allclose(dets_ort.scores.numpy(), dets_torch.scores.numpy(), atol=1e-4)
