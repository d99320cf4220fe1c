"""Does the `Detector` stay close to the model's own latency on ONNX Runtime and OpenVINO? (issue 9: at most +15%)

For rtmdet-tiny at 640 with the benchmark's defaults (2 threads, deploy post-processing) on one real image
(shared/data/video/demo.jpg; a synthetic one when it is absent), per runtime: the model call alone, and the
`Detector` around the very same backend (letterbox + normalise + model + decode/NMS). Two Detector settings run side
by side, call by call with the model-only call (`paired_times`):

- `now`: what the package does (ONNX Runtime stops its pool spinning when a run returns; decode/NMS on one torch
  thread next to another runtime);
- `before`: the previous behaviour (ORT threads keep spinning after the run; decode/NMS on torch's 2 OpenMP threads),
  in which each runtime's idle threads spun on the cores the other needed.

The ratio e2e / model-only is what matters: each Detector call is paired with the model-only call next to it, so load
from other users of a shared machine hits both alike (the report records the load average). INT8 rows: --quantize makes
their models here (the recipes of the README table), or pass --int8-onnx (a Q/DQ ONNX from `rtmdet-edge quantize`) and
--int8-ir.

    python benchmarks/e2e_overhead.py --quantize   # writes benchmarks/results/e2e_overhead.{json,md} (--name: another stem)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# recorded as found: benchmarks/inference.py (imported below) sets PASSIVE for its own runs, too late to matter here
OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "default (active)")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import load_benchmark_model, load_image  # noqa: E402

from rtmdet_edge.inference.detector import Detector  # noqa: E402
from rtmdet_edge.inference.preprocess import normalize_numpy, preprocess  # noqa: E402
from rtmdet_edge.models.outputs import group_outputs  # noqa: E402
from targets import load_backend  # noqa: E402
from targets.export import export_onnx  # noqa: E402
from targets.latency import cpu_name, load_note  # noqa: E402

BUDGET = 0.15  # e2e may add at most 15% to the model-only latency


def backends(
    onnx_path: Path, xml_path: Path, int8_onnx: str | None, threads: int, int8_ir: str | None = None
) -> dict[str, dict[str, Any]]:
    """{row: {"now": backend, "before": backend}}: the before-variant differs only in ORT's spin-after-run."""
    rows: dict[str, dict[str, Any]] = {}
    sources = {"fp32": (onnx_path, xml_path)}
    if int8_onnx:
        sources["int8"] = (Path(int8_onnx), Path(int8_ir or int8_onnx))
    for precision, (onnx_file, ov_file) in sources.items():
        ort_now = load_backend(onnx_file, name="onnxruntime", num_threads=threads)
        ort_before = load_backend(onnx_file, name="onnxruntime", num_threads=threads, spin_after_run=True)
        rows[f"onnxruntime {precision}"] = {"now": ort_now, "before": ort_before}
        ov = load_backend(ov_file, name="openvino", num_threads=threads, hint="latency", precision="fp32")
        rows[f"openvino {precision}"] = {"now": ov, "before": ov}
    return rows


def paired_times(
    groups: dict[str, dict[str, tuple[Any, tuple]]], warmup: int, runs: int, rounds: int
) -> dict[str, list[float]]:
    """Per-call times (ms) of every loop. Within a group (one runtime) the loops take turns call by call, so the
    model-only call and the Detector call run moments apart and are preceded by the same runtime's work; groups run
    one after the other, `rounds` times over. A shared machine's slow spells (seconds) then hit both sides of a
    ratio, and no runtime's call follows another runtime's (whose idle pool would change what it costs)."""
    for group in groups.values():
        for fn, args in group.values():
            for _ in range(warmup):
                fn(*args)
    times: dict[str, list[float]] = {name: [] for group in groups.values() for name in group}
    per_round = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    for n in per_round:
        for group in groups.values():
            for fn, args in group.values():  # one warm call after the switch from the previous runtime
                fn(*args)
            for _ in range(n):
                for name, (fn, args) in group.items():
                    start = time.perf_counter()
                    fn(*args)
                    times[name].append((time.perf_counter() - start) * 1e3)
    return times


QUANT_CALIB = 32


