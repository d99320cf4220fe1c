"""`rtmdet-edge export`: ONNX, OpenVINO IR or a TensorRT engine, each checked against PyTorch right after it is made.

    rtmdet-edge export --weights rtmdet_tiny.pth --format onnx --imgsz 640 [--dynamic] [--nms]
    rtmdet-edge export --weights rtmdet_tiny.pth --format openvino --precision fp16     # f16-compressed weights
    rtmdet-edge export --weights rtmdet_tiny.pth --format tensorrt --precision fp16     # strongly typed engine
    rtmdet-edge export --weights model_qdq.onnx --reference rtmdet_tiny.pth --format tensorrt --precision int8

The parity check runs the new file on real images (the demo image + coco128 when ../shared/data exists, else a
synthetic scene), compares raw outputs and final detections with the PyTorch model and exits with an error when they
drift beyond the tolerance of the precision (targets.parity.RAW_TOLERANCE). The report is written next to the file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.io import atomic_write_json, atomic_write_with

log = logging.getLogger(__name__)
FORMATS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth), or an .onnx to convert (e.g. a Q/DQ INT8 one)")
    p.add_argument("--model", default=None, help="preset name, for a checkpoint that does not record its config")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="target format")
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="fp16: float16 ONNX (onnx, tensorrt) or f16-compressed weights (openvino); bf16: OpenVINO's bf16 "
        "inference hint on the f32 IR; int8: needs a Q/DQ .onnx as --weights (default: int8 for a Q/DQ .onnx, "
        "else fp32)",
    )
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="square input size, a multiple of 32 (default: an .onnx's own input size, else 640)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, default=1, help="static batch size (TensorRT: the optimal batch)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch axis")
    p.add_argument("--max-batch", type=int, default=8, help="TensorRT profile's max batch with --dynamic")
    p.add_argument("--nms", action="store_true", help="append decode + class-aware NonMaxSuppression to the graph")
    p.add_argument("--nms-preset", default="deploy", choices=("deploy", "official"), help="its thresholds")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--reference", default=None, help="checkpoint to check an .onnx --weights against")
    p.add_argument("--parity-images", type=int, default=4, help="real images used by the parity check")
    p.add_argument("--device", default="cuda:0", help="CUDA device for TensorRT")
    p.add_argument(
        "--calib-data",
        default=None,
        help="tensorrt int8 from a checkpoint: calibration images (synthetic[:N], a dataset SPEC or an image folder) "
        "for the tensorrt recipe of `rtmdet-edge quantize`",
    )
    p.add_argument("--calib-size", type=int, default=128, help="calibration images for --calib-data")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (the file is named <name>_<imgsz>_<precision>[...].<ext>) or a file with the format's "
        "suffix (default: runs/export/)",
    )


EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}


def resolve_out(args: argparse.Namespace, stem: str) -> Path:
    """--out is a folder (as everywhere: PRODUCT.md `--out DIR`) unless it ends in the format's own suffix."""
    if args.out is None:
        return _default_out(args, stem)
    out = Path(args.out)
    if out.suffix.lower() == EXTENSIONS[args.format]:
        return out
    if out.suffix.lower() in (*EXTENSIONS.values(), ".plan", ".bin", ".trt") and not out.is_dir():
        raise UserError(f"--out {out}: a {args.format} export is a {EXTENSIONS[args.format]} file; give a folder or a "
                        f"file name ending in {EXTENSIONS[args.format]}")  # fmt: skip
    return out / _default_out(args, stem).name


def _default_out(args: argparse.Namespace, stem: str) -> Path:
    ext = EXTENSIONS[args.format]
    parts = [stem, str(args.imgsz), args.precision]
    if args.dynamic:
        parts.append("dyn")
    elif args.batch != 1:
        parts.append(f"b{args.batch}")
    if args.nms:
        parts.append("nms")
    return Path("runs/export") / ("_".join(parts) + ext)


