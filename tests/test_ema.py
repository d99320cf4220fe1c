"""ModelEMA follows mmdet's ExpMomentumEMA + mmengine BaseAveragedModel exactly (update_buffers=True)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from rtmdet_edge.training.ema import ModelEMA, ema_momentum, unwrap


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dtype.is_floating_point:
                t.add_(torch.randn(t.shape, generator=g))
        model[1].num_batches_tracked += 5


@pytest.mark.parametrize("steps", [1, 2, 100, 1999, 2000, 10_000, 1_000_000])
def test_momentum_formula(steps):
    expected = (1 - 0.0002) * math.exp(-(1 + steps) / 2000) + 0.0002
    assert ema_momentum(steps) == pytest.approx(expected, rel=1e-12)
    assert ema_momentum(steps, momentum=0.001, gamma=10) == pytest.approx(
        (1 - 0.001) * math.exp(-(1 + steps) / 10) + 0.001, rel=1e-12
    )


def test_update_sequence_matches_reference():
    model = _net()
    ema = ModelEMA(model)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(5):
        _perturb(model, step)
        ema.update(model)
        src = model.state_dict()
        for k, v in src.items():
            if step == 0 or not v.dtype.is_floating_point:
                if step == 0:
                    reference[k] = v.clone()  # first update copies everything, integer buffers included
            else:
                m = (1 - 0.0002) * math.exp(-(1 + step) / 2000) + 0.0002
                reference[k] = (1 - m) * reference[k] + m * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=1e-6, atol=1e-6, msg=k)
    assert ema.steps == 5
    # BN running statistics are averaged (update_buffers=True) ...
    assert not torch.equal(ema.module[1].running_mean, model[1].running_mean)
    # ... and the integer counter keeps the copied value (mmengine averages floating-point entries only).
    assert int(ema.module[1].num_batches_tracked) == 5
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_state_dict_round_trip():
    model = _net()
    ema = ModelEMA(model)
    for s in range(3):
        _perturb(model, s)
        ema.update(model)
    other = ModelEMA(_net())
    other.load_state_dict(ema.state_dict())
    assert other.steps == 3
    for (k, a), b in zip(ema.module.state_dict().items(), other.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_works_with_ddp_wrapped_model(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _net()
        ddp = nn.parallel.DistributedDataParallel(model)
        assert unwrap(ddp) is model
        ema = ModelEMA(ddp)
        assert set(ema.module.state_dict()) == set(model.state_dict())  # no "module." prefix
        _perturb(model, 0)
        ema.update(ddp)
        torch.testing.assert_close(ema.module.state_dict(), model.state_dict())
    finally:
        dist.destroy_process_group()


def test_multi_tensor_update_is_bitwise_equal_to_per_tensor_lerp():
    model = _net()
    ema = ModelEMA(model)
    ema.update(model)
    reference = {k: v.clone() for k, v in ema.module.state_dict().items()}
    _perturb(model, 7)
    ema.update(model)
    m = ema_momentum(1)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            reference[k].lerp_(v, m)
        assert torch.equal(ema.module.state_dict()[k], reference[k]), k
