#!/usr/bin/env python
"""Generate `tests/fixtures/independent/rtmdet-r-*`: reference outputs of the OFFICIAL RTMDet-R (mmrotate 1.0.0rc1)
for sizes, seeds, class counts and inputs that the shared fixture (rtmdet-r-tiny, 15 classes, seed 0) does not cover.

Like tools/make_independent_fixtures.py (whose weight drawing, BN calibration and input noise it reuses, so the
folders have the same files and the same test rebuilds them), this script imports NOTHING from this repository and
runs in an isolated venv. mmrotate 1.0.0rc1 asserts mmcv <= 2.1.0 and mmdet <= 3.1.0, hence its own venv:

    python3 -m venv /tmp/mmrenv
    /tmp/mmrenv/bin/pip install torch==2.13.0 numpy mmengine==0.10.7 mmcv-lite==2.0.1 scipy shapely terminaltables \
        tqdm six pycocotools e2cnn    # e2cnn: mmrotate.models imports its ReResNet backbone unconditionally
    /tmp/mmrenv/bin/pip install --no-deps mmdet==3.1.0 mmrotate==1.0.0rc1
    /tmp/mmrenv/bin/python tools/make_independent_fixtures.py --install-ext-stub
    /tmp/mmrenv/bin/python tools/make_independent_rotated_fixtures.py --check-shared ../shared/fixtures/official/rtmdet-r_tiny
    /tmp/mmrenv/bin/python tools/make_independent_rotated_fixtures.py --out tests/fixtures/independent

Models come from the config files shipped in the mmrotate wheel (`configs/rotated_rtmdet/rotated_rtmdet_<size>-3x-
dota.py`), with SyncBN replaced by BN (same parameters and buffers; identical in eval mode) and `num_classes` changed
where a fixture says so.

mmcv-lite has no compiled ops, and three of them sit on the paths checked here. They are replaced, inside this
script only, by exact float64 polygon geometry from shapely (an implementation that shares nothing with this
repository's torch code):
- `box_iou_rotated` (the assigner's RBboxOverlaps2D; mmrotate's own clamping of w/h and centres runs before it),
- `diff_iou_rotated_2d` (RotatedIoULoss),
- `nms_rotated` (mmcv's batched_nms with its class-offset trick, called by mmdet's _bbox_post_process).
The official ops compute the same areas in float32 (the shared fixture agrees with exact geometry to ~1e-6), so
IoU-based decisions can only differ where a value sits within float noise of a threshold. `--check-shared` measures
the substitution on the shared fixture (made with the real ops): with it mmrotate gives loss_cls identical, loss_bbox
within 7.7e-7 relative, the identical assignment (max_overlaps within 1.5e-7) and all 819 detections (run of
2026-11-30).

Extra files per folder, beyond `info.json`, `weights.npz`, `raw.npz` (with `angle_pred_{l}`):
- `predict.npz`: the official `predict_by_feat` on the fixture's own raw head outputs (test_cfg of the config:
  score_thr 0.05, nms_pre 2000, nms_rotated IoU 0.1, max 2000; rescale off): `pred_bboxes` (cx, cy, w, h, angle le90,
  input pixels), `pred_scores`, `pred_labels`.
- `loss.npz`: seeded random rotated GT (`gt_bboxes` le90, `gt_labels`), the assigner's result for every prior
  (`assign_gt_inds`, `assign_labels`, `assign_max_overlaps`) and `loss_cls` [3], `loss_bbox` [3] as
  `loss_by_feat` returns them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# mmrotate 1.0.0rc1 predates Python 3.10 in one import (`from collections import Sequence`, refine_single_stage.py):
# give it the alias it expects. Nothing numerical depends on this.
import collections  # noqa: E402
import collections.abc  # noqa: E402

collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
sys.path.insert(0, str(Path(__file__).parent))
import make_independent_fixtures as base  # noqa: E402  (the det/ins generator: weights, BN calibration, noise input)

ROTATED_FIXTURES = {
    # name: (mmrotate config, seed, H, W, num_classes or None)
    "rtmdet-r-tiny_256x320_seed21_nc5": ("rotated_rtmdet_tiny-3x-dota.py", 21, 256, 320, 5),
    "rtmdet-r-s_224x288_seed22": ("rotated_rtmdet_s-3x-dota.py", 22, 224, 288, None),
    "rtmdet-r-m_192x256_seed23": ("rotated_rtmdet_m-3x-dota.py", 23, 192, 256, None),
    "rtmdet-r-l_160x160_seed24_nc3": ("rotated_rtmdet_l-3x-dota.py", 24, 160, 160, 3),
}


# ------------------------------------------------------------------------------------------- exact replacement ops
def _polygons(boxes: np.ndarray):
    """(cx, cy, w, h, angle) rows -> shapely polygons (angle in radians, counter-clockwise in image axes)."""
    import shapely

    cx, cy, w, h, a = (boxes[:, i].astype(np.float64) for i in range(5))
    c, s = np.cos(a), np.sin(a)
    dx = np.stack([w, -w, -w, w], 1) / 2
    dy = np.stack([h, h, -h, -h], 1) / 2
    xs = cx[:, None] + dx * c[:, None] - dy * s[:, None]
    ys = cy[:, None] + dx * s[:, None] + dy * c[:, None]
    return shapely.polygons(np.stack([xs, ys], -1))


def _iou_matrix(b1: np.ndarray, b2: np.ndarray, aligned: bool) -> np.ndarray:
    import shapely

    p1, p2 = _polygons(b1), _polygons(b2)
    a1, a2 = shapely.area(p1), shapely.area(p2)
    if aligned:
        inter = shapely.area(shapely.intersection(p1, p2))
        return inter / np.maximum(a1 + a2 - inter, 1e-12)
    inter = shapely.area(shapely.intersection(p1[:, None], p2[None, :]))
    return inter / np.maximum(a1[:, None] + a2[None, :] - inter, 1e-12)


def box_iou_rotated(bboxes1, bboxes2, mode="iou", aligned=False, clockwise=True):
    assert mode == "iou"  # IoU is unchanged by the reflection that `clockwise` selects
    if len(bboxes1) == 0 or len(bboxes2) == 0:
        return bboxes1.new_zeros((len(bboxes1),) if aligned else (len(bboxes1), len(bboxes2)))
    iou = _iou_matrix(bboxes1.detach().cpu().numpy(), bboxes2.detach().cpu().numpy(), aligned)
    return torch.from_numpy(iou).to(bboxes1.dtype)


def diff_iou_rotated_2d(box1, box2):
    b, n = box1.shape[:2]
    iou = _iou_matrix(box1.detach().reshape(-1, 5).numpy(), box2.detach().reshape(-1, 5).numpy(), aligned=True)
    return torch.from_numpy(iou).to(box1.dtype).reshape(b, n)


def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
    """Greedy NMS in descending score order (mmcv's nms_rotated contract: returns (dets+score rows, kept indices))."""
    import shapely

    order = torch.sort(scores, descending=True, stable=True)[1].numpy()
    polys = _polygons(dets.detach().numpy())
    areas = shapely.area(polys)
    lab = None if labels is None else labels.numpy()
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i, idx in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(idx)
        rest = np.nonzero(~suppressed[i + 1:])[0] + i + 1
        if len(rest) == 0:
            break
        others = order[rest]
        inter = shapely.area(shapely.intersection(polys[idx], polys[others]))
        iou = inter / np.maximum(areas[idx] + areas[others] - inter, 1e-12)
        hit = iou > iou_threshold
        if lab is not None:
            hit &= lab[others] == lab[idx]
        suppressed[rest[hit]] = True
    keep = torch.as_tensor(np.array(keep, dtype=np.int64))
    return torch.cat([dets[keep], scores[keep, None]], 1), keep


def patch_ops() -> None:
    import mmcv.ops.nms
    import mmrotate.models.losses.rotated_iou_loss as riou
    import mmrotate.structures.bbox.bbox_overlaps as overlaps

    # batched_nms eval()s the op name in its module; `mmcv.ops.nms` the attribute is the nms function, not the module
    sys.modules["mmcv.ops.nms"].nms_rotated = nms_rotated
    overlaps.box_iou_rotated = box_iou_rotated
    riou.diff_iou_rotated_2d = diff_iou_rotated_2d


# ---------------------------------------------------------------------------------------------------- the fixtures
def build(cfg_name: str, num_classes):
    import mmrotate
    from mmengine.config import Config
    from mmrotate.registry import MODELS
    from mmrotate.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmrotate.__file__), ".mim", "configs", "rotated_rtmdet", cfg_name))
    cfg.model.backbone.init_cfg = None
    for part in ("backbone", "neck", "bbox_head"):
        cfg.model[part].norm_cfg = dict(type="BN")
    if num_classes is not None:
        cfg.model.bbox_head.num_classes = num_classes
    return MODELS.build(cfg.model), cfg


