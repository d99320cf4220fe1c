"""The fused BatchNorm + SiLU training kernel (rtmdet_edge/models/bn_silu.py) against PyTorch's and float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import IN_CI
from rtmdet_edge.models import bn_silu
from rtmdet_edge.models.bn_silu import BatchNormSiLU2d, fuse_bn_silu, unfuse_bn_silu


@pytest.fixture(scope="module")
def kernel():
    k = bn_silu.load_kernel()
    if k is None:
        reason = f"fused BN + SiLU kernel could not be built: {bn_silu.kernel_unavailable()}"
        if IN_CI:  # CI has a compiler: a kernel that stopped building must fail loudly, not skip
            pytest.fail(reason)
        pytest.skip(reason)
    return k


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor, eps: float = 1e-5):
    """Training-mode batch norm + SiLU and its gradients in float64 autograd (biased batch variance)."""
    x, w, b = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    z = (x - mean) / torch.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]
    y = z * torch.sigmoid(z)
    y.backward(grad.double())
    return y.detach(), x.grad, w.grad, b.grad


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def make_inputs(shape: tuple[int, int, int, int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    # An offset mean and unequal scales per channel: the shifted statistics must not lose precision.
    x = torch.randn(shape, generator=g) * (torch.rand(c, generator=g) * 3 + 0.1)[None, :, None, None]
    x = (x + (torch.rand(c, generator=g) * 8 - 4)[None, :, None, None]).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(c, generator=g) + 0.5
    bias = torch.rand(c, generator=g) - 0.5
    grad = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
    return x, weight, bias, grad


def run_module(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(grad)
    bn = module[0] if isinstance(module, nn.Sequential) else module
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad


# Shapes chosen for the kernel's code paths: "wide rows" for small C (k*C <= 256), C not a multiple of 8 (the padded
# vector tail), row counts that are not a multiple of the 8-row float partial sums or of the thread blocks, a single
# spatial position, and RTMDet's real channel counts.
SHAPES = [(2, 12, 9, 7), (3, 7, 5, 5), (2, 96, 10, 10), (1, 256, 3, 5), (8, 24, 1, 1), (2, 3, 33, 17), (2, 384, 4, 4), (4, 40, 40, 40)]


@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_float64_closer_than_pytorch(kernel, shape):
    x, weight, bias, grad = make_inputs(shape)
    fused = BatchNormSiLU2d(shape[1])
    native = nn.Sequential(nn.BatchNorm2d(shape[1]), nn.SiLU())
    with torch.no_grad():
        for bn in (fused, native[0]):
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
    assert fused._fused(x)
    ours = run_module(fused, x, grad)
    theirs = run_module(native, x, grad)
    ref = reference(x, weight, bias, grad)
    for name, a, b, r in zip(("y", "dx", "dweight", "dbias"), ours, theirs, ref):
        assert a.shape == r.shape, name
        # float32 results: as close to float64 as PyTorch's own float32 kernels are (or closer), and absolutely close.
        assert rel_err(a, r) <= max(2 * rel_err(b, r), 5e-7), (name, rel_err(a, r), rel_err(b, r))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(r.abs().max()), msg=name)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    assert ours[1].is_contiguous(memory_format=torch.channels_last)


def test_running_statistics_follow_batchnorm2d(kernel):
    for momentum in (0.1, 0.03, None):
        fused, native = BatchNormSiLU2d(16, momentum=momentum), nn.BatchNorm2d(16, momentum=momentum)
        for step in range(3):
            x = make_inputs((4, 16, 6, 6), seed=step)[0]
            fused(x)
            native(x)
        torch.testing.assert_close(fused.running_mean, native.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.running_var, native.running_var, rtol=1e-5, atol=1e-6)
        assert int(fused.num_batches_tracked) == int(native.num_batches_tracked) == 3


def test_falls_back_where_the_kernel_does_not_apply(kernel):
    bn = BatchNormSiLU2d(8)
    native = nn.Sequential(nn.BatchNorm2d(8), nn.SiLU())
    native[0].load_state_dict(bn.state_dict())
    x = make_inputs((2, 8, 5, 5))[0]
    assert not bn._fused(x.contiguous())  # NCHW
    assert not bn._fused(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bn._fused(x)
    bn.eval()
    native.eval()
    assert not bn._fused(x)
    torch.testing.assert_close(bn(x), native(x))
    bn.train()
    native.train()
    torch.testing.assert_close(bn(x.contiguous()), native(x.contiguous()))  # NCHW training: native path, same result


def tiny_model():
    from rtmdet_edge import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig("test-tiny", deepen=0.33, widen=0.125, exp_on_reg=False, num_classes=3))


def test_fuse_keeps_parameters_keys_and_results(kernel):
    from conftest import randomize_bn

    model = randomize_bn(tiny_model())
    reference_model = copy.deepcopy(model)
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    n = fuse_bn_silu(model)
    assert n == sum(isinstance(m, nn.BatchNorm2d) for m in reference_model.modules()) > 0
    assert list(model.state_dict()) == keys
    assert [id(p) for p in model.parameters()] == params  # optimizer and EMA keep their references

    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    model.train()
    reference_model.train()
    out, ref = model(x), reference_model(x)
    for name in ref:
        for a, b in zip(out[name], ref[name]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    # Training updated the same running statistics.
    for (name, a), b in zip(model.state_dict().items(), reference_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)

    model.eval()
    reference_model.eval()
    with torch.no_grad():
        out, ref = model(x), reference_model(x)
    for name in ref:
        for a, b in zip(out[name], ref[name]):
            torch.testing.assert_close(a, b, msg=name)

    assert unfuse_bn_silu(model) == n
    assert not any(isinstance(m, BatchNormSiLU2d) for m in model.modules())
    assert [id(p) for p in model.parameters()] == params


def test_deployment_fusion_of_a_fused_training_model(kernel):
    from rtmdet_edge.models.fuse import fuse_model

    model = tiny_model()
    reference_model = copy.deepcopy(model)
    fuse_bn_silu(model)
    model.eval()
    reference_model.eval()
    deployed, reference_deployed = fuse_model(model), fuse_model(reference_model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, ref = deployed(x), reference_deployed(x)
    for name in ref:
        for a, b in zip(out[name], ref[name]):
            torch.testing.assert_close(a, b, msg=name)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setattr(bn_silu, "_kernel", None)
    monkeypatch.setattr(bn_silu, "_failure", None)
    monkeypatch.setenv("RTMDET_EDGE_NO_FUSED_KERNELS", "1")
    model = tiny_model()
    assert fuse_bn_silu(model) == 0
    assert "RTMDET_EDGE_NO_FUSED_KERNELS" in bn_silu.kernel_unavailable()
    assert not any(isinstance(m, BatchNormSiLU2d) for m in model.modules())


def test_training_step_equals_the_unfused_step_to_float_rounding(kernel):
    """One train_one_epoch step (forward, loss, backward, AdamW) as `rtmdet-edge train` runs it on CPU by default."""
    from test_engine import _batches, _setup

    from rtmdet_edge.training.engine import train_one_epoch
    from rtmdet_edge.training.optim import build_optimizer

    model, criterion, optimizer, scaler = _setup()
    model = model.to(memory_format=torch.channels_last)
    fused = copy.deepcopy(model)
    assert fuse_bn_silu(fused) > 0
    fused_opt = build_optimizer(fused, 1e-3)
    batch = _batches(1)
    step = dict(iters_per_epoch=1, show_progress=False, channels_last=True)
    a = train_one_epoch(model, criterion, batch, optimizer, scaler, None, lambda s: 1e-3, 0, **step)
    b = train_one_epoch(fused, criterion, batch, fused_opt, scaler, None, lambda s: 1e-3, 0, **step)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    for (k, p), q in zip(model.named_parameters(), fused.parameters()):
        scale = float(p.grad.abs().max()) + 1e-12
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-3 * scale, msg=lambda m: f"{k}: {m}")
    # Running statistics too (not the updated weights: Adam's first step is ~lr * sign(grad), and a near-zero gradient
    # whose rounding flips sign moves a weight by 2 lr either way).
    for (k, p), q in zip(model.named_buffers(), fused.buffers()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
