#!/usr/bin/env python
"""Run a detector over a video file: show it in a window (when a display exists) and/or write an annotated video.

    python demos/video.py shared/data/video/demo.mp4 --weights model.xml --headless --out runs/demo/annotated.mp4

Every input frame is processed and written (a file never drops frames). The overlay shows the smoothed FPS and latency;
`q` or Esc in the window stops, Ctrl-C stops cleanly and keeps what was written. The last line reports the FPS reached
and the demo's own overhead (decode + draw + encode) relative to the model's time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from demos.common import add_common_arguments, main_guard, run_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file (mp4, avi, mkv, ...)")
    p.add_argument("--out", type=Path, default=None,
                   help="annotated video to write (default: runs/demo/<name>_annotated.mp4 when headless)")  # fmt: skip
    add_common_arguments(p)
    args = p.parse_args(argv)

    def run() -> None:
        out = args.out
        if out is None and args.headless:
            out = Path("runs/demo") / f"{Path(args.video).stem}_annotated.mp4"
        run_demo(args, args.video, out)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
