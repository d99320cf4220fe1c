"""Deployment form of a model: every BatchNorm folded into its conv, every Rep block merged into one 3x3 conv.

This is what export and quantization consume, so PTQ/QAT quantize exactly the graph that is deployed (the fused
RepVGG kernel is the one whose outliers QARepVGG removes; quantizing the branches separately would hide them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rtmdet_edge.models.bn_silu import unfuse_bn_silu
from rtmdet_edge.models.layers import ConvModule


@torch.no_grad()
def fold_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of conv followed by bn (eval mode, running statistics) as one conv.

    Args:
        weight: conv weight [C_out, C_in/groups, k, k].
        bias: conv bias [C_out] or None.
        bn: the BatchNorm2d over C_out channels.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(-1, 1, 1, 1), (bias - bn.running_mean) * scale + bn.bias


@torch.no_grad()
def fuse_conv_module(module: ConvModule) -> None:
    """Fold module.bn into a new conv with bias, in place; module.bn becomes Identity.

    A new Conv2d is always created, so a conv object shared by several ConvModules (the SepBN head shares each level's
    conv, with a BN per level) ends up as one independent fused conv per level, as it must: the folded weights differ.
    """
    if not isinstance(module.bn, nn.BatchNorm2d):
        return
    old = module.conv
    weight, bias = fold_bn(old.weight, old.bias, module.bn)
    conv = nn.Conv2d(
        old.in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        bias=True,
        padding_mode=old.padding_mode,
    ).to(old.weight.device, old.weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    module.conv = conv
    module.bn = nn.Identity()


@torch.no_grad()
def fuse_model(model: nn.Module) -> nn.Module:
    """Fuse in place and return the model, in eval mode with `model.fused = True`.

    Order matters: Rep units first (each merges its own branch BNs), then the remaining ConvModules.
    Fusing twice is a no-op. The fused model computes what the unfused one computes in eval mode.
    """
    model.eval()
    unfuse_bn_silu(model)  # a model trained with the fused training kernel: plain BN + SiLU again
    for m in list(model.modules()):
        if hasattr(m, "reparameterize"):
            m.reparameterize()
    for m in list(model.modules()):
        if isinstance(m, ConvModule):
            fuse_conv_module(m)
    leftover = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if leftover:
        raise RuntimeError(f"BatchNorm layers not folded (unsupported placement): {', '.join(leftover[:5])}")
    model.fused = True
    return model
