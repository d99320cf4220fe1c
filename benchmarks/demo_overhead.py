"""The demo's own cost next to the model's: decode + draw + encode vs the Detector call, per frame, on the shared demo
video, for every backend available here (rtmdet-tiny at 640; OpenVINO INT8 is the acceptance row: overhead <= 20%).

    python benchmarks/demo_overhead.py [--weights CKPT] [--video ../shared/data/video/demo.mp4]

Writes benchmarks/results/demo_overhead.{json,md}. Medians per frame; the threads overlap decode and encode with the
model, so the wall-clock FPS is also reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="checkpoint (default: a random-weight rtmdet-tiny; speed only)")
    p.add_argument("--video", default=str(ROOT.parent / "shared" / "data" / "video" / "demo.mp4"))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-frames", type=int, default=0)
    args = p.parse_args()

    import torch

    from quant import default_int8_artifact, load_calibration
    from rtmdet_edge import build_model, load_checkpoint, save_checkpoint
    from rtmdet_edge.inference.detector import Detector
    from rtmdet_edge.inference.stream import run_stream
    from targets.export import export_onnx
    from targets.openvino import convert_to_openvino

    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.weights) if args.weights else build_model("rtmdet-tiny")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "model.pth"
        save_checkpoint(ckpt, {"model": model.state_dict(), "config": model.config.to_dict()})
        onnx = export_onnx(model, tmp / "model.onnx", args.imgsz)
        calib = load_calibration("synthetic:32", None, 32, args.imgsz)
        models = {
            ("torch", "fp32"): (ckpt, {}),
            ("onnxruntime", "fp32"): (onnx, {"num_threads": args.threads}),
            ("openvino", "fp32"): (convert_to_openvino(onnx, tmp / "model.xml"), {"num_threads": args.threads, "precision": "fp32"}),
            ("onnxruntime", "int8"): (default_int8_artifact("onnxruntime", model, calib, args.imgsz, tmp / "q_ort"), {"num_threads": args.threads}),
            ("openvino", "int8"): (default_int8_artifact("openvino", model, calib, args.imgsz, tmp / "q_ov"), {"num_threads": args.threads, "precision": "fp32"}),
        }  # fmt: skip
        for (backend, precision), (path, options) in models.items():
            det = Detector(path, imgsz=args.imgsz, backend=backend, device="cpu", postprocess="deploy", **options)
            stats = run_stream(det, args.video, det.class_names, out=tmp / f"{backend}_{precision}.mp4",
                               max_frames=args.max_frames)  # fmt: skip
            s = stats.summary()
            rows.append({"backend": backend, "precision": precision, **s})
            print(f"{backend} {precision}: {s['frames_processed']} frames, {s['fps']:.1f} FPS, model {s['model_ms_median']:.1f} "
                  f"ms, overhead {s['demo_overhead_ratio']:.1%}")  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    (out / "demo_overhead.json").write_text(json.dumps({"video": args.video, "imgsz": args.imgsz, "rows": rows}, indent=2))
    lines = [
        f"`demos/video.py`'s loop on `{Path(args.video).name}`, rtmdet-tiny at {args.imgsz}, {args.threads} threads, "
        "deploy post-processing; medians per frame. Overhead = (decode + draw + encode) / Detector call.",
        "",
        "| backend | precision | frames | FPS (wall) | Detector ms | decode ms | draw ms | encode ms | overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['frames_processed']} | {r['fps']:.1f} | {r['model_ms_median']:.1f} | "
            f"{r['decode_ms_median']:.2f} | {r['draw_ms_median']:.2f} | {r['encode_ms_median']:.2f} | "
            f"{r['demo_overhead_ratio']:.1%} |"
        )
    lines += ["", "Produced by `python benchmarks/demo_overhead.py`."]
    (out / "demo_overhead.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
