"""The soak run's plot, drawn from ``results/soak.json`` (matplotlib, no display).

Rules: like ``plots.py`` — one function, takes the parsed JSON and the output path,
draws nothing when its data is missing (returns None), returns the path written
otherwise.  Top: ``VmRSS`` of every process sampled every window, with the second
half (where the slope is read) marked; bottom: p50 and p99 latency per window
(log scale).  MB is 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from plots import save

Doc = Mapping[str, Any]
MB = 1_000_000


def plot_soak(soak: Doc, path: Path) -> Path | None:
    memory, windows = soak.get("memory") or [], soak.get("windows") or []
    if not memory or not windows:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 6.4), sharex=True)
    end = max(w["t_end_s"] for w in windows) / 60
    for series in sorted(memory, key=lambda m: (m["role"], m["pid"])):
        samples = series["samples"]
        slope = series.get("slope_mb_per_min_second_half")
        label = f"{series['role']} {series['pid']}"
        if slope is not None:
            label += f" ({slope:+.2f} MB/min, 2nd half)"
        top.plot([s[0] / 60 for s in samples], [s[1] / MB for s in samples], "-o",
                 markersize=2.5, label=label)
    top.axvspan(end / 2, end, color="grey", alpha=0.08, label="second half (slope)")
    top.set_ylabel("VmRSS (MB)")
    top.set_ylim(bottom=0)
    top.set_title(f"Soak at {soak.get('rate', 0):,.0f} req/s: resident memory per process")
    top.grid(True, alpha=0.3)
    top.legend(fontsize=7, loc="lower right")
    t = [w["t_end_s"] / 60 for w in windows]
    for key, style in (("p99", "-o"), ("p50", "-s")):
        values = [w["latency_ms"][key] for w in windows]
        bottom.plot(t, [v if v is not None else float("nan") for v in values], style,
                    markersize=2.5, label=f"{key} per window")
    overall = soak.get("overall", {}).get("latency_ms", {})
    if overall.get("p99") is not None:
        bottom.axhline(overall["p99"], color="grey", linestyle="--", linewidth=0.8,
                       label=f"p99 overall {overall['p99']:,.1f} ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms, from the scheduled time)")
    bottom.set_xlabel("minutes into the soak")
    bottom.grid(True, which="both", alpha=0.3)
    bottom.legend(fontsize=7)
    return save(fig, path)
