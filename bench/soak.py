"""The soak run (issue 8 §6): mixed traffic at ~70 % of capacity for minutes, memory kept flat.

What runs (on 127.0.0.1 only; the server is started here and stopped by PID):

- ``origin serve --workers 2`` with its own temporary state dir and a temporary
  media root holding copies of the demo asset and, when it is cached in
  ``bench/.cache/dense`` (``bench/assets.py`` makes it), the dense 1080p asset;
  ``--license-rate 0``, because every request comes from one client address and
  the per-address licence rate limit would otherwise answer most licence
  requests 429 (a limit meant for many players, not one load generator);
- the mix (``soak_mix.py``): multivariant and media playlists of every scheme,
  DASH MPDs, init and media segments of every scheme (plain, ranged, conditional),
  ``GET /license/aes128/{kid}``, ``POST /license/clearkey`` with an EME request body,
  and 1 % bad requests that must get a 4xx;
- every distinct request once (the probe: its status is recorded, segment ETags
  are kept for the conditional requests), ``--warmup-seconds`` of closed loop
  (not counted), then ``--capacity-seconds`` of closed loop at 32 connections:
  the capacity of the mix on this machine, load generator included;
- then the soak proper: an open loop at ``--fraction`` (0.7) of that capacity for
  ``--minutes`` (``soak_load.py``: fixed arrival schedule, latency from the due
  time), reported every ``--window`` (10) seconds and at the end: requests, 5xx,
  4xx (bad and unexpected), client errors, p50/p99, the ``VmRSS`` (and
  ``RssAnon``) of each worker, the main process and the licence module, the CPU
  of server, client and everything else on the machine (*foreign*), the load
  average, and the cache hit ratio from ``/metrics``.

Memory is judged on the second half of the soak: the least-squares slope of each
process's ``VmRSS`` in MB/min (``FLAT_MB_PER_MIN`` is the bar) and its maximum.
The run stops by itself: the open loop ends at its deadline, stragglers get
``DRAIN_SECONDS``, and the whole asynchronous part is bounded by a time-out; the
report renderer runs as a subprocess with a time-out.

Writes ``bench/results/soak.json``, then runs ``bench/report.py`` (the "Soak"
section of ``bench/RESULTS.md`` and ``bench/plots/soak.png``).  MB is 10^6 bytes.

    .venv/bin/python bench/soak.py --minutes 10     # make soak
    .venv/bin/python bench/soak.py --minutes 1      # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import metrics_scrape
import numpy as np
import uvloop
from assets import CACHE, DENSE_NAME, RECIPE, Asset, demo_asset, stage_media
from machine import machine_info, read_load_average, tool_versions
from origin_server import OriginConfig, OriginServer, is_licence_module
from process_sampler import PROC, MachineTicks, read_cpu_seconds
from prometheus_client.parser import text_string_to_metric_families
from soak_load import READ_TIMEOUT, LoadClient, Tally
from soak_mix import (
    BLOCK,
    SHARES,
    SoakRequest,
    build_sequence,
    candidate_requests,
    derived_segment_requests,
    find_key_id,
    key_playlist,
    read_layout,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "soak.json"
MB = 1_000_000
MIB = 1 << 20
CACHE_BYTES = 256 * MIB  # origin's default
WORKERS = 2
CAPACITY_CONNECTIONS = 32
FLAT_MB_PER_MIN = 1.0
DRAIN_SECONDS = READ_TIMEOUT + 15
PROBE_CONCURRENCY = 8
REPORT_TIMEOUT = 300.0
MARGIN_SECONDS = 180.0  # on top of the planned phases, for the whole asynchronous part
SEQUENCE_BLOCKS = 200  # 20,000 requests, cycled
COUNTERS = (*metrics_scrape.COUNTERS, "origin_license_decisions_total")


class SoakError(RuntimeError):
    """The soak could not be set up (no key id, no capacity)."""


# --- the server ---------------------------------------------------------------------------------


class SoakServer(OriginServer):
    """``origin serve`` for the soak: the benchmark's server, no per-address licence limit."""

    def __init__(self, config: OriginConfig, media_root: Path, state_dir: Path,
                 extra: Sequence[str]) -> None:
        super().__init__(config, media_root, state_dir)
        self.extra = list(extra)

    def command(self) -> list[str]:
        """The benchmark's command plus each extra flag it does not already carry."""
        base = super().command()
        extra = self.extra
        missing = [part for i in range(0, len(extra), 2) if extra[i] not in base
                   for part in extra[i:i + 2]]
        return [*base, *missing]


