"""Per-layer INT8 evidence: fake quantization on the int8 grid, weight statistics, one-layer-at-a-time sensitivity."""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_bn
from quant.evidence import (
    activation_stats,
    block_type,
    clipped_to_calibration,
    conv_layers,
    fake_quant_activation,
    fake_quant_weight,
    layer_sensitivity,
    sqnr_db,
    summarize_by_block,
    weight_stats,
)
from rtmdet_edge import build_model


def test_fake_quant_grids() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g)
    w[3] *= 50  # one channel with a far larger range
    q_ch, q_t = fake_quant_weight(w, True), fake_quant_weight(w, False)
    for c in range(8):  # per channel: each channel on its own symmetric grid of 255 levels
        step = w[c].abs().max() / 127
        assert torch.allclose(q_ch[c] / step, torch.round(q_ch[c] / step), atol=1e-4)
    assert sqnr_db(w, q_ch) > sqnr_db(w, q_t) + 10
    assert sqnr_db(w[0], q_ch[0]) > sqnr_db(w[0], q_t[0]) + 20  # the small channel is what per-tensor destroys
    x = torch.linspace(-1, 3, 1001)
    qa = fake_quant_activation(x, -1.0, 3.0)
    assert fake_quant_activation(torch.zeros(3), -1.0, 3.0).abs().max() == 0  # zero is exact (zero point)
    assert len(torch.unique(qa)) <= 256 and (qa - x).abs().max() <= 4 / 255 / 2 + 1e-6
    qs = fake_quant_activation(x, -1.0, 3.0, symmetric=True)
    assert len(torch.unique(qs)) <= 255 and (qs - x).abs().max() <= 3 / 127 / 2 + 1e-6


def _signal_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Conv weights of unit gain (randn / sqrt(fan_in)): the default init (std 0.01 in the head) leaves the outputs
    at their biases, where float32 rounding would hide any quantization noise."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {
        b: randomize_bn(_signal_weights(build_model("rtmdet-tiny", num_classes=3, block=b))).eval().fuse()
        for b in ("dw5", "rep3")
    }


def test_weight_stats_and_block_types(models) -> None:
    dw = weight_stats(models["dw5"])
    rep = weight_stats(models["rep3"])
    assert len(dw) == len(conv_layers(models["dw5"]))
    assert any(s.block == "backbone depthwise 5x5" for s in dw)
    assert not any("depthwise 5x5" in s.block for s in rep)
    assert all(s.sqnr_per_channel_db >= s.sqnr_per_tensor_db - 1e-9 for s in dw)
    g = torch.Generator().manual_seed(1)
    gaussian = torch.nn.Conv2d(64, 64, 3)
    gaussian.weight.data = torch.randn(64, 64, 3, 3, generator=g)
    (s,) = weight_stats(torch.nn.Sequential(gaussian))
    assert abs(s.kurtosis) < 0.1 and s.outlier_share < 1e-3
    assert block_type("bbox_head.rtm_cls.0", models["dw5"].bbox_head.rtm_cls[0]) == "head cls predictor 1x1"
    table = summarize_by_block(dw, "sqnr_per_tensor_db")
    assert table["backbone depthwise 5x5"]["layers"] >= 4


def test_sensitivity_finds_a_planted_outlier(one_thread, models) -> None:
    model = models["dw5"]
    batches = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    # a layer whose output reaches the outputs undamped in this random model (deep backbone layers of a random
    # network barely move its outputs; a trained network is what the gap study measures)
    name = "neck.out_convs.0.conv"
    conv = dict(conv_layers(model))[name]
    acts = activation_stats(model, batches)
    assert {a.layer for a in acts} == {n for n, _ in conv_layers(model)}
    everything = layer_sensitivity(model, batches, acts, per_channel=False)
    assert [s.sqnr_db for s in everything] == sorted(s.sqnr_db for s in everything)
    assert len(everything) == len(acts) and all(s.sqnr_db > 0 for s in everything)
    before = layer_sensitivity(model, batches, acts, per_channel=False, layers=[name])[0].sqnr_db
    original = conv.weight.data.clone()
    conv.weight.data[0] *= 300  # one output channel 300x wider: per-tensor int8 flattens every other channel
    try:
        acts = activation_stats(model, batches)
        planted_tensor = layer_sensitivity(model, batches, acts, per_channel=False, layers=[name])[0].sqnr_db
        planted_channel = layer_sensitivity(model, batches, acts, per_channel=True, layers=[name])[0].sqnr_db
    finally:
        conv.weight.data = original
    assert planted_tensor < before - 10  # the outlier channel costs the layer >10 dB with one weight scale ...
    assert planted_channel > planted_tensor + 10  # ... and per-channel scales give it back


def test_clipped_to_calibration_clamps_conv_inputs_only_inside() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 2, 1)).eval()
    calib = [torch.rand(2, 3, 8, 8)]  # inputs in [0, 1)
    acts = activation_stats(model, calib)
    x = torch.randn(1, 3, 8, 8) * 3  # far outside the calibration range
    with torch.no_grad():
        plain = model(x)
        with clipped_to_calibration(model, acts):
            clipped = model(x)
        lo, hi = acts[0].min, acts[0].max
        h = torch.nn.functional.silu(model[0](x.clamp(lo, hi)))
        expected = model[2](h.clamp(acts[1].min, acts[1].max))
        after = model(x)
    torch.testing.assert_close(clipped, expected)
    assert not torch.allclose(clipped, plain)
    torch.testing.assert_close(after, plain)  # hooks removed on exit
