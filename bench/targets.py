"""The benchmark targets (issue 7 §4) and their verdicts, computed from the results JSON.

Rules:

- One function per results file turns its raw numbers into ``Verdict``s; a
  figure that was not measured is a verdict with ``passed = None``, never a pass.
- HTTP targets are read on the dense asset (~2.5 MB segments), two workers,
  32 connections, against nginx static from the same run; each such point is the
  median of several timed runs (``http_load.py --repeats``), nginx's as well.  A point that had
  any wrk error (connect/read/write/time-out, or a status ≥ 400) fails its target.
- ``Verdict.profile`` names the py-spy profile that explains a miss (or a marginal
  pass, met by less than ``MARGIN``)
  (``http-<scenario>``, ``cipher-aes128``, ``protect-<scheme>``); the HTTP
  benchmark and ``run.py`` take one for each missed target, and the report
  links them.

MB is 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MB = 1_000_000
TARGET_ASSET = "dense"
TARGET_WORKLOAD = "video-1080p"
TARGET_CONNECTIONS = 32
NGINX = "nginx"
CACHE_OFF = "cache-off"
CACHE_ON = "cache-on"
RSS_LIMIT_BYTES = 150 * MB
MARGIN = 0.10  # a target met by less than this is marginal, and profiled like a miss
DISTURBED = 0.10  # share of the machine's CPU used by other work that flags a point

Doc = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what, the measured figure, the bar, whether it is met."""

    target: str
    figure: str
    value: float | None
    threshold: float
    passed: bool | None  # None: not measured
    profile: str | None = None
    higher_is_better: bool = True

    @property
    def mark(self) -> str:
        return {True: "✅", False: "❌", None: "❔"}[self.passed]

    @property
    def marginal(self) -> bool:
        """Met, but by less than ``MARGIN``: one noisy run from a miss."""
        if not self.passed or self.value is None or not self.threshold:
            return False
        share = (self.value / self.threshold if self.higher_is_better
                 else self.threshold / self.value if self.value else float("inf"))
        return share < 1 + MARGIN

    @property
    def profiled(self) -> bool:
        """Whether the benchmark takes a profile for it: missed, or met marginally."""
        return self.profile is not None and (self.passed is False or self.marginal)


def find_point(http: Doc, server: str, scenario: str, *, asset: str = TARGET_ASSET,
               workload: str = TARGET_WORKLOAD,
               connections: int = TARGET_CONNECTIONS) -> Doc | None:
    for point in http.get("points", []):
        if (point["server"], point["scenario"], point["asset"], point["workload"],
                point["connections"]) == (server, scenario, asset, workload, connections):
            found: Doc = point
            return found
    return None


def cores_of(http: Doc) -> int:
    return int(http.get("machine", {}).get("cpu_count") or 2)


def foreign_share(point: Doc, cores: int) -> float:
    """Share of the machine's CPU that other work used during a point (0–1)."""
    seconds = float(point.get("wrk", {}).get("duration_us", 0)) / 1e6
    if not seconds or not cores:
        return 0.0
    return float(point.get("foreign_cpu_s", 0.0)) / (cores * seconds)


def errors_note(*points: Doc | None, cores: int = 2) -> tuple[int, str]:
    """wrk errors of the points (which fail a target) and a note of both: errors, and other
    work on the machine over ``DISTURBED`` of its CPU (which does not fail it, but is flagged)."""
    count = sum(int(p["errors"]) for p in points if p is not None)
    note = f", {count} wrk errors" if count else ""
    worst = max((foreign_share(p, cores) for p in points if p is not None), default=0.0)
    if worst > DISTURBED:
        note += f", ⚠ other work used {100 * worst:.0f} % of the CPU"
    return count, note


def ratio_verdict(http: Doc, server: str, scenario: str, label: str,
                  threshold: float) -> Verdict:
    """req/s of ``scenario`` ÷ nginx static req/s, both at the target point."""
    ours = find_point(http, server, scenario)
    ceiling = find_point(http, NGINX, "static")
    target = f"{label}: ≥ {threshold:g}× nginx req/s"
    profile = f"http-{scenario}"
    if ours is None or ceiling is None or not ceiling["rps"]:
        return Verdict(target, "not measured", None, threshold, None, profile)
    value = ours["rps"] / ceiling["rps"]
    errors, note = errors_note(ours, ceiling, cores=cores_of(http))
    figure = (f"{value:.2f}× ({ours['rps']:,.0f} / {ceiling['rps']:,.0f} req/s"
              f"{repeats_note(ours, ceiling)}{note})")
    return Verdict(target, figure, value, threshold, value >= threshold and not errors, profile)


def repeats_note(*points: Doc) -> str:
    """", medians of 3 runs (ratios 0.61–0.66×)" when the points were timed more than
    once: the spread of the ratio over the runs paired by rank."""
    runs = [p.get("repeats_rps") or [p["rps"]] for p in points]
    if len(runs) != 2 or min(len(r) for r in runs) < 2 or not all(runs[1]):
        return ""
    ratios = [a / b for a, b in zip(runs[0], runs[1], strict=False)]
    return (f", medians of {len(runs[0])} runs: ratios by rank "
            f"{min(ratios):.2f}–{max(ratios):.2f}×")


