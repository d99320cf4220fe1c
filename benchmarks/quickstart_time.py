"""How long `make quickstart` takes from a fresh clone, install included (issue 13: at most 20 minutes on 2 cores).

Clones this repository's HEAD into a temporary folder (with `../shared` linked beside it when it exists here, as CI
has it), runs `make quickstart` there exactly as a newcomer would, and records the wall time of the install and of
each quickstart stage (from the run's own summary.json).

    python benchmarks/quickstart_time.py        # -> benchmarks/results/quickstart_time.{json,md}

Run it on an otherwise idle machine: the number is a wall-clock time (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MIN = 20.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the clone (its runs/quickstart holds the report)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    work = Path(tempfile.mkdtemp(prefix="quickstart_time_"))
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (work / "shared").symlink_to(shared)
    clone = work / "main"
    subprocess.check_call(["git", "clone", "-q", str(ROOT), str(clone)])
    load_before = os.getloadavg()
    log = work / "make_quickstart.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call(["make", "quickstart"], cwd=clone, stdout=f, stderr=subprocess.STDOUT)
    total = time.perf_counter() - start
    if code != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"make quickstart failed (exit {code}); log: {log}")
    summary = json.loads((clone / "runs" / "quickstart" / "summary.json").read_text())
    quickstart_s = summary["seconds"]
    result = {
        "commit": head,
        "total_s": total,
        "install_and_startup_s": total - quickstart_s,
        "quickstart_s": quickstart_s,
        "stages": summary["stages"],
        "targets": summary["targets"],
        "plan": summary["plan"],
        "report_files": sorted(str(q.relative_to(clone / "runs" / "quickstart"))
                               for q in (clone / "runs" / "quickstart").glob("*")),  # fmt: skip
        "load_average_before": load_before,
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quickstart_time.json").write_text(json.dumps(result, indent=1))
    verdict = "within" if total / 60 <= BUDGET_MIN else "**over**"
    lines = [
        f"`make quickstart` from a fresh clone of {head} on {os.cpu_count()} CPU cores (load average before: "
        f"{load_before[0]:.1f}): **{total / 60:.1f} min** in all, {verdict} the {BUDGET_MIN:.0f}-minute budget; "
        f"install {result['install_and_startup_s'] / 60:.1f} min, quickstart {quickstart_s / 60:.1f} min on "
        f"{', '.join(result['targets'])}. Report folder: {', '.join(result['report_files'])}.",
        "",
        "| stage | minutes |",
        "|---|---:|",
        f"| install (`make install`: venv, torch, the package and its extras) | {result['install_and_startup_s'] / 60:.1f} |",
    ]
    lines += [f"| {s['stage']} | {s['seconds'] / 60:.1f} |" for s in summary["stages"]]
    lines += ["", "Produced by `python benchmarks/quickstart_time.py`."]
    (out / "quickstart_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"clone kept: {clone}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
