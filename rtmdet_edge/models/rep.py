"""Re-parameterised 3x3 basic blocks: the RepVGG / QARepVGG baselines that RTMDet's depth-wise blocks are compared with.

Two units, each one 3x3 conv after `reparameterize()`:

- `RepVGGBlock` (RepVGG, arXiv 2101.03697; YOLOv6's RepVGGBlock): 3x3 conv+BN, 1x1 conv+BN and, when in == out, an
  identity BN, summed, then the activation.
- `QARepVGGBlock` (QARepVGG, arXiv 2212.01593, "Make RepVGG Greater Again"): the 3x3 branch keeps its BN (training
  stability), the 1x1 branch and the identity have no BN, and one BN follows the sum (post-BN). The per-branch BNs of
  RepVGG are what give the fused kernel outlier weights and the sum its enlarged variance, which is why plain RepVGG
  loses >20 points top-1 under PTQ and QARepVGG under 2 (QUANT_NOTES.md 1a, 1e).

`RepBottleneck` is the basic block of the `rep3`/`qarep3` families: two such units with a residual when add_identity,
which is YOLOv6's BottleRep inside a CSP layer (BepC3) and PPYOLOE's BasicBlock. It replaces CSPNeXtBlock
(3x3, 5x5 depth-wise, 1x1) one for one inside the same CSP layers, neck and head; the widths/depths that keep the
whole detector at the cost of `dw5` are in config.REP_COST_MATCH.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmdet_edge.models.fuse import fold_bn
from rtmdet_edge.models.layers import ActLayer, ConvModule, silu


def _identity_kernel(channels: int, like: Tensor) -> Tensor:
    """The 3x3 kernel [C, C, 3, 3] of the identity map: 1 at the centre tap of channel i -> i."""
    kernel = torch.zeros(channels, channels, 3, 3, dtype=like.dtype, device=like.device)
    kernel[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
    return kernel


def _fused_conv(kernel: Tensor, bias: Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1, bias=True).to(kernel.device, kernel.dtype)
    conv.weight.copy_(kernel)
    conv.bias.copy_(bias)
    return conv


class RepVGGBlock(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)); the identity branch exists only when in == out.

    After `reparameterize()` it is act(conv(x)) with one 3x3 conv with bias (`conv`), the branches removed.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act_layer: ActLayer = silu,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.rbr_dense: ConvModule | None = ConvModule(in_channels, out_channels, 3, act_layer=None, **bn)
        self.rbr_1x1: ConvModule | None = ConvModule(in_channels, out_channels, 1, act_layer=None, **bn)
        self.rbr_identity: nn.BatchNorm2d | None = (
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum) if in_channels == out_channels else None
        )
        self.conv: nn.Conv2d | None = None  # the merged 3x3 conv, set by reparameterize()
        self.activate = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is not None:
            return self.activate(self.conv(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.activate(out)

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The single 3x3 kernel and bias equal to the three branches (BN in eval mode, running statistics)."""
        k3, b3 = fold_bn(self.rbr_dense.conv.weight, None, self.rbr_dense.bn)
        k1, b1 = fold_bn(self.rbr_1x1.conv.weight, None, self.rbr_1x1.bn)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            kid, bid = fold_bn(_identity_kernel(kernel.shape[0], kernel), None, self.rbr_identity)
            kernel, bias = kernel + kid, bias + bid
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the branches into `conv` in place (deployment form)."""
        if self.conv is not None:
            return
        self.conv = _fused_conv(*self.equivalent_kernel_bias())
        self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None


class QARepVGGBlock(nn.Module):
    """act(BN(BN3(conv3x3(x)) + conv1x1(x) + x)): QARepVGG, arXiv 2212.01593 (YOLOv6 v3's QARepVGGBlock).

    The 1x1 branch and the identity (present only when in == out) carry no BN; `bn` is the post-BN after the sum.
    After `reparameterize()` it is act(conv(x)): the post-BN is folded too, so the deployed form is one 3x3 conv + bias
    (YOLOv6 keeps the post-BN as a separate layer at deploy time; folding it is exact in eval mode).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act_layer: ActLayer = silu,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.rbr_dense: ConvModule | None = ConvModule(
            in_channels, out_channels, 3, act_layer=None, bn_eps=bn_eps, bn_momentum=bn_momentum
        )
        self.rbr_1x1: nn.Conv2d | None = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.has_identity = in_channels == out_channels
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv: nn.Conv2d | None = None
        self.activate = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is not None:
            return self.activate(self.conv(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.has_identity:
            out = out + x
        return self.activate(self.bn(out))

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        k3, b3 = fold_bn(self.rbr_dense.conv.weight, None, self.rbr_dense.bn)
        kernel = k3 + F.pad(self.rbr_1x1.weight, [1, 1, 1, 1])
        if self.has_identity:
            kernel = kernel + _identity_kernel(kernel.shape[0], kernel)
        return fold_bn(kernel, b3, self.bn)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.conv is not None:
            return
        self.conv = _fused_conv(*self.equivalent_kernel_bias())
        self.rbr_dense = self.rbr_1x1 = self.bn = None


REP_UNITS: dict[str, type[nn.Module]] = {"rep3": RepVGGBlock, "qarep3": QARepVGGBlock}


class RepBottleneck(nn.Module):
    """Two Rep 3x3 units (conv1, conv2), residual when add_identity: YOLOv6 BottleRep / PPYOLOE BasicBlock.

    Channels in == out, like CSPNeXtBlock inside a CSP layer, so both units have their identity branch.
    """

    def __init__(
        self,
        unit: type[nn.Module],
        channels: int,
        add_identity: bool = True,
        act_layer: ActLayer = silu,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        self.conv1 = unit(channels, channels, act_layer=act_layer, **bn_kwargs)
        self.conv2 = unit(channels, channels, act_layer=act_layer, **bn_kwargs)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


def make_rep_block(block: str, channels: int, add_identity: bool, **bn_kwargs: float) -> nn.Module:
    """The basic block of family `block` ("rep3" or "qarep3") mapping channels -> channels."""
    if block not in REP_UNITS:
        raise ValueError(f"unknown Rep block family {block!r}; choose one of {', '.join(REP_UNITS)}")
    return RepBottleneck(REP_UNITS[block], channels, add_identity=add_identity, **bn_kwargs)