def forward(model, x):
    out = {"input": x}
    feats = model.backbone(x)
    out.update({f"backbone_out_{i}": t for i, t in enumerate(feats)})
    neck = model.neck(feats)
    out.update({f"neck_out_{i}": t for i, t in enumerate(neck)})
    for name, group in zip(("cls_score", "bbox_pred", "angle_pred"), model.bbox_head(neck)):
        out.update({f"{name}_{i}": t for i, t in enumerate(group)})
    return out


def random_gt(seed: int, h: int, w: int, num_classes: int, n: int = 7):
    """n rotated boxes (le90: angle in [-pi/2, pi/2)), some long and thin, some overlapping, and random labels."""
    g = torch.Generator().manual_seed(seed * 1000 + 901)
    ctr = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8]) + torch.tensor([w * 0.1, h * 0.1])
    size = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35]) + 6
    size[::3, 1] = size[::3, 1].clamp(max=12)  # thin objects (ships, bridges) are DOTA's hard case
    angle = torch.rand(n, 1, generator=g) * math.pi - math.pi / 2
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return torch.cat([ctr, size, angle], 1), labels


def make(name: str, out_root: Path) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import mmrotate
    from mmengine.structures import InstanceData
    from mmrotate.structures import RotatedBoxes

    cfg_name, seed, h, w, nc = ROTATED_FIXTURES[name]
    t0 = time.time()
    torch.manual_seed(seed)
    model, cfg = build(cfg_name, nc)
    head_cfg = cfg.model.bbox_head
    exp_on_reg = bool(head_cfg.get("exp_on_reg", False))
    record = base.randomise(model, seed, exp_on_reg)

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dp = cfg.model.data_preprocessor
    sd["data_preprocessor.mean"] = torch.tensor(dp.mean, dtype=torch.float32).view(-1, 1, 1)
    sd["data_preprocessor.std"] = torch.tensor(dp.std, dtype=torch.float32).view(-1, 1, 1)
    keys, stored = base.key_records(sd, record)

    x = base.smooth_noise(torch.Generator().manual_seed(seed * 1000 + h), 1, h, w)
    with torch.no_grad():
        out32 = {k: v.numpy().copy() for k, v in forward(model, x).items()}
        out64 = {k: v.numpy().copy() for k, v in forward(copy.deepcopy(model).double(), x.double()).items()}
    noise = {k: float(np.abs(out32[k].astype(np.float64) - out64[k]).max()) for k in out32}

    folder = out_root / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", **stored)
    np.savez(folder / "raw.npz", **out32)

    head = model.bbox_head
    groups = [[torch.from_numpy(out32[f"{k}_{i}"]) for i in range(3)] for k in ("cls_score", "bbox_pred", "angle_pred")]
    meta = {"img_shape": (h, w), "pad_shape": (h, w), "batch_input_shape": (h, w), "scale_factor": (1.0, 1.0)}
    with torch.no_grad():
        pred = head.predict_by_feat(*groups, batch_img_metas=[meta], cfg=cfg.model.test_cfg, rescale=False)[0]
    boxes = pred.bboxes.tensor if hasattr(pred.bboxes, "tensor") else pred.bboxes
    np.savez(folder / "predict.npz", pred_bboxes=boxes.numpy(), pred_scores=pred.scores.numpy(),
             pred_labels=pred.labels.numpy())  # fmt: skip

    gt_boxes, gt_labels = random_gt(seed, h, w, head.num_classes)
    gt = InstanceData(bboxes=RotatedBoxes(gt_boxes), labels=gt_labels)
    recorded = base.record_assignments(head)
    losses = head.loss_by_feat(*groups, [gt], [meta])
    a = recorded[0]
    np.savez(
        folder / "loss.npz", gt_bboxes=gt_boxes.numpy(), gt_labels=gt_labels.numpy(),
        assign_gt_inds=a.gt_inds.numpy(), assign_labels=a.labels.numpy(), assign_max_overlaps=a.max_overlaps.numpy(),
        loss_cls=torch.stack(losses["loss_cls"]).detach().numpy(),
        loss_bbox=torch.stack(losses["loss_bbox"]).detach().numpy(),
    )  # fmt: skip

    bb = cfg.model.backbone
    size = cfg_name.split("_")[2].split("-")[0]
    info = {
        "name": name,
        "model": f"rtmdet-r-{size}",
        "official_config": "mmrotate configs/rotated_rtmdet/" + cfg_name,
        "mmdet_model_updates": {"norm_cfg": "SyncBN -> BN (same tensors)"},
        "config_overrides": {},
        "kind": "rotated",
        "num_classes": int(head_cfg.num_classes),
        "seed": seed,
        "input_hw": [h, w],
        "exp_on_reg": exp_on_reg,
        "deepen_widen": [bb.deepen_factor, bb.widen_factor],
        "test_cfg": {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.model.test_cfg.items()},
        "generated_by": "tools/make_independent_rotated_fixtures.py in an isolated venv: official mmrotate "
                        "1.0.0rc1 modules built from the config files in the mmrotate wheel; box_iou_rotated, "
                        "diff_iou_rotated_2d and nms_rotated replaced by exact shapely geometry (mmcv-lite).",
        "versions": {"torch": torch.__version__, "mmcv": mmcv.__version__, "mmdet": mmdet.__version__,
                     "mmrotate": mmrotate.__version__, "mmengine": mmengine.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "init_scheme": "see tools/make_independent_fixtures.py (same drawing)",
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_state_dict_keys": len(sd),
        "num_predictions": int(len(pred.scores)),
        "fp32_vs_fp64_maxabs": noise,
        "keys": keys,
        "seconds": round(time.time() - t0, 1),
    }
    (folder / "info.json").write_text(json.dumps(info, indent=1))
    return info


def check_shared(folder: Path) -> None:
    """Validate the op replacement: with them, mmrotate must reproduce the shared fixture (`rtmdet-r_tiny`, made with
    the real compiled mmcv ops) from its own recorded head outputs: the loss, the assignment and the detections."""
    from mmengine.structures import InstanceData
    from mmrotate.structures import RotatedBoxes

    model, cfg = build("rotated_rtmdet_tiny-3x-dota.py", None)
    head = model.bbox_head
    ref = np.load(folder / "loss_seed0.npz")
    groups = [[torch.from_numpy(ref[f"{k}_{i}"]) for i in range(3)] for k in ("cls_score", "bbox_pred", "angle_pred")]
    meta = {"img_shape": (320, 320), "pad_shape": (320, 320), "batch_input_shape": (320, 320)}
    gts = [InstanceData(bboxes=RotatedBoxes(torch.from_numpy(ref[f"gt_bboxes_{i}"])),
                        labels=torch.from_numpy(ref[f"gt_labels_{i}"])) for i in range(2)]  # fmt: skip
    recorded = base.record_assignments(head)
    losses = head.loss_by_feat(*groups, gts, [meta, meta])
    for key in ("loss_cls", "loss_bbox"):
        got = torch.stack(losses[key]).detach().numpy()
        print(f"{key}: max rel err {np.max(np.abs(got - ref[key]) / np.maximum(np.abs(ref[key]), 1e-12)):.2e}")
    a = recorded[0]
    print("assignment identical:", bool(np.array_equal(a.gt_inds.numpy(), ref["assign_gt_inds"][0])),
          f"max_overlaps max err {np.abs(a.max_overlaps.numpy() - ref['assign_max_overlaps'][0]).max():.2e}")
    pred_ref = np.load(folder / "predict.npz")
    info = json.loads((folder / "predict.json").read_text())
    groups = [[torch.from_numpy(pred_ref[f"head_{k}_{i}"]) for i in range(3)]
              for k in ("cls_score", "bbox_pred", "angle_pred")]  # fmt: skip
    meta = {k: tuple(info[k]) for k in ("img_shape", "pad_shape", "batch_input_shape", "ori_shape", "scale_factor")}
    with torch.no_grad():
        pred = head.predict_by_feat(*groups, batch_img_metas=[meta], cfg=cfg.model.test_cfg, rescale=True)[0]
    boxes = pred.bboxes.tensor.numpy()
    iou = _iou_matrix(boxes, pred_ref["pred_bboxes"], aligned=False)
    same = (pred.labels.numpy()[:, None] == pred_ref["pred_labels"][None]) & (
        np.abs(pred.scores.numpy()[:, None] - pred_ref["pred_scores"][None]) < 1e-6)
    print(f"detections: {len(boxes)} (official {len(pred_ref['pred_scores'])}), "
          f"{int(((iou > 0.999) & same).any(0).sum())} official ones matched")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/independent"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--check-shared", type=Path, default=None,
                    help="validate the op replacement on ../shared/fixtures/official/rtmdet-r_tiny and stop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    patch_ops()
    if args.check_shared:
        check_shared(args.check_shared)
        return
    for name in args.only or ROTATED_FIXTURES:
        info = make(name, args.out)
        print(f"{name}: {info['num_params']} params, {info['num_predictions']} predictions, {info['seconds']} s")


if __name__ == "__main__":
    main()
