"""The quantization summary: one JSON for tools, one Markdown for people, written next to the artefacts."""

from __future__ import annotations

import json
from pathlib import Path


def write_summary(summary: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "summary.json", out_dir / "summary.md"
    json_path.write_text(json.dumps(summary, indent=1, default=str))
    md_path.write_text(to_markdown(summary))
    return json_path, md_path


def to_markdown(s: dict) -> str:
    lines = [f"# INT8 {s['method'].upper()}: {s['model']} with the {s['recipe']} recipe", ""]
    lines += [f"- weights: {s.get('weights', '-')}", f"- input size: {s['imgsz']}", f"- time: {s['seconds']:.1f} s"]
    lines += [f"- calibration: {s['calibration']['count']} images from {s['calibration']['description']}"]
    lines += [f"- settings: {json.dumps(s['settings'])}", ""]
    if s.get("qat"):  # QAT: the quantizers above were initialised on the calibration images, then fine-tuned
        q = s["qat"]
        after = q.get("resumed_after_epoch")
        resumed = f", resumed after epoch {after}" if after is not None else ""
        lines += ["## Fine-tuning (QAT)", "", f"- {q['tool']}: {q['epochs']} epochs, lr {q['lr']}, batch {q['batch']}"
                  f"{resumed}; checkpoint `{q['checkpoint']}`"]  # fmt: skip
        lines += [f"- epoch {h['epoch']}: loss {h.get('loss', float('nan')):.4f}" for h in q["history"]] + [""]
    lines += ["## Artefacts", ""] + [f"- {k}: `{v}`" for k, v in s["artefacts"].items() if v] + [""]
    lines += ["## What was quantized (graph)", ""]
    g = s["graph"]
    lines += [f"- quantized nodes by op: {json.dumps(g['quantized_by_op'])}"]
    lines += [
        f"- weight quantizers: {g['weight_quantizers']} ({g['weight_per_channel']} per-channel), dtypes {json.dumps(g['weight_dtypes'])}"
    ]
    lines += [f"- activation quantizers: {g['activation_quantizers']}, dtypes {json.dumps(g['activation_dtypes'])}"]
    lines += [f"- quantizers with a non-zero zero point: {g['nonzero_zero_points']}"]
    if g["float_weighted_nodes"]:
        lines += ["- weighted nodes left float:"] + [f"  - `{k}`: {v}" for k, v in g["float_weighted_nodes"].items()]
    else:
        lines += ["- weighted nodes left float: none"]
    lines += [f"- recipe notes: {'; '.join(s['notes'])}", "", "## What runs as INT8 kernels (runtime)", ""]
    lines += [
        "| runtime | model | INT8 convs | float convs | why float | other float layers |",
        "|---|---|---:|---:|---|---|",
    ]
    for k in s["kernels"]:
        lines.append(
            f"| {k['runtime']} | {k['model']} | {k['int8_convs']} | {k['float_convs']} | {k['why_float'] or '-'} | "
            f"{', '.join(f'{t} x{c}' for t, c in k['other_float_layers'].items()) or '-'} |"
        )
    if s.get("cpu"):
        c = s["cpu"]
        lines += ["", f"This CPU: {c['cpu']} (flags: {', '.join(c['flags']) or 'unknown'}): {c['note']}."]
    lines += ["", "## Parity with FP32 (real images, deploy post-processing)", ""]
    lines += [
        "| runtime | images | min SQNR (dB) | detections fp32 / int8 / matched | agreement |",
        "|---|---:|---:|---|---:|",
    ]
    for p in s["parity"]:
        lines.append(
            f"| {p['runtime']} | {p['images']} | {p['min_sqnr_db']} | {p['detections_fp32']} / {p['detections_int8']} / "
            f"{p['detections_matched']} | {p['detection_agreement']:.3f} |"
        )
    if s.get("tensorrt_rule_violations") is not None:
        v = s["tensorrt_rule_violations"]
        lines += [
            "",
            f"TensorRT explicit-quantization rules: {'obeyed' if not v else f'{len(v)} violations, e.g. ' + v[0]}",
        ]
    return "\n".join(lines) + "\n"
