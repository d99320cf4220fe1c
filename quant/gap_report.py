"""The gap study's report: report.json, report.md (gap table + evidence tables) and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "-"
    return f"{value:.{digits}f}"


def gap_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per family x method x target: mAP FP32 -> INT8, drop [95% interval], latency, speed-up, size."""
    lines = [
        "| family | method | target | FP32 mAP | INT8 mAP | drop [95% CI] | FP32 ms | INT8 ms | speed-up | MB FP32 / INT8 |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["method"] == "fp32":
            continue
        if not r.get("available", True):
            lines.append(f"| {r['family']} | {r['method']} | {r['target']} | | | not run: {r.get('reason', '')} | | | | |")
            continue
        drop = "-" if r.get("drop") is None else f"{r['drop']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}]"
        lines.append(
            f"| {r['family']} | {r['method']} | {r['target']} | {_f(r.get('fp32_mAP'))} | {_f(r.get('mAP'))} | {drop} | "
            f"{_f(r.get('fp32_latency_ms'), 2)} | {_f(r.get('latency_ms'), 2)} | {_f(r.get('speedup'), 2)}x | "
            f"{_f(r.get('fp32_size_mb'), 2)} / {_f(r.get('size_mb'), 2)} |"
        )
    return "\n".join(lines)


def evidence_tables(evidence: dict[str, dict[str, Any]], top: int = 10) -> str:
    out = []
    for family, ev in evidence.items():
        if not ev:
            continue
        out += [f"#### {family}", "", f"Ten most sensitive layers (output SQNR with only that layer in INT8; lower is worse):", ""]
        out += ["| layer | block | SQNR per-tensor weights (dB) | SQNR per-channel weights (dB) |", "|---|---|---:|---:|"]
        per_channel = {s["layer"]: s["sqnr_db"] for s in ev["sensitivity_per_channel"]}
        for s in ev["sensitivity_per_tensor"][:top]:
            out.append(f"| `{s['layer']}` | {s['block']} | {_f(s['sqnr_db'])} | {_f(per_channel.get(s['layer']))} |")
        out += ["", "Per block type (median over its layers; worst in brackets):", ""]
        by = ev["by_block"]
        out += [
            "| block | layers | channel range max/median | kurtosis | weight SQNR per-tensor / per-channel (dB) | "
            "activation max / p99.99 | layer SQNR per-tensor / per-channel (dB) |",
            "|---|---:|---:|---:|---|---:|---|",
        ]
        for block in sorted(by["channel_range_ratio"]):
            def cell(key: str, d: int = 1) -> str:
                v = by[key].get(block)
                return "-" if v is None else f"{_f(v['median'], d)} ({_f(v['worst'], d)})"

            out.append(
                f"| {block} | {by['channel_range_ratio'][block]['layers']} | {cell('channel_range_ratio')} | "
                f"{cell('kurtosis')} | {cell('weight_sqnr_per_tensor_db')} / {cell('weight_sqnr_per_channel_db')} | "
                f"{cell('activation_max_over_p9999', 2)} | {cell('sensitivity_per_tensor_db')} / "
                f"{cell('sensitivity_per_channel_db')} |"
            )
        out.append("")
    return "\n".join(out)


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["method"] != "fp32" and r.get("available", True) and r.get("drop") is not None]
    paths: list[Path] = []
    targets = sorted({r["target"] for r in rows})
    if rows:
        families = list(dict.fromkeys(r["family"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        fig, axes = plt.subplots(1, len(targets), figsize=(max(7, 0.9 * len(methods) * len(families)), 4.2), squeeze=False)
        width = 0.8 / max(len(families), 1)
        for ax, target in zip(axes[0], targets):
            for i, fam in enumerate(families):
                sel = {r["method"]: r for r in rows if r["target"] == target and r["family"] == fam}
                xs = [j + (i - (len(families) - 1) / 2) * width for j, m in enumerate(methods) if m in sel]
                ys = [sel[m]["drop"] for m in methods if m in sel]
                lo = [sel[m]["drop"] - sel[m]["drop_low"] for m in methods if m in sel]
                hi = [sel[m]["drop_high"] - sel[m]["drop"] for m in methods if m in sel]
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=fam)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel("mAP drop, FP32 - INT8 (points); whiskers: 95% CI")
            ax.set_title(target)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "gap_drop.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.2), squeeze=False)
        for ax, target in zip(axes[0], targets):
            for fam in families:
                sel = [r for r in rows if r["target"] == target and r["family"] == fam]
                if not sel:
                    continue
                sc = ax.scatter([r["latency_ms"] for r in sel], [r["mAP"] for r in sel], label=f"{fam} INT8")
                ax.scatter([sel[0]["fp32_latency_ms"]], [sel[0]["fp32_mAP"]], marker="*", s=140,
                           color=sc.get_facecolor()[0], label=f"{fam} FP32")  # fmt: skip
            ax.set_xlabel("model-only latency, median (ms)")
            ax.set_ylabel("mAP@[.5:.95]")
            ax.set_title(f"latency vs mAP, {target}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "gap_latency_vs_map.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    evidence = {k: v for k, v in report.get("evidence", {}).items() if v}
    if evidence:
        fig, axes = plt.subplots(len(evidence), 1, figsize=(11, 3.2 * len(evidence)), squeeze=False)
        for ax, (family, ev) in zip(axes[:, 0], evidence.items()):
            order = [w["layer"] for w in ev["weights"]]
            pt = {s["layer"]: s["sqnr_db"] for s in ev["sensitivity_per_tensor"]}
            pc = {s["layer"]: s["sqnr_db"] for s in ev["sensitivity_per_channel"]}
            blocks = {w["layer"]: w["block"] for w in ev["weights"]}
            kinds = sorted(set(blocks.values()))
            cmap = plt.get_cmap("tab20")
            colors = [cmap(kinds.index(blocks[n]) % 20) for n in order]
            xs = np.arange(len(order))
            ax.bar(xs, [pt.get(n, np.nan) for n in order], color=colors, width=0.9)
            ax.plot(xs, [pc.get(n, np.nan) for n in order], "k.", ms=4, label="per-channel weights")
            for k in kinds:
                ax.bar([0], [0], color=cmap(kinds.index(k) % 20), label=k)
            ax.set_ylabel("output SQNR (dB)")
            ax.set_title(f"{family}: one layer at a time in INT8 (bars: per-tensor weights), layers in forward order")
            ax.legend(fontsize=6, ncol=4)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        paths.append(out / "evidence_sensitivity.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(8, 4.2))
        for family, ev in evidence.items():
            ratios = [w["channel_range_ratio"] for w in ev["weights"]]
            ax.plot(sorted(ratios, reverse=True), label=family)
        ax.set_yscale("log")
        ax.set_xlabel("layers, sorted")
        ax.set_ylabel("per-channel weight range, max / median")
        ax.set_title("Spread of per-output-channel weight ranges (fused models)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "evidence_weight_ranges.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def _significant(r: dict[str, Any]) -> str:
    """How the 95% interval of a drop reads: a real loss, a real gain, or not told apart from noise."""
    if r.get("drop_low") is None:
        return "no interval"
    if r["drop_low"] > 0:
        return "a real loss"
    if r["drop_high"] < 0:
        return "a real gain"
    return "within noise"


def findings(report: dict[str, Any]) -> list[str]:
    """What this run shows, one sentence per observation, computed from the rows and the evidence (never typed)."""
    rows = [r for r in report["rows"] if r["method"] != "fp32" and r.get("available", True) and r.get("drop") is not None]
    out: list[str] = []
    families = list(dict.fromkeys(r["family"] for r in rows))
    for fam in families:
        mine = [r for r in rows if r["family"] == fam]
        fp32 = mine[0].get("fp32_mAP")
        best, worst = min(mine, key=lambda r: r["drop"]), max(mine, key=lambda r: r["drop"])
        out.append(
            f"**{fam}** (FP32 mAP {_f(fp32)}): INT8 drops range from {best['drop']:.2f} ({best['method']} on "
            f"{best['target']}, {_significant(best)}) to {worst['drop']:.2f} ({worst['method']} on {worst['target']}, "
            f"[{worst['drop_low']:.2f}, {worst['drop_high']:.2f}], {_significant(worst)})."
        )
        ort = [r for r in mine if r.get("recipe") == "onnxruntime"]
        pc = [r["drop"] for r in ort if r.get("granularity") == "per-channel"]
        pt = [r["drop"] for r in ort if r.get("granularity") == "per-tensor"]
        if pc and pt:
            out.append(
                f"Per-channel weights: mean drop {np.mean(pc):.2f} against {np.mean(pt):.2f} with per-tensor weights "
                f"over the ONNX Runtime calibrators and targets ({np.mean(pt) - np.mean(pc):+.2f} points for "
                "per-channel)."
            )
        by_cal: dict[str, list[float]] = {}
        for r in ort:
            if r.get("granularity") == "per-channel":
                by_cal.setdefault(r.get("calibrator", "?"), []).append(r["drop"])
        if len(by_cal) > 1:
            ranked = sorted(by_cal.items(), key=lambda kv: np.mean(kv[1]))
            out.append(
                "Calibrators (per-channel, mean drop over targets): "
                + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in ranked) + "."
            )
        qat = [r for r in mine if r["method"] == "qat"]
        if qat:
            out.append(
                "QAT: " + ", ".join(f"{r['target']} {r['drop']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}]"
                                    for r in qat) + "."
            )  # fmt: skip
        ev = report.get("evidence", {}).get(fam) or {}
        sens = sorted(ev.get("sensitivity_per_tensor", []), key=lambda s: s["sqnr_db"])[:10]
        if sens:
            kinds: dict[str, int] = {}
            for s in sens:
                kinds[s["block"]] = kinds.get(s["block"], 0) + 1
            top = sorted(kinds.items(), key=lambda kv: -kv[1])
            out.append(
                f"Most sensitive layers (one at a time, per-tensor weights): {sens[0]['layer']} ({sens[0]['block']}, "
                f"{sens[0]['sqnr_db']:.1f} dB); the ten worst are " + ", ".join(f"{n} x {k}" for k, n in top) + "."
            )
        clip = ev.get("clipping")
        if clip:
            out.append(
                f"FP32 with every conv input clamped to its range on the {clip['calib_images']} calibration images "
                f"(no rounding): mAP {clip['mAP']:.2f}, drop {clip['drop']:.2f} [{clip['drop_low']:.2f}, "
                f"{clip['drop_high']:.2f}] ({_significant(clip)}): the share of INT8's change that range clipping "
                "alone explains."
            )
        ratio = (ev.get("by_block") or {}).get("channel_range_ratio") or {}
        if ratio:
            k, v = max(ratio.items(), key=lambda kv: kv[1]["worst"])
            out.append(
                f"Widest spread of per-output-channel weight ranges: {k} (max/median up to {v['worst']:.1f}, "
                f"median {v['median']:.1f} over {v['layers']} layers), what per-tensor weight scales cannot absorb."
            )
    if len(families) > 1:
        best_pc = {}
        for fam in families:
            cands = [r for r in rows if r["family"] == fam and r.get("granularity") == "per-channel" and r["method"] != "qat"]
            if cands:
                best_pc[fam] = min(cands, key=lambda r: r["drop"])
        if best_pc:
            out.append(
                "Across families, the best per-channel PTQ drop: "
                + "; ".join(f"{fam} {r['drop']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}] ({r['method']}, "
                            f"{r['target']})" for fam, r in best_pc.items())
                + ". Where these intervals overlap, this run cannot tell the families apart."
            )  # fmt: skip
    return out


def write_gap_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    from rtmdet_edge.io import atomic_write_text, finite_or_none

    plots = write_plots(report, out)
    s = report["settings"]
    md = [
        "# INT8 gap study",
        "",
        f"Data `{s['data']}` (val split scored, train split calibrates {s['calib_size']} images), input {s['imgsz']}, "
        f"{s['threads']} threads, {s['bootstrap']} paired bootstrap draws over images; CPU {report['meta']['cpu']}; "
        f"onnxruntime {report['meta']['onnxruntime']}, openvino {report['meta']['openvino']}; "
        f"{report['seconds'] / 60:.1f} min.",
        "",
        gap_table(report["rows"]),
        "",
        "## What this run shows",
        "",
        *(f"- {line}" for line in findings(report)),
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
        "",
        "## Evidence per family",
        "",
        evidence_tables(report.get("evidence", {})),
    ]
    paths = {"json": out / "report.json", "md": out / "report.md"}
    atomic_write_text(paths["json"], json.dumps(finite_or_none(report), indent=2, default=str))
    atomic_write_text(paths["md"], "\n".join(md) + "\n")
    return paths
