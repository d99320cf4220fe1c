"""`train --resume` continues the recorded run: its settings come from the checkpoint, options typed on the resume
command override them where that keeps it the same run, and the rest is refused in one line."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from rtmdet_edge.errors import UserError
from rtmdet_edge.training import train as train_cmd

# 4 synthetic 64 px images, batch 2: 2 iterations per epoch; none of these is a CLI default, so each must be restored.
RECORDED = ["--data", "synthetic:4", "--imgsz", "64", "--batch", "2", "--device", "cpu", "--workers", "0",
            "--eval-interval", "0", "--no-fused-bn-silu", "--seed", "5"]  # fmt: skip


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run: OUT/last.pth at epoch 1."""
    out = tmp_path_factory.mktemp("resume") / "run"
    torch.set_num_threads(2)
    assert train_cmd.run(_args(*RECORDED, "--epochs", "1", "--out", str(out))) == 0
    return out


def test_the_parser_tells_typed_options_from_defaults() -> None:
    args = _args("--imgsz", "128", "--no-amp", "--no-channels-last", "--deterministic")
    assert train_cmd.given_fields(args) == {"imgsz", "amp", "channels_last", "deterministic"}
    assert args.batch == 16 and args.epochs == 300  # defaults are still real values (and --help shows them)
    assert train_cmd.given_fields(_args()) == frozenset()
    assert train_cmd.given_fields(argparse.Namespace(imgsz=64)) is None  # built by hand: every field counts as given


def test_resume_auto_restores_the_recorded_settings_and_extends_with_epochs(one_epoch_run, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    # what the stop message suggests, plus --epochs to extend the run and a repeated (equal) --batch
    assert train_cmd.run(_args("--resume", "auto", "--out", str(out), "--epochs", "2", "--batch", "2")) == 0
    ckpt = _ckpt(out / "last.pth")
    assert (ckpt["next_epoch"], ckpt["next_iter"]) == (2, 0)
    cfg = ckpt["train_config"]
    assert (cfg["data"], cfg["imgsz"], cfg["batch"], cfg["seed"], cfg["workers"]) == ("synthetic:4", 64, 2, 5, 0)
    assert cfg["epochs"] == 2 and cfg["fused_bn_silu"] is False and cfg["out"] == str(out)
    log = (out / "train.log").read_text()
    assert "4 images" in log.split("rtmdet-tiny on cpu:")[-1]  # not the 2000 images of the CLI default
    line = next(x for x in log.splitlines() if "resumed from" in x)
    assert "recorded settings restored: --data synthetic:4 --batch 2 --imgsz 64 --device cpu --workers 0" in line
    assert "--no-fused-bn-silu" in line and "--seed 5" in line
    assert line.endswith("overridden by this command: --epochs 2 (recorded: 1)")


def test_a_run_changing_option_is_refused_in_one_line(one_epoch_run) -> None:
    for option, value in (("--imgsz", "640"), ("--batch", "16"), ("--data", "synthetic"), ("--model", "rtmdet-s")):
        with pytest.raises(UserError, match=f"was trained with {option} .*drop those options") as e:
            train_cmd.run(_args("--resume", "auto", "--out", str(one_epoch_run), option, value))
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="--epochs 0: .* already trained 1 epochs"):
        train_cmd.run(_args("--resume", "auto", "--out", str(one_epoch_run), "--epochs", "0"))
    # a config built by hand (main() callers) must describe the recorded run too
    cfg = train_cmd.config_from_args(_args(*RECORDED, "--imgsz", "96", "--resume", "auto", "--out", str(one_epoch_run)))
    with pytest.raises(UserError, match="--imgsz 64, this command asks for --imgsz 96"):
        train_cmd.resumed_config(cfg, None)


def test_resume_path_without_out_continues_in_the_checkpoints_folder(one_epoch_run, tmp_path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(one_epoch_run, moved)
    args = _args("--resume", str(moved / "last.pth"), "--epochs", "3", "--workers", "1")
    cfg = train_cmd.resumed_config(train_cmd.config_from_args(args), train_cmd.given_fields(args))
    assert cfg.out == str(moved)  # not the recorded folder (the original run) nor the default runs/train
    assert (cfg.imgsz, cfg.batch, cfg.epochs, cfg.workers, cfg.resume) == (64, 2, 3, 1, str(moved / "last.pth"))


def test_resume_auto_without_a_checkpoint_starts_fresh_from_the_command_line(tmp_path) -> None:
    args = _args("--resume", "auto", "--out", str(tmp_path), "--imgsz", "96")
    cfg = train_cmd.resumed_config(train_cmd.config_from_args(args), train_cmd.given_fields(args))
    assert cfg == train_cmd.config_from_args(args)


def test_a_checkpoint_that_cannot_be_continued_is_one_error(tmp_path) -> None:
    torch.save({"model": {}, "config": {"name": "rtmdet-r-tiny"}}, tmp_path / "last.pth")
    with pytest.raises(UserError, match="not a resumable checkpoint of `rtmdet-edge train`"):
        train_cmd.run(_args("--resume", "auto", "--out", str(tmp_path)))
