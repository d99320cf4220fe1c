"""Optimizer param groups and the lr schedule against an independent re-implementation of mmengine's schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rtmdet_edge.models.model import build_model
from rtmdet_edge.training.optim import LRSchedule, build_optimizer, lr_at, param_groups, scaled_lr, short_run_warmup


class _MMEngineChain:
    """mmengine's LinearLR(by_epoch=False, begin=0, end=1000) + CosineAnnealingLR(by_epoch=True -> iters), chainable,
    written from mmengine/optim/scheduler/param_scheduler.py: both schedulers see every step(), each only acts while
    begin <= global_step < end, LinearLR's total_iters is end - begin - 1."""

    def __init__(self, base, iters_per_epoch, max_epochs, warmup=1000, start=1e-5, eta_ratio=0.05):
        self.lr = base
        self.eta_min = base * eta_ratio
        self.start, self.warm_end, self.warm_total = start, warmup, warmup - 1
        half = max_epochs // 2
        self.cos_begin, self.cos_end = half * iters_per_epoch, max_epochs * iters_per_epoch
        self.t_max = (max_epochs - half) * iters_per_epoch
        self.g = -1
        self.warm_last = self.cos_last = -1
        self.step()  # the constructors' initial step

    def step(self):
        self.g += 1
        if 0 <= self.g < self.warm_end:
            self.warm_last += 1
            k, s = self.warm_last, self.start
            if k == 0:
                self.lr *= s
            else:
                self.lr *= 1.0 + (1.0 - s) / (self.warm_total * s + (k - 1) * (1.0 - s))
        if self.cos_begin <= self.g < self.cos_end:
            self.cos_last += 1
            k, t = self.cos_last, self.t_max
            if k > 0:
                ratio = (1 + math.cos(math.pi * k / t)) / (1 + math.cos(math.pi * (k - 1) / t))
                self.lr = ratio * (self.lr - self.eta_min) + self.eta_min


def test_lr_matches_official_mmengine_schedule():
    base, per_epoch, epochs = 0.004, 462, 300  # COCO: 117266 images / 256 per batch
    ref = _MMEngineChain(base, per_epoch, epochs)
    checkpoints = {0, 1, 2, 500, 998, 999, 1000, 1001, 150 * per_epoch - 1, 150 * per_epoch, 150 * per_epoch + 1,
                   200 * per_epoch + 17, 280 * per_epoch, 300 * per_epoch - 1}  # fmt: skip
    for g in range(300 * per_epoch):
        if g in checkpoints:
            ours = lr_at(g, base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs)
            assert ours == pytest.approx(ref.lr, rel=1e-9, abs=1e-15), g
        ref.step()
    # landmarks: factor 1e-5 at iteration 0, exactly 1 from iteration 999, eta_min approached at the end
    assert lr_at(0, base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs) == pytest.approx(base * 1e-5)
    assert lr_at(999, base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs) == pytest.approx(base)
    assert lr_at(150 * per_epoch, base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs) == pytest.approx(base)
    last = lr_at(300 * per_epoch - 1, base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs)
    assert last == pytest.approx(2e-4, rel=1e-6)


def test_lr_matches_torch_schedulers_closed_form():
    # torch's LinearLR(total_iters=999) + CosineAnnealingLR closed form, as a second independent check.
    base, per_epoch, epochs = 0.01, 7, 20
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-5, total_iters=9)
    sched = LRSchedule(base_lr=base, iters_per_epoch=per_epoch, max_epochs=epochs, warmup_iters=10)
    cos_begin, t_max = 10 * per_epoch, 10 * per_epoch
    for g in range(cos_begin):
        assert sched(g) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), g
        opt.step()
        warm.step()
    for g in range(cos_begin, epochs * per_epoch):
        expected = base * 0.05 + (base - base * 0.05) * (1 + math.cos(math.pi * (g - cos_begin) / t_max)) / 2
        assert sched(g) == pytest.approx(expected, rel=1e-12)


def test_short_run_warmup_and_scaling():
    assert short_run_warmup(1000, 300 * 462) == 1000  # official run untouched
    assert short_run_warmup(1000, 200) == 20  # 10% of a short run
    assert short_run_warmup(1000, 5) == 1  # 1 = no warm-up
    assert lr_at(0, base_lr=0.1, iters_per_epoch=1, max_epochs=5, warmup_iters=1) == pytest.approx(0.1)
    assert scaled_lr(256) == pytest.approx(0.004)
    assert scaled_lr(16) == pytest.approx(0.00025)


def test_no_decay_on_norm_and_bias_and_shared_convs_once():
    model = build_model("rtmdet-tiny", num_classes=3)
    groups = param_groups(model, weight_decay=0.05)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0

    ids_decay = {id(p) for p in decay["params"]}
    ids_no_decay = {id(p) for p in no_decay["params"]}
    assert len(ids_decay) == len(decay["params"]) and len(ids_no_decay) == len(no_decay["params"])  # no duplicates
    assert not ids_decay & ids_no_decay
    unique = {id(p) for p in model.parameters()}  # nn.Module.parameters() dedupes shared tensors too
    assert ids_decay | ids_no_decay == unique

    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.modules.batchnorm._NormBase) or pname == "bias":
                assert id(p) in ids_no_decay, f"{name}.{pname} must not be decayed"
            else:
                assert id(p) in ids_decay, f"{name}.{pname} must be decayed"

    # The SepBN head's shared 3x3 convs: the same object at every level, so once in the optimizer.
    head = model.bbox_head
    shared = head.cls_convs[0][0].conv.weight
    assert head.cls_convs[1][0].conv.weight is shared and head.cls_convs[2][0].conv.weight is shared
    assert sum(p is shared for p in decay["params"]) == 1

    opt = build_optimizer(model, lr=1e-3)
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == len(unique)
    named_with_dupes = len(list(model.named_parameters(remove_duplicate=False)))
    assert named_with_dupes > n_opt  # the model really does reach some parameters several times


def test_foreach_adamw_is_bitwise_equal_to_the_loop():
    """build_optimizer uses the multi-tensor AdamW for speed; it must give exactly the per-parameter loop's weights."""
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    other = copy.deepcopy(model)
    fast = build_optimizer(model, 1e-2)
    loop = torch.optim.AdamW(param_groups(other), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fast.defaults["foreach"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(model.parameters(), other.parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fast.step()
        loop.step()
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
