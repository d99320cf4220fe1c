"""Mixed precision to a budget: ONNX node <-> module names, and the search keeping the fewest sensitive layers."""

from __future__ import annotations

import onnx
import pytest
import torch

from quant.mixed import ignore_patterns, onnx_conv_names, search_mixed_precision
from rtmdet_edge import build_model
from targets.export import deployment_model, export_onnx


@pytest.mark.parametrize("block", ["dw5", "rep3"])
def test_every_conv_maps_to_its_onnx_node(tmp_path, block) -> None:
    model = build_model("rtmdet-tiny", num_classes=3, block=block).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 64)
    names = onnx_conv_names(onnx.load(str(path)))
    fused = {n for n, m in deployment_model(model).named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(names) == fused
    assert names["backbone.stem.0.conv"].endswith("/Conv") and "stem.0" in names["backbone.stem.0.conv"]
    import re

    (pattern,) = ignore_patterns([names["bbox_head.rtm_cls.1"]])
    assert sum(bool(re.search(pattern, n)) for n in names.values()) == 1


@pytest.mark.slow
def test_search_meets_a_budget_with_few_float_layers(tmp_path, one_thread) -> None:
    from quant import load_calibration
    from rtmdet_edge.data.spec import build_dataset

    torch.manual_seed(0)
    model = build_model("rtmdet-tiny", num_classes=4).eval()
    calib = load_calibration("study:16", None, 8, 64)
    val = build_dataset("study:8", split="val", imgsz=64)
    # a random model scores ~0 mAP: any budget >= 0 is met with k = 0, a negative one never is
    met = search_mixed_precision(model, calib, val, max_drop=1e9, imgsz=64, out_dir=tmp_path / "a", threads=1)
    assert met.met and met.kept_float == [] and met.steps[0]["k"] == 0
    never = search_mixed_precision(model, calib, val, max_drop=-1.0, imgsz=64, out_dir=tmp_path / "b", threads=1,
                                   max_layers=2)  # fmt: skip
    assert not never.met and [s["k"] for s in never.steps] == [0, 1, 2]