def rate_verdict(http: Doc, scenario: str, workload: str, label: str,
                 threshold: float) -> Verdict:
    point = find_point(http, CACHE_ON, scenario, workload=workload)
    target = f"{label}: ≥ {threshold:,.0f} req/s"
    profile = f"http-{scenario}"
    if point is None:
        return Verdict(target, "not measured", None, threshold, None, profile)
    errors, note = errors_note(point, cores=cores_of(http))
    figure = f"{point['rps']:,.0f} req/s (p99 {point['latency_ms']['p99']:.1f} ms{note})"
    passed = point["rps"] >= threshold and not errors
    return Verdict(target, figure, point["rps"], threshold, passed, profile)


def p99_verdict(http: Doc, server: str, scenario: str, label: str, threshold_ms: float,
                workload: str = TARGET_WORKLOAD) -> Verdict:
    point = find_point(http, server, scenario, workload=workload)
    target = f"{label}: p99 ≤ {threshold_ms:g} ms"
    profile = f"http-{scenario}"
    if point is None:
        return Verdict(target, "not measured", None, threshold_ms, None, profile)
    p99 = point["latency_ms"]["p99"]
    errors, note = errors_note(point, cores=cores_of(http))
    figure = f"{p99:.1f} ms (p50 {point['latency_ms']['p50']:.1f} ms{note})"
    return Verdict(target, figure, p99, threshold_ms, p99 <= threshold_ms and not errors, profile,
                   higher_is_better=False)


def rss_verdict(http: Doc, server: str) -> Verdict:
    config = http.get("servers", {}).get(server)
    if config is None:
        return Verdict(f"RSS per worker ({server})", "not measured", None, 0, None)
    limit = RSS_LIMIT_BYTES + int(config["cache_bytes"])
    cache = f" + {config['cache_bytes'] / (1 << 20):.0f} MiB cache" if config["cache_bytes"] else ""
    target = f"resident memory per worker, {server} ({config['workers']} workers): ≤ 150 MB{cache}"
    peak = config.get("max_worker_rss_bytes")
    if not peak:
        return Verdict(target, "not measured", None, limit, None)
    figure = f"{peak / MB:.0f} MB max over {len(config.get('worker_rss', {}))} workers"
    return Verdict(target, figure, peak, limit, peak <= limit, higher_is_better=False)


def http_verdicts(http: Doc) -> list[Verdict]:
    schemes = (("aes128", "AES-128", 0.45), ("cbcs", "cbcs", 0.6), ("cenc", "cenc", 0.6))
    verdicts = [
        ratio_verdict(http, CACHE_OFF, f"{s}-miss", f"{label} segments, cache miss", bar)
        for s, label, bar in schemes
    ]
    verdicts += [
        ratio_verdict(http, CACHE_ON, f"{s}-hit", f"{label} segments, cache hit", 0.8)
        for s, label, _ in schemes
    ]
    verdicts.append(rate_verdict(http, "playlist", "media-playlists",
                                 "rewritten media playlists (cbcs)", 15_000))
    verdicts.append(rate_verdict(http, "licence", "key", "licence key requests", 5_000))
    verdicts.append(p99_verdict(http, CACHE_ON, "licence", "licence key requests", 20,
                                workload="key"))
    for server, cache in ((CACHE_OFF, "miss"), (CACHE_ON, "hit")):
        verdicts += [
            p99_verdict(http, server, f"{s}-{cache}", f"{label} 2.5 MB segments, cache {cache}",
                        100)
            for s, label, _ in schemes
        ]
    verdicts += [rss_verdict(http, CACHE_OFF), rss_verdict(http, CACHE_ON)]
    return verdicts


def cipher_verdicts(cipher: Doc) -> list[Verdict]:
    target = "AES-128 whole-segment cipher: ≥ 0.85× openssl aes-128-cbc (every size)"
    ratios = [(r["ratio"], r["size"]) for r in cipher.get("results", []) if r.get("ratio")]
    if not ratios:
        return [Verdict(target, "not measured", None, 0.85, None, "cipher-aes128")]
    worst, size = min(ratios)
    best, _ = max(ratios)
    figure = f"{worst:.2f}× worst (at {size // 1024} KiB), {best:.2f}× best"
    return [Verdict(target, figure, worst, 0.85, worst >= 0.85, "cipher-aes128")]


def protect_verdicts(protect: Doc) -> list[Verdict]:
    verdicts = []
    for scheme in ("cbcs", "cenc"):
        target = f"{scheme} protection of the dense asset: ≥ 3× Shaka Packager (marginal rate)"
        rows = [r for r in protect.get("results", [])
                if r["scheme"] == scheme and r["rendition"] == "1080p-dense"]
        if not rows:
            verdicts.append(Verdict(target, "not measured", None, 3.0, None, f"protect-{scheme}"))
            continue
        row = rows[0]
        value = float(row["vs_shaka_marginal"])
        figure = (f"{value:.1f}× ({row['origin_mbps']:.0f} vs {row['shaka_marginal_mbps']:.0f}"
                  " MB/s)")
        verdicts.append(Verdict(target, figure, value, 3.0, value >= 3.0, f"protect-{scheme}"))
    return verdicts


def all_verdicts(docs: Mapping[str, Doc]) -> list[Verdict]:
    """Every target, from whichever results files are there (``http``, ``cipher``, ``protect``)."""
    verdicts = http_verdicts(docs.get("http", {}))
    verdicts += cipher_verdicts(docs.get("cipher", {}))
    verdicts += protect_verdicts(docs.get("protect", {}))
    return verdicts
