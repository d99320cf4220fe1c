"""One latency function for every backend (timm benchmark.py style): warm up, then time each call on its own.

Measuring is kept apart from printing. Each call is timed with time.perf_counter() around exactly one call, so the
harness adds two clock reads and one list append per run (well under a microsecond); `benchmarks/harness_overhead.py`
checks this against a bare ONNX Runtime loop and OpenVINO's own benchmark_app.

CUDA work is asynchronous: for a torch module or backend on a CUDA device we call torch.cuda.synchronize() before
starting and after each call, otherwise the clock would stop when the kernels are queued rather than finished.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm


@dataclass(frozen=True)
class LatencyResult:
    """Per-call wall-clock statistics in milliseconds; fps = items_per_call * 1000 / median_ms."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    fps: float
    runs: int
    warmup: int
    min_ms: float
    max_ms: float
    items_per_call: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(times_ms: Sequence[float], warmup: int = 0, items_per_call: int = 1) -> LatencyResult:
    """Statistics of already-measured per-call times (used by measure_latency and by bare reference loops)."""
    if len(times_ms) == 0:
        raise ValueError("no timed runs")
    t = np.asarray(times_ms, np.float64)
    median, p90 = (float(v) for v in np.percentile(t, [50, 90]))  # linear interpolation
    return LatencyResult(
        median_ms=median,
        p90_ms=p90,
        mean_ms=float(t.mean()),
        fps=items_per_call * 1000.0 / median if median > 0 else float("inf"),
        runs=len(t),
        warmup=warmup,
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        items_per_call=items_per_call,
    )


def cuda_sync_for(obj: Any) -> Callable[[], None] | None:
    """torch.cuda.synchronize when obj is torch work on a CUDA device (a module, or a backend named "torch").

    Other runtimes (ONNX Runtime, OpenVINO, TensorRT wrappers) return host arrays, so their calls are already
    synchronous, and torch may not even be built with CUDA when they use a GPU.
    """
    try:
        import torch
    except ImportError:
        return None
    if isinstance(obj, torch.nn.Module):
        p = next(obj.parameters(), None)
        device = p.device if p is not None else None
    elif getattr(obj, "name", None) == "torch":
        device = getattr(obj, "device", None)
    else:
        return None
    if device is None or "cuda" not in str(device):
        return None
    return torch.cuda.synchronize


def measure_latency(
    fn: Callable[..., Any],
    warmup: int = 10,
    runs: int = 50,
    *,
    args: tuple[Any, ...] = (),
    items_per_call: int = 1,
    sync: Callable[[], None] | None = None,
    progress: str | None = None,
) -> LatencyResult:
    """Time `fn(*args)`: `warmup` untimed calls, then `runs` calls timed one by one.

    Args:
        fn: a Backend, a torch module, or any callable (e.g. a whole pre + model + post pipeline).
        args: positional arguments passed on every call (e.g. `(batch,)` for a Backend).
        items_per_call: images per call, so fps is images per second (batch throughput when > 1).
        sync: called before the clock starts and before it stops; defaults to torch.cuda.synchronize for CUDA
            torch objects and to nothing otherwise.
        progress: a tqdm description to show a progress bar, or None for none.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if sync is None:
        sync = cuda_sync_for(fn)
    for _ in range(warmup):
        fn(*args)
    times_ms = time_calls(fn, runs, args=args, sync=sync, progress=progress)
    return summarize(times_ms, warmup=warmup, items_per_call=items_per_call)


def measure_latencies(
    calls: Mapping[str, tuple[Callable[..., Any], tuple[Any, ...]]],
    warmup: int = 10,
    runs: int = 50,
    rounds: int = 5,
    *,
    items_per_call: Mapping[str, int] | None = None,
) -> dict[str, LatencyResult]:
    """measure_latency for several callables at once, in interleaved rounds: after every callable's warm-up, each
    round times a share of the runs of each in turn, so load from other processes on a shared machine hits them
    alike and their ratios stay meaningful. `calls` maps a name to (fn, args)."""
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0, rounds >= 1 (got {runs}, {warmup}, {rounds})")
    for fn, args in calls.values():
        for _ in range(warmup):
            fn(*args)
    rounds = min(rounds, runs)
    per_round = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in calls}
    for n in per_round:
        for name, (fn, args) in calls.items():
            times[name] += time_calls(fn, n, args=args, sync=cuda_sync_for(fn))
    items = items_per_call or {}
    return {name: summarize(t, warmup=warmup, items_per_call=items.get(name, 1)) for name, t in times.items()}


def time_calls(
    fn: Callable[..., Any],
    runs: int,
    *,
    args: tuple[Any, ...] = (),
    sync: Callable[[], None] | None = None,
    progress: str | None = None,
) -> list[float]:
    """The timed loop of measure_latency without warm-up: per-call milliseconds, for pooling interleaved rounds."""
    if sync is not None:
        sync()
    times_ms: list[float] = []
    clock = time.perf_counter
    bar = tqdm(total=runs, desc=progress, leave=False, disable=progress is None)
    for _ in range(runs):
        t0 = clock()
        fn(*args)
        if sync is not None:
            sync()
        times_ms.append((clock() - t0) * 1000.0)
        bar.update(1)
    bar.close()
    return times_ms


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform reports: recorded next to every timing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_loaded(load_average: float, threads: int) -> bool:
    """True when the 1-minute load average is well above what a benchmark's own `threads` explain."""
    return load_average > threads + 0.5 * (os.cpu_count() or 1)


def load_note(load_average: float, threads: int) -> str:
    """" (a loaded machine: ...)" when machine_loaded, else "": printed beside a timing table so that nobody reads
    loaded absolute times as the machine's."""
    if machine_loaded(load_average, threads):
        return " (a shared, loaded machine: absolute times are slow, compare the ratios)"
    return ""
