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

from quant.settings import (
    CALIBRATORS,
    GRANULARITIES,
    RECIPES,
    QuantSettings,
    check_explicit_options,
    check_recipe_settings,
)
from rtmdet_edge.errors import UserError, check_imgsz

log = logging.getLogger(__name__)


# Defaults of the options whose effect depends on --method and --recipe. argparse leaves them None, so that `run` can
# tell an option the user typed (refused where it would do nothing) from one left at its default (filled in here).
DEFAULTS = {
    "calibrator": "minmax",
    "granularity": "per-channel",
    "activation_type": "u8",
    "preset": "mixed",
    "bias_correction": "fast",
    "epochs": 3,
    "lr": 1e-5,
    "batch": 8,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth: ours or official) or an FP32 raw-output .onnx")
    p.add_argument("--model", default=None, help="preset name, for a checkpoint that does not record its config")
    p.add_argument("--method", default="ptq", choices=("ptq", "qat"), help="post-training quantization or QAT")
    p.add_argument(
        "--recipe",
        default="onnxruntime",
        choices=RECIPES,
        help="quantization toolchain / target rules (default: onnxruntime). With --method qat the recipe picks the "
        "scheme of NNCF's fake quantizers: onnxruntime = asymmetric U8 activations + symmetric S8 weights (NNCF "
        "preset mixed), nncf = --preset; tensorrt is refused (NNCF's PyTorch QAT cannot meet "
        "TensorRT's rules: use --method ptq --recipe tensorrt)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="calibration (PTQ) / training (QAT) data: synthetic[:N], a dataset SPEC, or a folder of plain images",
    )
    p.add_argument("--images", default=None, help="images folder of a COCO json, or alone: a folder of plain images")
    p.add_argument("--calib-size", type=int, default=128, help="calibration images (NNCF advises 300)")
    p.add_argument(
        "--calibrator",
        default=None,
        choices=CALIBRATORS,
        help="PTQ only: activation range estimation (default: minmax)",
    )
    p.add_argument("--granularity", default=None, choices=GRANULARITIES, help="weight scales (default: per-channel)")
    p.add_argument(
        "--ignore",
        nargs="*",
        default=None,
        metavar="PATTERN",
        help="regexes of ONNX node names kept float (PTQ only)",
    )
    p.add_argument(
        "--activation-type",
        default=None,
        choices=("u8", "s8"),
        help="onnxruntime recipe, PTQ only: activations (default: u8, which runs fast on x86)",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=("mixed", "performance"),
        help="nncf recipe only: NNCF preset (default: mixed): mixed (asymmetric activations, the smaller accuracy "
        "loss after SiLU) or performance (all symmetric, the faster OpenVINO INT8 model; README 'INT8 speed' and "
        "'INT8 accuracy' measure both)",
    )
    p.add_argument(
        "--int8-everywhere",
        action="store_true",
        help="onnxruntime recipe, PTQ only: quantize every conv, also those ONNX Runtime's x86 INT8 kernels run slower "
        "than float (depth-wise convs, k x k convs with < 16 output channels), which it keeps float by default",
    )
    p.add_argument(
        "--bias-correction",
        default=None,
        choices=("fast", "full", "none"),
        help="nncf recipe only: NNCF bias correction (default: fast)",
    )
    p.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of 32")
    p.add_argument("--parity-images", type=int, default=4, help="real images for the INT8 vs FP32 check (0: skip)")
    p.add_argument("--epochs", type=int, default=None, help="QAT only: fine-tuning epochs (default: 3)")
    p.add_argument(
        "--lr", type=float, default=None, help="QAT only: learning rate (default: 1e-5; Krishnamoorthi 2018)"
    )
    p.add_argument("--batch", type=int, default=None, help="QAT only: batch size (default: 8)")
    p.add_argument("--resume", action="store_true", help="QAT only: continue from <out>/qat_last.pth")
    p.add_argument("--max-drop", type=float, default=None, metavar="D",
                   help="PTQ only, mixed precision: keep the fewest, most sensitive convs in float until the mAP drop "
                        "on the val split of --data is at most D points (default: off)")  # fmt: skip
    p.add_argument("--out", default="runs/quantize", help="output folder")


def explicit_options(args: argparse.Namespace) -> set[str]:
    """The method/recipe-dependent options the user typed, as flags ("--preset"); then fills in the defaults."""
    explicit = {f"--{k.replace('_', '-')}" for k in DEFAULTS if getattr(args, k) is not None}
    switches = {"--int8-everywhere": args.int8_everywhere, "--resume": args.resume, "--ignore": args.ignore,
                "--max-drop": args.max_drop is not None}  # fmt: skip
    explicit |= {flag for flag, on in switches.items() if on}
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.ignore = args.ignore or []
    return explicit


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

    explicit = explicit_options(args)
    check_explicit_options(args.method, args.recipe, explicit)
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
    check_imgsz(args.imgsz)
    out = Path(args.out)
    if args.method == "qat":
        from quant.qat import resume_checkpoint

        if Path(args.weights).suffix == ".onnx":
            raise UserError("QAT fine-tunes a checkpoint; give a .pth, not an .onnx")
        if args.resume:
            resume_checkpoint(out)  # before any work: a missing checkpoint ends in a second, not after calibration
    model = _load_model(args)
    images = parity_images(args.parity_images) if args.parity_images > 0 else None
    if args.method == "qat":
        from quant.qat import run_qat

        result = run_qat(model, args, settings, recipe=args.recipe, parity_images=images)
        _print_result(result)
        return 0
    from quant.ptq import ptq

    calib = load_calibration(args.data, args.images, args.calib_size, args.imgsz)
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
    _print_result(result)
    if args.max_drop is not None:
        _mixed_precision(model, calib, settings, args, out)
    return 0


def _print_result(result) -> None:
    """What PTQ and QAT print: the files, INT8 kernel counts, the CPU note and the parity with FP32."""
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
