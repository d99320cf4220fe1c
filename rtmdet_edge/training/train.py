"""`rtmdet-edge train`: data -> model -> optimizer -> resume -> epoch loop (explicit stage-2 switch) -> save.

The same command runs on one CPU, one GPU or many: under `torchrun` every process trains on its shard
(DistributedDataParallel: gloo on CPU, nccl on CUDA; BatchNorm -> SyncBatchNorm when world_size > 1 on CUDA) and rank 0 logs,
evaluates the EMA weights and writes checkpoints. --batch is the total batch over all processes.

Outputs in --out: last.pth (every epoch, and every --save-interval-iters iterations mid-epoch), best.pth (best EMA mAP),
metrics.csv, metrics.jsonl, metrics.png, train.log.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rtmdet_edge.config import TrainConfig
from rtmdet_edge.training.ema import ModelEMA
from rtmdet_edge.training.engine import NonFiniteLossError, TrainingInterrupted, train_one_epoch
from rtmdet_edge.errors import UserError, check_imgsz
from rtmdet_edge.io import finite_or_none, remove_stale_temps
from rtmdet_edge.data.loader import build_train_loader, set_loader_epoch
from rtmdet_edge.training.optim import LRSchedule, build_optimizer, scaled_lr, short_run_warmup

log = logging.getLogger("rtmdet_edge.training.train")

METRIC_COLUMNS = (
    "epoch", "stage", "lr", "loss", "loss_cls", "loss_bbox", "grad_norm", "num_pos", "skipped_iters", "epoch_time_s",
    "data_wait_share", "AP", "AP50", "AP75", "APs", "APm", "APl",
    "loss_mask", "mask_AP", "mask_AP50", "mask_AP75",  # RTMDet-Ins only (empty for detection)
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# CLI
class _Given:
    """Action mixin: records the option's dest in namespace.given_options, so a resumed run can tell an option the
    user typed (it may override the recorded run) from a default (the recorded value wins). Defaults stay real values,
    so --help still shows them."""

    dest: str

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, values, option_string)  # type: ignore[misc]
        namespace.given_options = getattr(namespace, "given_options", frozenset()) | {self.dest}


class _GivenStore(_Given, argparse._StoreAction):
    pass


class _GivenStoreTrue(_Given, argparse._StoreTrueAction):
    pass


class _GivenBoolean(_Given, argparse.BooleanOptionalAction):
    pass


_GIVEN_ACTIONS: dict[Any, type[argparse.Action]] = {
    "store": _GivenStore,
    "store_true": _GivenStoreTrue,
    argparse.BooleanOptionalAction: _GivenBoolean,
}
_FIELD_OF_DEST = {"no_amp": "amp"}  # argparse dest -> TrainConfig field, where they differ


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.set_defaults(given_options=frozenset())

    def a(*flags: str, action: Any = "store", **kwargs: Any) -> None:
        parser.add_argument(*flags, action=_GIVEN_ACTIONS[action], **kwargs)

    a("--model", default="rtmdet-tiny", help="model preset (default: rtmdet-tiny)")
    a("--block", default=d.block, help=f"basic block family of backbone/neck (default: {d.block})")
    a("--data", default=d.data, help="COCO json (with --images), DOTA root, dataset YAML, or 'synthetic' (default)")
    a("--images", default=None, help="images folder of a COCO json --data")
    a("--val-data", default=None, help="validation data spec (default: the 'val' split of --data)")
    a("--val-images", default=None, help="images folder of a COCO json --val-data (default: --images)")
    a("--epochs", type=int, default=d.epochs, help=f"training epochs (default: {d.epochs})")
    a("--batch", type=int, default=16, help="total batch size over all processes (default: 16; official: 256)")
    a("--imgsz", type=int, default=d.imgsz, help=f"train/val image size (default: {d.imgsz})")
    a("--device", default=d.device, help="cpu | cuda | cuda:N | auto (default: auto); under torchrun cuda:LOCAL_RANK")
    a("--out", default=d.out, help=f"output folder (default: {d.out})")
    a("--resume", default=None,
      help="checkpoint to resume from, or 'auto' for OUT/last.pth (none there yet: start fresh). The run continues "
           "with the settings its checkpoint recorded; options given on the command line override them, except "
           "--model, --block, --data, --images, --imgsz, --batch and --seed, which must match the recorded run (else "
           "one error: they would make it another run). Use --epochs to extend a run; --resume PATH without --out "
           "continues in PATH's folder. train.log names what was restored and what was overridden")
    a("--workers", type=int, default=d.workers, help=f"DataLoader workers per process (default: {d.workers})")
    a("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    a("--deterministic", action="store_true", help="deterministic algorithms (slower; exact resume needs --workers 0)")
    a("--lr", type=float, default=None, help="base learning rate (default: 0.004 * batch / 256)")
    a("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default: {d.weight_decay})")
    a("--warmup-iters", type=int, default=d.warmup_iters, help="linear warm-up iterations, capped at 10%% of the run")
    a("--stage2-epochs", type=int, default=None, help="final epochs without Mosaic/MixUp (default: min(20, epochs/15))")
    a("--eval-interval", type=int, default=d.eval_interval, help="evaluate EMA weights every N epochs (0: never)")
    a("--save-interval-iters", type=int, default=0, help="also write last.pth every N iterations mid-epoch (0: off)")
    a("--val-batch", type=int, default=d.val_batch, help=f"validation batch size (default: {d.val_batch})")
    a("--no-amp", action="store_true", help="disable mixed precision (same as --amp off)")
    a("--amp", dest="amp_dtype", choices=("auto", "off", "fp16", "bf16"), default=d.amp_dtype,
      help="autocast dtype of the forward: auto = fp16 + GradScaler on CUDA, none on CPU; bf16 on CPU needs "
           "AVX512-BF16/AMX to be fast (default: auto)")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
      help="NHWC activations (default; 8-12%% faster than NCHW per step on an idle 2-core CPU in "
           "benchmarks/train_speed.py); --no-channels-last trains in NCHW")
    a("--fused-bn-silu", action=argparse.BooleanOptionalAction, default=d.fused_bn_silu,
      help="on CPU, run each BN + SiLU of the model as one compiled kernel (default; built on first use, ~30 s, needs "
           "a C++ compiler, falls back to PyTorch's layers without one); --no-fused-bn-silu keeps PyTorch's")
    a("--compile", action="store_true", help="torch.compile the model (first iterations are slow while it compiles)")
    a("--max-grad-norm", type=float, default=None, help="clip gradients to this norm (default: no clipping, as official)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model=args.model,
        block=args.block,
        data=args.data,
        images=args.images,
        val_data=args.val_data,
        val_images=args.val_images,
        epochs=args.epochs,
        batch=args.batch,
        imgsz=args.imgsz,
        device=args.device,
        out=args.out,
        workers=args.workers,
        seed=args.seed,
        deterministic=args.deterministic,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        stage2_epochs=args.stage2_epochs,
        eval_interval=args.eval_interval,
        save_interval_iters=args.save_interval_iters,
        val_batch=args.val_batch,
        amp=not args.no_amp,
        amp_dtype=args.amp_dtype,
        channels_last=args.channels_last,
        fused_bn_silu=args.fused_bn_silu,
        compile=args.compile,
        max_grad_norm=args.max_grad_norm,
        resume=args.resume,
    )


def given_fields(args: argparse.Namespace) -> frozenset[str] | None:
    """The TrainConfig fields set explicitly on the command line; None when args did not come from add_arguments'
    parser (then every field counts as given)."""
    given = getattr(args, "given_options", None)
    return None if given is None else frozenset(_FIELD_OF_DEST.get(dest, dest) for dest in given)


def run(args: argparse.Namespace) -> int:
    check_imgsz(args.imgsz)  # before any work: a size off the stride grid fails deep in the neck otherwise
    cfg = resumed_config(config_from_args(args), given_fields(args))
    if cfg.model.startswith("rtmdet-r-"):
        from rtmdet_edge.training.rotated_train import run_rotated

        return run_rotated(cfg)
    try:
        main(cfg)
    except TrainingInterrupted as e:
        out = e.checkpoint.parent if e.checkpoint is not None else Path(cfg.out)
        print(f"rtmdet-edge train: {e}; continue with --resume auto --out {out}", file=sys.stderr)
        return 128 + e.signum
    except NonFiniteLossError as e:  # diverged: one line with what to do, last.pth holds the last good state
        raise UserError(f"{e} (last good checkpoint: {Path(cfg.out) / 'last.pth'})") from None
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Setup helpers
def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun (WORLD_SIZE set) joins the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_arg.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device_arg}: CUDA is not available on this machine")
        device = torch.device("cuda", local_rank) if world_size > 1 or device_arg == "cuda" else torch.device(device_arg)
        torch.cuda.set_device(device)
    elif device_arg == "cpu":
        device = torch.device("cpu")
    else:
        raise UserError(f"--device must be cpu, cuda, cuda:N or auto, got {device_arg!r}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def resolve_amp(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the forward pass, or None for full float32."""
    choice = "off" if not cfg.amp else cfg.amp_dtype
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice in ("auto", "fp16"):
        if device.type != "cuda":
            raise UserError("--amp fp16 needs a CUDA device (CPU float16 convolutions are a slow fallback); try bf16")
        return torch.float16
    if choice == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use --amp fp16")
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            log.warning("--amp bf16: this CPU has no native bfloat16 (AVX512-BF16/AMX); it runs, but slower than fp32")
        return torch.bfloat16
    raise UserError(f"--amp must be auto, off, fp16 or bf16, got {choice!r}")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world_size: int) -> list[dict[str, Any]]:
    """Every rank's RNG state (collective: all ranks must call it)."""
    if world_size == 1:
        return [rng_state()]
    states: list[Any] = [None] * world_size
    dist.all_gather_object(states, rng_state())
    return states


