"""RTMDet = CSPNeXt backbone + CSPNeXtPAFPN neck + SepBN head. forward returns raw per-level tensors only."""

from __future__ import annotations

from torch import Tensor, nn

from rtmdet_edge.models.backbone import CSPNeXt
from rtmdet_edge.config import ModelConfig, get_config
from rtmdet_edge.errors import UserError
from rtmdet_edge.models.heads.detection import RTMDetSepBNHead
from rtmdet_edge.models.heads.instance import RTMDetInsSepBNHead
from rtmdet_edge.models.heads.rotated import RotatedRTMDetSepBNHead
from rtmdet_edge.models.neck import CSPNeXtPAFPN


# model kind -> head class: "ins" adds kernel_preds and mask_feat to the outputs, "rot" adds angle_preds.
HEADS: dict[str, type[nn.Module]] = {"det": RTMDetSepBNHead, "ins": RTMDetInsSepBNHead, "rot": RotatedRTMDetSepBNHead}


class RTMDet(nn.Module):
    """The detector. `forward(images)` takes normalised BGR [B,3,H,W] (H, W multiples of 32) and returns
    {"cls_scores": [B,C,H_l,W_l] logits per level, "bbox_preds": [B,4,H_l,W_l] (l,t,r,b) input pixels per level}; the
    instance-mask kind (config.kind "ins") adds "kernel_preds": [B,169,H_l,W_l] per level and "mask_feat": [B,8,H/8,W/8];
    the rotated kind ("rot", RTMDet-R) adds "angle_preds": [B,1,H_l,W_l] radians per level.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind not in HEADS:
            raise UserError(f"{config.name}: unknown model kind {config.kind!r}; choose one of {', '.join(HEADS)}")
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
            use_depthwise=config.use_depthwise,
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
            use_depthwise=config.use_depthwise,
            **bn,
        )
        self.bbox_head: nn.Module
        if config.kind != "det" and (config.use_depthwise or not config.share_conv):
            raise UserError(f"{config.name}: use_depthwise / share_conv=False are detection-head options only")
        if config.kind == "ins":
            self.bbox_head = RTMDetInsSepBNHead(
                config.num_classes, neck_width, neck_width, strides=config.strides, stacked_convs=config.stacked_convs, **bn
            )
        elif config.kind == "rot":
            self.bbox_head = RotatedRTMDetSepBNHead(
                config.num_classes, neck_width, neck_width, strides=config.strides, stacked_convs=config.stacked_convs,
                exp_on_reg=config.exp_on_reg, **bn,
            )  # fmt: skip
        else:
            self.bbox_head = RTMDetSepBNHead(
                config.num_classes,
                neck_width,
                neck_width,
                strides=config.strides,
                stacked_convs=config.stacked_convs,
                exp_on_reg=config.exp_on_reg,
                share_conv=config.share_conv,
                use_depthwise=config.use_depthwise,
                **bn,
            )

    def forward(self, images: Tensor) -> dict[str, list[Tensor] | Tensor]:
        return self.bbox_head(self.neck(self.backbone(images)))

    def fuse(self) -> RTMDet:
        """Deployment form, in place: BN folded into convs, Rep branches merged (see rtmdet_edge/models/fuse.py)."""
        from rtmdet_edge.models.fuse import fuse_model

        return fuse_model(self)


def build_model(name: str | ModelConfig, num_classes: int | None = None, block: str = "dw5") -> RTMDet:
    """Build a preset by name (`rtmdet-nano`, `rtmdet-tiny` ... `rtmdet-x`) or from a ModelConfig."""
    if isinstance(name, ModelConfig):
        return RTMDet(name)
    try:
        return RTMDet(get_config(name, num_classes=num_classes, block=block))
    except ValueError as e:
        raise UserError(str(e)) from None

