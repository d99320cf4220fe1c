"""The overfit sanity check: can a model (and a training setting) learn 8 synthetic images by heart?

A trainer that cannot drive its training loss to memorisation on 8 images has a bug (or a precision setting that
loses the signal); this is the cheapest end-to-end check of model + assigner + losses + optimizer + EMA together.
`tests/test_engine.py` runs it in fp32 (slow marker); `benchmarks/amp_overfit.py` runs it for fp32 and bf16 autocast
and reports AP50 and time.

    from rtmdet_edge.training.overfit import overfit_ap50
    overfit_ap50()                        # fp32, ~1 min on 2 cores
    overfit_ap50(torch.bfloat16, channels_last=True)
"""

from __future__ import annotations

import torch
from tqdm import tqdm


def overfit_ap50(
    amp_dtype: torch.dtype | None = None,
    *,
    model_name: str = "rtmdet-tiny",
    imgsz: int = 160,
    iters: int = 200,
    lr: float = 0.004,
    channels_last: bool = False,
    fused_bn_silu: bool = False,
    seed: int = 0,
    show_progress: bool = False,
) -> float:
    """AP50 of the EMA weights on the 8 images they were trained on.

    Settings: 8 synthetic images, 3 classes, at most 4 objects each, no augmentation (test letterbox only), one batch
    of 8 per iteration, AdamW at `lr` (32x the linear-scaling value for batch 8 at the default, to overfit fast),
    warm-up 10%, cosine to 5% from the halfway point, EMA, evaluation of the EMA weights with the official test
    settings. amp_dtype: the forward's autocast dtype (torch.bfloat16 is `--amp bf16` on CPU); channels_last and
    fused_bn_silu as `rtmdet-edge train --channels-last --fused-bn-silu`.
    """
    from rtmdet_edge.data import SyntheticDataset, build_test_pipeline
    from rtmdet_edge.data.loader import collate_train
    from rtmdet_edge.evaluation.coco import evaluate
    from rtmdet_edge.models.bn_silu import fuse_bn_silu
    from rtmdet_edge.models.model import build_model
    from rtmdet_edge.training.ema import ModelEMA
    from rtmdet_edge.training.engine import train_one_epoch
    from rtmdet_edge.training.loss import build_criterion
    from rtmdet_edge.training.optim import LRSchedule, build_optimizer

    ds = SyntheticDataset(8, 3, imgsz, max_objects=4, transforms=build_test_pipeline(imgsz))
    batch = collate_train([ds[i] for i in range(len(ds))])
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=3)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if fused_bn_silu:
        fuse_bn_silu(model)
    criterion, optimizer = build_criterion(model), build_optimizer(model, lr)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # CPU: bf16 autocast needs no scaler
    ema = ModelEMA(model)
    schedule = LRSchedule(base_lr=lr, iters_per_epoch=1, max_epochs=iters, warmup_iters=iters // 10)
    for it in tqdm(range(iters), desc="overfit", disable=not show_progress):
        train_one_epoch(model, criterion, [batch], optimizer, scaler, ema, schedule, it, iters_per_epoch=1,
                        show_progress=False, amp_dtype=amp_dtype, channels_last=channels_last)  # fmt: skip
    return evaluate(ema.module, ds, imgsz=imgsz, show_progress=False).metrics["AP50"]
