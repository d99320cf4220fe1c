"""CSPNeXtPAFPN: top-down then bottom-up fusion of C3/C4/C5, then a 3x3 conv per level to the head width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmdet_edge.models.blocks import CSPLayer
from rtmdet_edge.models.layers import ConvModule, conv_or_separable


class CSPNeXtPAFPN(nn.Module):
    """use_depthwise (mmdet's option): the bottom-up 3x3 stride-2 downsamples, the blocks' conv1 and the 3x3 out convs
    become depth-wise separable; the 1x1 reduce layers stay dense."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_csp_blocks: int,
        block: str = "dw5",
        expand_ratio: float = 0.5,
        use_depthwise: bool = False,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        n = len(in_channels)
        csp = dict(num_blocks=num_csp_blocks, add_identity=False, channel_attention=False, block=block)
        csp.update(expand_ratio=expand_ratio, use_depthwise=use_depthwise, **bn_kwargs)
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(n - 1, 0, -1):
            self.reduce_layers.append(ConvModule(in_channels[idx], in_channels[idx - 1], 1, **bn_kwargs))
            self.top_down_blocks.append(CSPLayer(in_channels[idx - 1] * 2, in_channels[idx - 1], **csp))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(n - 1):
            self.downsamples.append(
                conv_or_separable(in_channels[idx], in_channels[idx], 3, 2, use_depthwise, **bn_kwargs)
            )
            self.bottom_up_blocks.append(CSPLayer(in_channels[idx] * 2, in_channels[idx + 1], **csp))
        self.out_convs = nn.ModuleList(
            conv_or_separable(c, out_channels, 3, use_depthwise=use_depthwise, **bn_kwargs) for c in in_channels
        )

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        n = len(self.in_channels)
        inner_outs = [feats[-1]]
        for i, idx in enumerate(range(n - 1, 0, -1)):
            # the reduced high-level map replaces it in inner_outs: the bottom-up path fuses with the reduced one
            high = self.reduce_layers[i](inner_outs[0])
            inner_outs[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner_outs.insert(0, self.top_down_blocks[i](torch.cat([up, feats[idx - 1]], dim=1)))
        outs = [inner_outs[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner_outs[idx + 1]], dim=1)))
        return tuple(conv(out) for conv, out in zip(self.out_convs, outs))
