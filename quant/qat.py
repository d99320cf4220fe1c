"""Quantization-aware training with NNCF's PyTorch backend on the fused deployment form.

    qmodel = quant.qat.prepare(model, calib)          # fused copy + NNCF fake quantizers (ranges from calib)
    train_one_epoch(qmodel, criterion, loader, ...)   # the project's own training step, unchanged
    quant.qat.export_qdq_onnx(qmodel, "model_qat.onnx", imgsz)

Why NNCF and not PyTorch PT2E: NNCF's PyTorch QAT is maintained by the OpenVINO team together with the
OpenVINO/ONNX PTQ recipes used here (same presets, same quantizer placement rules, the exported FakeQuantize ->
QuantizeLinear/DequantizeLinear runs on ONNX Runtime and OpenVINO), while torch.ao's PT2E quantization is being moved
out of PyTorch into torchao (not a dependency here) and its x86 quantizer targets Inductor, not ONNX export.

`--recipe` picks the scheme of the fake quantizers (QAT_SCHEMES: onnxruntime = asymmetric U8 activations + symmetric
S8 weights, nncf = its preset; tensorrt is refused, quant.settings.QAT_RECIPES says why); `run_qat` then checks and
describes the export exactly as PTQ does (quant.ptq.describe_int8: summary.json + summary.md, INT8 kernels,
parity with FP32).

The fused form has no BatchNorm (folded into the convs), so the rule "freeze BN statistics after the first epoch"
holds from the start; `freeze_batchnorm` still runs from epoch 1 on for models that keep BN layers.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from quant.ptq import PTQResult
from quant.settings import QuantSettings, check_recipe_settings
from rtmdet_edge.errors import UserError

log = logging.getLogger(__name__)


# What each recipe's rules become in NNCF's PyTorch QAT (README, "INT8: rtmdet-edge quantize"). The fake quantizers
# follow the recipe's numeric scheme; their placement is NNCF's (Q/DQ on op inputs), which is TensorRT's placement
# but not the onnxruntime recipe's QLinearConv placement, so ONNX Runtime runs a QAT model's convs as dequantize +
# float conv (the summary's kernel counts show it).
QAT_SCHEMES = {
    "nncf": "NNCF preset from --preset (mixed: asymmetric activations, symmetric weights; performance: all symmetric)",
    "onnxruntime": "asymmetric U8 activations per tensor, symmetric S8 weights (NNCF preset mixed), as the "
    "onnxruntime recipe",
}  # tensorrt: refused, see quant.settings.QAT_RECIPES
# QAT's starting ranges: NNCF's own defaults (the fine-tuning then learns the ranges, so the PTQ calibrators do not
# apply; --calibrator is refused with QAT). Kept as they were when the README's QAT rows were measured.
QAT_RANGE_INIT = "NNCF's defaults: weights min/max, activations the mean over images of each image's min/max"


def qat_settings(recipe: str, settings: QuantSettings) -> QuantSettings:
    """The settings QAT really runs with for `recipe` (recorded in the summary instead of the requested ones)."""
    from dataclasses import replace

    if recipe not in QAT_SCHEMES:
        raise UserError(f"--method qat cannot follow the {recipe} recipe; choose one of {', '.join(QAT_SCHEMES)}")
    # every conv NNCF places a quantizer on is quantized: the onnxruntime recipe's float "slow" convs do not apply
    settings = replace(settings, float_slow_convs=False)
    if recipe == "onnxruntime":
        return replace(settings, preset="mixed", activation_type="u8")
    return settings


def qat_parameters(settings: QuantSettings, num_images: int) -> dict:
    """Keyword arguments of nncf.quantize for the PyTorch model, from `qat_settings`: the preset carries the
    recipe's symmetry; ranges start from NNCF's defaults (QAT_RANGE_INIT)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    if settings.bias_correction == "full":
        raise UserError("--method qat initialises with NNCF's PyTorch backend, which has no full bias correction; "
                        "use --bias-correction fast or none")  # fmt: skip
    return dict(
        preset=nncf.QuantizationPreset.MIXED if settings.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=num_images,
        fast_bias_correction=True,
        advanced_parameters=AdvancedQuantizationParameters(
            weights_quantization_params=QuantizationParameters(per_channel=settings.granularity == "per-channel"),
            disable_bias_correction=settings.bias_correction == "none",
        ),
    )


