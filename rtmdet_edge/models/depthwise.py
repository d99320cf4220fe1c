"""Depth-wise convolution with a fast CPU backward.

PyTorch's CPU backward of a depth-wise convolution computes the *weight* gradient on a slow path once the feature map
is larger than about 32x32: for rtmdet-tiny at 320, batch 8, the eight 5x5 depth-wise convs of the backbone and neck
spent about half of the whole training step in that one gradient (seconds per call, against ~0.1 s for their forward;
benchmarks/train_speed.py shows the step before and after). The official implementation (mmcv on the same PyTorch)
pays the same price.

The weight gradient of a stride-1 depth-wise conv is, per channel c, the cross-correlation of the padded input with the
output gradient, summed over the batch:

    grad_w[c, 0, i, j] = sum_{n, y, x} grad_out[n, c, y, x] * x_pad[n, c, y + i, x + j]

which is itself one grouped convolution (channels as groups, the batch as input channels, the output gradient as a
kernel of the feature map's size) and runs on oneDNN's fast forward path. The input gradient stays PyTorch's own.
Only the backward changes: the forward, the parameters and the state-dict keys are those of nn.Conv2d, and ONNX export,
fusion and evaluation (no autograd) take nn.Conv2d's ordinary path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Feature maps smaller than this (H*W) keep PyTorch's backward: there its weight gradient is fast and ours is not.
MIN_FAST_AREA = 32 * 32


def depthwise_weight_grad(x: Tensor, grad_out: Tensor, kernel_size: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """grad of a stride-1, dilation-1 depth-wise conv's weight [C, 1, kh, kw] from its input and output gradient."""
    n, c, h, w = x.shape
    ph, pw = padding
    kh, kw = kernel_size
    x_pad = F.pad(x, (pw, pw, ph, ph))
    # [N, C, Hp, Wp] -> [1, C*N, Hp, Wp]: group c sees the N images of channel c as its input channels.
    inputs = x_pad.transpose(0, 1).reshape(1, c * n, h + 2 * ph, w + 2 * pw)
    kernels = grad_out.transpose(0, 1).reshape(c, n, grad_out.shape[2], grad_out.shape[3])
    return F.conv2d(inputs, kernels, groups=c).reshape(c, 1, kh, kw)


class _DepthwiseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        # Under autocast the forward ran in a lower precision: compute in the gradient's dtype, return each
        # gradient in its input's dtype, as autograd expects.
        xg, wg = x.to(grad_out.dtype), weight.to(grad_out.dtype)
        grad_x = grad_w = None
        fast_w = ctx.needs_input_grad[1] and x.shape[2] * x.shape[3] >= MIN_FAST_AREA
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not fast_w, False]
        if mask[0] or mask[1]:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, xg, wg, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], weight.shape[0], mask
            )
        if fast_w:
            grad_w = depthwise_weight_grad(xg, grad_out, tuple(weight.shape[2:]), ctx.padding)
        return (
            None if grad_x is None else grad_x.to(x.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None,
        )


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d with groups == in == out channels whose CPU training backward takes the fast weight gradient."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__(channels, channels, kernel_size, stride, padding=kernel_size // 2, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type == "cpu"
            and torch.is_grad_enabled()
            and (x.requires_grad or self.weight.requires_grad)
            and self.bias is None
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            return _DepthwiseConvFn.apply(x, self.weight, tuple(self.padding))
        return super().forward(x)


__all__ = ["DepthwiseConv2d", "depthwise_weight_grad"]
