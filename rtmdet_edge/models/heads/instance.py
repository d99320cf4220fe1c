"""RTMDetInsSepBNHead: the SepBN detection head plus per-instance dynamic-conv kernels and a shared mask prototype map.

RTMDET_FACTS.md 4.1. Per level: cls convs (shared across levels, BN per level) -> rtm_cls; the *same* convs -> rtm_reg
(the official `reg_convs.append(cls_convs)` quirk: the published weights were trained that way); kernel convs (not
shared) -> rtm_kernel, 169 dynamic-conv parameters per prior. The mask feature module fuses the three levels at stride 8
into 8 prototypes. Masks themselves are assembled outside the network (`rtmdet_edge.geometry.masks.dynamic_mask_logits`)
for the instances that survive NMS (inference) or assignment (training), so forward stays a fixed set of dense tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmdet_edge.models.layers import ConvModule

NUM_PROTOTYPES = 8
DYCONV_CHANNELS = 8
NUM_DYCONVS = 3


def dynamic_param_sizes(
    num_prototypes: int = NUM_PROTOTYPES, dyconv_channels: int = DYCONV_CHANNELS, num_dyconvs: int = NUM_DYCONVS
) -> tuple[list[int], list[int]]:
    """Weight and bias sizes of the dynamic 1x1 convs: (8+2)->8, 8->8, 8->1 gives weights [80, 64, 8], biases [8, 8, 1].

    The first conv also sees the 2 relative-coordinate channels; the sum (169 by default) is rtm_kernel's width.
    """
    weights, biases = [], []
    for i in range(num_dyconvs):
        c_in = num_prototypes + 2 if i == 0 else dyconv_channels
        c_out = 1 if i == num_dyconvs - 1 else dyconv_channels
        weights.append(c_in * c_out)
        biases.append(c_out)
    return weights, biases


class MaskFeatModule(nn.Module):
    """Levels 1.. bilinearly resized to level 0, concatenated, fused by a 1x1 conv, 4 ConvModules, projected to prototypes.

    Returns mask_feat [B, num_prototypes, H_0, W_0] (stride 8).
    """

    def __init__(
        self,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int = 4,
        num_levels: int = 3,
        num_prototypes: int = NUM_PROTOTYPES,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(
            *(ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, **bn_kwargs) for i in range(stacked_convs))
        )
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.projection(self.stacked_convs(self.fusion_conv(torch.cat(fused, dim=1))))


class RTMDetInsSepBNHead(nn.Module):
    """Outputs per level: cls logits [B,C,H,W], (l,t,r,b) = ReLU(rtm_reg) * stride [B,4,H,W] in input pixels,
    dynamic-conv kernels [B,169,H,W]; plus mask_feat [B,8,H/8,W/8] (8 = stride of level 0)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        strides: Sequence[int] = (8, 16, 32),
        stacked_convs: int = 2,
        num_prototypes: int = NUM_PROTOTYPES,
        dyconv_channels: int = DYCONV_CHANNELS,
        num_dyconvs: int = NUM_DYCONVS,
        **bn_kwargs: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.num_prototypes = num_prototypes
        self.dyconv_channels = dyconv_channels
        self.weight_nums, self.bias_nums = dynamic_param_sizes(num_prototypes, dyconv_channels, num_dyconvs)
        self.num_gen_params = sum(self.weight_nums) + sum(self.bias_nums)

        def stack() -> nn.Sequential:
            return nn.Sequential(
                *(ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, **bn_kwargs) for i in range(stacked_convs))
            )

        self.cls_convs = nn.ModuleList(stack() for _ in strides)
        # Official quirk the weights depend on: the box branch IS the cls branch (same modules, so the checkpoint's
        # reg_convs.* keys are aliases holding the same tensors, and the parameters are counted once).
        self.reg_convs = nn.ModuleList(list(self.cls_convs))
        self.kernel_convs = nn.ModuleList(stack() for _ in strides)
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, 1) for _ in strides)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, 1) for _ in strides)
        self.rtm_kernel = nn.ModuleList(nn.Conv2d(feat_channels, self.num_gen_params, 1) for _ in strides)
        # share_conv=True for cls (and therefore reg); the kernel convs stay per level.
        for level in range(1, len(strides)):
            for i in range(stacked_convs):
                self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
        self.mask_head = MaskFeatModule(
            in_channels, feat_channels, stacked_convs=4, num_levels=len(strides), num_prototypes=num_prototypes, **bn_kwargs
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: every conv N(0, 0.01) with bias 0, cls bias from prior 0.01, box bias 1 (ReLU starts live)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        prior_bias = -math.log((1 - 0.01) / 0.01)
        for conv in self.rtm_cls:
            nn.init.constant_(conv.bias, prior_bias)
        for conv in self.rtm_reg:
            nn.init.constant_(conv.bias, 1.0)

    def forward(self, feats: Sequence[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        mask_feat = self.mask_head(feats)
        cls_scores, bbox_preds, kernel_preds = [], [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat = self.cls_convs[level](x)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            # reg_convs[level] is cls_convs[level], so a second pass gives cls_feat again. In training the official code
            # still runs it twice, which updates each BN's running statistics twice per step (effective momentum
            # 0.19, not 0.1); we do the same there so trained BN statistics match, and skip the repeat in eval.
            reg_feat = self.reg_convs[level](x) if self.training else cls_feat
            bbox_preds.append(F.relu(self.rtm_reg[level](reg_feat)) * stride)
            kernel_preds.append(self.rtm_kernel[level](self.kernel_convs[level](x)))
        return {"cls_scores": cls_scores, "bbox_preds": bbox_preds, "kernel_preds": kernel_preds, "mask_feat": mask_feat}


def split_dynamic_params(
    kernels: Tensor, weight_nums: Sequence[int], bias_nums: Sequence[int]
) -> tuple[list[Tensor], list[Tensor]]:
    """[N, 169] per-instance parameters -> weights [N, c_out, c_in] and biases [N, c_out, 1] of each dynamic conv.

    Layout as the official parse_dynamic_params: all weights first (layer by layer, each row-major [c_out, c_in]),
    then all biases.
    """
    n = kernels.shape[0]
    parts = torch.split(kernels, list(weight_nums) + list(bias_nums), dim=1)
    num_layers = len(weight_nums)
    weights, biases = [], []
    for w, b in zip(parts[:num_layers], parts[num_layers:]):
        c_out = b.shape[1]
        weights.append(w.reshape(n, c_out, -1))
        biases.append(b.reshape(n, c_out, 1))
    return weights, biases


def relative_coordinates(priors: Tensor, height: int, width: int, mask_stride: int) -> Tensor:
    """[N, 2, H*W]: (prior_xy - grid_xy) / (prior_stride * 8) for every cell of the stride-`mask_stride` prototype grid.

    The grid points are the level-0 priors (offset 0: (j*s, i*s)); channel 0 is x, channel 1 is y (official order).
    """
    ys = torch.arange(height, device=priors.device, dtype=priors.dtype) * mask_stride
    xs = torch.arange(width, device=priors.device, dtype=priors.dtype) * mask_stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=0)  # [2, HW]
    return (priors[:, :2, None] - grid[None]) / (priors[:, 2, None, None] * 8)


def dynamic_mask_logits(
    mask_feat: Tensor,
    kernels: Tensor,
    priors: Tensor,
    mask_stride: int = 8,
    weight_nums: Sequence[int] | None = None,
    bias_nums: Sequence[int] | None = None,
) -> Tensor:
    """Mask logits of N instances of one image at the prototype resolution.

    Args:
        mask_feat: [P, H, W] prototypes of the image (P = 8).
        kernels: [N, 169] dynamic-conv parameters of each instance (its prior's kernel_pred).
        priors: [N, 4] (x, y, stride, stride) of each instance's prior, input pixels.
        mask_stride: stride of mask_feat (the level-0 stride, 8).

    Returns:
        [N, H, W] logits. Three per-instance 1x1 convs over [rel_x, rel_y, prototypes] with ReLU between them, written
        as batched matrix products (the official code uses a grouped conv; same arithmetic, and it exports to ONNX as
        plain MatMul).
    """
    if weight_nums is None or bias_nums is None:
        weight_nums, bias_nums = dynamic_param_sizes(mask_feat.shape[0])
    n = kernels.shape[0]
    p, h, w = mask_feat.shape
    if n == 0:
        return mask_feat.new_zeros((0, h, w))
    coords = relative_coordinates(priors.to(mask_feat.dtype), h, w, mask_stride)  # [N, 2, HW]
    x = torch.cat([coords, mask_feat.reshape(1, p, h * w).expand(n, p, h * w)], dim=1)  # [N, P+2, HW]
    weights, biases = split_dynamic_params(kernels, weight_nums, bias_nums)
    for i, (wt, b) in enumerate(zip(weights, biases)):
        x = torch.baddbmm(b, wt, x)
        if i < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)
