#!/usr/bin/env python
"""Run a detector on a live camera: a window with boxes, FPS and latency, optionally recording the annotated stream.

    python demos/camera.py --weights model.xml                  # camera 0, window, q to quit
    python demos/camera.py --camera 1 --weights model.onnx --headless --out runs/demo/camera.mp4 --max-frames 300

When the model is slower than the camera, frames are dropped (counted in the summary) so the picture stays live. A
camera that disappears ends the run with one line; Ctrl-C stops cleanly and keeps what was recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from demos.common import add_common_arguments, main_guard, run_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camera", "--source", dest="camera", default="0",
                   help="camera index or device path, e.g. 0 or /dev/video2 (default: 0); --source is the same option, "
                        "named as in `rtmdet-edge predict`")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="record the annotated stream to this .mp4 (default: none)")
    add_common_arguments(p)
    args = p.parse_args(argv)
    return main_guard(lambda: run_demo(args, args.camera, args.out))


if __name__ == "__main__":
    sys.exit(main())
