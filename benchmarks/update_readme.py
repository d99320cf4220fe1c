"""Copy the measured tables from benchmarks/results/*.md into README.md between marker comments.

README sections look like
    <!-- results:inference -->
    ... (replaced) ...
    <!-- /results:inference -->
and take benchmarks/results/inference.md. Tables are never typed by hand: re-run a benchmark, then this script.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def update(readme: Path = ROOT / "README.md", results: Path = ROOT / "benchmarks" / "results") -> list[str]:
    text = readme.read_text()
    updated = []

    def replace(match: re.Match) -> str:
        name = match.group(1)
        table = results / f"{name}.md"
        if not table.exists():
            body = f"_not measured yet: run the benchmark that writes benchmarks/results/{name}.md_"
        else:
            body = table.read_text().strip()
            updated.append(name)
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    text = re.sub(r"<!-- results:([\w\-]+) -->.*?<!-- /results:\1 -->", replace, text, flags=re.S)
    readme.write_text(text)
    return updated


if __name__ == "__main__":
    names = update()
    print(f"README.md: updated {', '.join(names) if names else 'nothing'}", file=sys.stderr)
