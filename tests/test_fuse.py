"""model.fuse(): BN folded, Rep branches merged, same outputs, plain convs in ONNX, fused checkpoints round-trip."""

from __future__ import annotations

import io

import onnx
import pytest
import torch
from torch import Tensor, nn

from rtmdet_edge import build_model, load_checkpoint, save_checkpoint
from rtmdet_edge.models.blocks import CSPNeXtBlock
from rtmdet_edge.config import BLOCKS, ModelConfig
from rtmdet_edge.models.fuse import fold_bn, fuse_model
from rtmdet_edge.models.layers import ConvModule
from rtmdet_edge.models.rep import RepBottleneck
from conftest import randomize_bn


def tiny_config(block: str, exp_on_reg: bool = False) -> ModelConfig:
    # stage widths 16/32/64/128, blocks 1/2/2/1: residual and non-residual blocks, SPP, attention, shared head convs
    return ModelConfig("test-tiny", deepen=0.33, widen=0.125, exp_on_reg=exp_on_reg, num_classes=3, block=block)


def outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        out = model(x)
    return out["cls_scores"] + out["bbox_preds"]


def max_rel_err(a: list[Tensor], b: list[Tensor]) -> float:
    return max(((p - q).abs().max() / q.abs().max().clamp_min(1e-12)).item() for p, q in zip(a, b))


