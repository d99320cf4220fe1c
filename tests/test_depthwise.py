"""The depth-wise conv's fast CPU backward gives PyTorch's gradients, in every case where it is taken or not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rtmdet_edge import build_model
from rtmdet_edge.models.depthwise import MIN_FAST_AREA, DepthwiseConv2d, depthwise_weight_grad
from rtmdet_edge.models.layers import ConvModule


def _reference(conv: DepthwiseConv2d, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, 1, conv.groups)
    return torch.autograd.grad(y, (x, conv.weight), g)


@pytest.mark.parametrize("size", [8, 31, 32, 40])  # below, at and above MIN_FAST_AREA
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_gradients_equal_pytorch(size: int, kernel: int) -> None:
    torch.manual_seed(size * 10 + kernel)
    conv = DepthwiseConv2d(6, kernel).double()
    x = torch.randn(3, 6, size, size + 3, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, conv.weight), g)
    rx, rw = _reference(conv, x, g)
    assert torch.equal(y, F.conv2d(x, conv.weight, None, 1, kernel // 2, 1, 6))
    torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-10)


def test_weight_grad_matches_a_loop_in_float32() -> None:
    torch.manual_seed(0)
    x, g = torch.randn(2, 4, 40, 36), torch.randn(2, 4, 40, 36)
    got = depthwise_weight_grad(x, g, (5, 5), (2, 2))
    xp = F.pad(x, (2, 2, 2, 2))
    want = torch.stack(
        [torch.stack([(xp[:, :, i : i + 40, j : j + 36] * g).sum((0, 2, 3)) for j in range(5)], -1) for i in range(5)],
        -2,
    )[:, None]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_only_the_needed_gradients() -> None:
    conv = DepthwiseConv2d(4, 5)
    x = torch.randn(2, 4, 48, 48, requires_grad=True)
    conv.weight.requires_grad_(False)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is None
    conv.weight.requires_grad_(True)
    x2 = torch.randn(2, 4, 48, 48)
    conv(x2).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_autocast_bf16_keeps_gradient_dtypes() -> None:
    conv = DepthwiseConv2d(4, 5)
    x = torch.randn(2, 4, MIN_FAST_AREA // 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    rx, rw = _reference(conv, x.detach().requires_grad_(), torch.ones_like(y, dtype=torch.float32))
    torch.testing.assert_close(conv.weight.grad, rw, rtol=0.05, atol=0.5)  # bf16 products: a loose bound


def test_stride_two_and_no_grad_take_the_ordinary_path() -> None:
    conv = DepthwiseConv2d(4, 5, stride=2)
    x = torch.randn(1, 4, 40, 40, requires_grad=True)
    y = conv(x)
    assert y.grad_fn is not None and "DepthwiseConvFn" not in type(y.grad_fn).__name__
    with torch.no_grad():
        assert conv(x).shape == (1, 4, 20, 20)


def test_conv_module_uses_it_only_for_depthwise_and_keeps_checkpoint_keys() -> None:
    assert isinstance(ConvModule(8, 8, 5, groups=8).conv, DepthwiseConv2d)
    assert type(ConvModule(8, 16, 3).conv) is torch.nn.Conv2d
    model = build_model("rtmdet-tiny", num_classes=3)
    depthwise = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert depthwise and all(m.kernel_size == (5, 5) for m in depthwise)
    assert all(k.endswith(("weight", "bias", "running_mean", "running_var", "num_batches_tracked")) for k in model.state_dict())
