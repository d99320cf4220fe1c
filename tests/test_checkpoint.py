"""load_checkpoint: official, own and bare formats; strict keys with clear errors; never runs pickled code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from rtmdet_edge import UserError, build_model, load_checkpoint, save_checkpoint
from rtmdet_edge.checkpoint import infer_config


def test_official_checkpoint_infers_model(official_dir) -> None:
    model = load_checkpoint(official_dir / "rtmdet_tiny" / "checkpoint.pth")
    assert model.config.name == "rtmdet-tiny" and model.num_classes == 80


def test_bare_state_dict_and_own_checkpoint_round_trip(tmp_path) -> None:
    model = build_model("rtmdet-tiny", num_classes=3)
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    loaded = load_checkpoint(bare)
    assert loaded.num_classes == 3
    own = tmp_path / "own.pth"
    save_checkpoint(own, {"model": model.state_dict(), "config": model.config.to_dict(), "class_names": ["a", "b", "c"]})
    loaded = load_checkpoint(own)
    assert loaded.config == model.config and loaded.class_names == ["a", "b", "c"]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_wrong_size_is_one_clear_error(official_dir) -> None:
    with pytest.raises(UserError) as e:
        load_checkpoint(official_dir / "rtmdet_tiny" / "checkpoint.pth", build_model("rtmdet-s"))
    msg = str(e.value)
    assert "does not fit rtmdet-s" in msg and "shape mismatch" in msg and "backbone.stem.0.conv.weight" in msg
    assert "looks like rtmdet-tiny (dw5, 80 classes)" in msg


def test_wrong_class_count_is_one_clear_error(official_dir) -> None:
    with pytest.raises(UserError, match=r"rtm_cls\.0\.weight checkpoint \(80, 96, 1, 1\) vs model \(3, 96, 1, 1\)"):
        load_checkpoint(official_dir / "rtmdet_tiny" / "checkpoint.pth", build_model("rtmdet-tiny", num_classes=3))


def test_missing_and_unexpected_keys_are_named(tmp_path) -> None:
    sd = build_model("rtmdet-tiny").state_dict()
    sd.pop("neck.out_convs.0.bn.running_var")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(UserError, match=r"missing 1 keys, e\.g\. neck\.out_convs\.0\.bn\.running_var.*unexpected 1"):
        load_checkpoint(tmp_path / "x.pth", build_model("rtmdet-tiny"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_never_runs(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    marker = tmp_path / "PWNED_BY_PICKLE"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UserError, match="refusing to load"):
            load_checkpoint(path, build_model("rtmdet-tiny"))
    finally:
        os.chdir(cwd)
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint|refusing"):
        load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_infer_config_sizes() -> None:
    for name in ("rtmdet-tiny", "rtmdet-s"):
        cfg = infer_config(build_model(name, num_classes=7).state_dict())
        assert cfg is not None and cfg.name == name and cfg.num_classes == 7


def test_cli_error_is_one_line(official_dir, tmp_path) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "rtmdet-edge")
    r = subprocess.run(
        [exe, "predict", "--weights", str(official_dir / "rtmdet_tiny" / "checkpoint.pth"), "--model", "rtmdet-s",
         "--source", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "does not fit rtmdet-s" in r.stderr


def test_infer_config_depthwise_and_unshared_variants() -> None:
    from dataclasses import replace

    from rtmdet_edge.config import PRESETS

    nano = infer_config(build_model("rtmdet-nano").state_dict())
    assert nano == PRESETS["rtmdet-nano"]
    s_dw = replace(PRESETS["rtmdet-s"], num_classes=4, use_depthwise=True, share_conv=False)
    assert infer_config(build_model(s_dw).state_dict()) == s_dw
    tiny = build_model(replace(PRESETS["rtmdet-tiny"], share_conv=False))
    assert infer_config(tiny.state_dict()).share_conv is False  # per-level convs differ after random init
    assert infer_config(build_model("rtmdet-tiny").state_dict()).share_conv is True  # one tensor under every level


def test_nano_checkpoint_loads_strictly_and_mismatches_say_what_it_is(tmp_path) -> None:
    from dataclasses import replace

    from rtmdet_edge.config import PRESETS

    nano = build_model("rtmdet-nano")
    torch.save({"meta": {}, "state_dict": nano.state_dict()}, tmp_path / "nano.pth")  # official layout, no config
    loaded = load_checkpoint(tmp_path / "nano.pth")
    assert loaded.config == nano.config
    for k, v in nano.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "nano.pth", build_model("rtmdet-tiny", num_classes=1))
    msg = str(e.value)
    assert "missing" in msg and "looks like rtmdet-nano (dw5, 1 classes, use_depthwise, share_conv=False)" in msg
    # the same size without the options: key names differ (depthwise_conv/pointwise_conv), one clear error
    plain = build_model(replace(PRESETS["rtmdet-nano"], use_depthwise=False, share_conv=True))
    with pytest.raises(UserError, match=r"does not fit rtmdet-nano \(dw5, 1 classes\): .*unexpected .*depthwise_conv"):
        load_checkpoint(tmp_path / "nano.pth", plain)
