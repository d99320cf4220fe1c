#!/usr/bin/env python
"""`make test`: the test files in three pytest processes, one after the other, then one closing line.

Why not one process: after a few hundred tests that load PyTorch, ONNX Runtime, OpenVINO and NNCF models side by side
(and fork DataLoader workers from that process), a long-lived pytest process on the 2-core CI machine died twice with
a segmentation fault inside native code, at different tests (no Python frame to report), while every file passes on
its own. Not root-caused yet. Fresh processes per group keep the native runtimes' state from piling up, and a group
that dies by a signal is run once more and reported loudly (a real failure fails both times). Groups are contiguous
ranges of file names, so the order is pytest's own.

    python tools/run_tests.py [pytest args ...]      # e.g. -m "not slow", -x, --durations=20
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# each group starts at the first file whose name sorts at or after the boundary
BOUNDARIES = (
    "tests/test_engine.py",
    "tests/test_independent_parity.py",
    "tests/test_loader.py",
    "tests/test_loss.py",
    "tests/test_postprocess.py",
    "tests/test_quant_graph.py",
    "tests/test_robustness_cli.py",
)


def groups() -> list[list[str]]:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    cuts = [0] + [next((i for i, f in enumerate(files) if f >= b), len(files)) for b in BOUNDARIES] + [len(files)]
    return [files[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def main(argv: list[str]) -> int:
    totals: dict[str, int] = {}
    worst = 0
    for group in groups():
        for attempt in (1, 2):
            proc = subprocess.run([sys.executable, "-m", "pytest", *argv, *group], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
            sys.stdout.write(proc.stdout)
            sys.stdout.flush()
            if proc.returncode >= 0 or attempt == 2:
                break
            print(f"WARNING: pytest died by signal {-proc.returncode} in {group[0]} .. {group[-1]}; running the group "
                  "once more (see tools/run_tests.py)", flush=True)  # fmt: skip
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[0]):
            word = "error" if word.startswith("error") else word
            totals[word] = totals.get(word, 0) + int(n)
        if proc.returncode not in (0, 5):  # 5: no test collected in a group (e.g. everything deselected)
            worst = worst or proc.returncode
            if proc.returncode < 0 or proc.returncode > 5:
                print(f"pytest died on {group[0]} .. {group[-1]} (exit {proc.returncode})", flush=True)
    failed = totals.get("failed", 0) + totals.get("error", 0)
    print(f"{totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped")
    return worst if worst else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
