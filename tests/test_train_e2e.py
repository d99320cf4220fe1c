"""`rtmdet-edge train` end to end: CLI run, 2-process torchrun (gloo), kill mid-epoch + resume == uninterrupted run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtmdet_edge.training import train as train_cmd

SHARED = Path(__file__).resolve().parents[2] / "shared"
VENV_BIN = Path(sys.executable).parent
# Small and fast: 8 synthetic images of 96 px, batch 2 -> 4 iterations per epoch, 2 CPU threads per process.
COMMON = ["--model", "rtmdet-tiny", "--data", "synthetic:8", "--imgsz", "96", "--batch", "2", "--device", "cpu",
          "--workers", "0"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "rtmdet_edge.training.train", *args], env=_env(), capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def _weights(path: Path) -> tuple[dict, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["model"], ckpt["ema"]


def test_cli_one_short_epoch(tmp_path):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    out = tmp_path / "run"
    args = parser.parse_args([*COMMON, "--epochs", "1", "--out", str(out), "--eval-interval", "1", "--val-batch", "4"])
    torch.set_num_threads(2)
    assert train_cmd.run(args) == 0
    for name in ("last.pth", "best.pth", "metrics.csv", "metrics.jsonl", "metrics.png", "train.log"):
        assert (out / name).is_file(), name
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["epoch"] == 0 and row["iters"] == 4 and "AP" in row and "AR@100" in row
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "stage", "lr", "loss"]
    ckpt = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["next_epoch"] == 1 and ckpt["next_iter"] == 0
    assert ckpt["config"]["name"] == "rtmdet-tiny" and ckpt["train_config"]["imgsz"] == 96
    # the checkpoint rebuilds itself (EMA weights) through the public loader
    from rtmdet_edge.checkpoint import load_checkpoint

    model = load_checkpoint(out / "last.pth")
    assert model.num_classes == len(ckpt["class_names"]) == 8


def test_cli_user_errors(tmp_path):
    proc = _train([*COMMON, "--epochs", "1", "--out", str(tmp_path), "--resume", str(tmp_path / "missing.pth")], False)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = _train([*COMMON[:-6], "--batch", "64", "--device", "cpu", "--epochs", "1", "--out", str(tmp_path)], False)
    assert proc.returncode == 2 and "fewer than one batch" in proc.stderr


def test_imgsz_off_the_stride_grid_is_one_line_before_any_work(tmp_path, monkeypatch):
    proc = _train([*COMMON[:4], "--imgsz", "100", "--epochs", "1", "--out", str(tmp_path)], False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        "error: --imgsz must be a positive multiple of 32 (the stride of the last level), got 100"
    )
    assert not (tmp_path / "train.log").exists()  # nothing was built
    from rtmdet_edge.errors import UserError

    monkeypatch.setattr(train_cmd, "main", lambda cfg: pytest.fail("main() must not run"))
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    for model in ("rtmdet-tiny", "rtmdet-r-tiny"):  # RTMDet-R trains through its own loop
        with pytest.raises(UserError, match="multiple of 32"):
            train_cmd.run(parser.parse_args(["--model", model, "--imgsz", "100", "--out", str(tmp_path)]))


# Kill-and-resume (SIGKILL at random moments, SIGTERM, Ctrl-C) lives in test_robustness_train.py.


DDP_SCRIPT = """
import os, sys, torch
from rtmdet_edge.config import TrainConfig
from rtmdet_edge.training.train import main
result = main(TrainConfig(data="synthetic:8", imgsz=96, batch=4, epochs=1, device="cpu", workers=0, out=sys.argv[1],
                          eval_interval=0, seed=1))
torch.save(result["model"].state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pth"))
"""


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    torchrun = VENV_BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(out)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(out / "rank0.pth", weights_only=True)
    b = torch.load(out / "rank1.pth", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # all-reduced gradients: every rank steps the same way
    assert any("running_mean" in k for k in a)  # BN running stats too (DDP broadcasts rank 0's buffers; no SyncBN on CPU)
    assert (out / "last.pth").is_file()  # rank 0 wrote the checkpoint


@pytest.mark.slow
def test_coco128_one_epoch(tmp_path):
    coco = SHARED / "data" / "coco128-seg"
    if not coco.is_dir():
        pytest.skip(f"shared data not found at {coco}")
    ann, images = coco / "annotations" / "instances_train2017.json", coco / "images" / "train2017"
    if not images.is_dir():
        images = coco / "images"
    args = ["--model", "rtmdet-tiny", "--data", str(ann), "--images", str(images), "--imgsz", "128", "--batch", "16",
            "--epochs", "1", "--device", "cpu", "--workers", "0", "--eval-interval", "1", "--out", str(tmp_path)]  # fmt: skip
    _train(args)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["iters"] >= 7 and 0.0 <= row["AP"] <= 1.0
