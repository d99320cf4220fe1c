"""Basic blocks of the CSP layers, one class per block family, and the CSP layer that stacks them.

Families (config.BLOCKS): `dw5` is the official CSPNeXtBlock (3x3 conv, 5x5 depth-wise, 1x1 point-wise); `dw3`/`dw7` are
the paper's kernel-size ablations; `rep3`/`qarep3` are the re-parameterised 3x3 baselines (rtmdet_edge/models/rep.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rtmdet_edge.models.layers import (
    ActLayer,
    ChannelAttention,
    ConvModule,
    DepthwiseSeparableConvModule,
    conv_or_separable,
    silu,
)


class CSPNeXtBlock(nn.Module):
    """conv1 3x3 -> conv2 (k x k depth-wise + 1x1 point-wise), residual when add_identity and shapes allow.

    use_depthwise makes conv1 depth-wise separable too (3x3 depth-wise + 1x1), as mmdet's CSPNeXtBlock does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        add_identity: bool = True,
        expansion: float = 1.0,
        act_layer: ActLayer = silu,
        use_depthwise: bool = False,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = conv_or_separable(
            in_channels, hidden, 3, use_depthwise=use_depthwise, act_layer=act_layer, **bn_kwargs
        )
        self.conv2 = DepthwiseSeparableConvModule(hidden, out_channels, kernel_size, act_layer=act_layer, **bn_kwargs)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


def make_block(
    block: str, channels: int, add_identity: bool, use_depthwise: bool = False, **bn_kwargs: float
) -> nn.Module:
    """One basic block of family `block` mapping channels -> channels."""
    if block in ("dw3", "dw5", "dw7"):
        kernel = int(block[2:])
        return CSPNeXtBlock(channels, channels, kernel, add_identity, use_depthwise=use_depthwise, **bn_kwargs)
    if use_depthwise:  # ModelConfig refuses this combination; guard direct callers too
        raise ValueError(f"use_depthwise applies to the CSPNeXt blocks (dw3/dw5/dw7), not to {block!r}")
    if block in ("rep3", "qarep3"):
        from rtmdet_edge.models.rep import make_rep_block

        return make_rep_block(block, channels, add_identity, **bn_kwargs)
    raise ValueError(f"unknown block family {block!r}")


class CSPLayer(nn.Module):
    """Cross-stage partial layer: main (1x1 -> blocks) and short (1x1) paths, concat, [attention], 1x1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        add_identity: bool,
        channel_attention: bool,
        block: str = "dw5",
        expand_ratio: float = 0.5,
        use_depthwise: bool = False,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        # main/short/final stay dense 1x1 convs with use_depthwise (as in mmdet): only the blocks' conv1 changes
        self.main_conv = ConvModule(in_channels, mid, 1, **bn_kwargs)
        self.short_conv = ConvModule(in_channels, mid, 1, **bn_kwargs)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **bn_kwargs)
        self.blocks = nn.Sequential(
            *(make_block(block, mid, add_identity, use_depthwise, **bn_kwargs) for _ in range(num_blocks))
        )
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: Tensor) -> Tensor:
        x_short = self.short_conv(x)
        x_main = self.blocks(self.main_conv(x))
        x = torch.cat((x_main, x_short), dim=1)
        if self.attention is not None:
            x = self.attention(x)
        return self.final_conv(x)
