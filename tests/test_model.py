"""Architecture: official parameter counts, output contract, and parity with the official implementation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from rtmdet_edge import PRESETS, UserError, build_model, get_config
from rtmdet_edge.models.blocks import CSPLayer, CSPNeXtBlock
from rtmdet_edge.models.layers import ConvModule, DepthwiseSeparableConvModule

# RTMDET_FACTS.md 5.3: unique parameters (shared head convs counted once), reproducing the official README.
OFFICIAL_PARAMS = {
    "rtmdet-tiny": 4_896_168,  # config.json of the official fixture gives the exact count
    "rtmdet-s": 8.887,
    "rtmdet-m": 24.709,
    "rtmdet-l": 52.316,
    "rtmdet-x": 94.856,
    # mmdet 3.3.0 in the isolated venv (tools/make_independent_fixtures.py docstring): MODELS.build of mmpose's
    # rtmdet_nano_320-8xb32_coco-person.py model dict, sum(p.numel() for p in model.parameters()); the nano fixtures'
    # info.json record it too (num_params). RTMPose's README rounds it to 0.99 M.
    "rtmdet-nano": 994_423,
}
# Same measurement for the option variants (their fixtures in tests/fixtures/independent record the same counts).
DEPTHWISE = {"use_depthwise": True, "share_conv": False}
OFFICIAL_VARIANT_PARAMS = [
    ("rtmdet-nano", 80, {}, 1_009_828),
    ("rtmdet-s", 80, DEPTHWISE, 3_898_828),
    ("rtmdet-m", 5, DEPTHWISE, 9_647_091),
    ("rtmdet-tiny", 80, {"share_conv": False}, 5_559_720),
]


def count_unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates shared tensors


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_parameter_counts_match_official(name: str) -> None:
    n = count_unique_params(build_model(name))
    expected = OFFICIAL_PARAMS[name]
    if isinstance(expected, int):
        assert n == expected
    else:  # the README gives three decimals in millions
        assert round(n / 1e6, 3) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("name", "num_classes", "overrides", "expected"), OFFICIAL_VARIANT_PARAMS)
def test_option_variant_parameter_counts_match_official(name, num_classes, overrides, expected) -> None:
    cfg = replace(get_config(name, num_classes=num_classes), **overrides)
    assert count_unique_params(build_model(cfg)) == expected


def test_official_tiny_state_dict_has_476_keys() -> None:
    assert len(build_model("rtmdet-tiny").state_dict()) == 476
    assert len(build_model("rtmdet-nano").state_dict()) == 698  # mmdet 3.3.0's nano state_dict, same measurement


def test_nano_preset_is_the_rtmpose_detector() -> None:
    cfg = PRESETS["rtmdet-nano"]
    assert (cfg.deepen, cfg.widen, cfg.num_classes, cfg.imgsz, cfg.exp_on_reg) == (0.33, 0.25, 1, 320, False)
    assert cfg.use_depthwise and not cfg.share_conv and cfg.channel_attention and cfg.block == "dw5"
    model = build_model("rtmdet-nano")
    assert model.backbone.out_channels == [64, 128, 256]
    assert [len(model.backbone.get_submodule(f"stage{i}")[-1].blocks) for i in (1, 2, 3, 4)] == [1, 2, 2, 1]
    assert len(model.neck.top_down_blocks[0].blocks) == 1 and model.bbox_head.rtm_cls[0].in_channels == 64


def test_use_depthwise_applies_where_mmdet_applies_it() -> None:
    model = build_model("rtmdet-nano")
    b, n, h = model.backbone, model.neck, model.bbox_head
    separable = [b.get_submodule(f"stage{i}")[0] for i in (1, 2, 3, 4)]  # stride-2 down-sampling convs
    separable += [blk.conv1 for m in (b, n) for blk in m.modules() if isinstance(blk, CSPNeXtBlock)]
    separable += list(n.downsamples) + list(n.out_convs)
    separable += [c for convs in (*h.cls_convs, *h.reg_convs) for c in convs]
    assert all(isinstance(m, DepthwiseSeparableConvModule) for m in separable)
    assert separable[0].depthwise_conv.conv.stride == (2, 2) and separable[0].pointwise_conv.conv.stride == (1, 1)
    dense = list(b.stem) + list(n.reduce_layers) + [b.stage4[1].conv1, b.stage4[1].conv2]  # stem, 1x1 reduce, SPP
    csps = [csp for m in (b, n) for csp in m.modules() if isinstance(csp, CSPLayer)]
    dense += [c for csp in csps for c in (csp.main_conv, csp.short_conv, csp.final_conv)]
    assert all(type(m) is ConvModule for m in dense)
    # share_conv=False: every level has its own stacked convs (and its own depth-wise and point-wise weights)
    assert h.cls_convs[1][0].depthwise_conv.conv is not h.cls_convs[0][0].depthwise_conv.conv
    assert h.reg_convs[2][1].pointwise_conv.conv is not h.reg_convs[0][1].pointwise_conv.conv


def test_share_conv_false_on_dense_heads() -> None:
    head = build_model(replace(PRESETS["rtmdet-tiny"], share_conv=False)).bbox_head
    assert head.cls_convs[1][0].conv is not head.cls_convs[0][0].conv
    assert type(head.cls_convs[1][0]) is ConvModule


def test_option_combinations_without_official_meaning_are_refused() -> None:
    # mmdet 3.3.0 raises AttributeError building use_depthwise with share_conv=True; we refuse it up front
    with pytest.raises(ValueError, match="share_conv=False"):
        replace(PRESETS["rtmdet-s"], use_depthwise=True)
    with pytest.raises(ValueError, match="CSPNeXt blocks"):
        replace(PRESETS["rtmdet-nano"], block="rep3")
    with pytest.raises(UserError, match="rtmdet-nano is built from depth-wise separable convs"):
        build_model("rtmdet-nano", block="qarep3")
    dw3 = build_model("rtmdet-nano", block="dw3")  # the kernel-size ablations stay defined
    assert dw3.backbone.stage1[1].blocks[0].conv2.depthwise_conv.conv.kernel_size == (3, 3)


@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-s", "rtmdet-nano"])
def test_forward_contract(name: str) -> None:
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 96))
    assert set(out) == {"cls_scores", "bbox_preds"}
    for level, stride in enumerate((8, 16, 32)):
        assert out["cls_scores"][level].shape == (2, 3, 128 // stride, 96 // stride)
        assert out["bbox_preds"][level].shape == (2, 4, 128 // stride, 96 // stride)


def test_head_convs_shared_bn_separate() -> None:
    head = build_model("rtmdet-tiny").bbox_head
    assert head.cls_convs[1][0].conv is head.cls_convs[0][0].conv
    assert head.reg_convs[2][1].conv is head.reg_convs[0][1].conv
    assert head.cls_convs[1][0].bn is not head.cls_convs[0][0].bn


def test_exp_on_reg_for_m_l_x() -> None:
    # m inherits exp_on_reg=True from the l config (checked against mmdet 3.3.0 in test_independent_parity.py)
    assert [PRESETS[f"rtmdet-{s}"].exp_on_reg for s in ("tiny", "s", "m", "l", "x")] == [0, 0, 1, 1, 1]
    assert all(PRESETS[n].bn_eps == 1e-5 for n in PRESETS)


def test_unknown_model_and_detection_only_options_are_clear() -> None:
    from dataclasses import replace

    from rtmdet_edge.config import get_config

    with pytest.raises(UserError, match="unknown model"):
        build_model("rtmdet-xxl")
    for name in ("rtmdet-ins-tiny", "rtmdet-r-tiny"):  # every kind has its head; depthwise/unshared are det-only
        assert build_model(name).bbox_head is not None
        with pytest.raises(UserError, match="detection-head options"):
            build_model(replace(get_config(name), share_conv=False))


def _tolerances(official_dir, size: str) -> dict[str, float]:
    noise = json.loads((official_dir / "rtmdet_tiny" / "config.json").read_text())["fp32_vs_fp64_maxabs"][size]
    # "within a few times the float32 rounding noise" (fixtures README): 5x the recorded fp32-vs-fp64 gap.
    return {k: max(5 * v, 1e-6) for k, v in noise.items()}


def test_raw_outputs_match_official_320(official_dir, official_tiny) -> None:
    ref = np.load(official_dir / "rtmdet_tiny" / "raw_320x320.npz")
    tol = _tolerances(official_dir, "320x320")
    x = torch.from_numpy(ref["input"])
    with torch.no_grad():
        feats = official_tiny.backbone(x)
        neck = official_tiny.neck(feats)
        head = official_tiny.bbox_head(neck)
    got = {}
    for i in range(3):
        got[f"backbone_out_{i}"] = feats[i]
        got[f"neck_out_{i}"] = neck[i]
        got[f"cls_score_{i}"] = head["cls_scores"][i]
        got[f"bbox_pred_{i}"] = head["bbox_preds"][i]
    assert len(got) == 12
    for key, value in got.items():
        err = np.abs(value.numpy() - ref[key]).max()
        assert err <= tol[key], f"{key}: max abs error {err:.3g} > {tol[key]:.3g}"
