"""CSPNeXt backbone (P5): stem of three 3x3 convs, four stages of (3x3 s2 conv, [SPP], CSPLayer)."""

from __future__ import annotations

from torch import Tensor, nn

from rtmdet_edge.models.blocks import CSPLayer
from rtmdet_edge.models.layers import ConvModule, SPPBottleneck, conv_or_separable

# (in, out, num_blocks, add_identity, use_spp) per stage at widen = deepen = 1 (mmdet CSPNeXt arch_settings["P5"]).
P5_STAGES = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False), (512, 1024, 3, False, True))


def stage_channels(widen: float) -> list[int]:
    """Output channels of stem and the four stages for a width factor: [stem, c1, c2, c3, c4]."""
    return [int(P5_STAGES[0][0] * widen)] + [int(out * widen) for _, out, *_ in P5_STAGES]


class CSPNeXt(nn.Module):
    """Returns the stage 2, 3 and 4 outputs (strides 8, 16, 32).

    use_depthwise (mmdet's CSPNeXt option): each stage's 3x3 stride-2 conv and every block's conv1 become depth-wise
    separable; the stem, SPP and the CSP layers' 1x1 convs stay dense.
    """

    def __init__(
        self,
        deepen: float,
        widen: float,
        block: str = "dw5",
        channel_attention: bool = True,
        expand_ratio: float = 0.5,
        block_deepen: float | None = None,
        use_depthwise: bool = False,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        stem = int(P5_STAGES[0][0] * widen // 2)
        self.stem = nn.Sequential(
            ConvModule(3, stem, 3, stride=2, **bn_kwargs),
            ConvModule(stem, stem, 3, **bn_kwargs),
            ConvModule(stem, int(P5_STAGES[0][0] * widen), 3, **bn_kwargs),
        )
        depth_factor = deepen if block_deepen is None else block_deepen
        self.out_channels: list[int] = []
        for i, (cin, cout, n, add_identity, use_spp) in enumerate(P5_STAGES):
            cin, cout = int(cin * widen), int(cout * widen)
            layers: list[nn.Module] = [conv_or_separable(cin, cout, 3, 2, use_depthwise, **bn_kwargs)]
            if use_spp:
                layers.append(SPPBottleneck(cout, cout, **bn_kwargs))
            layers.append(
                CSPLayer(
                    cout,
                    cout,
                    num_blocks=max(round(n * depth_factor), 1),
                    add_identity=add_identity,
                    channel_attention=channel_attention,
                    block=block,
                    expand_ratio=expand_ratio,
                    use_depthwise=use_depthwise,
                    **bn_kwargs,
                )
            )
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            self.out_channels.append(cout)
        self.out_channels = self.out_channels[1:]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(x)
        x = self.stage1(x)
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5
