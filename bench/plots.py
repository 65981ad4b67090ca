"""The benchmark's PNG plots, drawn from the results JSON (matplotlib, no display).

Rules: one function per figure, each takes the parsed JSON it needs and the
output path, draws nothing when its data is missing (returns None) and
returns the path written otherwise.  MB is 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Doc = Mapping[str, Any]
DPI = 110
SEGMENT_SCENARIOS = ("static", "clear", "aes128-miss", "cbcs-miss", "cenc-miss",
                     "aes128-hit", "cbcs-hit", "cenc-hit")


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_cipher(cipher: Doc, path: Path) -> Path | None:
    rows = cipher.get("results", [])
    if not rows:
        return None
    sizes = [r["size"] / 1024 for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    series = (("origin_mbps", "origin AES-128 whole segment", "-o"),
              ("openssl_mbps", "openssl speed aes-128-cbc", "--o"),
              ("cbcs_mbps", "origin cbcs 1:9 (segment bytes)", "-s"),
              ("cenc_mbps", "origin cenc (segment bytes)", "-^"),
              ("openssl_ctr_mbps", "openssl speed aes-128-ctr", "--^"))
    for key, name, style in series:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(sizes, [v if v is not None else float("nan") for v in values], style,
                    label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("segment size (KiB)")
    ax.set_ylabel("MB/s, one core")
    ax.set_title("Segment ciphers by size vs openssl speed (same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_protect(protect: Doc, path: Path) -> Path | None:
    rows = protect.get("results", [])
    if not rows:
        return None
    labels = [f"{r['rendition']}\n{r['scheme']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.4
    ax.bar([i - width / 2 for i in x], [r["origin_mbps"] for r in rows], width, label="origin")
    ax.bar([i + width / 2 for i in x], [r["shaka_marginal_mbps"] for r in rows], width,
           label="Shaka Packager (marginal rate)")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['vs_shaka_marginal']:.1f}×", (i, max(r["origin_mbps"],
                    r["shaka_marginal_mbps"])), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("MB/s of segment bytes, one core")
    ax.set_title("cbcs/cenc protection of whole renditions vs Shaka Packager")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, path)


def points_of(http: Doc, **match: object) -> list[Doc]:
    return [p for p in http.get("points", [])
            if "failed" not in p and all(p.get(k) == v for k, v in match.items())]


def plot_http_rps(http: Doc, asset: str, workload: str, path: Path) -> Path | None:
    """req/s per segment scenario at each concurrency (bars), on one asset."""
    conns = sorted({p["connections"] for p in points_of(http, asset=asset, workload=workload)})
    scenarios = [s for s in SEGMENT_SCENARIOS
                 if points_of(http, asset=asset, workload=workload, scenario=s)]
    if not conns or not scenarios:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    width = 0.8 / len(conns)
    for j, c in enumerate(conns):
        values = []
        for s in scenarios:
            found = points_of(http, asset=asset, workload=workload, scenario=s, connections=c)
            values.append(found[0]["rps"] if found else 0.0)
        ax.bar([i + (j - (len(conns) - 1) / 2) * width for i in range(len(scenarios))], values,
               width, label=f"{c} connections")
    ax.set_xticks(range(len(scenarios)),
                  [("nginx\nstatic" if s == "static" else s.replace("-", "\n")) for s in scenarios],
                  fontsize=8)
    ax.set_ylabel("requests/s")
    ax.set_title(f"Segments, {asset} asset ({workload}): origin (2 workers) vs nginx static")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, path)


def plot_http_latency(http: Doc, asset: str, workload: str, path: Path) -> Path | None:
    """p50 and p99 by concurrency, one line per scenario (log scale)."""
    scenarios = [s for s in SEGMENT_SCENARIOS
                 if points_of(http, asset=asset, workload=workload, scenario=s)]
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2), sharey=True)
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        for s in scenarios:
            pts = sorted(points_of(http, asset=asset, workload=workload, scenario=s),
                         key=lambda p: p["connections"])
            ax.plot([p["connections"] for p in pts], [p["latency_ms"][pct] for p in pts], "-o",
                    label="nginx static" if s == "static" else s)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        conns = sorted({p["connections"]
                        for p in points_of(http, asset=asset, workload=workload)})
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.set_xlabel("connections")
        ax.set_title(f"{pct} latency, {asset}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms")
    axes[1].legend(fontsize=7)
    return save(fig, path)


def plot_scaling(http: Doc, path: Path) -> Path | None:
    """AES-128 cache miss on the dense asset at 32 connections: 1 vs 2 workers."""
    one = points_of(http, server="cache-off-1w", scenario="aes128-miss", connections=32)
    two = points_of(http, server="cache-off", scenario="aes128-miss", asset="dense",
                    workload="video-1080p", connections=32)
    if not one or not two:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.8))
    bars = ax.bar(["1 worker", "2 workers"], [one[0]["rps"], two[0]["rps"]])
    for bar, p in zip(bars, (one[0], two[0]), strict=True):
        ax.annotate(f"{p['rps']:.0f} req/s\np99 {p['latency_ms']['p99']:.0f} ms",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_ylabel("requests/s")
    ax.set_title("AES-128 cache miss, dense, c32")
    ax.margins(y=0.25)
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, path)


def cost_series(http: Doc) -> dict[str, list[tuple[float, float]]]:
    """Scenario → (mean segment bytes, server CPU µs per request) at the sweep concurrency."""
    series: dict[str, list[tuple[float, float]]] = {}
    sweep = http.get("settings", {}).get("sweep_connections", 32)
    for p in http.get("points", []):
        if ("failed" in p or p["connections"] != sweep or p["kind"] != "segment"
                or p["workload"] == "all" or p["server"] not in ("nginx", "cache-off")
                or not p.get("cpu_us_per_request")):
            continue
        series.setdefault(p["scenario"], []).append((p["segment_bytes"], p["cpu_us_per_request"]))
    return {k: sorted(v) for k, v in series.items()}


def plot_cost(http: Doc, path: Path) -> Path | None:
    series = cost_series(http)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for name in SEGMENT_SCENARIOS:
        if name in series:
            xs, ys = zip(*series[name], strict=True)
            ax.plot([x / 1000 for x in xs], ys, "-o",
                    label="nginx static" if name == "static" else name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean segment size (KB)")
    ax.set_ylabel("server CPU µs per request (all cores)")
    ax.set_title("Cost vs segment size (32 connections, cache off)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def draw_all(docs: Mapping[str, Doc], folder: Path) -> Sequence[tuple[str, Path]]:
    """Every plot that has data: (title, path)."""
    http = docs.get("http", {})
    wanted = (
        ("Segment ciphers by size", plot_cipher(docs.get("cipher", {}), folder / "cipher.png")),
        ("Packaging vs Shaka Packager", plot_protect(docs.get("protect", {}),
                                                     folder / "protect.png")),
        ("HTTP req/s, dense asset", plot_http_rps(http, "dense", "video-1080p",
                                                  folder / "http_dense.png")),
        ("HTTP latency, dense asset", plot_http_latency(http, "dense", "video-1080p",
                                                        folder / "latency_dense.png")),
        ("HTTP req/s, demo asset", plot_http_rps(http, "demo", "all", folder / "http_demo.png")),
        ("HTTP latency, demo asset", plot_http_latency(http, "demo", "all",
                                                       folder / "latency_demo.png")),
        ("Scaling with workers", plot_scaling(http, folder / "scaling_workers.png")),
        ("Cost vs segment size", plot_cost(http, folder / "cost_vs_size.png")),
    )
    return [(title, path) for title, path in wanted if path is not None]