class _Tuple(nn.Module):
    """ONNX export wrapper: the model's dict of lists as a flat tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return tuple(out["cls_scores"] + out["bbox_preds"])


pytestmark = pytest.mark.usefixtures("one_thread")

def test_fold_bn_matches_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    randomize_bn(bn)
    bn.eval()
    w, b = fold_bn(conv.weight, conv.bias, bn)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", BLOCKS)
def test_fused_model_equals_training_form(block):
    torch.manual_seed(0)
    model = build_model(tiny_config(block)).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 64, 96)
    before = outputs(model, x)
    assert model.fuse() is model
    assert model.fused and not model.training
    assert max_rel_err(outputs(model, x), before) < 1e-4
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in model.modules():
        if isinstance(m, ConvModule):
            assert isinstance(m.bn, nn.Identity) and m.conv.bias is not None
    if block in ("rep3", "qarep3"):
        units = [u for m in model.modules() if isinstance(m, RepBottleneck) for u in (m.conv1, m.conv2)]
        assert units
        for u in units:  # each unit is one 3x3 conv with bias, no branch left
            assert sorted(n for n, _ in u.named_children()) == ["activate", "conv"]
            assert u.conv.kernel_size == (3, 3) and u.conv.bias is not None
    # fusing again changes nothing
    again = outputs(fuse_model(model), x)
    assert max_rel_err(again, before) < 1e-4


def test_fuse_exp_on_reg_and_trained_bn_statistics():
    """exp_on_reg head (l/x) and BN statistics produced by real train-mode passes rather than set directly."""
    torch.manual_seed(1)
    model = build_model(tiny_config("qarep3", exp_on_reg=True))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 64) * 2 + 0.5)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    before = outputs(model, x)
    model.fuse()
    assert max_rel_err(outputs(model, x), before) < 1e-4


def test_head_convs_are_unshared_per_level():
    model = build_model(tiny_config("dw5")).eval()
    head = model.bbox_head
    assert head.cls_convs[1][0].conv is head.cls_convs[0][0].conv  # SepBN: shared before fusion
    randomize_bn(model)
    model.fuse()
    convs = [head.cls_convs[level][0].conv for level in range(3)]
    assert len({id(c) for c in convs}) == 3
    # per-level BNs differ, so the folded weights differ
    assert not torch.allclose(convs[0].weight, convs[1].weight)


def _residual_blocks(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, (CSPNeXtBlock, RepBottleneck)) and m.add_identity)


def _onnx_graph(model: nn.Module) -> onnx.GraphProto:
    buf = io.BytesIO()
    torch.onnx.export(_Tuple(model), torch.randn(1, 3, 64, 64), buf, opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue()).graph


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("block", BLOCKS)
def test_fused_onnx_has_only_plain_convs(block):
    torch.manual_seed(0)
    model = build_model(tiny_config(block)).eval()
    randomize_bn(model)
    if block in ("rep3", "qarep3"):
        # control: the training form exports its branches (extra Convs and branch-sum Adds) that fusion must remove
        unfused = [n.op_type for n in _onnx_graph(model).node]
        assert unfused.count("Add") > _residual_blocks(model)
    model.fuse()
    graph = _onnx_graph(model)
    ops = [n.op_type for n in graph.node]
    assert "BatchNormalization" not in ops
    # one Conv node per Conv2d of the fused model: no branch convs survive, nothing folded into other ops
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert ops.count("Conv") == len(convs)
    # the only Adds are the block residuals: no branch sums inside Rep units
    assert ops.count("Add") == _residual_blocks(model)
    if block in ("rep3", "qarep3"):
        convs_onnx = [n for n in graph.node if n.op_type == "Conv"]
        kernels = [tuple(a.ints) for n in convs_onnx for a in n.attribute if a.name == "kernel_shape"]
        n_rep_units = 2 * sum(1 for m in model.modules() if isinstance(m, RepBottleneck))
        n_other_3x3 = sum(1 for m in model.modules() if isinstance(m, ConvModule) and m.conv.kernel_size == (3, 3))
        assert kernels.count((3, 3)) == n_rep_units + n_other_3x3


@pytest.mark.parametrize("block", ["rep3", "qarep3", "dw5"])
def test_checkpoint_round_trip_training_form(tmp_path, block):
    torch.manual_seed(0)
    cfg = tiny_config(block)
    model = build_model(cfg).eval()
    randomize_bn(model)
    path = tmp_path / f"{block}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict()})
    loaded = load_checkpoint(path).eval()
    assert loaded.config == cfg and loaded.config.block == block
    x = torch.randn(1, 3, 64, 64)
    assert max_rel_err(outputs(loaded, x), outputs(model, x)) == 0.0


@pytest.mark.parametrize("block", ["rep3", "qarep3"])
def test_fused_checkpoint_round_trip(tmp_path, block):
    torch.manual_seed(0)
    cfg = tiny_config(block)
    model = build_model(cfg).eval()
    randomize_bn(model)
    x = torch.randn(1, 3, 64, 64)
    reference = outputs(model, x)
    model.fuse()
    path = tmp_path / "fused.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "fused": True})
    loaded = load_checkpoint(path)
    assert getattr(loaded, "fused", False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    assert max_rel_err(outputs(loaded, x), outputs(model, x)) == 0.0
    assert max_rel_err(outputs(loaded, x), reference) < 1e-4
    # into a model the caller built (unfused): it is fused first, then loaded
    into = load_checkpoint(path, model=build_model(cfg))
    assert into.fused and max_rel_err(outputs(into, x), outputs(model, x)) == 0.0


@pytest.mark.parametrize("overrides", [{"use_depthwise": True, "share_conv": False}, {"share_conv": False}])
def test_fuse_depthwise_separable_and_unshared_heads(overrides):
    """use_depthwise / share_conv=False (rtmdet-nano): every depth-wise and point-wise conv folds its own BN."""
    from dataclasses import replace

    from rtmdet_edge.models.layers import DepthwiseSeparableConvModule

    torch.manual_seed(0)
    model = build_model(replace(tiny_config("dw5"), **overrides)).eval()
    randomize_bn(model)
    x = torch.randn(1, 3, 64, 96)
    before = outputs(model, x)
    model.fuse()
    assert max_rel_err(outputs(model, x), before) < 1e-4
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    separable = [m for m in model.modules() if isinstance(m, DepthwiseSeparableConvModule)]
    assert isinstance(model.backbone.stage1[0], DepthwiseSeparableConvModule) == overrides.get("use_depthwise", False)
    for m in separable:
        dw = m.depthwise_conv.conv
        assert dw.groups == dw.in_channels and dw.bias is not None and m.pointwise_conv.conv.bias is not None
    graph = _onnx_graph(model)
    assert {n.op_type for n in graph.node} & {"BatchNormalization"} == set()


def test_fused_nano_checkpoint_round_trip(tmp_path):
    model = randomize_bn(build_model("rtmdet-nano")).eval()
    x = torch.randn(1, 3, 96, 96)
    before = outputs(model, x)
    model.fuse()
    save_checkpoint(tmp_path / "f.pth", {"model": model.state_dict(), "config": model.config.to_dict(), "fused": True})
    loaded = load_checkpoint(tmp_path / "f.pth")
    assert loaded.fused and max_rel_err(outputs(loaded, x), before) < 1e-4
