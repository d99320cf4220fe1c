"""Frozen dataclass configs and size presets (RTMDET_FACTS.md section 2).

Override with dataclasses.replace(cfg, num_classes=3). Checkpoints store dataclasses.asdict(cfg) so they rebuild
themselves without --model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

BLOCKS = ("dw5", "dw3", "dw7", "rep3", "qarep3")
KINDS = ("det", "ins", "rot")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build one RTMDet variant.

    deepen/widen scale the P5 CSPNeXt table (blocks = max(round(n*deepen), 1), channels = int(c*widen)).
    kind: "det" (boxes), "ins" (boxes + instance masks) or "rot" (rotated boxes, le90).
    block: basic block of backbone and neck CSP layers (see rtmdet_edge.models.blocks).
    use_depthwise: mmdet 3.x's `use_depthwise`, set on backbone, neck and head together (as rtmdet-nano does): the
        backbone stages' 3x3 stride-2 convs, every CSPNeXt block's 3x3 conv1, the neck's stride-2 downsamples and 3x3
        out convs and the head's stacked 3x3 convs become depth-wise separable (3x3 depth-wise conv+BN+act, then 1x1
        conv+BN+act). Stem, SPP, the CSP layers' 1x1 convs, the neck's 1x1 reduce convs and the predictors stay dense.
    share_conv: mmdet's RTMDetSepBNHead `share_conv`: True shares the stacked convs across levels (BN per level),
        False gives each level its own. use_depthwise needs share_conv=False: mmdet 3.3.0 fails to build the shared
        form (it assigns `.conv`, which DepthwiseSeparableConvModule does not have), so it has no official meaning.
    """

    name: str
    deepen: float
    widen: float
    exp_on_reg: bool
    num_classes: int = 80
    kind: str = "det"
    block: str = "dw5"
    strides: tuple[int, ...] = (8, 16, 32)
    stacked_convs: int = 2
    expand_ratio: float = 0.5
    channel_attention: bool = True
    bn_eps: float = 1e-5  # configs override the mmcv class default 1e-3 with the torch default; 1e-3 costs ~7 AP
    bn_momentum: float = 0.1
    # Rep families widen/deepen differently to match dw5 cost; None means "same as deepen/widen" (see blocks.py).
    block_widen: float | None = None
    block_deepen: float | None = None
    imgsz: int = 640
    use_depthwise: bool = False
    share_conv: bool = True

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block {self.block!r}; choose one of {', '.join(BLOCKS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.use_depthwise and self.share_conv:
            raise ValueError(
                f"{self.name}: use_depthwise needs share_conv=False (mmdet 3.x cannot share depth-wise separable head "
                "convs across levels, so that combination has no official definition)"
            )
        if self.use_depthwise and self.block not in ("dw3", "dw5", "dw7"):
            raise ValueError(
                f"{self.name}: use_depthwise is defined for the CSPNeXt blocks (dw3/dw5/dw7), not block {self.block!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"checkpoint config has unknown fields {sorted(unknown)}")
        d = dict(d)
        if "strides" in d:
            d["strides"] = tuple(d["strides"])
        return cls(**d)


# Detection presets (COCO configs). exp_on_reg for m, l and x: the official m config inherits it from l
# (mmdet 3.3.0 rtmdet_m_8xb32-300e_coco.py; RTMDET_FACTS.md 2.1 says False, which the mmdet-generated fixture in
# tests/fixtures/independent disproves).
_DET = {
    "tiny": ModelConfig("rtmdet-tiny", deepen=0.167, widen=0.375, exp_on_reg=False),
    "s": ModelConfig("rtmdet-s", deepen=0.33, widen=0.5, exp_on_reg=False),
    "m": ModelConfig("rtmdet-m", deepen=0.67, widen=0.75, exp_on_reg=True),
    "l": ModelConfig("rtmdet-l", deepen=1.0, widen=1.0, exp_on_reg=True),
    "x": ModelConfig("rtmdet-x", deepen=1.33, widen=1.25, exp_on_reg=True),
}

PRESETS: dict[str, ModelConfig] = {cfg.name: cfg for cfg in _DET.values()}
# RTMDet-nano: RTMPose's person and hand detectors (mmpose projects/rtmpose/rtmdet/{person,hand}/
# rtmdet_nano_320-8xb32_*.py on the mmdet rtmdet_l base): deepen 0.33, widen 0.25, neck 64/128/256 -> 64 with one
# block per CSP layer, head width 64, use_depthwise everywhere, share_conv False, exp_on_reg False, 1 class, 320 input.
PRESETS["rtmdet-nano"] = ModelConfig(
    "rtmdet-nano",
    deepen=0.33,
    widen=0.25,
    exp_on_reg=False,
    num_classes=1,
    imgsz=320,
    use_depthwise=True,
    share_conv=False,
)
# Ins (ReLU distances, no exp) and rotated (DOTA: 15 classes; rotated m keeps exp_on_reg) variants.
for _size, _cfg in _DET.items():
    PRESETS[f"rtmdet-ins-{_size}"] = replace(_cfg, name=f"rtmdet-ins-{_size}", kind="ins", exp_on_reg=False)
for _size in ("tiny", "s", "m", "l"):
    PRESETS[f"rtmdet-r-{_size}"] = replace(
        _DET[_size], name=f"rtmdet-r-{_size}", kind="rot", num_classes=15, exp_on_reg=_size in ("m", "l"), imgsz=1024
    )


def get_config(name: str, num_classes: int | None = None, block: str = "dw5") -> ModelConfig:
    """The preset called name, optionally with another class count or block family."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    changes: dict[str, Any] = {"block": block}
    if block in REP_FAMILIES and cfg.use_depthwise:
        # The Rep baselines are dense 3x3 blocks cost-matched to the dense-conv sizes (REP_COST_MATCH); a
        # depth-wise separable nano has no Rep counterpart defined, and mixing them would compare nothing.
        raise ValueError(
            f"{name} is built from depth-wise separable convs (use_depthwise); the Rep blocks "
            f"{', '.join(REP_FAMILIES)} are only defined for rtmdet-tiny/s/m/l/x (try rtmdet-tiny with that block)"
        )
    if block in REP_FAMILIES:  # matched-cost widths of the Rep baselines (REP_COST_MATCH, end of this file)
        changes["block_widen"], changes["block_deepen"] = REP_COST_MATCH[name.rsplit("-", 1)[-1]]
    if num_classes is not None:
        changes["num_classes"] = num_classes
    return replace(cfg, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the official COCO recipe (RTMDET_FACTS.md 3.1); the CLI maps flags 1:1 onto fields.

    batch is the total batch over all processes (split evenly across torchrun ranks), so the same command trains the
    same way on one CPU, one GPU or many. lr None means the linear scaling rule 0.004 * batch / 256.
    stage2_epochs None means the official 20 of 300 scaled to the run: min(20, round(epochs / 15)).
    warmup_iters is the official 1000, capped at 10% of the run's iterations (see optim.short_run_warmup).
    """

    model: str = "rtmdet-tiny"
    block: str = "dw5"
    data: str = "synthetic"
    images: str | None = None
    val_data: str | None = None
    val_images: str | None = None
    epochs: int = 300
    batch: int = 256
    imgsz: int = 640
    device: str = "auto"
    out: str = "runs/train"
    workers: int = 4
    seed: int = 0
    deterministic: bool = False
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    warmup_start_factor: float = 1e-5
    min_lr_ratio: float = 0.05
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000.0
    stage2_epochs: int | None = None
    eval_interval: int = 10
    save_interval_iters: int = 0
    amp: bool = True
    amp_dtype: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | fp16 | bf16; see training.train.resolve_amp
    channels_last: bool = True  # NHWC activations: 8-12% faster per CPU step than NCHW (benchmarks/train_speed.py)
    fused_bn_silu: bool = True  # CPU: BN + SiLU as one compiled kernel in training (rtmdet_edge/models/bn_silu.py)
    compile: bool = False  # torch.compile the model (not the loss/assigner, whose shapes change every batch)
    max_grad_norm: float | None = None  # official optim_wrapper has no clip_grad
    max_nonfinite_steps: int = 20
    val_batch: int = 8
    resume: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_stage2_epochs(self) -> int:
        if self.stage2_epochs is not None:
            return max(0, min(self.stage2_epochs, self.epochs))
        return min(20, round(self.epochs / 15))


# Matched cost for the re-parameterised 3x3 baselines (rtmdet_edge/models/rep.py; benchmarks/model_costs.py measures it).
# A Rep block (two 3x3 units, ~18 c^2 MACs per pixel) costs ~1.8x a dw5 block (3x3 + 5x5 depth-wise + 1x1, ~10 c^2),
# so the Rep detectors keep dw5's depths and narrow the whole network (stem and stages, and with them neck and head)
# to the width on a 1/128 grid (even stage widths) whose params and FLOPs at 640 come closest to dw5's; all within 7%
# (training and deployed forms; the deployed Rep form has fewer of both: its 1x1 branches are merged away).
# dw3/dw7 need nothing: the kernel size changes a block by 16c or 24c parameters (<1% of the model, paper 1.4).
# size -> (block_widen, block_deepen); rep3 and qarep3 share it (they differ by a few BN parameters).
REP_FAMILIES = ("rep3", "qarep3")
REP_COST_MATCH: dict[str, tuple[float | None, float | None]] = {
    "tiny": (0.34375, None),  # stages 44/88/176/352: params +2.1% (deployed -3.3%), deployed FLOPs -6.5%
    "s": (0.453125, None),  # stages 58/116/232/464: params +1.4% (deployed -4.4%), deployed FLOPs -6.7%
    "m": (0.65625, None),  # stages 84/168/336/672: params +5.7% (deployed -2.5%), deployed FLOPs -5.3%
    "l": (0.84375, None),  # stages 108/216/432/864: params +5.3% (deployed -3.9%), deployed FLOPs -6.8%
    "x": (1.03125, None),  # stages 132/264/528/1056: params +5.6% (deployed -4.2%), deployed FLOPs -7.0%
}
