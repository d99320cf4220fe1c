"""Peak memory of one benchmark row, measured in a fresh Python process.

The probe process imports the runtime, takes its resident set size as the baseline (psutil), resets the kernel's
RSS high-water mark, loads the model and runs three batch-1 inferences, then reads the high-water mark again:
peak_rss_mb is the whole process, model_rss_mb = peak - baseline is what the model itself costs. A fresh process is
needed because the high-water mark never goes down on its own: measured in-process, a row would inherit the peak of
every row before it.

    python -m targets.memory '{"target": "onnxruntime", "precision": "fp32", "files": {...}, ...}'
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
METHOD = (
    "fresh process per row: RSS after importing the runtime (baseline, psutil), then the peak RSS (the kernel's "
    "high-water mark, reset at the baseline) while loading the model and running 3 batch-1 inferences; "
    "peak_rss = whole process, model_rss = peak - baseline"
)


def measure_memory(spec: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    """Run the probe for one row in a fresh process. spec: target, precision, files (name -> path), threads, imgsz."""
    cmd = [sys.executable, "-m", "targets.memory", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "memory probe timed out"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(lines[-1])


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0: clear_refs value 5); psutil has no call for it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """The process's peak RSS: psutil's peak working set on Windows; on Linux the kernel's VmHWM, which psutil does
    not expose (and ru_maxrss cannot replace: it also counts the parent's peak inherited through vfork + exec)."""
    mem = psutil.Process().memory_info()
    if hasattr(mem, "peak_wset"):
        return mem.peak_wset / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """In the probe process: baseline, reset, load + 3 inferences, peak."""
    import importlib

    import numpy as np
    import torch

    from targets.benchmark import ModelFiles, open_backend

    torch.set_num_threads(spec["threads"])
    if spec["target"] in RUNTIME_MODULES:  # the runtime's own libraries belong to the baseline, not to the model
        importlib.import_module(RUNTIME_MODULES[spec["target"]])
    files = ModelFiles.from_json(spec["files"])
    x = np.zeros((1, 3, spec["imgsz"], spec["imgsz"]), np.float32)
    baseline = psutil.Process().memory_info().rss / 2**20
    # importing libraries can briefly use more memory than the model ever does: without the reset that transient
    # would hide the model's peak
    method = "high-water mark reset at the baseline" if _reset_peak_rss() else "high-water mark not resettable here"
    backend = open_backend(spec["target"], spec["precision"], files, spec["threads"])
    for _ in range(3):
        backend(x)
    peak = _peak_rss_mb()
    return {"peak_rss_mb": peak, "baseline_rss_mb": baseline, "model_rss_mb": peak - baseline, "method": method}


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
