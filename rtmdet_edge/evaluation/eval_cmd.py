"""`rtmdet-edge eval`: COCO box mAP of a checkpoint on a dataset; prints the table and writes OUT/metrics.json."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.io import atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--weights", required=True, help="checkpoint: this project's .pth, an official OpenMMLab .pth or a state dict")
    a("--model", default=None, help="model preset (needed for official checkpoints; ours record their config)")
    a("--data", default="synthetic", help="COCO json (with --images), DOTA root, dataset YAML or 'synthetic'")
    a("--images", default=None, help="images folder of a COCO json --data")
    a("--split", default="val", help="split of --data to evaluate; synthetic data has train, val and test, each its "
      "own images (default: val)")
    a("--imgsz", type=int, default=None, help="test size, a multiple of 32 (default: the checkpoint's training size, "
      "else 640)")
    a("--batch", type=int, default=8, help="batch size (default: 8)")
    a("--device", default="auto", help="cpu | cuda | cuda:N | auto (default: auto)")
    a("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    a("--out", default="runs/eval", help="output folder for metrics.json (default: runs/eval)")


def run(args: argparse.Namespace) -> int:
    from rtmdet_edge.checkpoint import load_checkpoint, read_checkpoint
    from rtmdet_edge.data import build_dataset
    from rtmdet_edge.data.spec import SYNTHETIC_DEFAULT_IMAGES, SYNTHETIC_KINDS
    from rtmdet_edge.evaluation.coco import evaluate
    from rtmdet_edge.models.model import build_model

    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    synthetic = str(args.data).split(":", 1)[0] in SYNTHETIC_KINDS
    if synthetic and args.split not in SYNTHETIC_DEFAULT_IMAGES:
        raise UserError(f"--split {args.split}: synthetic data has the splits {', '.join(SYNTHETIC_DEFAULT_IMAGES)}")
    device_name = args.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available on this machine")
    device = torch.device(device_name)

    dataset = build_dataset(args.data, args.images, split=args.split)
    ckpt = read_checkpoint(args.weights)
    if args.model is not None:
        model = load_checkpoint(args.weights, build_model(args.model, num_classes=dataset.num_classes))
    else:
        model = load_checkpoint(args.weights)
    if model.num_classes != dataset.num_classes:
        raise UserError(f"the model predicts {model.num_classes} classes but {args.data} has {dataset.num_classes}")
    if synthetic:
        # Synthetic splits are rendered on the fly from (seed, split, index): name which images the numbers are of,
        # since "test" is as valid as "val" here and nothing on disk shows the difference.
        seen = {"train": "the stream training draws from", "val": "held out from training; training validates on it"}
        print(f"evaluating on {args.data} split '{args.split}': {len(dataset)} generated images, their own random "
              f"stream ({seen.get(args.split, 'held out from training and from its validation')})")  # fmt: skip
    imgsz = args.imgsz or (ckpt.get("train_config") or {}).get("imgsz") or 640
    model = model.to(device).eval()

    if model.config.kind == "rot":  # RTMDet-R: DOTA mAP (VOC07 and area AP50, mAP .5:.95), difficult ignored
        from rtmdet_edge.training.rotated_train import evaluate_rotated

        result = evaluate_rotated(model.cpu(), dataset, imgsz, dataset.class_names, batch=args.batch)
    else:
        result = evaluate(model, dataset, imgsz=imgsz, batch_size=args.batch, device=device, workers=args.workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"weights": str(args.weights), "data": args.data, "split": args.split, "imgsz": imgsz} | result.to_dict()
    atomic_write_json(out / "metrics.json", report)
    print(result.table())
    print(f"wrote {out / 'metrics.json'}")
    return 0
