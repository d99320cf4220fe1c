"""Benchmark report files: report.json (everything), report.md (tables) and PNG plots. Measuring is elsewhere.

The report is a plain dict: {"meta": {...how it was measured...}, "rows": [one dict per target x precision]}.
A row that could not run has available=False and a one-line `reason`; every other field of it is None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rtmdet_edge.io import atomic_write_text, atomic_write_with

ROW_FIELDS = (
    "target",
    "precision",
    "available",
    "reason",
    "effective_precision",  # what the runtime reports it really computes in (e.g. OpenVINO's inference precision)
    "model_file",
    "model_size_mb",
    "mAP",  # COCO box AP@[.5:.95] in percent (RTMDet-R: DOTA area mAP over IoU .5:.95, rotated IoU)
    "mAP50",  # RTMDet-R: DOTA area AP50
    "mAP50_07",  # RTMDet-R only: DOTA VOC07 11-point mAP50 (the paper's DOTA number)
    "segm_mAP",  # RTMDet-Ins only: COCO mask AP@[.5:.95] in percent
    "segm_mAP50",
    "mAP_delta",  # mAP - PyTorch FP32 mAP, percentage points
    "mAP50_delta",  # RTMDet-R
    "segm_mAP_delta",  # RTMDet-Ins
    "mAP_int8_drop",  # int8 rows: fp32 row of the same target - this row, points (positive: INT8 lost accuracy)
    "mAP50_int8_drop",  # RTMDet-R
    "segm_mAP_int8_drop",  # RTMDet-Ins
    "parity",  # targets.parity.compare against PyTorch FP32: raw max abs (boxes / stride), detections matched
    "latency_model",  # LatencyResult dict, batch 1, backend call only
    "latency_e2e",  # LatencyResult dict, batch 1, letterbox + normalise + backend + decode/NMS
    "pre_ms",
    "post_ms",
    "fps",  # end-to-end images per second at batch 1
    "pre_post_over_model",  # (pre_ms + post_ms) / model-only median
    "e2e_over_model",  # end-to-end median / model-only median - 1
    "throughput",  # {"batch": B, "images_per_s": ..., "latency": LatencyResult dict} or None
    "memory",  # {"peak_rss_mb": ..., "model_rss_mb": ..., "method": ...}
    "notes",
)


def empty_row(target: str, precision: str, reason: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(target=target, precision=precision, available=reason is None, reason=reason, notes=[])
    return row


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _get(row: dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _fmt_parity(parity: dict[str, Any] | None) -> str:
    if not parity:
        return "-"
    raw = parity.get("raw_max_abs_norm")
    raw_text = "-" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else f"{raw:.1e}"
    text = f"{raw_text} / {100 * parity.get('det_match', float('nan')):.0f}%"
    if parity.get("mask_iou") is not None:
        text += f" / {parity['mask_iou']:.3f}"
    return text + ("" if parity.get("ok", True) else " FAIL")


# Accuracy columns per model kind (report meta "kind"): (header, row field, digits).
ACCURACY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "det": (
        ("mAP (%)", "mAP"),
        ("ΔmAP vs torch fp32 (points)", "mAP_delta"),
        ("INT8 drop vs fp32 (points)", "mAP_int8_drop"),
    ),
    "ins": (
        ("box mAP (%)", "mAP"),
        ("mask mAP (%)", "segm_mAP"),
        ("mask mAP50 (%)", "segm_mAP50"),
        ("Δ mask mAP vs torch fp32 (points)", "segm_mAP_delta"),
        ("INT8 drop vs fp32: box / mask mAP (points)", "mAP_int8_drop/segm_mAP_int8_drop"),
    ),
    "rot": (
        ("DOTA mAP .5:.95 (%)", "mAP"),
        ("DOTA mAP50 (%)", "mAP50"),
        ("DOTA mAP50 VOC07 (%)", "mAP50_07"),
        ("Δ mAP50 vs torch fp32 (points)", "mAP50_delta"),
        ("INT8 drop vs fp32: mAP / mAP50 (points)", "mAP_int8_drop/mAP50_int8_drop"),
    ),
}
PARITY_HEADER = {
    "det": "parity: raw max abs / dets matched",
    "ins": "parity: raw max abs / dets matched / mean mask IoU",
    "rot": "parity: raw max abs / rotated dets matched",
}


def _accuracy_cells(r: dict[str, Any], kind: str) -> list[str]:
    return [" / ".join(_fmt(r.get(f), 2) for f in fields.split("/")) for _, fields in ACCURACY_COLUMNS[kind]]


def markdown_table(rows: Sequence[dict[str, Any]], kind: str = "det") -> str:
    """The main table (available rows), then the unavailable ones with their reasons. kind: "det", "ins" or "rot"
    (the accuracy columns: COCO box mAP, box and mask mAP, DOTA mAP)."""
    ok = [r for r in rows if r["available"]]
    accuracy = ACCURACY_COLUMNS[kind]
    lines = [
        "| target | precision | " + " | ".join(h for h, _ in accuracy) + f" | {PARITY_HEADER[kind]} | model median / p90 (ms) "
        "| end-to-end median / p90 (ms) | pre + post (ms) | (pre + post) / model | FPS (e2e) | batch throughput (img/s) | model size (MB) "
        "| peak RSS / model (MB) |",
        "|---|---|" + "---:|" * len(accuracy) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        thr = r.get("throughput") or {}
        precision = r["precision"]
        if r.get("effective_precision"):
            precision += f" (hint {r['effective_precision']})"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["target"],
                    precision,
                    *_accuracy_cells(r, kind),
                    _fmt_parity(r["parity"]),
                    f"{_fmt(_get(r, 'latency_model', 'median_ms'))} / {_fmt(_get(r, 'latency_model', 'p90_ms'))}",
                    f"{_fmt(_get(r, 'latency_e2e', 'median_ms'))} / {_fmt(_get(r, 'latency_e2e', 'p90_ms'))}",
                    f"{_fmt(r['pre_ms'], 2)} + {_fmt(r['post_ms'], 2)}",
                    "-" if r.get("pre_post_over_model") is None else f"{100 * r['pre_post_over_model']:.1f}%",
                    _fmt(r["fps"]),
                    f"{_fmt(thr.get('images_per_s'))} (b{thr['batch']})" if thr else "-",
                    _fmt(r["model_size_mb"], 2),
                    f"{_fmt(_get(r, 'memory', 'peak_rss_mb'), 0)} / {_fmt(_get(r, 'memory', 'model_rss_mb'), 0)}",
                ]
            )
            + " |"
        )
    skipped = [r for r in rows if not r["available"]]
    if skipped:
        lines += ["", "Not measured here:", ""]
        lines += [f"- {r['target']} {r['precision']}: {r['reason']}" for r in skipped]
    return "\n".join(lines)


def meta_lines(meta: dict[str, Any]) -> list[str]:
    keys = [
        ("command", "command"),
        ("model", "model"),
        ("accuracy", "metric"),
        ("weights", "weights"),
        ("data", "data"),
        ("images evaluated", "num_images"),
        ("input size", "imgsz"),
        ("threads", "threads"),
        ("OpenMP wait policy", "omp_wait_policy"),
        ("warm-up runs", "warmup"),
        ("timed runs", "runs"),
        ("post-processing for mAP", "postprocess_eval"),
        ("post-processing for end-to-end latency", "postprocess_latency"),
        ("peak memory", "memory_method"),
        ("CPU", "cpu"),
        ("load average (1, 5, 15 min) at the end", "load_average_at_end"),
        ("versions", "versions"),
        ("date", "time"),
    ]
    out = []
    for label, key in keys:
        if meta.get(key) is not None:
            value = meta[key]
            if key == "command":
                value = f"`{value}`"
            elif isinstance(value, list):
                value = ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            out.append(f"- {label}: {value}")
    return out


def _kind(report: dict[str, Any]) -> str:
    return report.get("meta", {}).get("kind") or "det"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    title = f"# Benchmark: {report['meta'].get('model', '')}"
    text = "\n".join([title, "", *meta_lines(report["meta"]), "", markdown_table(report["rows"], _kind(report)), ""])
    atomic_write_text(path, text)


def write_plots(rows: Sequence[dict[str, Any]], out_dir: Path, title: str = "", kind: str = "det") -> list[Path]:
    """latency_vs_map.png (model-only median latency vs mAP) and latency_bars.png (model-only and end-to-end)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["available"] and r.get("latency_model")]
    labels = [f"{r['target']}\n{r['precision']}" for r in ok]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in ok:
        x, y = r["latency_model"]["median_ms"], r["mAP"] if r["mAP"] is not None else float("nan")
        ax.scatter([x], [y], s=40)
        ax.annotate(f"{r['target']} {r['precision']}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    maps = [r["mAP"] for r in ok if r["mAP"] is not None]
    ax.set_ylim(0, max([1.0] + [1.15 * m for m in maps]))  # mAP is never negative; near-zero random-weight runs too
    ax.set_xlabel("model-only latency, median (ms, batch 1)")
    ax.set_ylabel("DOTA mAP .5:.95 (%)" if kind == "rot" else "box mAP@[.5:.95] (%)")
    ax.set_title(f"Latency vs mAP {title}".strip())
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "latency_vs_map.png")
    atomic_write_with(paths[-1], lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(ok) + 2), 4.4))
    xs = list(range(len(ok)))
    width = 0.38
    model_ms = [r["latency_model"]["median_ms"] for r in ok]
    model_err = [r["latency_model"]["p90_ms"] - r["latency_model"]["median_ms"] for r in ok]
    e2e_ms = [_get(r, "latency_e2e", "median_ms") or 0.0 for r in ok]
    e2e_err = [(_get(r, "latency_e2e", "p90_ms") or 0.0) - e for r, e in zip(ok, e2e_ms)]
    ax.bar([x - width / 2 for x in xs], model_ms, width, yerr=[[0] * len(ok), model_err], label="model only", capsize=3)
    ax.bar([x + width / 2 for x in xs], e2e_ms, width, yerr=[[0] * len(ok), e2e_err], label="end to end", capsize=3)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("latency (ms): bar median, whisker p90")
    ax.set_title(f"Latency per target {title}".strip())
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "latency_bars.png")
    atomic_write_with(paths[-1], lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return paths


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    atomic_write_text(json_path, json.dumps(report, indent=1, default=str))
    md_path = out_dir / "report.md"
    write_markdown(report, md_path)
    plots = write_plots(report["rows"], out_dir, title=str(report["meta"].get("model", "")), kind=_kind(report))
    return {"json": json_path, "md": md_path, "latency_vs_map": plots[0], "latency_bars": plots[1]}