def prepare(
    model: nn.Module, calib_batch: np.ndarray, settings: QuantSettings | None = None, recipe: str = "nncf"
) -> nn.Module:
    """A fused copy of `model` with NNCF fake quantization inserted, in `recipe`'s scheme (`qat_settings`), and
    initialised from the calibration images."""
    import nncf

    from quant.extension_lock import load_nncf_torch_extension
    from targets.export import deployment_model

    settings = qat_settings(recipe, settings or QuantSettings())
    load_nncf_torch_extension()
    fused = deployment_model(model)
    samples = [torch.from_numpy(calib_batch[i : i + 1]) for i in range(len(calib_batch))]
    qmodel = nncf.quantize(fused, nncf.Dataset(samples), **qat_parameters(settings, len(samples)))
    return qmodel


def resume_checkpoint(out: Path) -> Path:
    """<out>/qat_last.pth, or one UserError when `--resume` has nothing to continue from."""
    last = Path(out) / "qat_last.pth"
    if not last.is_file():
        raise UserError(f"--resume: {last} not found (no earlier QAT run in {out}); drop --resume to start one")
    return last


def freeze_batchnorm(model: nn.Module) -> int:
    """BN layers to eval mode (running statistics frozen) and their affine parameters fixed; returns how many."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            count += 1
    return count


def export_qdq_onnx(qmodel: nn.Module, path: str | Path, imgsz: int, opset: int = 17) -> Path:
    """Export the fake-quantized model; NNCF's 8-bit FakeQuantize exports as QuantizeLinear/DequantizeLinear pairs."""
    import onnx

    from targets import INPUT_NAME
    from targets.export import _RawOutputs

    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    qmodel = qmodel.eval()
    # NNCF exports OpenVINO's FakeQuantize by default; ONNX Runtime and TensorRT need QuantizeLinear/DequantizeLinear
    for m in qmodel.modules():
        if isinstance(m, BaseQuantizer):
            m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        wrapper = _RawOutputs(qmodel, dummy)  # flat outputs, named as rtmdet_edge.models.outputs names them
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(wrapper.names),
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise RuntimeError(f"{path}: the QAT export holds no QuantizeLinear nodes")
    return path


def _save(path: Path, qmodel: nn.Module, ema, optimizer, epoch: int, extra: dict) -> None:
    """Tensors and plain containers only (checkpoints load with weights_only=True); resuming re-runs `prepare`, which
    rebuilds the same quantizer layout from the same calibration images, then loads this state."""
    from rtmdet_edge.checkpoint import save_checkpoint

    save_checkpoint(
        path,
        {
            "qat": True,
            "model": qmodel.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            **extra,
        },
    )


