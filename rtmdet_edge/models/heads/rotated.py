"""RotatedRTMDetSepBNHead (RTMDet-R, mmrotate 1.x): the detection SepBN head plus a per-level angle predictor."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rtmdet_edge.models.heads.detection import RTMDetSepBNHead


class RotatedRTMDetSepBNHead(RTMDetSepBNHead):
    """The detection head with `rtm_ang[l]`, a 1x1 conv on the reg features giving one angle per prior.

    The angle is the raw conv output in radians (PseudoAngleCoder, scale_angle=False in the SepBN head); boxes decode
    as le90 (cx, cy, w, h, angle) with rtmdet_edge.geometry.rotated.distance2rbox.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        strides: Sequence[int] = (8, 16, 32),
        stacked_convs: int = 2,
        exp_on_reg: bool = False,
        **bn_kwargs: float,
    ) -> None:
        super().__init__(num_classes, in_channels, feat_channels, strides, stacked_convs, exp_on_reg, **bn_kwargs)
        self.rtm_ang = nn.ModuleList(nn.Conv2d(feat_channels, 1, 1) for _ in strides)
        for conv in self.rtm_ang:
            nn.init.normal_(conv.weight, 0.0, 0.01)  # official normal_init(std=0.01), bias 0: boxes start at angle 0
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        cls_scores, bbox_preds, angle_preds = [], [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_scores.append(self.rtm_cls[level](self.cls_convs[level](x)))
            reg_feat = self.reg_convs[level](x)
            reg = self.rtm_reg[level](reg_feat)
            bbox_preds.append((reg.exp() if self.exp_on_reg else reg) * stride)
            angle_preds.append(self.rtm_ang[level](reg_feat))
        return {"cls_scores": cls_scores, "bbox_preds": bbox_preds, "angle_preds": angle_preds}