def quantize_here(model: torch.nn.Module, imgsz: int, work: Path) -> tuple[str, str, str]:
    """--quantize: (Q/DQ ONNX for ONNX Runtime, INT8 IR for OpenVINO, how they were made) from quant.ptq with the
    settings `rtmdet-edge quantize --data synthetic:64 --calib-size 32` uses for each recipe."""
    from quant import QuantSettings, load_calibration, ptq

    calib = load_calibration("synthetic:64", None, QUANT_CALIB, imgsz)
    ort_q = ptq(model, calib, recipe="onnxruntime", out_dir=work / "q_ort", imgsz=imgsz, check_kernels=False)
    ov_q = ptq(model, calib, recipe="nncf", settings=QuantSettings(preset="performance"), out_dir=work / "q_nncf",
               imgsz=imgsz, check_kernels=False)  # fmt: skip
    note = (f"made by --quantize: quant.ptq on this model with {QUANT_CALIB} synthetic calibration images, the "
            "onnxruntime recipe (its defaults: per-channel minmax, U8S8, slow INT8 convs float) for ONNX Runtime and "
            "the nncf recipe with the performance preset for OpenVINO")  # fmt: skip
    return str(ort_q.qdq_onnx), str(ov_q.openvino_xml), note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rtmdet-tiny", help="preset (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=640, help="input size (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=30,
                        help="timed runs per loop, split over the rounds (default: %(default)s)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6,
                        help="passes over the runtimes, the runs split between them (default: %(default)s)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per loop (default: %(default)s)")
    parser.add_argument("--int8-onnx", help="a Q/DQ ONNX of the same model for the INT8 rows")
    parser.add_argument("--int8-ir", help="an OpenVINO INT8 IR (.xml, nncf recipe) for the openvino INT8 row "
                        "(default: the --int8-onnx Q/DQ ONNX)")
    parser.add_argument("--int8-note", help="how the INT8 models were made (printed under the table)")
    parser.add_argument("--quantize", action="store_true",
                        help="make the INT8 rows' models here from the benchmarked model, as `rtmdet-edge quantize` "
                        f"would: the onnxruntime recipe for ONNX Runtime, nncf --preset performance for OpenVINO "
                        f"({QUANT_CALIB} synthetic calibration images); instead of --int8-onnx / --int8-ir")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"), help="output folder (default: %(default)s)")
    parser.add_argument("--name", default="e2e_overhead",
                        help="file stem of the results: <out>/<name>.json and .md (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quantize and (args.int8_onnx or args.int8_ir):
        parser.error("--quantize makes the INT8 models: leave out --int8-onnx / --int8-ir")
    torch.set_num_threads(args.threads)
    model, weights = load_benchmark_model(args.model)
    image, image_source = load_image()
    with tempfile.TemporaryDirectory(prefix="e2e_overhead_") as tmp:
        from targets.openvino import convert_to_openvino

        if args.quantize:
            args.int8_onnx, args.int8_ir, args.int8_note = quantize_here(model, args.imgsz, Path(tmp))
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", args.imgsz)
        xml_path = convert_to_openvino(onnx_path, Path(tmp) / "model.xml")
        rows = backends(onnx_path, xml_path, args.int8_onnx, args.threads, args.int8_ir)
        batch = normalize_numpy(preprocess([image], args.imgsz)[0])
        groups: dict[str, dict[str, tuple[Any, tuple]]] = {}  # row -> its loops, measured call by call in turn
        for row, variants in rows.items():
            # each setting with its own model-only call: the "before" ORT session's pool spins after every run and
            # would slow whichever call came next
            for variant, backend in variants.items():
                det = Detector(backend, imgsz=args.imgsz, postprocess="deploy")
                if variant == "before":
                    det.post_threads = None  # decode/NMS on torch's own thread count, as before
                groups[f"{row} {variant}"] = {f"{row} | model {variant}": (backend, (batch,)),
                                              f"{row} | e2e {variant}": (det, (image,))}  # fmt: skip
        # pre-processing alone, and post-processing alone on each row's own outputs of this image: an INT8 model's
        # outputs put other (prior, class) pairs above the threshold than its FP32 model's
        metas = preprocess([image], args.imgsz)[1]
        alone: dict[str, tuple[Any, tuple]] = {
            "pre alone": (lambda: normalize_numpy(preprocess([image], args.imgsz)[0]), ())
        }
        pairs_above: dict[str, list[int]] = {}
        for row, variants in rows.items():
            det = Detector(variants["now"], imgsz=args.imgsz, postprocess="deploy")
            outs = group_outputs(variants["now"](batch))
            alone[f"post alone {row}"] = (det.postprocess_raw, (outs, metas))
            bound = math.log(det.post_cfg.score_thr / (1 - det.post_cfg.score_thr))
            pairs_above[row] = [int((c[0] > bound).sum()) for c in outs["cls_scores"]]
        groups["alone"] = alone
        times = paired_times(groups, args.warmup, args.runs, args.rounds)
    calls = [name for g in groups.values() for name in g]
    med = {name: statistics.median(times[name]) for name in calls}
    results = []
    for row in rows:
        model_ms = med[f"{row} | model now"]
        entry = {"row": row, "model_ms": model_ms, "model_before_ms": med[f"{row} | model before"],
                 "post_alone_ms": med[f"post alone {row}"], "pairs_above_threshold": pairs_above[row]}  # fmt: skip
        for variant in ("now", "before"):
            entry[f"e2e_{variant}_ms"] = med[f"{row} | e2e {variant}"]
            entry[f"overhead_{variant}"] = statistics.median(
                e / m - 1.0 for e, m in zip(times[f"{row} | e2e {variant}"], times[f"{row} | model {variant}"])
            )
        entry["within_budget"] = entry["overhead_now"] <= BUDGET
        results.append(entry)
        print(f"{row}: model {model_ms:.1f} ms, e2e {entry['e2e_now_ms']:.1f} ms (+{100 * entry['overhead_now']:.1f}%), "
              f"before {entry['e2e_before_ms']:.1f} ms (+{100 * entry['overhead_before']:.1f}%)")
    load = list(os.getloadavg())
    report = {
        "what": "Detector end to end vs the model call alone, same backend, call-by-call alternation (median ms)",
        "model": args.model,
        "weights": weights,
        "image": image_source,
        "imgsz": args.imgsz,
        "threads": args.threads,
        "runs": args.runs,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "omp_wait_policy": OMP_WAIT_POLICY,
        "budget": BUDGET,
        "cpu": cpu_name(),
        "load_average_at_end": load,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "times_ms": {name: [round(t, 3) for t in times[name]] for name in calls},
        "results": results,
        "pre_alone_ms": med["pre alone"],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    argv = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/e2e_overhead.py" + (" " + " ".join(argv) if argv else "")
    lines = [
        f"{args.model} at {args.imgsz}, {args.threads} threads, deploy post-processing, image {image_source}; "
        f"{args.runs} runs per loop after {args.warmup} warm-up runs; each runtime's loops take turns call by call (model, "
        f"e2e; the before-setting with its own model calls), the runtimes one after the other, {args.rounds} times over; latency: median, overhead: median "
        "of e2e / model over adjacent calls. CPU: "
        f"{cpu_name()}, load average {load[0]:.1f} at the end{load_note(load[0], args.threads)}. Budget: end to end <= model + {100 * BUDGET:.0f}%.",
        "",
        "| runtime | model only (ms) | Detector end to end (ms) | overhead | decode + NMS alone (ms) | pairs above "
        "0.3 | before the fix: end to end (ms) | overhead |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for e in results:
        lines.append(
            f"| {e['row']} | {e['model_ms']:.1f} | {e['e2e_now_ms']:.1f} | {100 * e['overhead_now']:+.1f}% "
            f"| {e['post_alone_ms']:.2f} | {' / '.join(str(n) for n in e['pairs_above_threshold'])} "
            f"| {e['e2e_before_ms']:.1f} | {100 * e['overhead_before']:+.1f}% |"
        )
    lines += ["", f"Alone, in the same passes: pre-processing (letterbox + normalise) {report['pre_alone_ms']:.2f} ms; "
              "decode + NMS on each row's own outputs of the image (column 5), whose (prior, class) pairs above the "
              "deploy threshold per level (strides 8 / 16 / 32) are in column 6."]
    if args.int8_onnx:
        ov_int8 = f"the OpenVINO INT8 IR `{Path(args.int8_ir).name}`" if args.int8_ir else "the same Q/DQ ONNX"
        lines += ["", f"INT8 rows: ONNX Runtime runs the Q/DQ ONNX `{Path(args.int8_onnx).name}`, OpenVINO {ov_int8} "
                  f"({args.int8_note or 'given by --int8-onnx / --int8-ir'})."]
    else:
        lines += ["", "INT8 rows: not measured in this run (pass --int8-onnx with a Q/DQ ONNX from `rtmdet-edge quantize`)."]
    lines += ["", f"Produced by `{command}`."]
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
