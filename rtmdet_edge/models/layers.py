"""Basic layers shared by backbone, neck and head. Attribute names follow the official checkpoint keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ActLayer = Callable[[], nn.Module]


class SiLU(nn.SiLU):
    """nn.SiLU that works in place only where autograd does not need its input (inference, frozen layers).

    Under autograd an in-place SiLU makes PyTorch keep a copy of its input for the backward: writing a new tensor
    instead made BN + SiLU forward + backward ~10% faster on CPU at rtmdet-tiny's shapes, with bitwise the same
    values (mmcv's ConvModule uses the in-place form).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


def silu() -> nn.Module:
    return SiLU()


class ConvModule(nn.Module):
    """Conv (no bias, a BN follows) -> BN -> activation: mmcv's ConvModule as RTMDet uses it.

    After `fuse_bn()` the BN is folded into the conv (which then has a bias) and `bn` becomes Identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act_layer: ActLayer | None = silu,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.activate: nn.Module = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """k x k depth-wise ConvModule (carrying the stride) followed by a 1x1 point-wise ConvModule, each with BN and
    activation: mmcv's DepthwiseSeparableConvModule with its default dw/pw norm and activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        act_layer: ActLayer = silu,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, stride=stride, groups=in_channels, act_layer=act_layer, **bn_kwargs
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, act_layer=act_layer, **bn_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def conv_or_separable(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    use_depthwise: bool = False,
    act_layer: ActLayer = silu,
    **bn_kwargs: float,
) -> nn.Module:
    """ConvModule, or DepthwiseSeparableConvModule with use_depthwise: the `conv = DSConv if use_depthwise else
    ConvModule` switch of mmdet 3.x, used exactly where mmdet uses it (see ModelConfig.use_depthwise)."""
    if use_depthwise:
        return DepthwiseSeparableConvModule(
            in_channels, out_channels, kernel_size, stride=stride, act_layer=act_layer, **bn_kwargs
        )
    return ConvModule(in_channels, out_channels, kernel_size, stride=stride, act_layer=act_layer, **bn_kwargs)


class ChannelAttention(nn.Module):
    """Global average pool -> 1x1 conv (with bias) -> Hardsigmoid -> scale the input channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # The official code pools in fp32 with autocast off: a half-precision mean over 6400 pixels loses digits.
        with torch.autocast(device_type=x.device.type, enabled=False):
            attention = self.global_avgpool(x.float())
        attention = self.act(self.fc(attention.to(x.dtype)))
        return x * attention


class SPPBottleneck(nn.Module):
    """1x1 reduce -> concat [x, maxpool 5, 9, 13] -> 1x1 (mmdet's SPPBottleneck; stride-1 same-padding pools)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (5, 9, 13),
        act_layer: ActLayer = silu,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1, act_layer=act_layer, **bn_kwargs)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1, act_layer=act_layer, **bn_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = torch.cat([x] + [pool(x) for pool in self.poolings], dim=1)
        return self.conv2(x)
