"""Worker: one official mmdet 3.3.0 RTMDet training step per request (run by benchmarks/train_speed.py).

Runs in the isolated official environment (e.g. /tmp/mmenv/bin/python, see tools/make_independent_fixtures.py) and
imports mmdet/mmengine only, nothing from this repository. The step is what mmengine's `model.train_step` does after
the data preprocessor: `model.loss` -> `parse_losses` -> `OptimWrapper.update_params` (zero_grad, backward, AdamW step
with the config's paramwise settings), then `ExpMomentumEMA.update_parameters` as the config's EMAHook does.
The batch is the same as the in-repo worker's (random normalised input, 10 random boxes per image, same seeds).

Protocol: one JSON line per request on stdin ("step"), one JSON line per reply on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def synthetic_batch(batch: int, imgsz: int, num_classes: int, seed: int = 0):
    # Duplicated on purpose in benchmarks/train_speed.py (this file may not import the repository).
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, imgsz, imgsz, generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(10, 2, generator=g) * imgsz * 0.7
        wh = torch.rand(10, 2, generator=g) * imgsz * 0.3 + 8
        targets.append((torch.cat([xy, xy + wh], 1), torch.randint(0, num_classes, (10,), generator=g)))
    return images, targets


def main() -> None:
    imgsz, batch, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    import mmdet
    from mmdet.models.layers import ExpMomentumEMA
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "rtmdet",
                                       "rtmdet_tiny_8xb32-300e_coco.py"))  # fmt: skip
    cfg.model.backbone.init_cfg = None  # no ImageNet download
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=2000, update_buffers=True)
    images, targets = synthetic_batch(batch, imgsz, cfg.model.bbox_head.num_classes)
    samples = []
    for boxes, labels in targets:
        s = DetDataSample(metainfo=dict(img_shape=(imgsz, imgsz), pad_shape=(imgsz, imgsz),
                                        batch_input_shape=(imgsz, imgsz), scale_factor=(1.0, 1.0)))  # fmt: skip
        s.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(s)
    print(json.dumps({"ready": True, "torch": torch.__version__, "mmdet": mmdet.__version__}), flush=True)
    for line in sys.stdin:
        if json.loads(line).get("cmd") != "step":
            break
        t0 = time.perf_counter()
        losses = model.loss(images, samples)
        loss, log_vars = model.parse_losses(losses)
        optim_wrapper.update_params(loss)
        ema.update_parameters(model)
        seconds = time.perf_counter() - t0
        print(json.dumps({"s": seconds, "loss": float(loss.detach())}), flush=True)


if __name__ == "__main__":
    main()