def onnx_input_settings(
    path: Path, imgsz: int | None, precision: str | None
) -> tuple[int | None, str, bool]:
    """(imgsz, precision, dynamic batch) of an .onnx --weights, read from the file rather than from defaults.

    The input size is the graph's static H x W (None when H/W are symbolic: --imgsz then decides); an --imgsz that
    disagrees is an error, since the file cannot run at another size. A graph with QuantizeLinear/DequantizeLinear
    (or QLinear*) nodes is INT8 whatever runtime converts it, so its precision is int8 and any other --precision is an
    error; a float graph cannot be labelled int8.
    """
    from targets import INPUT_NAME
    from targets.export import is_quantized, read_onnx_graph

    model = read_onnx_graph(path, "--weights")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise UserError(f"--weights {path}: the ONNX graph has no input")
    inp = next((i for i in inputs if i.name == INPUT_NAME), inputs[0])
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UserError(f"--weights {path}: expected an image input [B, 3, H, W], got {len(dims)} dimensions")
    h, w = dims[2], dims[3]
    if h is not None and w is not None:
        if h != w:
            raise UserError(f"--weights {path}: input {h}x{w} is not square; export handles square inputs only")
        if imgsz is not None and imgsz != h:
            raise UserError(
                f"--imgsz {imgsz} does not match {path.name}, whose input is fixed at {h}x{w}; drop --imgsz (or "
                f"quantize/export the model again at {imgsz})"
            )
        imgsz = h
    quantized = is_quantized(model)
    if quantized and precision not in (None, "int8"):
        raise UserError(
            f"{path.name} is a quantized (Q/DQ) INT8 model: it exports as --precision int8 (the default for it), "
            f"not {precision}"
        )
    if not quantized and precision == "int8":
        raise UserError(f"{path} has no QuantizeLinear/DequantizeLinear (or QLinear*) nodes: it is not an INT8 model")
    return imgsz, precision or ("int8" if quantized else "fp32"), dims[0] is None


def check_target_available(fmt: str, precision: str) -> None:
    """TensorRT is asked first, before a model is loaded, quantized or exported: a missing runtime is the one thing
    that fails every TensorRT export, and finding it last left an ONNX (and calibration output) behind for nothing."""
    if fmt != "tensorrt":
        return
    from targets.tensorrt import available

    reason = available(precision)
    if reason is not None:
        raise UserError(f"--format tensorrt cannot be built here: TensorRT {reason}; nothing was written")


def _remove(paths: list[Path]) -> None:
    import shutil

    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    weights = Path(args.weights)
    # every check that needs no model comes first, so a mistake is reported before anything is loaded or written
    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    if args.precision == "bf16" and args.format != "openvino":
        raise UserError("--precision bf16 is an OpenVINO inference hint; use --format openvino")
    if weights.suffix == ".onnx":
        if args.nms:
            raise UserError("--nms applies when exporting from a checkpoint, not to an existing .onnx")
        if args.format == "onnx":
            raise UserError("--weights is already an .onnx; choose --format openvino or tensorrt")
        imgsz, precision, dynamic = onnx_input_settings(weights, args.imgsz, args.precision)
        # the name and the parity check describe the file as it is: its size, precision and batch axis
        args = argparse.Namespace(**{**vars(args), "imgsz": imgsz or 640, "precision": precision,
                                     "dynamic": args.dynamic or dynamic})  # fmt: skip
    else:
        args = argparse.Namespace(**{**vars(args), "imgsz": args.imgsz or 640, "precision": args.precision or "fp32"})
        if args.precision == "int8" and not (args.format == "tensorrt" and args.calib_data):
            raise UserError(
                "INT8 needs an explicitly quantized model: run `rtmdet-edge quantize` and export its .onnx, or for "
                "TensorRT pass --calib-data to quantize with the tensorrt recipe here"
            )
        if args.precision == "int8" and (args.nms or args.dynamic):
            raise UserError("--calib-data quantizes the static raw-output graph; drop --nms and --dynamic for int8")
    if args.calib_data and not (args.format == "tensorrt" and args.precision == "int8" and weights.suffix != ".onnx"):
        raise UserError("--calib-data applies only to --format tensorrt --precision int8 from a checkpoint")
    check_target_available(args.format, args.precision)

    written: list[Path] = []  # intermediates this run creates, removed again if it fails
    try:
        return _export(args, weights, written)
    except BaseException:
        _remove(written)
        raise


