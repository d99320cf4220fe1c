"""`rtmdet-edge quantize`: INT8 PTQ (nncf | onnxruntime | tensorrt recipe) or QAT of a checkpoint's fused form.

    rtmdet-edge quantize --weights best.pth --method ptq --recipe nncf --data synthetic --calib-size 300 --out runs/q
    rtmdet-edge quantize --weights best.pth --recipe onnxruntime --images calib_jpgs/ --calibrator percentile
    rtmdet-edge quantize --weights best.pth --recipe tensorrt --data coco.yaml --out runs/q_trt
    rtmdet-edge quantize --weights best.pth --method qat --data coco.yaml --epochs 3 --lr 1e-5 --out runs/qat

Writes the Q/DQ ONNX (every recipe), the OpenVINO INT8 IR (nncf), summary.json + summary.md (what was quantized,
what stayed float and why, which convs each runtime runs as INT8 kernels, calibration images, settings, time) and
the parity check against FP32 on real images (per-output SQNR, detection agreement as sets).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from quant.settings import CALIBRATORS, GRANULARITIES, RECIPES, QuantSettings, check_recipe_settings
from rtmdet_edge.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth: ours or official) or an FP32 raw-output .onnx")
    p.add_argument("--model", default=None, help="preset name, for a checkpoint that does not record its config")
    p.add_argument("--method", default="ptq", choices=("ptq", "qat"), help="post-training quantization or QAT")
    p.add_argument("--recipe", default="onnxruntime", choices=RECIPES, help="quantization toolchain / target rules")
    p.add_argument(
        "--data",
        default=None,
        help="calibration (PTQ) / training (QAT) data: synthetic[:N], a dataset SPEC, or a folder of plain images",
    )
    p.add_argument("--images", default=None, help="images folder of a COCO json, or alone: a folder of plain images")
    p.add_argument("--calib-size", type=int, default=128, help="calibration images (NNCF advises 300)")
    p.add_argument("--calibrator", default="minmax", choices=CALIBRATORS, help="activation range estimation")
    p.add_argument("--granularity", default="per-channel", choices=GRANULARITIES, help="weight scales")
    p.add_argument("--ignore", nargs="*", default=[], metavar="PATTERN", help="regexes of ONNX node names kept float")
    p.add_argument(
        "--activation-type",
        default="u8",
        choices=("u8", "s8"),
        help="onnxruntime recipe activations (u8 runs fast on x86)",
    )
    p.add_argument(
        "--preset",
        default="mixed",
        choices=("mixed", "performance"),
        help="NNCF preset: mixed (asymmetric activations, the smaller accuracy loss after SiLU) or performance (all "
        "symmetric, the faster OpenVINO INT8 model; README 'INT8 speed' and 'INT8 accuracy' measure both)",
    )
    p.add_argument(
        "--int8-everywhere",
        action="store_true",
        help="onnxruntime recipe: quantize every conv, also those ONNX Runtime's x86 INT8 kernels run slower than "
        "float (depth-wise convs, k x k convs with < 16 output channels), which it keeps float by default",
    )
    p.add_argument("--bias-correction", default="fast", choices=("fast", "full", "none"), help="NNCF bias correction")
    p.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of 32")
    p.add_argument("--parity-images", type=int, default=4, help="real images for the INT8 vs FP32 check (0: skip)")
    p.add_argument("--epochs", type=int, default=3, help="QAT: fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-5, help="QAT: learning rate (Krishnamoorthi 2018 fine-tunes at 1e-5)")
    p.add_argument("--batch", type=int, default=8, help="QAT: batch size")
    p.add_argument("--resume", action="store_true", help="QAT: continue from <out>/qat_last.pth")
    p.add_argument("--max-drop", type=float, default=None, metavar="D",
                   help="mixed precision: keep the fewest, most sensitive convs in float until the mAP drop on the "
                        "val split of --data is at most D points (default: off)")  # fmt: skip
    p.add_argument("--out", default="runs/quantize", help="output folder")


def _load_model(args: argparse.Namespace):
    from rtmdet_edge.checkpoint import load_checkpoint
    from rtmdet_edge.models.model import build_model

    weights = Path(args.weights)
    if not weights.is_file():
        raise UserError(f"weights not found: {weights}")
    if weights.suffix == ".onnx":
        return str(weights)
    return load_checkpoint(weights, build_model(args.model) if args.model else None).eval()


def run(args: argparse.Namespace) -> int:
    from quant.calibration import load_calibration
    from targets.parity import parity_images

    settings = QuantSettings(
        calibrator=args.calibrator,
        granularity=args.granularity,
        ignore=tuple(args.ignore),
        activation_type=args.activation_type,
        preset=args.preset,
        bias_correction=args.bias_correction,
        float_slow_convs=not args.int8_everywhere,
    )
    check_recipe_settings(args.recipe, settings)
    if args.imgsz % 32:
        raise UserError(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    model = _load_model(args)
    out = Path(args.out)
    if args.method == "qat":
        from quant.qat import run_qat

        if isinstance(model, str):
            raise UserError("QAT fine-tunes a checkpoint; give a .pth, not an .onnx")
        result = run_qat(model, args, settings)
        print(f"QAT: wrote {result}")
        return 0
    from quant.ptq import ptq

    calib = load_calibration(args.data, args.images, args.calib_size, args.imgsz)
    images = parity_images(args.parity_images) if args.parity_images > 0 else None
    result = ptq(
        model,
        calib,
        recipe=args.recipe,
        settings=settings,
        out_dir=out,
        imgsz=args.imgsz,
        parity_images=images,
        meta={"weights": str(args.weights)},
    )
    print(f"wrote {result.qdq_onnx}" + (f" and {result.openvino_xml}" if result.openvino_xml else ""))
    for k in result.summary["kernels"]:
        print(f"{k['runtime']}: {k['int8_convs']} convs run as INT8 kernels, {k['float_convs']} in float")
    if result.summary["cpu"]["vnni"] is False:  # the kernel counts above say nothing about how much faster
        print(f"note: {result.summary['cpu']['note']}")
    for p in result.summary["parity"]:
        print(
            f"parity {p['runtime']}: min SQNR {p['min_sqnr_db']} dB, detection agreement {p['detection_agreement']:.3f}"
        )
    print(f"summary: {result.summary_md}")
    if args.max_drop is not None:
        _mixed_precision(model, calib, settings, args, out)
    return 0


def _mixed_precision(model, calib, settings: QuantSettings, args: argparse.Namespace, out: Path) -> None:
    """`--max-drop D`: the fewest float layers (by sensitivity) that bring the drop within D mAP points."""
    import json

    from quant.mixed import search_mixed_precision
    from rtmdet_edge.data.spec import build_dataset

    if isinstance(model, str):
        raise UserError("--max-drop ranks the layers of the PyTorch model: give a .pth, not an .onnx")
    if args.data is None:
        raise UserError("--max-drop measures the drop on labelled data: give --data")
    synthetic = str(args.data).split(":", 1)[0] in ("synthetic", "study")
    val = build_dataset(args.data, images=args.images, split="val", imgsz=args.imgsz,
                        num_classes=model.num_classes if synthetic else None)  # fmt: skip
    target = "openvino" if args.recipe == "nncf" else "onnxruntime"
    result = search_mixed_precision(model, calib, val, args.max_drop, recipe=args.recipe, settings=settings,
                                    target=target, imgsz=args.imgsz, out_dir=out / "mixed")  # fmt: skip
    (out / "mixed").mkdir(parents=True, exist_ok=True)
    (out / "mixed" / "mixed.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    state = "met" if result.met else "NOT met"
    print(f"--max-drop {args.max_drop}: {state} on {target}: FP32 mAP {result.fp32_map:.2f}, all-INT8 "
          f"{result.int8_map:.2f}, mixed {result.mixed_map:.2f} with {len(result.kept_float)} layers in float; "
          f"latency FP32 {result.latency_ms['fp32']:.1f} / INT8 {result.latency_ms['int8']:.1f} / mixed "
          f"{result.latency_ms['mixed']:.1f} ms -> {result.model_file}")  # fmt: skip
    for layer in result.kept_float:
        print(f"  float: {layer['layer']} ({layer['block']}, one-layer SQNR {layer['sqnr_db']:.1f} dB)")