def run_qat(
    model: nn.Module,
    args: argparse.Namespace,
    settings: QuantSettings,
    recipe: str = "nncf",
    parity_images: list[np.ndarray] | None = None,
    check_kernels: bool = True,
) -> PTQResult:
    """The `quantize --method qat` pipeline: prepare (fake quantizers in `recipe`'s scheme) -> fine-tune (project
    loop, EMA) -> resumable checkpoints -> Q/DQ ONNX export -> the same checks and summary.json/.md as PTQ
    (quant.ptq.describe_int8: graph, INT8 kernels, parity with the FP32 checkpoint on `parity_images`).

    args: data, images, calib_size, imgsz, epochs, batch, lr, out, resume (the `quantize` options of those names)."""
    import time
    from dataclasses import replace

    from quant.calibration import load_calibration
    from quant.ptq import describe_int8, fp32_onnx_for
    from quant.recipes import RecipeOutput
    from rtmdet_edge.config import TrainConfig
    from rtmdet_edge.data.loader import build_train_loader, set_loader_epoch
    from rtmdet_edge.data.spec import build_dataset
    from rtmdet_edge.training.ema import ModelEMA
    from rtmdet_edge.training.engine import train_one_epoch
    from rtmdet_edge.training.loss import build_criterion
    from rtmdet_edge.training.optim import build_optimizer

    if args.data is None:
        raise UserError("QAT fine-tunes on annotated data: give --data (synthetic, a COCO json or a dataset YAML)")
    out = Path(args.out)
    last = resume_checkpoint(out) if args.resume else out / "qat_last.pth"  # checked before any work
    check_recipe_settings(recipe, settings)
    effective = qat_settings(recipe, settings)
    start = time.perf_counter()
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    calib = load_calibration(args.data, args.images, args.calib_size, args.imgsz)
    qmodel = prepare(model, calib.batch, settings, recipe)
    # the criterion reads the model's class count, strides and kind (same object, fake quantizers added)
    criterion = build_criterion(model)
    cfg = replace(
        TrainConfig(),
        model=model.config.name,
        data=args.data,
        images=args.images,
        epochs=args.epochs,
        batch=args.batch,
        imgsz=args.imgsz,
        workers=0,
        lr=args.lr,
        amp=False,
        out=str(out),
    )
    dataset = build_dataset(
        args.data, images=args.images, split="train", num_classes=model.num_classes, imgsz=args.imgsz
    )
    loader = build_train_loader(cfg, 2, dataset)  # stage 2: the weak pipeline official training ends with
    iters = len(loader)
    if iters == 0:
        raise UserError(f"--data {args.data} has fewer images than one batch of {args.batch}")
    optimizer = build_optimizer(qmodel, args.lr)
    ema = ModelEMA(qmodel)
    start_epoch = 0
    history: list[dict] = []
    if args.resume:
        from rtmdet_edge.checkpoint import read_checkpoint

        ckpt = read_checkpoint(last)
        qmodel.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        start_epoch = int(ckpt["epoch"]) + 1
        history = list(ckpt.get("history", []))
        log.info("QAT resumed after epoch %d", start_epoch - 1)
    total = max(iters * args.epochs, 1)
    lr_schedule = lambda step: args.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    for epoch in range(start_epoch, args.epochs):
        set_loader_epoch(loader, epoch, seed=cfg.seed)
        if epoch >= 1:
            freeze_batchnorm(qmodel)
        stats = train_one_epoch(
            qmodel,
            criterion,
            loader,
            optimizer,
            torch.amp.GradScaler("cpu", enabled=False),
            ema,
            lr_schedule,
            epoch,
            iters_per_epoch=iters,
            show_progress=False,
        )
        history.append({"epoch": epoch, **stats})
        _save(last, qmodel, ema, optimizer, epoch, {"config": model.config.to_dict(), "history": history})
        log.info("QAT epoch %d: loss %.4f", epoch, stats.get("loss", float("nan")))
    onnx_path = export_qdq_onnx(ema.module, out / "model_int8_qat.onnx", args.imgsz)
    # parity reference: the FP32 model QAT started from, i.e. what shipping FP32 instead would give
    fp32 = fp32_onnx_for(model, out, args.imgsz)
    notes = [
        f"NNCF PyTorch QAT (nncf.quantize on the fused torch model, fine-tuned, EMA weights exported): "
        f"{QAT_SCHEMES[recipe]}; weights {effective.granularity}; starting ranges from {QAT_RANGE_INIT}, on "
        f"{len(calib)} images",
        "quantizer placement is NNCF's (op inputs); NNCF leaves the inputs of channel-attention convs (after "
        "GlobalAveragePool) float",
    ]
    summary, json_path, md_path = describe_int8(
        model,
        fp32,
        RecipeOutput(qdq_onnx=onnx_path, notes=notes),
        method="qat",
        recipe=recipe,
        settings=effective,
        calib_info={"count": len(calib), "description": calib.description, "sources": calib.sources},
        out_dir=out,
        parity_images=parity_images,
        check_kernels=check_kernels,
        start=start,
        meta={
            "weights": str(getattr(args, "weights", "")) or None,
            "qat": {
                "tool": "nncf-torch",
                "epochs": args.epochs,
                "lr": args.lr,
                "batch": args.batch,
                "resumed_after_epoch": start_epoch - 1 if args.resume else None,
                "checkpoint": str(last),
                "history": history,
            },
        },
    )
    return PTQResult(fp32, onnx_path, None, summary, json_path, md_path)
