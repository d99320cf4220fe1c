"""What demos/video.py and demos/camera.py share: options, building the Detector, the run and its summary line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtmdet_edge.errors import UserError
from rtmdet_edge.inference.detector import BACKENDS, Detector
from rtmdet_edge.inference.predict import backend_for_weights
from rtmdet_edge.inference.stream import StreamStats, has_display, run_stream


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pth) or exported model (.onnx, .xml, .engine)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="runtime; default: by the weights' suffix (.pth torch, .onnx onnxruntime, .xml openvino, "
                        ".engine tensorrt)")  # fmt: skip
    p.add_argument("--model", default=None, help="preset name, only for checkpoints that do not record it")
    p.add_argument("--imgsz", type=int, default=640, help="network input size (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--score-thr", type=float, default=0.3, help="draw detections at or above this score (default: %(default)s)")
    p.add_argument("--names", default=None,
                   help="class names: a text file with one name per line, or a comma-separated list "
                        "(default: what the checkpoint records, else COCO names for 80 classes)")  # fmt: skip
    p.add_argument("--headless", action="store_true", help="no window, even when a display exists")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames; 0 = until the end (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime (default: runtime's own)")
    p.add_argument("--stats", type=Path, default=None, help="also write the run's statistics to this JSON file")


def _class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserError(f"--names {spec}: no class names found")
    return names


def build_detector(args: argparse.Namespace) -> Detector:
    weights = Path(args.weights)
    if not weights.is_file():
        raise UserError(f"--weights {weights}: no such file")
    backend = args.backend or backend_for_weights(weights)
    if backend is None:
        raise UserError(f"--weights {weights}: cannot tell the runtime from the suffix; pass --backend")
    options = {}
    if args.threads and backend in ("onnxruntime", "openvino"):
        options["num_threads"] = args.threads
    elif args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return Detector(weights, imgsz=args.imgsz, backend=backend, device=args.device, postprocess="deploy",
                    model=args.model, class_names=_class_names(args.names), **options)  # fmt: skip


def run_demo(args: argparse.Namespace, source: str, out: Path | None) -> StreamStats:
    detector = build_detector(args)
    show = not args.headless and has_display()
    if not show and out is None:
        raise UserError("no display and no output file: pass --out FILE.mp4 (or run where a display exists)")
    stats = run_stream(detector, source, detector.class_names, out=out, show=show, score_thr=args.score_thr,
                       max_frames=args.max_frames, progress=None if show else "frames")  # fmt: skip
    s = stats.summary()
    print(
        f"{s['frames_processed']} frames ({s['frames_dropped']} dropped) at {s['fps']:.1f} FPS; model "
        f"{s['model_ms_median']:.1f} ms/frame, demo overhead {s['demo_overhead_ratio']:.1%} of it (decode "
        f"{s['decode_ms_median']:.1f} + draw {s['draw_ms_median']:.1f} + encode {s['encode_ms_median']:.1f} ms); "
        f"stopped by {s['stopped_by']}" + (f"; wrote {out}" if out is not None and s["frames_written"] else "")
    )
    if args.stats is not None:
        args.stats.parent.mkdir(parents=True, exist_ok=True)
        args.stats.write_text(json.dumps(s, indent=2))
    return stats


def main_guard(run) -> int:
    """Clear one-line errors and Ctrl-C handling for the demo scripts (as the rtmdet-edge CLI does)."""
    try:
        run()
        return 0
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