def setup_logging(out: Path, is_main: bool) -> None:
    """Console + OUT/train.log. Handlers of an earlier run in this process are closed first: a second main() (a
    notebook, a sweep) must log into its own folder, not into the first run's train.log."""
    close_logging()
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        for handler in (logging.StreamHandler(), logging.FileHandler(out / "train.log")):
            handler.setFormatter(fmt)
            handler._rtmdet_train = True  # type: ignore[attr-defined]  # ours to remove later
            log.addHandler(handler)
        log.propagate = False


def close_logging() -> None:
    for handler in [h for h in log.handlers if getattr(h, "_rtmdet_train", False)]:
        log.removeHandler(handler)
        handler.close()
    log.propagate = True


class StopSignal:
    """SIGTERM / SIGINT (Ctrl-C) -> a flag the training loop checks after each iteration, so the run ends with a
    resumable checkpoint instead of dying mid-step. A second signal stops at once (KeyboardInterrupt); the last
    checkpoint stays intact because checkpoints are written atomically."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers only in the main thread
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        log.warning("%s: stopping after this iteration and saving a resumable checkpoint (again: stop now)", name)

    def is_set(self, world_size: int = 1, device: torch.device | None = None) -> bool:
        flag = self.signum is not None
        if world_size > 1:  # every rank must stop at the same iteration (save is collective)
            t = torch.tensor([1 if flag else 0], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def leave_sigterm_to_main(init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """worker_init_fn of the training loader (with functools.partial): the loader's own init_fn, then SIGTERM from
    outside the run ignored.

    `timeout`, SLURM's scancel and `kill -- -PGID` signal the whole process group. A worker that died of it would
    make the main process's DataLoader raise ("worker ... is killed by signal: Terminated") before StopSignal could
    finish the iteration and write last.pth. So, as with Ctrl-C (loader.init_worker), the main process alone decides:
    it stops after the iteration and its loader shuts the workers down. SIGTERM from the main process itself (the
    loader's terminate() of a stuck worker, multiprocessing's exit handler) still ends the worker at once, as
    PyTorch's own worker handler does, so no worker can outlive or hang the main process. Telling the two apart needs
    the sender's pid: the signal is blocked and read by a thread with sigwaitinfo. Without sigwaitinfo (macOS) the
    worker ignores SIGTERM, and its watchdog ends it within seconds of the main process.
    """
    if init_fn is not None:
        init_fn(worker_id)
    if not hasattr(signal, "sigwaitinfo"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here on inherit the mask

    def wait_for_parent() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass  # from outside the run: the main process stops the run, and then this worker
        os._exit(0)  # as PyTorch's handler for the parent's SIGTERM: quietly, so no "worker killed" error follows

    threading.Thread(target=wait_for_parent, name="sigterm-from-parent", daemon=True).start()


def write_metrics(out: Path, row: dict[str, Any]) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(finite_or_none(row)) + "\n")  # NaN (COCO's "no objects of this size") -> null
    csv_path = out / "metrics.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
    plot_metrics(out)


def plot_metrics(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("loss", "loss_cls", "loss_bbox", "loss_mask"):
        if any(r.get(key) is not None for r in rows):
            axes[0].plot(epochs, [r.get(key) for r in rows], label=key)
    axes[0].set(title="train loss", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(epochs, [r.get("lr") for r in rows])
    axes[1].set(title="mean lr", xlabel="epoch")
    evaluated = [r for r in rows if r.get("AP") is not None]
    for key in ("AP", "AP50", "mask_AP", "mask_AP50"):
        if any(r.get(key) is not None for r in evaluated):
            axes[2].plot([r["epoch"] for r in evaluated], [r.get(key) for r in evaluated], marker="o", label=key)
    axes[2].set(title="val mAP (EMA)", xlabel="epoch", ylim=(0, 1))
    if axes[2].lines:  # no evaluation yet: an empty legend would only warn
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=80)
    plt.close(fig)


def resolve_resume(resume: str | None, out: Path) -> Path | None:
    if resume is None:
        return None
    path = out / "last.pth" if resume == "auto" else Path(resume)
    if not path.is_file():
        if resume == "auto":
            return None  # nothing to resume yet: start fresh
        raise UserError(f"--resume: checkpoint not found: {path}")
    return path


# Resume: a resumed run continues with the settings its checkpoint recorded (train_config).
# These make a run what it is (weights' shapes, data order, iterations per epoch, augmentation stream): a resumed run
# must keep them. Every other setting may be overridden (--epochs extends a run; --device, --workers, --lr,
# --eval-interval, ... are the user's to change).
RUN_IDENTITY = ("model", "block", "data", "images", "imgsz", "batch", "seed")
RESUMABLE_KEYS = ("model", "ema", "ema_steps", "optimizer", "scaler", "next_epoch", "next_iter", "best_ap", "rng",
                  "train_config")  # fmt: skip
_NO_FLAG = ("warmup_start_factor", "min_lr_ratio", "ema_momentum", "ema_gamma", "max_nonfinite_steps")  # API only


def _as_option(field: str, value: Any) -> str:
    """How a TrainConfig value reads on the command line: `--imgsz 128`, `--no-channels-last`, `--no-amp`."""
    if field in _NO_FLAG:
        return f"{field}={value}"
    flag = "--amp" if field == "amp_dtype" else "--" + field.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


def _recorded_settings(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """The TrainConfig fields a resumable checkpoint recorded; UserError for any other checkpoint."""
    missing = [k for k in RESUMABLE_KEYS if k not in ckpt or (k == "train_config" and not isinstance(ckpt[k], dict))]
    if missing:
        raise UserError(
            f"--resume: {path} is not a resumable checkpoint of `rtmdet-edge train` (it lacks {', '.join(missing)}); "
            "only a last.pth / best.pth written by a detection training run can be continued"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in ckpt["train_config"].items() if k in fields and k != "resume"}


def _check_same_run(cfg: TrainConfig, ckpt: dict[str, Any], path: Path) -> None:
    """UserError unless cfg continues the run of ckpt: same RUN_IDENTITY settings, epochs not below its progress."""
    recorded = _recorded_settings(ckpt, path)
    changed = [k for k in RUN_IDENTITY if k in recorded and getattr(cfg, k) != recorded[k]]
    if changed:
        was = " ".join(_as_option(k, recorded[k]) for k in changed)
        now = " ".join(_as_option(k, getattr(cfg, k)) for k in changed)
        raise UserError(
            f"--resume: {path} was trained with {was}, this command asks for {now}; a resumed run keeps its model, "
            "data, image size, batch and seed: drop those options to continue it, or start a new run in another --out"
        )
    if ckpt["next_epoch"] > cfg.epochs:
        raise UserError(
            f"--epochs {cfg.epochs}: {path} has already trained {ckpt['next_epoch']} epochs; give a larger --epochs "
            "to extend the run"
        )


def resumed_config(cfg: TrainConfig, given: Collection[str] | None) -> TrainConfig:
    """The config to train with: cfg itself, or with cfg.resume set to an existing checkpoint, the settings that
    checkpoint recorded with the fields in given (what the user set explicitly; None: all of cfg) on top.

    A given field of RUN_IDENTITY that differs from the recorded run is refused (UserError, one line). out is never
    taken from the record: without --out the run continues in the checkpoint's folder (--resume auto: OUT itself).
    """
    from rtmdet_edge.checkpoint import read_checkpoint

    path = resolve_resume(cfg.resume, Path(cfg.out))
    if path is None:
        return cfg
    keep = frozenset(f.name for f in dataclasses.fields(TrainConfig)) if given is None else frozenset(given)
    ckpt = read_checkpoint(path)
    recorded = _recorded_settings(ckpt, path)
    restored = {k: v for k, v in recorded.items() if k not in keep and k != "out"}
    if "out" not in keep:
        # The run lives where its checkpoint is now, not where it was recorded: a copied or moved run folder must not
        # write into the original one.
        restored["out"] = str(path.parent)
    merged = dataclasses.replace(cfg, **restored)
    _check_same_run(merged, ckpt, path)
    return merged


def resume_summary(cfg: TrainConfig, recorded: dict[str, Any]) -> str:
    """One log line: which recorded settings the resumed run kept (those a plain command line would have set
    differently) and which this command overrode."""
    defaults = _cli_defaults()
    recorded = {k: v for k, v in recorded.items() if k != "out"}  # where it runs, not how: see resumed_config
    kept = [_as_option(k, v) for k, v in recorded.items() if getattr(cfg, k) == v and getattr(defaults, k) != v]
    overridden = [f"{_as_option(k, getattr(cfg, k))} (recorded: {'default' if v is None else v})"
                  for k, v in recorded.items() if getattr(cfg, k) != v]  # fmt: skip
    return (
        f"recorded settings restored: {' '.join(kept) or 'none differ from the defaults'}; "
        f"overridden by this command: {', '.join(overridden) or 'none'}"
    )


def _cli_defaults() -> TrainConfig:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return config_from_args(parser.parse_args([]))


# ---------------------------------------------------------------------------------------------------------------------
def main(cfg: TrainConfig) -> dict[str, Any]:
    """Train; returns {"best_ap", "last_metrics", "out", "model" (raw weights module), "ema" (EMA module)}.

    With cfg.resume, cfg must describe the recorded run (RUN_IDENTITY; `resumed_config` builds such a cfg from a
    checkpoint and the options a user gave). Raises TrainingInterrupted (.signum, .checkpoint) after SIGTERM /
    Ctrl-C, once a resumable last.pth is written.
    """
    check_imgsz(cfg.imgsz)
    stop = StopSignal()
    try:
        return _train(cfg, stop)
    except TrainingInterrupted as e:
        last = Path(cfg.out) / "last.pth"
        log.warning("%s; resumable checkpoint: %s", e, last)
        raise TrainingInterrupted(str(e), stop.signum or signal.SIGINT, last) from None
    finally:
        stop.restore()
        close_logging()


def _train(cfg: TrainConfig, stop: StopSignal) -> dict[str, Any]:
    from rtmdet_edge.checkpoint import read_checkpoint, save_checkpoint
    from rtmdet_edge.data import build_dataset
    from rtmdet_edge.evaluation.coco import evaluate
    from rtmdet_edge.models.bn_silu import fuse_bn_silu, kernel_unavailable
    from rtmdet_edge.models.model import build_model
    from rtmdet_edge.training.loss import build_criterion

    rank, world_size, device = setup_distributed(cfg.device)
    is_main = rank == 0
    out = Path(cfg.out)
    setup_logging(out, is_main)
    if is_main:
        remove_stale_temps(out)  # left by a run killed (SIGKILL, power loss) while writing a checkpoint
    seed_everything(cfg.seed + rank, cfg.deterministic)
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed train size after Mosaic/RandomCrop: autotune each conv once
    if cfg.batch % world_size:
        raise UserError(f"--batch {cfg.batch} is not divisible by the {world_size} processes")
    batch_per_rank = cfg.batch // world_size

    # data
    train_set = build_dataset(cfg.data, cfg.images, split="train", imgsz=cfg.imgsz)
    val_set = None
    if is_main and cfg.eval_interval > 0:
        val_spec = cfg.val_data or cfg.data
        val_set = build_dataset(val_spec, cfg.val_images or cfg.images, split="val", imgsz=cfg.imgsz)
    num_samples_per_rank = -(-len(train_set) // world_size)
    iters_per_epoch = num_samples_per_rank // batch_per_rank
    if iters_per_epoch == 0:
        raise UserError(f"{len(train_set)} training images are fewer than one batch of {cfg.batch}; lower --batch")

    # model
    model = build_model(cfg.model, num_classes=train_set.num_classes, block=cfg.block).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.fused_bn_silu and device.type == "cpu":
        fused = fuse_bn_silu(model)
        log.info("fused BN + SiLU kernel: %s", f"{fused} layers" if fused else f"not used ({kernel_unavailable()})")
    criterion = build_criterion(model)
    if world_size > 1 and device.type == "cuda":
        # Official: SyncBN when world_size > 1. torch's SyncBatchNorm is CUDA-only; on CPU (gloo) each rank normalises
        # its own shard and DDP's broadcast_buffers keeps the running statistics equal to rank 0's.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)  # raw_model keeps the eager module for EMA, checkpoints and evaluation

    # optimizer, schedule, EMA, AMP
    lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.batch)
    optimizer = build_optimizer(raw_model, lr, cfg.weight_decay)
    schedule = LRSchedule(
        base_lr=lr,
        iters_per_epoch=iters_per_epoch,
        max_epochs=cfg.epochs,
        warmup_iters=short_run_warmup(cfg.warmup_iters, iters_per_epoch * cfg.epochs),
        warmup_start_factor=cfg.warmup_start_factor,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    ema = ModelEMA(raw_model, cfg.ema_momentum, cfg.ema_gamma)
    amp_dtype = resolve_amp(cfg, device)
    # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    stage2_epoch = cfg.epochs - cfg.resolved_stage2_epochs()
    log.info(
        "%s on %s: %d images, %d classes, %d processes x batch %d, %d iters/epoch, lr %.3g, warm-up %d iters, "
        "stage 2 from epoch %d",
        cfg.model, device, len(train_set), train_set.num_classes, world_size, batch_per_rank, iters_per_epoch, lr,
        schedule.warmup_iters, stage2_epoch,
    )  # fmt: skip

    # resume
    start_epoch, start_iter, best_ap = 0, 0, -1.0
    resume_path = resolve_resume(cfg.resume, out)
    if resume_path is not None:
        ckpt = read_checkpoint(resume_path)
        _check_same_run(cfg, ckpt, resume_path)  # a caller of main() may have built cfg by hand
        raw_model.load_state_dict(ckpt["model"])
        ema.load_state_dict({"module": ckpt["ema"], "steps": ckpt["ema_steps"]})
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_iter, best_ap = ckpt["next_epoch"], ckpt["next_iter"], ckpt["best_ap"]
        states = ckpt["rng"]
        set_rng_state(states[rank] if len(states) == world_size else states[0])
        log.info("resumed from %s at epoch %d iteration %d; %s", resume_path, start_epoch, start_iter,
                 resume_summary(cfg, _recorded_settings(ckpt, resume_path)))  # fmt: skip

    def save(name: str, next_epoch: int, next_iter: int, metrics: dict[str, Any] | None = None) -> None:
        states = gather_rng_states(world_size)  # collective: every rank calls save
        if not is_main:
            return
        payload = {
            "model": raw_model.state_dict(),
            "ema": ema.module.state_dict(),
            "ema_steps": ema.steps,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "scheduler": {"step": next_epoch * iters_per_epoch + next_iter, **dataclasses.asdict(schedule)},
            "next_epoch": next_epoch,
            "next_iter": next_iter,
            "best_ap": best_ap,
            "rng": states,
            "config": raw_model.config.to_dict(),
            "train_config": cfg.to_dict(),
            "class_names": list(train_set.class_names),
            "metrics": metrics or {},
        }
        save_checkpoint(out / name, payload)

    # epoch loop (StopSignal: SIGTERM / Ctrl-C end it after a whole iteration with a resumable last.pth)
    def train_loader(stage: int) -> torch.utils.data.DataLoader:
        loader = build_train_loader(cfg, stage, train_set, rank=rank, world_size=world_size, pin=device.type == "cuda")
        # Workers leave a SIGTERM sent to the whole process group to StopSignal.
        loader.worker_init_fn = functools.partial(leave_sigterm_to_main, loader.worker_init_fn)
        return loader

    stage = 2 if start_epoch >= stage2_epoch else 1
    loader = train_loader(stage)
    last: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        if epoch == stage2_epoch and stage == 1:
            stage = 2  # PipelineSwitchHook: no Mosaic/MixUp for the last stage2_epochs epochs
            loader = train_loader(stage)
            log.info("epoch %d: switched to the stage-2 pipeline", epoch)
        skip = start_iter if epoch == start_epoch else 0
        set_loader_epoch(loader, epoch, start_batch=skip, seed=cfg.seed, rank=rank)
        stats = train_one_epoch(
            model, criterion, loader, optimizer, scaler, ema, schedule, epoch,
            iters_per_epoch=iters_per_epoch, start_iter=skip, device=device, max_grad_norm=cfg.max_grad_norm,
            max_nonfinite_steps=cfg.max_nonfinite_steps, save_every_iters=cfg.save_interval_iters,
            save_fn=lambda i, e=epoch: save("last.pth", e, i + 1), stop_requested=lambda: stop.is_set(world_size, device),
            show_progress=is_main, amp_dtype=amp_dtype, channels_last=cfg.channels_last,
        )  # fmt: skip
        if world_size > 1 and device.type != "cuda":
            # Plain BN on CPU: the last forward left each rank its own running statistics; take rank 0's everywhere.
            for buffer in raw_model.buffers():
                dist.broadcast(buffer, 0)
        row: dict[str, Any] = {"epoch": epoch, "stage": stage} | stats
        final = epoch == cfg.epochs - 1
        due = cfg.eval_interval > 0 and ((epoch + 1) % cfg.eval_interval == 0 or epoch >= stage2_epoch or final)
        if is_main and due and val_set is not None:
            result = evaluate(ema.module, val_set, imgsz=cfg.imgsz, batch_size=cfg.val_batch, device=device)
            row |= result.metrics
            log.info("epoch %d EMA: AP %.4f AP50 %.4f", epoch, result.metrics["AP"], result.metrics["AP50"])
            if result.segm_metrics is not None:
                row |= {f"mask_{k}": v for k, v in result.segm_metrics.items()}
                log.info("epoch %d EMA: mask AP %.4f AP50 %.4f", epoch, row["mask_AP"], row["mask_AP50"])
        if is_main:
            write_metrics(out, row)
            log.info("epoch %d: %s", epoch, {k: round(v, 5) for k, v in stats.items() if isinstance(v, float)})
        is_best = row.get("AP") is not None and row["AP"] > best_ap
        if is_best:
            best_ap = row["AP"]
        save("last.pth", epoch + 1, 0, row)
        if is_best and is_main:
            save_checkpoint(out / "best.pth", read_checkpoint(out / "last.pth"))
        last = row
        if world_size > 1:
            dist.barrier()  # rank 0 evaluates and writes while the others wait
        if epoch + 1 < cfg.epochs and stop.is_set(world_size, device):
            raise TrainingInterrupted(f"stopped after epoch {epoch}")
    if world_size > 1:
        dist.destroy_process_group()
    return {"best_ap": best_ap, "last_metrics": last, "out": str(out), "model": raw_model, "ema": ema.module}


if __name__ == "__main__":  # `torchrun -m rtmdet_edge.training.train ...` works without the CLI wrapper
    _parser = argparse.ArgumentParser(prog="rtmdet-edge train", description=__doc__)
    add_arguments(_parser)
    try:
        raise SystemExit(run(_parser.parse_args()))
    except UserError as _e:
        print(f"error: {_e}", file=__import__("sys").stderr)
        raise SystemExit(2) from None
