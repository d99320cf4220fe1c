"""A tiny RTMDet whose outputs vary with the input (the default init decays activations to ~0 through the stages)."""

from __future__ import annotations

import torch
from torch import nn


def lively_model(name: str = "rtmdet-tiny", num_classes: int = 3, imgsz: int = 96, seed: int = 0) -> nn.Module:
    """Kaiming-initialised convs, BN statistics measured on random inputs, head outputs in a detector-like range."""
    from rtmdet_edge.models.model import build_model

    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes)
    head = model.bbox_head
    finals = {id(m) for m in [*head.rtm_cls, *head.rtm_reg]}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in finals:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes below
            m.reset_running_stats()
    with torch.no_grad():
        for conv in [*head.rtm_cls, *head.rtm_reg]:
            nn.init.normal_(conv.weight, 0.0, 0.05)
        for conv in head.rtm_cls:
            nn.init.constant_(conv.bias, -0.5)  # some scores above the deploy threshold 0.3, most below
        model.train()(torch.randn(4, 3, imgsz, imgsz))
    return model.eval()
