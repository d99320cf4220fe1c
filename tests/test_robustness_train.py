"""Training survives what real runs meet: AMP overflow steps, repeated runs in one process, SIGTERM / Ctrl-C, SIGKILL."""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from rtmdet_edge.training import engine
from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.engine import train_one_epoch
from rtmdet_edge.training.train import close_logging, log, setup_logging

REPO = Path(__file__).resolve().parents[1]
# 8 synthetic 96 px images, batch 2: 4 iterations per epoch; deterministic, stage 2 only (the Mosaic/MixUp caches of
# stage 1 are process state no checkpoint holds), a mid-epoch checkpoint after every iteration.
RUN = ["--model", "rtmdet-tiny", "--data", "synthetic:8", "--imgsz", "96", "--batch", "2", "--device", "cpu",
       "--workers", "0", "--epochs", "2", "--stage2-epochs", "2", "--deterministic", "--eval-interval", "0",
       "--save-interval-iters", "1", "--seed", "3"]  # fmt: skip


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.linear(x)}


def test_amp_overflow_step_moves_neither_weights_nor_ema_nor_the_mean_grad_norm() -> None:
    model = _Toy()
    ema = ModelEMA(model, 0.5, 1.0)
    scales = iter([1e36, 1.0])  # iteration 0: loss * 1024 overflows fp32 -> inf gradients; iteration 1: normal

    def criterion(outputs, targets):
        return {"loss_y": outputs["y"].float().sum() * next(scales)}

    loader = [(torch.ones(2, 4), [{}]), (torch.ones(2, 4), [{}])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema_calls = []
    original = ema.update
    ema.update = lambda m: (ema_calls.append(dict((k, v.clone()) for k, v in m.state_dict().items())), original(m))
    stats = train_one_epoch(
        model, criterion, loader, optimizer, scaler, ema, lambda step: 0.1, 0, iters_per_epoch=2, show_progress=False
    )
    assert stats["iters"] == 1 and stats["skipped_iters"] == 1, stats
    assert math.isfinite(stats["grad_norm"]) and math.isfinite(stats["loss"])
    assert len(ema_calls) == 1  # only after the step that really moved the weights
    assert any(not torch.equal(before[k], v) for k, v in ema_calls[0].items())
    assert scaler.get_scale() < 1024.0  # the scaler did see the overflow


def test_stop_request_ends_the_epoch_after_a_whole_iteration_with_one_save() -> None:
    from rtmdet_edge.training.engine import TrainingInterrupted

    model = _Toy()
    loader = [(torch.ones(2, 4), [{}])] * 4
    saves: list[int] = []
    calls: list[int] = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingInterrupted, match="iteration 2 of 4"):
        train_one_epoch(
            model, lambda out, t: {"loss_y": out["y"].sum()}, loader, optimizer, torch.amp.GradScaler("cpu", enabled=False),
            None, lambda step: 0.1, 0, iters_per_epoch=4, save_every_iters=2, save_fn=saves.append,
            stop_requested=lambda: len(calls.append(1) or calls) >= 2, show_progress=False,
        )  # fmt: skip
    assert saves == [1]  # the signal came during iteration 1, which also was a save-interval one: one write, not two


def test_the_stop_message_is_one_sentence(monkeypatch, capsys) -> None:
    import argparse

    from rtmdet_edge.training import train as train_cmd
    from rtmdet_edge.training.engine import TrainingInterrupted

    def stopped(cfg):
        raise TrainingInterrupted("stopped at epoch 6 iteration 1 of 8", signal.SIGTERM, Path("runs/sig/last.pth"))

    monkeypatch.setattr(train_cmd, "main", stopped)
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    assert train_cmd.run(parser.parse_args(["--out", "runs/sig"])) == 143
    err = capsys.readouterr().err
    assert err == "rtmdet-edge train: stopped at epoch 6 iteration 1 of 8; continue with --resume auto --out runs/sig\n"
    assert str(TrainingInterrupted("stopped after epoch 3", signal.SIGINT)) == "stopped after epoch 3"


def test_no_process_exit_hook_in_production_code() -> None:
    assert "os._exit" not in inspect.getsource(engine)
    assert "stop_after_iters" not in inspect.getsource(engine)


