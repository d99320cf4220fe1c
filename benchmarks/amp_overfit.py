"""Does training still learn in reduced precision? The 8-image overfit check in fp32 and under bf16 autocast.

    python benchmarks/amp_overfit.py                      # fp32 (train default) and bf16, one after the other
    python benchmarks/amp_overfit.py --settings bf16      # one of them

Each setting is `rtmdet_edge.training.overfit.overfit_ap50` (rtmdet-tiny, 8 synthetic images, 160 px, 200 iterations
of one batch of 8, EMA; AP50 of the EMA weights on the same images) in its own process with 2 threads:
- fp32: channels_last + the fused BN/SiLU kernel, as `rtmdet-edge train` runs on CPU by default;
- fp32-plain: NCHW, PyTorch's BN + SiLU (the settings of tests/test_engine.py's fp32 overfit test);
- bf16: `--amp bf16` (CPU bfloat16 autocast of the forward; loss and assigner in float32), channels_last.
The bar is AP50 >= 0.9 for every setting. On a CPU without AVX512-BF16 or AMX bf16 is emulated and runs ~15x slower
than fp32 (about 15 minutes here), which is why the test suite only runs the bf16 case where bf16 is native.

Writes benchmarks/results/amp_overfit.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = {
    "fp32": ("fp32, channels_last + fused BN/SiLU (train default)", "None", True, True),
    "fp32-plain": ("fp32, NCHW, PyTorch BN + SiLU", "None", False, False),
    "bf16": ("bf16 autocast (--amp bf16), channels_last", "torch.bfloat16", True, False),
}
BAR = 0.9


def run_one(name: str, threads: int) -> dict:
    _, dtype, channels_last, fused = SETTINGS[name]
    code = (
        "import json, time, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from rtmdet_edge.training.overfit import overfit_ap50\n"
        "t = time.perf_counter()\n"
        f"ap = overfit_ap50({dtype}, channels_last={channels_last}, fused_bn_silu={fused}, show_progress=True)\n"
        "print(json.dumps({'AP50': ap, 'seconds': time.perf_counter() - t}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the overfit run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    lines = [
        f"rtmdet-tiny from scratch on 8 synthetic images (3 classes, at most 4 objects each, 160 px, no augmentation), "
        f"one batch of 8 for 200 iterations, AdamW lr 0.004, EMA; AP50 of the EMA weights on the same 8 images "
        f"(`rtmdet_edge.training.overfit`). {report['threads']} threads per run. CPU: {report['cpu']} "
        f"(native bf16: {report['native_bf16']}). torch {report['torch']}.",
        "",
        f"| setting | AP50 | >= {BAR} | time (s) |",
        "|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {r['AP50']:.3f} | {'yes' if r['AP50'] >= BAR else 'NO'} | {r['seconds']:.0f} |")
    lines += ["", f"Produced by `python benchmarks/amp_overfit.py --settings {' '.join(report['settings'])}`."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from targets.latency import cpu_name

    rows = []
    for name in args.settings:
        print(f"{name}: training ...", file=sys.stderr, flush=True)
        result = run_one(name, args.threads)
        rows.append({"setting": name, "label": SETTINGS[name][0], **result})
        print(f"{name}: AP50 {result['AP50']:.3f} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    report = {
        "settings": args.settings,
        "threads": args.threads,
        "cpu": cpu_name(),
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "amp_overfit.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "amp_overfit.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(r["AP50"] >= BAR for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
