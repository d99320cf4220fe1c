"""INT8 vs float latency, model only, one process, interleaved: OpenVINO (f32, bf16, NNCF INT8) and ONNX Runtime
(FP32; INT8 U8S8 from the onnxruntime recipe, which keeps float the convs ONNX Runtime runs slower in INT8, and the same
with every conv INT8), plus how many convolutions each runtime really ran as INT8 kernels and, conv by conv, the
profiler's evidence for the convs kept float.

    PYTHONPATH=. python benchmarks/int8_speed.py --imgsz 640 --threads 2        # -> benchmarks/results/int8_speed.{json,md}
    python benchmarks/update_readme.py                                          # copies the table into README.md

Every model runs through the project's own backends (targets/onnxruntime.py, targets/openvino.py) with the settings
`benchmark` uses. Each round runs every model `--runs` times back to back (after warm-up) and keeps the round's
median; the reported latency is the median over rounds, and each ratio is the median over rounds of the ratio within
the round, so a shared machine's slow spells weigh on both sides of it.
Without --weights the model is rtmdet-tiny with random weights whose BN statistics were measured on random inputs
(latency does not depend on the weights). Accuracy is measured by benchmarks/int8_accuracy.py on a trained model with
the same recipes; when its results exist, each INT8 row shows that recipe's measured mAP drop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from quant.kernels import cpu_flags  # noqa: E402
from targets.latency import cpu_name, load_note  # noqa: E402


def ort_session(path: Path, threads: int):
    """The project's ONNX Runtime backend, as `benchmark` and `Detector` run it (spinning during a run, none after)."""
    from targets import load_backend

    return load_backend(path, name="onnxruntime", num_threads=threads)


def ov_request(path: Path, threads: int, precision: str):
    """The project's OpenVINO backend: latency hint, INFERENCE_NUM_THREADS, explicit f32 or bf16 inference hint."""
    from targets import load_backend

    return load_backend(path, name="openvino", num_threads=threads, hint="latency",
                        precision="fp32" if precision == "f32" else precision)  # fmt: skip


# which benchmarks/int8_accuracy.py method each timed INT8 row is (same recipe and settings, a trained model)
ORT_ROW = "int8 (U8S8, onnxruntime recipe)"
EVERYWHERE_ROW = "int8 (U8S8, every conv INT8: --int8-everywhere)"
ACCURACY_METHOD = {
    ("onnxruntime", ORT_ROW): "onnxruntime",
    ("onnxruntime", EVERYWHERE_ROW): "ort-minmax-pc",
    ("openvino", "int8 (nncf recipe)"): "nncf",
    ("openvino", "int8 (nncf recipe, performance preset)"): "nncf-performance",
}


