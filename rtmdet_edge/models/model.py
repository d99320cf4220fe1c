"""RTMDet = CSPNeXt backbone + CSPNeXtPAFPN neck + SepBN head. forward returns raw per-level tensors only."""

from __future__ import annotations

from torch import Tensor, nn

from rtmdet_edge.models.backbone import CSPNeXt
from rtmdet_edge.config import ModelConfig, get_config
from rtmdet_edge.errors import UserError
from rtmdet_edge.models.heads.detection import RTMDetSepBNHead
from rtmdet_edge.models.heads.rotated import RotatedRTMDetSepBNHead
from rtmdet_edge.models.neck import CSPNeXtPAFPN


# model kind -> head class; "rot" adds angle_preds to the outputs.
HEADS: dict[str, type[nn.Module]] = {"det": RTMDetSepBNHead, "rot": RotatedRTMDetSepBNHead}


class RTMDet(nn.Module):
    """The detector. `forward(images)` takes normalised BGR [B,3,H,W] (H, W multiples of 32) and returns
    {"cls_scores": [B,C,H_l,W_l] logits per level, "bbox_preds": [B,4,H_l,W_l] (l,t,r,b) input pixels per level},
    plus "angle_preds": [B,1,H_l,W_l] radians for kind "rot" (RTMDet-R).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind not in HEADS:
            raise UserError(
                f"{config.name}: the {'instance-mask' if config.kind == 'ins' else 'rotated'} head is not implemented "
                "yet; only the detection models rtmdet-tiny/s/m/l/x can be built"
            )
        self.config = config
        self.num_classes = config.num_classes
        self.strides = tuple(config.strides)
        bn = dict(bn_eps=config.bn_eps, bn_momentum=config.bn_momentum)
        widen = config.widen if config.block_widen is None else config.block_widen
        self.backbone = CSPNeXt(
            config.deepen,
            widen,
            block=config.block,
            channel_attention=config.channel_attention,
            expand_ratio=config.expand_ratio,
            block_deepen=config.block_deepen,
            **bn,
        )
        in_channels = self.backbone.out_channels
        neck_width = in_channels[0]
        self.neck = CSPNeXtPAFPN(
            in_channels,
            neck_width,
            num_csp_blocks=max(round(3 * (config.deepen if config.block_deepen is None else config.block_deepen)), 1),
            block=config.block,
            expand_ratio=config.expand_ratio,
            **bn,
        )
        self.bbox_head = HEADS[config.kind](
            config.num_classes,
            neck_width,
            neck_width,
            strides=config.strides,
            stacked_convs=config.stacked_convs,
            exp_on_reg=config.exp_on_reg,
            **bn,
        )

    def forward(self, images: Tensor) -> dict[str, list[Tensor]]:
        return self.bbox_head(self.neck(self.backbone(images)))

    def fuse(self) -> RTMDet:
        """Deployment form, in place: BN folded into convs, Rep branches merged (see rtmdet_edge/models/fuse.py)."""
        from rtmdet_edge.models.fuse import fuse_model

        return fuse_model(self)


def build_model(name: str | ModelConfig, num_classes: int | None = None, block: str = "dw5") -> RTMDet:
    """Build a preset by name (`rtmdet-tiny` ... `rtmdet-x`) or from a ModelConfig."""
    if isinstance(name, ModelConfig):
        return RTMDet(name)
    try:
        return RTMDet(get_config(name, num_classes=num_classes, block=block))
    except ValueError as e:
        raise UserError(str(e)) from None

