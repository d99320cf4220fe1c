"""BatchNorm + SiLU as one CPU kernel for training (csrc/bn_silu.cpp), applied to a model by `fuse_bn_silu`.

Every ConvModule of RTMDet ends in BN -> SiLU. In a CPU training step PyTorch runs them as five memory-bound passes
over full-size activations (BN statistics and normalisation, SiLU, and both backwards), ~20% of an rtmdet-tiny step
at 320 and 640. The fused kernel reads and writes each activation fewer times and keeps no copy of the BN output for
the SiLU backward; BN + SiLU forward + backward take about half the time (`benchmarks/train_speed.py` measures the
step). Its batch statistics are accumulated in double and are closer to float64 than PyTorch's float ones.

The kernel is compiled on first use with torch.utils.cpp_extension (~30 s, cached in ~/.cache/torch_extensions). It
only serves channels-last float32 CPU tensors in training mode; anything else (eval, NCHW, CUDA, autocast) runs the
plain BatchNorm2d + SiLU, so a fused model computes what the unfused one computes everywhere. If no compiler is found
or the build fails, `fuse_bn_silu` logs why once and leaves the model unchanged.

    from rtmdet_edge.models.bn_silu import fuse_bn_silu
    fuse_bn_silu(model)   # in place; state_dict keys and parameter objects do not change
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmdet_edge.models.layers import ConvModule, SiLU

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "bn_silu.cpp"
BUILD_TIMEOUT_S = 600.0
_kernel: ModuleType | None = None
_failure: str | None = None


def _build_name() -> tuple[str, list[str]]:
    """Extension name and compiler flags: the AVX2 build only on CPUs that have AVX2 (torch's own dispatch says)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        return "rtmdet_edge_bn_silu_avx2", ["-O3", "-mavx2", "-mfma", "-fopenmp"]
    return "rtmdet_edge_bn_silu", ["-O3", "-fopenmp"]


def load_kernel() -> ModuleType | None:
    """The compiled kernel, building it on first use; None (and `kernel_unavailable()` says why) if it cannot be built.

    Set RTMDET_EDGE_NO_FUSED_KERNELS=1 to never build or use it.
    """
    global _kernel, _failure
    if _kernel is not None or _failure is not None:
        return _kernel
    if os.environ.get("RTMDET_EDGE_NO_FUSED_KERNELS", "") not in ("", "0"):
        _failure = "RTMDET_EDGE_NO_FUSED_KERNELS is set"
        return None
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        from rtmdet_edge.extension_lock import owned_build

        name, flags = _build_name()
        build_dir = Path(_get_build_directory(name, verbose=False))
        with owned_build(build_dir, wait_s=BUILD_TIMEOUT_S, what="the fused BN + SiLU kernel"):
            _kernel = load(name, [str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, a failed build, a busy lock: training still works, only slower
        _failure = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        log.warning("fused BN + SiLU kernel unavailable, training uses PyTorch's BatchNorm2d + SiLU (%s)", _failure)
    return _kernel


def kernel_unavailable() -> str | None:
    """Why the kernel could not be loaded (None if it loaded or was not tried)."""
    return _failure


class _BatchNormSiLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, invstd, var = _kernel.forward(x, weight, bias, eps)
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_x, grad_weight, grad_bias = _kernel.backward(grad_y, x, mean, invstd, weight, bias)
        return grad_x, grad_weight, grad_bias, None


class BatchNormSiLU2d(nn.BatchNorm2d):
    """BatchNorm2d followed by SiLU; the same parameters and buffers (and state_dict keys) as BatchNorm2d."""

    def _fused(self, x: Tensor) -> bool:
        return (
            self.training
            and _kernel is not None
            and self.affine
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.numel() > x.size(1)  # training BN needs more than one value per channel (PyTorch raises)
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.is_autocast_enabled("cpu")
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._fused(x):
            return F.silu(super().forward(x))
        y, mean, var = _BatchNormSiLUFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = x.numel() // x.size(1)
                # The update torch's CPU batch norm makes: unbiased variance, running = (1 - f) * running + f * batch.
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)
        return y


def _retyped(old: nn.BatchNorm2d, cls: type[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    """A `cls` holding old's Parameter and buffer objects (not copies: optimizer and EMA references stay valid)."""
    new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(old, name))
    new.train(old.training)
    return new


def fuse_bn_silu(model: nn.Module) -> int:
    """Give every ConvModule ending in BatchNorm2d -> SiLU the fused kernel, in place; returns how many.

    0 when the kernel cannot be built (`kernel_unavailable()` says why). The parameters stay the same objects, so an
    optimizer or EMA created before still sees them; state_dict keys do not change.
    """
    if load_kernel() is None:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, ConvModule) and type(module.bn) is nn.BatchNorm2d and type(module.activate) is SiLU:
            module.bn, module.activate = _retyped(module.bn, BatchNormSiLU2d), nn.Identity()
            count += 1
    return count


def unfuse_bn_silu(model: nn.Module) -> int:
    """Undo `fuse_bn_silu` in place (plain BatchNorm2d + SiLU over the same tensors); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, ConvModule) and type(module.bn) is BatchNormSiLU2d:
            module.bn, module.activate = _retyped(module.bn, nn.BatchNorm2d), SiLU()
            count += 1
    return count
