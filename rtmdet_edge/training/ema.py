"""Exponential moving average of the weights with exponential momentum (mmdet ExpMomentumEMA, used by RTMDet).

Official: EMAHook(ema_type='ExpMomentumEMA', momentum=0.0002, update_buffers=True), gamma 2000 (default).
mmengine BaseAveragedModel.update_parameters semantics, reproduced exactly:
- the first update (steps == 0) copies the model into the average;
- update number `steps` >= 1 uses m = (1 - momentum) * exp(-(1 + steps) / gamma) + momentum and
  avg = (1 - m) * avg + m * param, for every floating-point entry of the state dict (update_buffers=True, so BN running
  statistics are averaged too); integer buffers (num_batches_tracked) keep their first copied value.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

EMA_MOMENTUM = 0.0002
EMA_GAMMA = 2000


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def ema_momentum(steps: int, momentum: float = EMA_MOMENTUM, gamma: float = EMA_GAMMA) -> float:
    """Weight given to the new parameters at update number `steps` (>= 1; update 0 is a copy)."""
    return (1 - momentum) * math.exp(-float(1 + steps) / gamma) + momentum


class ModelEMA:
    """EMA copy of a model. Call `update(model)` after every optimizer step; evaluate/save `ema.module`."""

    def __init__(self, model: nn.Module, momentum: float = EMA_MOMENTUM, gamma: float = EMA_GAMMA) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.gamma = gamma
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = unwrap(model).state_dict()
        if self.steps == 0:
            for key, avg in self.module.state_dict().items():
                avg.copy_(source[key])
        else:
            m = ema_momentum(self.steps, self.momentum, self.gamma)
            # One multi-tensor lerp over all float entries instead of ~500 small kernels; bitwise equal to per-tensor
            # lerp_ (tests/test_ema.py).
            avgs, news = [], []
            for key, avg in self.module.state_dict().items():
                if avg.dtype.is_floating_point:
                    avgs.append(avg)
                    news.append(source[key].to(avg.dtype))
            torch._foreach_lerp_(avgs, news, m)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