def test_second_run_in_one_process_logs_into_its_own_folder(tmp_path) -> None:
    setup_logging(tmp_path / "a", True)
    log.info("first run")
    setup_logging(tmp_path / "b", True)
    log.info("second run")
    close_logging()
    log.info("after both")
    assert "second run" not in (tmp_path / "a" / "train.log").read_text()
    assert "second run" in (tmp_path / "b" / "train.log").read_text()
    assert "after both" not in (tmp_path / "b" / "train.log").read_text()
    assert not [h for h in log.handlers if isinstance(h, logging.FileHandler)]


# ---------------------------------------------------------------------------------------------------------------------
# Signals, in real processes.
def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "rtmdet_edge.cli", "train", *RUN, "--out", str(out), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_training(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the run has logged its setup line (data, model and optimizer are built), or it ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        log_file = out / "train.log"
        if log_file.is_file() and "iters/epoch" in log_file.read_text():
            return
        time.sleep(0.05)


def _state(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("full")
    proc = _start(out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return _state(out / "last.pth")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert (a["next_epoch"], a["next_iter"]) == (b["next_epoch"], b["next_iter"])
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_writes_a_resumable_checkpoint(tmp_path, uninterrupted, signum) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    _wait_training(proc, out)
    deadline = time.time() + 120
    while not (out / "last.pth").is_file() and time.time() < deadline:  # after the first iteration
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "--resume auto" in err
    mid = _state(out / "last.pth")
    assert (mid["next_epoch"], mid["next_iter"]) < (2, 0)  # stopped early, at a whole iteration
    proc = _start(out, "--resume", "auto")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    _assert_same_weights(uninterrupted, _state(out / "last.pth"))


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_then_resume_matches_uninterrupted(tmp_path, uninterrupted) -> None:
    out = tmp_path / "run"
    rng = random.Random(14)
    progress = []
    for _ in range(10):
        proc = _start(out, "--resume", "auto")
        _wait_training(proc, out)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()  # SIGKILL: no handler, no cleanup, possibly in the middle of writing last.pth
        proc.communicate(timeout=60)
        if (out / "last.pth").exists():
            ckpt = _state(out / "last.pth")  # valid and loadable after every kill
            progress.append((ckpt["next_epoch"], ckpt["next_iter"]))
    assert progress == sorted(progress)  # never went backwards
    proc = _start(out, "--resume", "auto")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert not [p for p in os.listdir(out) if ".tmp-" in p]  # stale temporaries of killed writes are cleaned up
    _assert_same_weights(uninterrupted, _state(out / "last.pth"))


def test_sigterm_to_the_process_group_with_loader_workers_stops_cleanly(tmp_path) -> None:
    """`timeout`, SLURM's scancel and `kill -- -PGID` signal every process of the group, DataLoader workers included:
    the run must still stop after an iteration with a resumable last.pth and exit 143, and leave no worker behind."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "rtmdet_edge.cli", "train", "--data", "synthetic:8", "--imgsz", "64", "--batch", "2",
           "--device", "cpu", "--workers", "2", "--epochs", "2", "--eval-interval", "0", "--save-interval-iters", "1",
           "--no-fused-bn-silu", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own process group, as a job under SLURM or `timeout`
    try:
        deadline = time.time() + 120
        while not (out / "last.pth").is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # last.pth appears after the first iteration: the workers are up and loading
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.killpg(proc.pid, signal.SIGTERM)  # the session leader's pid is the group id
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err
    assert f"; continue with --resume auto --out {out}" in err
    deadline = time.time() + 10
    while time.time() < deadline:  # every worker has ended with the main process
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a DataLoader worker outlived the main process")
    mid = _state(out / "last.pth")
    assert (mid["next_epoch"], mid["next_iter"]) < (2, 0)
    # resumable with exactly what the message says: the recorded settings (8 images, 64 px, 2 workers) come back
    resumed = subprocess.run([sys.executable, "-m", "rtmdet_edge.cli", "train", "--resume", "auto", "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = _state(out / "last.pth")
    assert (done["next_epoch"], done["next_iter"]) == (2, 0)
    line = next(x for x in resumed.stderr.splitlines() if "resumed from" in x)
    for restored in ("--data synthetic:8 ", "--batch 2 --imgsz 64 ", "--workers 2 "):
        assert restored in line.split("recorded settings restored:")[1], line
