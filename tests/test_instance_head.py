"""RTMDet-Ins architecture: official parameter counts, the output contract, the official quirks, raw-output parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtmdet_edge import build_model
from rtmdet_edge.models.outputs import flatten_outputs

# Counted on the official mmdet 3.3.0 modules built from the rtmdet-ins_* config files (isolated venv, see
# tools/make_independent_fixtures.py): unique parameters, shared convs once. RTMDET_FACTS.md 1.2 / 5.3 agree to 3 decimals.
OFFICIAL_INS_PARAMS = {
    "rtmdet-ins-tiny": 5_638_187,
    "rtmdet-ins-s": 10_183_311,
    "rtmdet-ins-m": 27_575_111,
    "rtmdet-ins-l": 57_365_663,
    "rtmdet-ins-x": 102_703_767,
}
# state_dict entries of the official modules (reg_convs aliases included; data_preprocessor buffers excluded)
OFFICIAL_INS_KEYS = {"rtmdet-ins-tiny": 546, "rtmdet-ins-s": 582, "rtmdet-ins-m": 762, "rtmdet-ins-l": 942, "rtmdet-ins-x": 1122}


@pytest.mark.parametrize("name", list(OFFICIAL_INS_PARAMS))
def test_ins_parameter_counts_match_official(name: str) -> None:
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_INS_PARAMS[name]
    assert len(model.state_dict()) == OFFICIAL_INS_KEYS[name]


def test_ins_forward_contract() -> None:
    model = build_model("rtmdet-ins-tiny", num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 96))
    assert set(out) == {"cls_scores", "bbox_preds", "kernel_preds", "mask_feat"}
    for level, stride in enumerate((8, 16, 32)):
        hw = (128 // stride, 96 // stride)
        assert out["cls_scores"][level].shape == (2, 3, *hw)
        assert out["bbox_preds"][level].shape == (2, 4, *hw)
        assert out["kernel_preds"][level].shape == (2, 169, *hw)
        assert (out["bbox_preds"][level] >= 0).all()  # ReLU distances
    assert out["mask_feat"].shape == (2, 8, 16, 12)
    assert list(flatten_outputs(out))[-1] == "mask_feat"


def test_ins_box_branch_is_the_cls_branch() -> None:
    head = build_model("rtmdet-ins-tiny").bbox_head
    assert head.reg_convs[1] is head.cls_convs[1]  # the official reg_convs.append(cls_convs) quirk
    assert head.cls_convs[2][0].conv is head.cls_convs[0][0].conv  # shared across levels
    assert head.cls_convs[2][0].bn is not head.cls_convs[0][0].bn
    assert head.kernel_convs[1][0].conv is not head.kernel_convs[0][0].conv  # kernel convs are per level
    assert head.num_gen_params == 169


def test_ins_train_mode_output_equals_eval_with_batch_stats() -> None:
    # In training the reg pass repeats the cls convs (as official); the values must be those of the cls features.
    torch.manual_seed(0)
    model = build_model("rtmdet-ins-tiny", num_classes=2).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert all((b >= 0).all() for b in out["bbox_preds"])


def test_ins_fuse_keeps_outputs() -> None:
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(build_model("rtmdet-ins-tiny", num_classes=2)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = flatten_outputs(model(x))
        got = flatten_outputs(model.fuse()(x))
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-4, rtol=1e-4), k


@pytest.fixture(scope="module")
def official_ins_tiny(official_dir):
    from rtmdet_edge import load_checkpoint

    return load_checkpoint(official_dir / "rtmdet-ins_tiny" / "checkpoint.pth").eval()


def test_ins_raw_outputs_match_official_320(official_dir, official_ins_tiny) -> None:
    folder = official_dir / "rtmdet-ins_tiny"
    ref = np.load(folder / "raw_320x320.npz")
    noise = json.loads((folder / "config.json").read_text())["fp32_vs_fp64_maxabs"]["320x320"]
    model = official_ins_tiny
    assert model.config.name == "rtmdet-ins-tiny"
    with torch.no_grad():
        feats = model.backbone(torch.from_numpy(ref["input"]))
        neck = model.neck(feats)
        got = flatten_outputs(model.bbox_head(neck))
    for i in range(3):
        got[f"backbone_out_{i}"], got[f"neck_out_{i}"] = feats[i], neck[i]
    assert len(got) == 16
    errors = {k: float(np.abs(v.numpy() - ref[k]).max()) for k, v in got.items()}
    # "within a few times the float32 rounding noise" (fixtures README): 5x the recorded fp32-vs-fp64 gap
    bad = {k: (e, 5 * noise[k]) for k, e in errors.items() if e > max(5 * noise[k], 1e-6)}
    assert not bad, bad