def supported_flags(wanted: Sequence[str]) -> list[str]:
    """The ``origin serve`` flags of ``wanted`` (flag, value, …) this checkout knows."""
    done = subprocess.run([sys.executable, "-m", "origin", "serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    found: list[str] = []
    for flag, value in zip(wanted[::2], wanted[1::2], strict=True):
        if flag in done.stdout:
            found += [flag, value]
    return found


def dense_if_cached() -> Asset | None:
    """The dense asset when ``bench/assets.py`` has finished making it (never made here)."""
    folder = CACHE / DENSE_NAME
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == RECIPE:
        return Asset(DENSE_NAME, folder, ("video-1080p", "audio-en"))
    return None


# --- processes and memory -----------------------------------------------------------------------


def read_memory(pid: int) -> tuple[int, int] | None:
    """``VmRSS`` and ``RssAnon`` of one process in bytes, or None once it is gone."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            values[name] = int(rest.split()[0]) * 1024
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("RssAnon", 0)


def process_roles(server: OriginServer) -> dict[int, str]:
    """Every process of the server by role: main, worker, licence (other descendants: helper)."""
    main = server.proc.pid if server.proc is not None else -1
    roles: dict[int, str] = {}
    for pid in server.pids():
        if pid == main:
            roles[pid] = "main"
        elif is_licence_module(pid):
            roles[pid] = "licence"
        else:
            roles[pid] = "worker" if parent_of(pid) == main else "helper"
    return roles


def parent_of(pid: int) -> int | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(text[text.rfind(")") + 2:].split()[1])


def slope_mb_per_min(samples: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS (MB) over time (minutes); None under two samples."""
    if len(samples) < 2 or len({t for t, _ in samples}) < 2:
        return None
    t = np.array([s[0] / 60 for s in samples])
    rss = np.array([s[1] / MB for s in samples])
    return float(np.polyfit(t, rss, 1)[0])


@dataclass
class MemorySeries:
    """One process's memory samples over the soak: (seconds since start, VmRSS, RssAnon)."""

    pid: int
    role: str
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def judge(self, seconds: float) -> dict[str, Any]:
        half = [(t, rss) for t, rss, _ in self.samples if t >= seconds / 2]
        anon_half = [(t, anon) for t, _, anon in self.samples if t >= seconds / 2]
        slope = slope_mb_per_min(half)
        return {
            "pid": self.pid, "role": self.role,
            "samples": [[round(t, 1), rss, anon] for t, rss, anon in self.samples],
            "first_mb": round(self.samples[0][1] / MB, 2) if self.samples else None,
            "last_mb": round(self.samples[-1][1] / MB, 2) if self.samples else None,
            "max_mb": round(max(s[1] for s in self.samples) / MB, 2) if self.samples else None,
            "slope_mb_per_min_second_half": None if slope is None else round(slope, 3),
            "anon_slope_mb_per_min_second_half": _round(slope_mb_per_min(anon_half)),
            "slope_mb_per_min_whole": _round(slope_mb_per_min([(t, r) for t, r, _ in
                                                               self.samples])),
            "second_half_samples": len(half),
            "flat": None if slope is None else abs(slope) <= FLAT_MB_PER_MIN,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- /metrics -----------------------------------------------------------------------------------


def parse_soak_counters(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                values[metrics_scrape.sample_key(sample.name, sample.labels)] = float(sample.value)
    return values


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    """The counters now (parsed in the executor), or None without a usable ``/metrics``."""
    try:
        async with session.get(f"{base}/metrics") as response:
            if response.status != 200:
                return None
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    try:
        return await asyncio.get_running_loop().run_in_executor(None, parse_soak_counters, text)
    except ValueError:
        return None


def hit_ratios(delta: Mapping[str, float] | None) -> dict[str, float | None]:
    """Hits ÷ lookups of segments and of manifests (all tiers) in a counter difference."""
    found: dict[str, float | None] = {}
    for kind in ("segment", "manifest"):
        lookups = hits = 0.0
        for key, value in (delta or {}).items():
            if key.startswith("origin_cache_lookups_total{") and f'kind="{kind}"' in key:
                lookups += value
                hits += value if 'result="hit"' in key else 0.0
        found[kind] = round(hits / lookups, 4) if lookups else None
    return found


def status_classes(delta: Mapping[str, float] | None) -> dict[str, int]:
    """The server's own count of answers by status class, from ``/metrics``."""
    classes: dict[str, int] = {}
    for key, value in (delta or {}).items():
        if key.startswith("origin_http_requests_total{") and 'status="' in key:
            status = key.split('status="', 1)[1].split('"', 1)[0]
            name = f"{status[:1]}xx"
            classes[name] = classes.get(name, 0) + int(value)
    return dict(sorted(classes.items()))


def licence_decisions(delta: Mapping[str, float] | None) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, value in (delta or {}).items():
        if key.startswith("origin_license_decisions_total{") and value:
            found[key.removeprefix("origin_license_decisions_total")] = int(value)
    return found


# --- the soak -----------------------------------------------------------------------------------


@dataclass
class Soak:
    """State of the open-loop phase: the tallies, the memory series, the window records."""

    server: OriginServer
    scrapes: aiohttp.ClientSession
    start: float
    overall: Tally
    window: Tally
    memory: dict[int, MemorySeries] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    last_counters: dict[str, float] | None = None
    first_counters: dict[str, float] | None = None
    last_cpu: tuple[float, float] = (0.0, 0.0)  # server, client CPU seconds so far
    last_ticks: MachineTicks | None = None

    def record(self, request: SoakRequest, status: int | None, error: str | None,
               latency: float, service: float, size: int) -> None:
        self.overall.record(request, status, error, latency, service, size)
        self.window.record(request, status, error, latency, service, size)

    def late(self) -> None:
        self.overall.late_starts += 1
        self.window.late_starts += 1

    def sample_memory(self, now: float) -> dict[str, dict[str, Any]]:
        found = {}
        for pid, role in process_roles(self.server).items():
            memory = read_memory(pid)
            if memory is None:
                continue
            series = self.memory.setdefault(pid, MemorySeries(pid, role))
            series.samples.append((now - self.start, *memory))
            found[str(pid)] = {"role": role, "rss": memory[0], "anon": memory[1]}
        return found

    def sample_cpu(self) -> dict[str, float]:
        server = read_cpu_seconds(self.server.pids())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        client = usage.ru_utime + usage.ru_stime
        ticks = MachineTicks.read()
        previous, self.last_cpu = self.last_cpu, (server, client)
        busy = ticks.busy_cpu_seconds_since(self.last_ticks) if self.last_ticks else 0.0
        self.last_ticks = ticks
        server_s, client_s = server - previous[0], client - previous[1]
        return {"server_cpu_s": round(server_s, 2), "client_cpu_s": round(client_s, 2),
                "machine_busy_cpu_s": round(busy, 2),
                "foreign_cpu_s": round(max(0.0, busy - server_s - client_s), 2)}

    async def begin(self) -> None:
        self.sample_cpu()
        self.sample_memory(self.start)
        self.first_counters = self.last_counters = await scrape(self.scrapes, self.server.base)

    async def close_window(self) -> dict[str, Any]:
        """Close the current window: its figures, memory, CPU and cache counters; print it."""
        now = time.perf_counter()
        window, self.window = self.window, Tally(started=now)
        summary = window.summary(now)
        counters = await scrape(self.scrapes, self.server.base)
        delta = metrics_scrape.difference(self.last_counters, counters)
        if counters is not None:
            self.last_counters = counters
        record = {
            "index": len(self.windows), "t_start_s": round(window.started - self.start, 2),
            "t_end_s": round(now - self.start, 2), **summary,
            "memory": self.sample_memory(now), **self.sample_cpu(),
            "load_average": read_load_average(),
            "cache_hit_ratio": hit_ratios(delta),
            "server_status_classes": status_classes(delta),
        }
        self.windows.append(record)
        print_window(record)
        return record


def mb(value: int | float) -> str:
    return f"{value / MB:.1f}"


def print_window(w: Mapping[str, Any]) -> None:
    memory = w["memory"]
    workers = " ".join(mb(m["rss"]) for m in memory.values() if m["role"] == "worker")
    licence = " ".join(mb(m["rss"]) for m in memory.values() if m["role"] == "licence")
    hits = w["cache_hit_ratio"]
    hit = " ".join(f"{k} {100 * v:.0f}%" for k, v in hits.items() if v is not None) or "n/a"
    lat = w["latency_ms"]
    print(f"[soak] t={w['t_end_s']:6.0f}s  {w['requests']:,} req ({w['rps']:,.0f}/s)  "
          f"5xx {w['five_xx']}  4xx {w['four_xx']} (bad {w['bad_4xx']}, unexpected "
          f"{w['unexpected_4xx']})  err {w['client_errors']}  p50 {lat['p50'] or 0:.1f} ms  "
          f"p99 {lat['p99'] or 0:.1f} ms  RSS workers {workers} licence {licence} MB  "
          f"hits {hit}  load {w['load_average'][0] if w['load_average'] else '?'}  "
          f"foreign {w['foreign_cpu_s']:.1f} CPU-s", flush=True)


async def probe(client: LoadClient, kinds: Mapping[str, Sequence[SoakRequest]],
                ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every distinct request once: status recorded, segment ETags kept."""
    slots = asyncio.Semaphore(PROBE_CONCURRENCY)
    etags: dict[str, str] = {}
    found: list[dict[str, Any]] = []

    async def one(request: SoakRequest) -> None:
        async with slots:
            try:
                status, etag, size = await client.send(request)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                found.append({"kind": request.kind, "target": request.target,
                              "error": type(error).__name__, "right": False})
                return
        if request.kind == "segment" and status == 200 and etag:
            etags[request.target] = etag
        found.append({"kind": request.kind, "method": request.method, "target": request.target,
                      "status": status, "bytes": size, "right": request.is_right(status)})

    await asyncio.gather(*(one(r) for requests in kinds.values() for r in requests))
    return sorted(found, key=lambda p: (p["kind"], p["target"])), etags


async def read_key_ids(client: LoadClient, layouts: Sequence[Any]) -> list[str]:
    key_ids = []
    for layout in layouts:
        status, body = await client.fetch(key_playlist(layout))
        kid = find_key_id(body) if status == 200 else None
        if kid is None:
            raise SoakError(f"no AES-128 key id in {key_playlist(layout)} ({status})")
        key_ids.append(kid)
    return key_ids


async def run_soak(server: OriginServer, assets: Sequence[Asset],
                   args: argparse.Namespace) -> dict[str, Any]:
    """Probe, warm up, measure capacity, soak; everything the JSON holds but the preamble."""
    layouts = [read_layout(asset) for asset in assets]
    async with LoadClient(server.base, args.pool) as client, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as scrapes:
        key_ids = await read_key_ids(client, layouts)
        kinds = candidate_requests(layouts, key_ids)
        probes, etags = await probe(client, kinds)
        kinds |= derived_segment_requests(kinds["segment"], etags)
        sequence = build_sequence(kinds, SEQUENCE_BLOCKS, args.seed)
        wrong = [p for p in probes if not p["right"]]
        print(f"[soak] mix: {sum(len(v) for v in kinds.values())} distinct requests "
              f"({', '.join(f'{k} {len(v)}' for k, v in kinds.items())}); probe: "
              f"{len(probes) - len(wrong)} right, {len(wrong)} wrong", flush=True)
        for p in wrong[:20]:
            print(f"[soak]   probe wrong: {p}", flush=True)

        if args.warmup_seconds > 0:
            print(f"[soak] warm-up: closed loop, {CAPACITY_CONNECTIONS} connections, "
                  f"{args.warmup_seconds:g} s (not counted)", flush=True)
            warm = Tally(started=time.perf_counter())
            await client.closed_loop(sequence, CAPACITY_CONNECTIONS, args.warmup_seconds,
                                     warm.record)
        print(f"[soak] capacity: closed loop, {CAPACITY_CONNECTIONS} connections, "
              f"{args.capacity_seconds:g} s", flush=True)
        capacity = Tally(started=time.perf_counter())
        cpu_before = read_cpu_seconds(server.pids())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        await client.closed_loop(sequence, CAPACITY_CONNECTIONS, args.capacity_seconds,
                                 capacity.record, offset=BLOCK * 7)
        capacity_summary = capacity.summary(time.perf_counter())
        after = resource.getrusage(resource.RUSAGE_SELF)
        capacity_summary |= {
            "server_cpu_s": round(read_cpu_seconds(server.pids()) - cpu_before, 2),
            "client_cpu_s": round(after.ru_utime + after.ru_stime - usage.ru_utime
                                  - usage.ru_stime, 2),
            "load_average": read_load_average(),
        }
        rps = capacity_summary["rps"]
        if not rps:
            raise SoakError("the capacity run answered nothing")
        rate = args.rate or args.fraction * rps
        print(f"[soak] capacity {rps:,.0f} req/s (p50 {capacity_summary['latency_ms']['p50']} "
              f"ms, p99 {capacity_summary['latency_ms']['p99']} ms, 5xx "
              f"{capacity_summary['five_xx']}); soaking at {rate:,.0f} req/s for "
              f"{args.minutes:g} min", flush=True)

        seconds = args.minutes * 60
        start = time.perf_counter()
        soak = Soak(server, scrapes, start, Tally(started=start), Tally(started=start))
        await soak.begin()
        finished = asyncio.Event()

        async def windows() -> None:
            k = 1
            while start + k * args.window < start + seconds - args.window / 2:
                wait = start + k * args.window - time.perf_counter()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(finished.wait(), wait)
                if finished.is_set():
                    return
                await soak.close_window()
                k += 1

        async def load() -> dict[str, Any]:
            try:
                return await client.open_loop(sequence, rate, seconds, soak.record,
                                              args.max_in_flight, soak.late, DRAIN_SECONDS)
            finally:
                finished.set()

        dispatch, _ = await asyncio.gather(load(), windows())
        await soak.close_window()
        ended = time.perf_counter()
        final_delta = metrics_scrape.difference(soak.first_counters, soak.last_counters)
        elapsed = ended - start
        memory = [series.judge(elapsed) for series in soak.memory.values()]
        return {
            "mix": {"shares_per_100": dict(SHARES), "distinct": {k: len(v)
                                                                 for k, v in kinds.items()},
                    "key_ids": len(key_ids), "sequence_length": len(sequence),
                    "seed": args.seed},
            "probe": {"requests": len(probes), "wrong": wrong, "all": probes},
            "capacity": capacity_summary | {"connections": CAPACITY_CONNECTIONS},
            "rate": round(rate, 1),
            "open_loop": dispatch,
            "overall": soak.overall.summary(ended) | {
                "kinds": soak.overall.kinds(),
                "cache_hit_ratio": hit_ratios(final_delta),
                "server_status_classes": status_classes(final_delta),
                "licence_decisions": licence_decisions(final_delta),
                "cache_delta": final_delta,
            },
            "windows": soak.windows,
            "memory": memory,
            "worker_restarts": max(0, sum(1 for m in memory if m["role"] == "worker")
                                   - server.config.workers),
        }


def verdicts(doc: Mapping[str, Any]) -> dict[str, bool | None]:
    overall = doc["overall"]
    flats = [m["flat"] for m in doc["memory"] if m["role"] in ("worker", "licence", "main")]
    probe_5xx = sum(1 for p in doc["probe"]["all"] if p.get("status", 0) >= 500)
    return {
        "no_5xx": overall["five_xx"] == 0 and probe_5xx == 0,
        "4xx_only_for_bad_requests": overall["unexpected_4xx"] == 0
        and overall["bad_not_4xx"] == 0,
        "no_client_errors": overall["client_errors"] == 0,
        "every_answer_right": not overall["wrong"],
        "rss_flat": None if any(f is None for f in flats) or not flats else all(flats),
        "no_worker_restarts": doc["worker_restarts"] == 0,
    }


def print_summary(doc: Mapping[str, Any]) -> None:
    o = doc["overall"]
    print(f"[soak] overall: {o['requests']:,} requests in {o['seconds']:.0f} s "
          f"({o['rps']:,.0f}/s of {doc['rate']:,.0f} scheduled), 5xx {o['five_xx']}, 4xx "
          f"{o['four_xx']} (bad {o['bad_4xx']} of {o['bad_sent']} sent, unexpected "
          f"{o['unexpected_4xx']}), client errors {o['client_errors']}, p50 "
          f"{o['latency_ms']['p50']} ms, p99 {o['latency_ms']['p99']} ms, hits "
          f"{o['cache_hit_ratio']}", flush=True)
    for m in doc["memory"]:
        print(f"[soak] {m['role']:8} {m['pid']:>7}: RSS {m['first_mb']} → {m['last_mb']} MB, "
              f"max {m['max_mb']} MB, slope (2nd half) {m['slope_mb_per_min_second_half']} "
              f"MB/min", flush=True)
    for name, passed in doc["verdicts"].items():
        print(f"[soak] {'✅' if passed else '❌' if passed is False else '❔'} {name}",
              flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="soak: mixed traffic at ~70 % of capacity")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the open loop")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the capacity")
    parser.add_argument("--rate", type=float, default=0.0, help="req/s (overrides --fraction)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per report")
    parser.add_argument("--pool", type=int, default=64, help="client connection pool")
    parser.add_argument("--max-in-flight", type=int, default=1024)
    parser.add_argument("--cache-bytes", type=int, default=CACHE_BYTES)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--no-dense", action="store_true", help="the demo asset only")
    parser.add_argument("--no-report", action="store_true", help="do not run report.py")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def render_report() -> int | str:
    """``report.py`` as a subprocess with a time-out."""
    try:
        done = subprocess.run([sys.executable, str(BENCH / "report.py")], cwd=ROOT,
                              timeout=REPORT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return "timeout"
    return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # finally blocks stop the server
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = read_load_average()
    print(f"[soak] {args.minutes:g} min; load average {load_start}", flush=True)
    extra = supported_flags(["--license-rate", "0"])
    config = OriginConfig("soak", workers=WORKERS, cache_bytes=args.cache_bytes)
    budget = (args.warmup_seconds + args.capacity_seconds + args.minutes * 60 + DRAIN_SECONDS
              + MARGIN_SECONDS)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        media, state = Path(tmp) / "media", Path(tmp) / "state"
        dense = None if args.no_dense else dense_if_cached()
        assets = stage_media(media, (demo_asset(), *([dense] if dense else [])))
        print(f"[soak] assets: {', '.join(a.name for a in assets)}"
              + ("" if dense or args.no_dense else " (dense not cached: run bench/assets.py)"),
              flush=True)
        with SoakServer(config, media, state, extra) as server:
            command = ["python", *server.command()[1:]]
            command = [("MEDIA" if c == str(media) else "STATE" if c == str(state) else c)
                       for c in command]
            print(f"[soak] {' '.join(command)} at {server.base}", flush=True)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                body = runner.run(asyncio.wait_for(run_soak(server, assets, args), budget))
            log_tail = server.log_tail(2000)
    document: dict[str, Any] = {
        "benchmark": "soak: mixed traffic at a fraction of capacity against origin serve "
                     "--workers 2, aiohttp open loop on loopback",
        "when": started_at,
        "unit": "req/s; latency ms (from the scheduled time in the open loop); RSS bytes "
                "(MB = 10^6 bytes in the *_mb fields); CPU seconds",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"workers": WORKERS, "flat_mb_per_min": FLAT_MB_PER_MIN,
           "capacity_connections": CAPACITY_CONNECTIONS, "drain_seconds": DRAIN_SECONDS},
        "server_command": command,
        "assets": [a.name for a in assets],
        "machine": machine_info(None),
        "versions": {k: v for k, v in tool_versions().items()
                     if k in ("python", "aiohttp", "uvloop", "cryptography", "numpy",
                              "prometheus-client")},
        "load_average_start": load_start,
        "load_average_end": read_load_average(),
        **body,
        "server_log_warnings": [line for line in log_tail.splitlines()
                                if line.strip() and " INFO " not in line][-20:],
    }
    document["verdicts"] = verdicts(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print_summary(document)
    print(f"[soak] wrote {args.out}", flush=True)
    if not args.no_report:
        status = render_report()
        if status != 0:
            print(f"[soak] report.py: {status}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
