"""One training epoch, top to bottom: load, forward, loss, non-finite guard, backward, grad-norm, step, EMA, log."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.optim import set_lr

log = logging.getLogger("rtmdet_edge.training.train")


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive iterations with a NaN/Inf loss or gradient."""


class TrainingInterrupted(Exception):
    """SIGTERM / Ctrl-C arrived: the run stopped after a whole iteration and saved a resumable checkpoint.

    str() is the message alone (the CLI prints it as a sentence); signum (exit code 128 + signum) and checkpoint
    (the resumable file) are attributes, not extra args, which Exception would print as a tuple.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT, checkpoint: Path | None = None) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.checkpoint = checkpoint


def _to_float32(outputs: dict[str, Any]) -> dict[str, Any]:
    # The loss runs in fp32 even under autocast: QFL's sigmoid/log and GIoU's divisions lose too much in fp16.
    return {k: [t.float() for t in v] if isinstance(v, (list, tuple)) else v.float() for k, v in outputs.items()}


def _timed(iterable: Iterable[Any], waited: list[float]) -> Iterable[Any]:
    """Yield from iterable, adding the seconds spent waiting for each item to waited[0] (the data-wait share)."""
    it = iter(iterable)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - t0
        yield item


def _all_ranks_true(flag: bool, device: torch.device) -> bool:
    """Whether flag holds on every rank; every rank must skip together or DDP's gradient all-reduce would hang."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def train_one_epoch(
    model: nn.Module,
    criterion: Callable[[dict[str, Any], list[dict[str, Tensor]]], dict[str, Tensor]],
    loader: Iterable[tuple[Tensor, list[dict[str, Tensor]]]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: ModelEMA | None,
    lr_schedule: Callable[[int], float],
    epoch: int,
    *,
    iters_per_epoch: int,
    start_iter: int = 0,
    device: torch.device = torch.device("cpu"),
    max_grad_norm: float | None = None,
    max_nonfinite_steps: int = 20,
    save_every_iters: int = 0,
    save_fn: Callable[[int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    show_progress: bool = True,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Train for one epoch; returns the epoch means of the losses, lr and grad norm.

    loader yields (images [B,3,H,W] normalised float, targets list of {"boxes","labels"}); when resuming mid-epoch
    it already skips the first start_iter batches (see loader.ResumableSampler), and start_iter keeps the global step
    (epoch * iters_per_epoch + i) and the lr schedule exact. save_fn(i) is called after iteration i (0-based, within
    the epoch) every save_every_iters iterations, to write a mid-epoch checkpoint. When stop_requested() turns true
    (a signal arrived) the epoch stops after the current iteration: save_fn(i), then TrainingInterrupted (at the
    epoch's last iteration the epoch simply ends and the caller's end-of-epoch checkpoint is the resumable one).

    amp_dtype: autocast dtype of the forward (None: float16 when the scaler is enabled, else no autocast); bfloat16
    needs no scaler. The loss and assigner always run in float32. channels_last: feed NHWC images (the model must
    have been converted with model.to(memory_format=torch.channels_last)). The returned "data_wait_share" is the
    fraction of the epoch spent waiting for the loader.
    """
    model.train()
    use_amp = scaler.is_enabled()
    autocast_dtype = amp_dtype if amp_dtype is not None else (torch.float16 if use_amp else None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    waited = [0.0]
    sums: dict[str, float] = {}
    done = skipped = nonfinite_in_a_row = 0
    bar = tqdm(
        _timed(loader, waited), total=iters_per_epoch, initial=start_iter, desc=f"epoch {epoch}", disable=not show_progress
    )
    t0 = time.perf_counter()
    for i, (images, targets) in enumerate(bar, start=start_iter):
        step = epoch * iters_per_epoch + i
        lr = lr_schedule(step)
        set_lr(optimizer, lr)
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(images)
        losses = criterion(_to_float32(outputs) if autocast_dtype is not None else outputs, targets)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))

        if not _all_ranks_true(bool(torch.isfinite(loss)), device):
            nonfinite_in_a_row += 1
            skipped += 1
            log.warning("epoch %d iter %d: non-finite loss %s, step skipped", epoch, i, {k: float(v.detach()) for k, v in losses.items()})
            optimizer.zero_grad(set_to_none=True)
            if nonfinite_in_a_row >= max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{nonfinite_in_a_row} consecutive iterations had a non-finite loss (last at epoch {epoch} iter {i}); "
                    "lower --lr, check the data (degenerate boxes?) or resume from an earlier checkpoint"
                )
            continue

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # so the norm (and any clipping) is in true gradient units
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or math.inf))
        if not math.isfinite(grad_norm) and not use_amp:
            # Gradients are all-reduced already, so every rank sees the same norm and skips together.
            nonfinite_in_a_row += 1
            skipped += 1
            log.warning("epoch %d iter %d: non-finite gradient norm, step skipped", epoch, i)
            optimizer.zero_grad(set_to_none=True)
            if nonfinite_in_a_row >= max_nonfinite_steps:
                raise NonFiniteLossError(f"{nonfinite_in_a_row} consecutive iterations had non-finite gradients")
            continue
        scaler.step(optimizer)  # with AMP, the scaler itself skips steps whose gradients overflowed
        scaler.update()
        if math.isfinite(grad_norm):
            if ema is not None:
                ema.update(model)
            nonfinite_in_a_row = 0
            done += 1
            stats = {k: float(v.detach()) for k, v in losses.items()}
            stats |= {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm}
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}")
        else:
            # AMP overflow: the scaler skipped the step and lowered its scale. The weights did not move, so neither
            # may the EMA, and an inf must not enter the epoch's mean grad norm.
            skipped += 1
        due = save_every_iters > 0 and (i + 1) % save_every_iters == 0 and i + 1 < iters_per_epoch
        saved = save_fn is not None and due
        if saved:
            save_fn(i)
        if stop_requested is not None and i + 1 < iters_per_epoch and stop_requested():
            if save_fn is not None and not saved:
                save_fn(i)
            bar.close()
            raise TrainingInterrupted(f"stopped at epoch {epoch} iteration {i + 1} of {iters_per_epoch}")
    bar.close()
    means = {k: v / max(done, 1) for k, v in sums.items()}
    epoch_time = time.perf_counter() - t0
    means |= {"iters": done, "skipped_iters": skipped, "epoch_time_s": epoch_time, "data_wait_s": waited[0],
              "data_wait_share": waited[0] / max(epoch_time, 1e-9)}  # fmt: skip
    return means
