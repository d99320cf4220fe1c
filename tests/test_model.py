"""Architecture: official parameter counts, output contract, and parity with the official implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtmdet_edge import PRESETS, UserError, build_model

# RTMDET_FACTS.md 5.3: unique parameters (shared head convs counted once), reproducing the official README.
OFFICIAL_PARAMS = {
    "rtmdet-tiny": 4_896_168,  # config.json of the official fixture gives the exact count
    "rtmdet-s": 8.887,
    "rtmdet-m": 24.709,
    "rtmdet-l": 52.316,
    "rtmdet-x": 94.856,
}


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


def test_official_tiny_state_dict_has_476_keys() -> None:
    assert len(build_model("rtmdet-tiny").state_dict()) == 476


@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-s"])
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


def test_unknown_model_and_unimplemented_heads_are_clear() -> None:
    with pytest.raises(UserError, match="unknown model"):
        build_model("rtmdet-xxl")
    with pytest.raises(UserError, match="not implemented"):
        build_model("rtmdet-r-tiny")


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
