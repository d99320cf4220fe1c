"""AdamW with no decay on norm/bias, and the official warm-up + flat + cosine learning-rate schedule.

Official recipe (RTMDET_FACTS.md 3.1, mmdet rtmdet_l_8xb32-300e_coco.py):
- AdamW lr 0.004 for 256 images per batch, weight_decay 0.05, paramwise_cfg norm_decay_mult=0, bias_decay_mult=0,
  bypass_duplicate=True (the head's shared convs are the same nn.Conv2d object at every level).
- LinearLR(start_factor=1e-5, by_epoch=False, begin=0, end=1000), then
  CosineAnnealingLR(eta_min=base*0.05, begin=max_epochs//2, end=max_epochs, T_max=max_epochs//2, by_epoch=True,
  convert_to_iter_based=True).

mmengine semantics reproduced exactly by `lr_at` (mmengine/optim/scheduler/param_scheduler.py):
- the scheduler sets the lr of iteration g (0-based) before it runs; LinearLR's total_iters is end-begin-1, so the
  factor is s + (1-s)*g/999 for g in [0, 999] and reaches exactly 1.0 at iteration 999;
- the cosine, converted to iterations, is active for g in [begin*L, end*L) (L = iterations per epoch) with
  T_max*L iterations: lr = eta_min + (base - eta_min) * (1 + cos(pi * (g - begin*L) / (T_max*L))) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

BASE_LR = 0.004  # for BASE_BATCH images per iteration
BASE_BATCH = 256
WEIGHT_DECAY = 0.05
WARMUP_ITERS = 1000
WARMUP_START_FACTOR = 1e-5
MIN_LR_RATIO = 0.05  # eta_min = base_lr * 0.05

# nn.modules.batchnorm._NormBase covers BatchNorm*/SyncBatchNorm/InstanceNorm; mmengine's is_norm adds these.
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scaled_lr(batch_size: int, base_lr: float = BASE_LR, base_batch: int = BASE_BATCH) -> float:
    """Linear scaling rule: the official 0.004 is for 256 images per iteration (8 GPUs x 32)."""
    return base_lr * batch_size / base_batch


def param_groups(model: nn.Module, weight_decay: float = WEIGHT_DECAY) -> list[dict]:
    """Two groups: decayed conv/linear weights, and norm weights + all biases with weight_decay 0.

    Parameters are deduplicated by identity (mmengine bypass_duplicate=True): the SepBN head's shared convs are
    reachable from every level but must be stepped once.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name == "bias" else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = WEIGHT_DECAY) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.999, eps 1e-8: torch defaults, which the official config keeps).

    foreach=True: torch only picks the multi-tensor path by itself for CUDA tensors; on CPU it would loop in Python
    over ~300 parameters. The foreach update is bitwise equal to the loop (tests/test_optim.py); fused=True is not
    (1 ulp), so it is not used.
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, weight_decay=weight_decay, foreach=True)


def short_run_warmup(warmup_iters: int, total_iters: int) -> int:
    """Warm-up length for a run: the official 1000 iterations, capped at 10% of the run.

    The official run is ~138k iterations (300 epochs x 462), so its warm-up is 0.7% of training and ends long before
    the cosine starts at the halfway point. A short run (tests, the synthetic learning curve) would otherwise spend
    most or all of its iterations warming up; capping at 10% keeps warm-up over before the cosine begins, so the two
    never overlap (mmengine would chain them multiplicatively).
    """
    return max(1, min(warmup_iters, total_iters // 10))


@dataclass(frozen=True)
class LRSchedule:
    """lr for each iteration (0-based global step). Call it: `schedule(step) -> lr`."""

    base_lr: float
    iters_per_epoch: int
    max_epochs: int
    warmup_iters: int = WARMUP_ITERS
    warmup_start_factor: float = WARMUP_START_FACTOR
    min_lr_ratio: float = MIN_LR_RATIO
    cosine_begin_epoch: int | None = None  # None: max_epochs // 2 (official: 150 of 300)

    def __call__(self, step: int) -> float:
        return lr_at(
            step,
            base_lr=self.base_lr,
            iters_per_epoch=self.iters_per_epoch,
            max_epochs=self.max_epochs,
            warmup_iters=self.warmup_iters,
            warmup_start_factor=self.warmup_start_factor,
            min_lr_ratio=self.min_lr_ratio,
            cosine_begin_epoch=self.cosine_begin_epoch,
        )

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.max_epochs


def lr_at(
    step: int,
    *,
    base_lr: float,
    iters_per_epoch: int,
    max_epochs: int,
    warmup_iters: int = WARMUP_ITERS,
    warmup_start_factor: float = WARMUP_START_FACTOR,
    min_lr_ratio: float = MIN_LR_RATIO,
    cosine_begin_epoch: int | None = None,
) -> float:
    """Learning rate of iteration `step` under mmengine's LinearLR(by iter) + CosineAnnealingLR(by epoch -> iter).

    Closed form of the chained schedulers, valid when warm-up ends before the cosine begins (always true with
    `short_run_warmup`). See the module docstring for the exact semantics.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    begin_epoch = max_epochs // 2 if cosine_begin_epoch is None else cosine_begin_epoch
    cos_begin = begin_epoch * iters_per_epoch
    cos_len = (max_epochs - begin_epoch) * iters_per_epoch  # T_max, converted to iterations
    eta_min = base_lr * min_lr_ratio
    if step >= cos_begin and cos_len > 0:
        t = min(step - cos_begin, cos_len)  # mmengine stops updating at the end; we hold the last value
        lr = eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / cos_len)) / 2
    else:
        lr = base_lr
    if warmup_iters > 1 and step < warmup_iters:
        # LinearLR total_iters = end - begin - 1: the factor hits exactly 1 at iteration warmup_iters - 1.
        factor = warmup_start_factor + (1.0 - warmup_start_factor) * step / (warmup_iters - 1)
        lr *= factor
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