def accuracy_drops(path: Path) -> dict[tuple[str, str], str]:
    """(runtime, precision) -> 'drop [low, high]' from int8_accuracy.json, for the rows whose recipe it measured."""
    if not path.is_file():
        return {}
    rows = {(r["target"], r["method"]): r for r in json.loads(path.read_text())["rows"] if r.get("available")}
    out = {}
    for (runtime, precision), method in ACCURACY_METHOD.items():
        r = rows.get((runtime, method))
        if r is not None:
            out[(runtime, precision)] = f"{r['drop']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}]"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="checkpoint (default: random rtmdet-tiny)")
    p.add_argument("--model", default="rtmdet-tiny")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--with-s8s8", action="store_true", help="also time the S8S8 onnxruntime graph")
    p.add_argument(
        "--with-performance-preset",
        action="store_true",
        help="also time NNCF's performance preset (symmetric activations) on OpenVINO",
    )
    p.add_argument(
        "--work", default=None, help="folder for the quantized models; existing ones are reused (timing only)"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="int8_speed", help="file stem of the results (<out>/<name>.json and .md)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from quant import QuantSettings, load_calibration, ptq
    from quant.kernels import onnxruntime_kernels, openvino_kernels

    if args.weights:
        from rtmdet_edge.checkpoint import load_checkpoint

        model = load_checkpoint(args.weights).eval()
    else:
        from _quant_helpers import lively_model

        model = lively_model(args.model, num_classes=80, imgsz=args.imgsz)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="int8_speed_"))
    calib = load_calibration("synthetic", None, args.calib_size, args.imgsz)
    t0 = time.perf_counter()

    def quantized(name: str, recipe: str, settings: QuantSettings | None = None) -> SimpleNamespace:
        folder = work / name
        fp32, qdq = folder / "model_fp32.onnx", folder / f"model_int8_{recipe}.onnx"
        xml = folder / f"model_int8_{recipe}.xml"
        if not qdq.is_file():
            r = ptq(
                model, calib, recipe=recipe, settings=settings, out_dir=folder, imgsz=args.imgsz, check_kernels=False
            )
            fp32, qdq, xml = r.fp32_onnx, r.qdq_onnx, r.openvino_xml
        return SimpleNamespace(fp32_onnx=fp32, qdq_onnx=qdq, openvino_xml=xml)

    ort_q = quantized("ort", "onnxruntime")
    everywhere_q = quantized("ort_everywhere", "onnxruntime", QuantSettings(float_slow_convs=False))
    nncf_q = quantized("nncf", "nncf")
    models = {
        ("onnxruntime", "fp32"): ort_session(ort_q.fp32_onnx, args.threads),
        ("onnxruntime", ORT_ROW): ort_session(ort_q.qdq_onnx, args.threads),
        ("onnxruntime", EVERYWHERE_ROW): ort_session(everywhere_q.qdq_onnx, args.threads),
        ("openvino", "f32"): ov_request(nncf_q.fp32_onnx, args.threads, "f32"),
        ("openvino", "bf16"): ov_request(nncf_q.fp32_onnx, args.threads, "bf16"),
        ("openvino", "int8 (nncf recipe)"): ov_request(nncf_q.openvino_xml, args.threads, "f32"),
    }
    kernels = {
        ("onnxruntime", ORT_ROW): onnxruntime_kernels(ort_q.qdq_onnx),
        ("onnxruntime", EVERYWHERE_ROW): onnxruntime_kernels(everywhere_q.qdq_onnx),
        ("openvino", "int8 (nncf recipe)"): openvino_kernels(nncf_q.openvino_xml, args.threads),
    }
    if args.with_s8s8:
        s8 = quantized("s8", "onnxruntime", QuantSettings(activation_type="s8"))
        models[("onnxruntime", "int8 (S8S8)")] = ort_session(s8.qdq_onnx, args.threads)
        kernels[("onnxruntime", "int8 (S8S8)")] = onnxruntime_kernels(s8.qdq_onnx)
    if args.with_performance_preset:
        perf = quantized("nncf_performance", "nncf", QuantSettings(preset="performance"))
        key = ("openvino", "int8 (nncf recipe, performance preset)")
        models[key] = ov_request(perf.openvino_xml, args.threads, "f32")
        kernels[key] = openvino_kernels(perf.openvino_xml, args.threads)
    quantize_s = time.perf_counter() - t0

    x = calib.batch[:1].copy()
    for fn in models.values():
        for _ in range(args.warmup):
            fn(x)
    per_round: dict = {k: [] for k in models}
    for _ in range(args.rounds):
        for key, fn in models.items():
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - t) * 1e3)
            per_round[key].append(statistics.median(times))
    median = {k: statistics.median(v) for k, v in per_round.items()}

    def paired_ratio(key: tuple[str, str], base: tuple[str, str]) -> float:
        """Median over rounds of this round's latency / the base's latency in the same round: a shared machine's
        slow spells then weigh on both sides of a ratio, not on one row only."""
        return statistics.median(a / b for a, b in zip(per_round[key], per_round[base]))

    rows = []
    for (runtime, precision), ms in median.items():
        base = ("openvino", "f32") if runtime == "openvino" else ("onnxruntime", "fp32")
        k = kernels.get((runtime, precision))
        rows.append(
            {
                "runtime": runtime,
                "precision": precision,
                "median_ms": round(ms, 2),
                "ratio_to_float32": round(paired_ratio((runtime, precision), base), 3),
                "ratio_to_bf16": round(paired_ratio((runtime, precision), ("openvino", "bf16")), 3)
                if runtime == "openvino"
                else None,
                "int8_convs": k.int8_convs if k else None,
                "float_convs": k.float_convs if k else None,
                "round_medians_ms": [round(v, 2) for v in per_round[(runtime, precision)]],
            }
        )
    # Where the time goes on ONNX Runtime (its profiler), FP32 vs INT8, by conv kind and op type: which layers INT8
    # actually speeds up on this CPU (an AVX2 core without VNNI gains far less on 3x3 convs than an AVX512-VNNI one).
    # ...and, conv by conv, why the onnxruntime recipe keeps some float: each one's FP32 and all-INT8 kernel time.
    import onnx

    from quant.kernels import onnxruntime_times
    from quant.recipes.onnxruntime import slow_int8_convs

    profiles = {
        "fp32": onnxruntime_times(ort_q.fp32_onnx, x, args.threads, args.runs),
        "int8": onnxruntime_times(everywhere_q.qdq_onnx, x, args.threads, args.runs),
    }
    by_kind = {k: p[0] for k, p in profiles.items()}
    conv_ms = {k: p[1] for k, p in profiles.items()}
    kept_float = [
        {"conv": name, "why": why, "fp32_ms": conv_ms["fp32"].get(name), "int8_ms": conv_ms["int8"].get(name)}
        for name, why in slow_int8_convs(onnx.load(str(ort_q.fp32_onnx))).items()
    ]
    others = [n for n in conv_ms["fp32"] if n not in {k["conv"] for k in kept_float} and n in conv_ms["int8"]]
    others_ratio = statistics.median(conv_ms["int8"][n] / conv_ms["fp32"][n] for n in others) if others else None
    load = os.getloadavg()
    result = {
        "model": args.model,
        "weights": args.weights or "random (BN statistics from random inputs)",
        "imgsz": args.imgsz,
        "threads": args.threads,
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "calibration_images": args.calib_size,
        "quantize_seconds": round(quantize_s, 1),
        "load_average": [round(v, 1) for v in load],
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "rows": rows,
        "onnxruntime_ms_by_kind": by_kind,
        "onnxruntime_kept_float": kept_float,
        "onnxruntime_other_convs_median_int8_over_fp32": others_ratio,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"{args.model} at {args.imgsz}, model only, batch 1, {args.threads} threads, one process, {args.rounds} interleaved "
        f"rounds x {args.runs} runs, median of round medians; ratios: median over rounds of the ratio within the "
        "round; "
        f"load average at the end {load[0]:.1f} on "
        f"{os.cpu_count()} cores{load_note(load[0], args.threads)}. CPU: {result['cpu']} (flags: "
        f"{', '.join(result['cpu_flags']) or 'unknown'})"
        + ". INT8 convs: convolutions the runtime executed as INT8 "
        "kernels (OpenVINO runtime precision, ONNX Runtime optimized graph).",
        "",
        "| runtime | precision | median (ms) | vs float32 | vs bf16 | INT8 convs / float convs | mAP drop [95% CI] |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    drops = accuracy_drops(out / "int8_accuracy.json")
    for r in rows:
        conv = f"{r['int8_convs']} / {r['float_convs']}" if r["int8_convs"] is not None else "-"
        bf = f"{r['ratio_to_bf16']:.2f}x" if r["ratio_to_bf16"] is not None else "-"
        lines.append(
            f"| {r['runtime']} | {r['precision']} | {r['median_ms']:.1f} | {r['ratio_to_float32']:.2f}x | {bf} "
            f"| {conv} | {drops.get((r['runtime'], r['precision']), '-')} |"
        )
    lines += [
        "",
        "mAP drop: the same recipe on a trained model (the dw5 study model at its own input size, "
        "benchmarks/int8_accuracy.py, the INT8 accuracy table); '-': not an INT8 row or not measured.",
        "",
        f"Where the time goes on ONNX Runtime (its profiler, ms per run, {args.runs} runs; CPU flags: "
        f"{', '.join(result['cpu_flags']) or 'unknown'}): convolutions by kind, other ops by type.",
        "",
        "| kernel | FP32 (ms) | INT8 U8S8, every conv (ms) | INT8 / FP32 |",
        "|---|---:|---:|---:|",
    ]
    for kind in sorted({*by_kind["fp32"], *by_kind["int8"]}, key=lambda k: -max(by_kind["fp32"].get(k, 0), by_kind["int8"].get(k, 0))):
        f, q = by_kind["fp32"].get(kind), by_kind["int8"].get(kind)
        if max(f or 0, q or 0) < 0.5:
            continue
        ratio = f"{q / f:.2f}x" if f and q else "-"
        lines.append(f"| {kind} | {f or 0:.1f} | {q or 0:.1f} | {ratio} |")
    lines += [
        "",
        "Convs the onnxruntime recipe keeps float (`quant/recipes/onnxruntime.py`, `slow_int8_convs`; "
        "`--int8-everywhere` quantizes them too): each one's kernel time in the FP32 model and in the every-conv INT8 "
        "model (same profiler runs)"
        + (f"; the median INT8 / FP32 of all other convs is {others_ratio:.2f}x." if others_ratio else "."),
        "",
        "| conv | why | FP32 (ms) | INT8 (ms) | INT8 / FP32 |",
        "|---|---|---:|---:|---:|",
    ]
    for k in kept_float:
        f, q = k["fp32_ms"], k["int8_ms"]
        ratio = f"{q / f:.2f}x" if f and q else "-"
        short = k["conv"].removeprefix("/model/").removesuffix("/Conv")
        lines.append(f"| {short} | {k['why'].split(':')[0]} | {f or 0:.2f} | {q or 0:.2f} | {ratio} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