def _export(args: argparse.Namespace, weights: Path, written: list[Path]) -> int:
    from rtmdet_edge.checkpoint import load_checkpoint
    from rtmdet_edge.models.model import build_model
    from rtmdet_edge.inference.postprocess import PRESETS
    from targets import load_backend
    from targets.export import NMSConfig, convert_onnx_to_fp16, export_onnx
    from targets.parity import ParityError, compare, parity_images

    source_onnx = weights if weights.suffix == ".onnx" else None
    ref_path = args.reference if source_onnx is not None else weights
    model = None
    if ref_path is not None:
        model = load_checkpoint(ref_path, build_model(args.model) if args.model else None).eval()
    stem = model.config.name if model is not None else weights.stem
    out = resolve_out(args, stem)
    out.parent.mkdir(parents=True, exist_ok=True)

    if source_onnx is None and args.precision == "int8":
        from quant.calibration import load_calibration
        from quant.ptq import ptq

        calib = load_calibration(args.calib_data, None, args.calib_size, args.imgsz)
        quant_dir = out.parent / f"{out.stem}_quant"
        if not quant_dir.exists():
            written.append(quant_dir)
        source_onnx = ptq(model, calib, recipe="tensorrt", out_dir=quant_dir, imgsz=args.imgsz).qdq_onnx
        onnx_path = source_onnx
        log.info("tensorrt recipe wrote %s", source_onnx)
    elif source_onnx is None:
        import onnx

        onnx_path = out if args.format == "onnx" and args.precision == "fp32" else out.with_suffix(".fp32.onnx")
        if onnx_path != out:
            written.append(onnx_path)
        nms = NMSConfig.from_postprocess(PRESETS[args.nms_preset]) if args.nms else None
        export_onnx(model, onnx_path, args.imgsz, args.batch, args.dynamic, args.opset, nms, not args.no_simplify)
        log.info("wrote %s", onnx_path)
        if args.format == "onnx" and args.precision == "fp16":
            fp16 = convert_onnx_to_fp16(onnx.load(str(onnx_path)))
            atomic_write_with(out, lambda tmp: onnx.save(fp16, str(tmp)))
    else:
        onnx_path = source_onnx

    backend_kw: dict = {}
    if args.format == "openvino":
        from targets.openvino import convert_to_openvino

        convert_to_openvino(onnx_path, out, compress_to_fp16=args.precision == "fp16")
        backend_kw["precision"] = {"fp32": "fp32", "fp16": "f16-weights", "bf16": "bf16", "int8": None}[args.precision]
    elif args.format == "tensorrt":
        from targets.tensorrt import build_engine

        build_engine(onnx_path, out, args.precision, batch=args.batch, max_batch=args.max_batch)
        backend_kw["device"] = args.device
    print(f"exported {out}")

    if model is None:
        print("parity check skipped: pass --reference CHECKPOINT to compare an .onnx input with PyTorch")
        return 0
    backend = load_backend(out, **backend_kw)
    images = parity_images(args.parity_images)
    report_path = out.with_name(out.name + ".parity.json")
    # an INT8 file is judged as INT8 (report only) whatever precision label its runtime gives it
    report = compare(backend, model, images, imgsz=args.imgsz, precision="int8" if args.precision == "int8" else None)
    atomic_write_json(report_path, report.to_dict(), indent=1)
    if not report.ok:
        raise ParityError(f"{out} drifted from PyTorch (report: {report_path}): {report.summary()}")
    print(f"parity: {report.summary()}")
    return 0
