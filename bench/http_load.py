"""Benchmark: HTTP load on ``origin serve`` with wrk, nginx static files as the ceiling, one run.

What runs (all on 127.0.0.1, every server started here and stopped by PID):

- nginx serving the media root statically (sendfile, 2 workers): the same
  segment files as the origin, at the same concurrencies — the ceiling;
- ``origin serve --workers 2 --cache-bytes 0`` ("cache-off"): clear segments
  (sendfile), AES-128 / cbcs / cenc segments encrypted on every request
  (cache miss), and, for information, uncached playlists and MPDs;
- ``origin serve --workers 2 --cache-bytes 256 MiB`` (the default) ("cache-on"): the same
  encrypted segments after a warm-up (cache hit), rewritten media playlists
  (cbcs), the DASH MPD (cenc) and licence requests (``GET /license/aes128/{kid}``);
- ``origin serve --workers 1 --cache-bytes 0`` ("cache-off-1w"): AES-128 cache
  miss on the dense asset, for scaling with workers.

Each scenario rotates over several paths (``bench/wrk/rotate.lua``) at 1, 32
and 128 connections, on the dense asset (1080p ~10 Mbit/s, ~2.5 MB segments:
the targets) and the demo asset (all its CMAF segments); the cost sweep runs
each scheme on single renditions (demo audio ~21 KB, 360p ~100 KB, 720p
~250 KB, dense 1080p ~2.5 MB) at 32 connections.  Per point: req/s, MB/s,
latency percentiles (wrk ``--latency``), wrk errors, the servers' CPU seconds
(so CPU µs per request), the client's CPU, the machine's busy CPU (other work
on the machine shows as "foreign"), peak ``VmRSS`` of every serving process,
and the ``/metrics`` cache counters moved by the run (hit ratio).

Target points (dense asset, 32 connections, nginx's too) are timed three times
(``--repeats``) and the run with the median req/s is kept, every run's req/s beside it.

Warm-up: one untimed wrk run per scenario before its points (``--warm``
seconds; 2 s at 32 connections for cache-hit scenarios so every worker holds
every segment); a first GET of each scenario must answer 200 or the scenario
is recorded as failed.  Targets missed (``targets.py``) are profiled
afterwards with py-spy on the workers under the same load (``bench/profiles``).

Writes ``bench/results/http.json``.  MB is 10^6 bytes.

    .venv/bin/python bench/http_load.py            # ~6 minutes
    .venv/bin/python bench/http_load.py --quick    # 32 connections only, 2 s points
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import metrics_scrape
from assets import Asset, demo_asset, make_dense, stage_media
from load_generator import LoadError, run_load, start_background_load
from machine import machine_info, read_load_average, tool_versions
from nginx_server import NginxServer, build_config
from origin_server import OriginConfig, OriginServer
from process_sampler import MachineTicks, RssSampler, read_cpu_split
from profiles import record_pids
from targets import (
    CACHE_OFF,
    CACHE_ON,
    NGINX,
    TARGET_ASSET,
    TARGET_CONNECTIONS,
    http_verdicts,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "http.json"
MB = 1_000_000
MIB = 1 << 20
CACHE_BYTES = 256 * MIB  # origin's default
CONCURRENCIES = (1, 32, 128)
SWEEP_CONNECTIONS = 32
SCHEMES = ("aes128", "cbcs", "cenc")
CONFIGS = (
    OriginConfig(CACHE_OFF, workers=2, cache_bytes=0),
    OriginConfig(CACHE_ON, workers=2, cache_bytes=CACHE_BYTES),
    OriginConfig("cache-off-1w", workers=1, cache_bytes=0),
)
KID = "{kid}"  # placeholder in a path, resolved per server (each has its own keystore)
PROFILE_SECONDS = 5
PROBE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of request on one server, measured at one or more concurrencies."""

    name: str  # "aes128-miss", "static", "playlist", …
    server: str  # "nginx" or an OriginConfig name
    asset: str
    workload: str  # rendition folder, "all", "media-playlists", "mpd", "key"
    kind: str  # "segment", "playlist", "mpd", "licence"
    scheme: str  # "static", "clear", "aes128", "cbcs", "cenc"
    cache: str  # "miss", "hit", "-"
    paths: tuple[str, ...]
    connections: tuple[int, ...]
    seconds: int
    segment_bytes: float | None = None  # mean source segment size, for segment workloads
    key_playlist: str = ""  # where a key-id placeholder in ``paths`` is read from


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: int  # points on the dense asset (the targets)
    short_seconds: int  # the demo asset and the sweep
    warm_seconds: int
    hit_warm_seconds: int
    concurrencies: tuple[int, ...]
    profile: bool
    target_repeats: int = 1  # timed runs of a target point (dense, c32); the median is kept


@dataclass
class ServerRecord:
    """What one server configuration was and the peak memory of its processes."""

    name: str
    workers: int
    cache_bytes: int
    command: list[str]
    roles: dict[int, str] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        workers = {str(p): r for p, r in self.rss.items() if self.roles.get(p) == "worker"}
        serving = {str(p): r for p, r in self.rss.items() if self.roles.get(p) != "licence"}
        licence = [r for p, r in self.rss.items() if self.roles.get(p) == "licence"]
        return {
            "workers": self.workers, "cache_bytes": self.cache_bytes, "command": self.command,
            "roles": {str(p): r for p, r in self.roles.items()},
            "worker_rss": workers or serving, "serving_rss": serving,
            "max_worker_rss_bytes": max((workers or serving).values(), default=None),
            "licence_rss_bytes": max(licence, default=None),
        }


# --- the plan ----------------------------------------------------------------------------------


def hls(asset: Asset, scheme: str, paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"/hls/{asset.name}/{scheme}/{path}" for path in paths)


def static(asset: Asset, paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"/{asset.name}/{path}" for path in paths)


def mean_bytes(asset: Asset, paths: Sequence[str]) -> float:
    return sum((asset.folder / p).stat().st_size for p in paths) / len(paths)


def segment_scenarios(asset: Asset, workload: str, segments: tuple[str, ...],
                      connections: tuple[int, ...], seconds: int,
                      with_hits: bool) -> list[Scenario]:
    """nginx static, clear, the three schemes missing (and hitting) the cache, one workload."""
    size = mean_bytes(asset, segments)

    def one(name: str, server: str, scheme: str, cache: str, paths: tuple[str, ...]) -> Scenario:
        return Scenario(name, server, asset.name, workload, "segment", scheme, cache, paths,
                        connections, seconds, size)

    plan = [
        one("static", NGINX, "static", "-", static(asset, segments)),
        one("clear", CACHE_OFF, "clear", "-", hls(asset, "clear", segments)),
        *(one(f"{s}-miss", CACHE_OFF, s, "miss", hls(asset, s, segments)) for s in SCHEMES),
    ]
    if with_hits:
        plan += [one(f"{s}-hit", CACHE_ON, s, "hit", hls(asset, s, segments)) for s in SCHEMES]
    return plan


def manifest_scenarios(asset: Asset, connections: tuple[int, ...], seconds: int,
                       licence: bool) -> list[Scenario]:
    """Rewritten media playlists (cbcs), the MPD (cenc), licence key requests."""
    playlists = tuple(f"/hls/{asset.name}/cbcs/{r}/index.m3u8" for r in asset.renditions)
    mpd = (f"/dash/{asset.name}/cenc/manifest.mpd",)
    plan = [
        Scenario("playlist", CACHE_ON, asset.name, "media-playlists", "playlist", "cbcs", "-",
                 playlists, connections, seconds),
        Scenario("mpd", CACHE_ON, asset.name, "mpd", "mpd", "cenc", "-", mpd, connections,
                 seconds),
        Scenario("playlist-uncached", CACHE_OFF, asset.name, "media-playlists", "playlist",
                 "cbcs", "-", playlists, (SWEEP_CONNECTIONS,), seconds),
        Scenario("mpd-uncached", CACHE_OFF, asset.name, "mpd", "mpd", "cenc", "-", mpd,
                 (SWEEP_CONNECTIONS,), seconds),
    ]
    if licence:
        source = f"/hls/{asset.name}/aes128/{asset.renditions[0]}/index.m3u8"
        plan.append(Scenario("licence", CACHE_ON, asset.name, "key", "licence", "aes128", "-",
                             (f"/license/aes128/{KID}",), connections, seconds,
                             key_playlist=source))
    return plan


def build_plan(dense: Asset, demo: Asset, settings: Settings) -> list[Scenario]:
    conc, sweep = settings.concurrencies, (SWEEP_CONNECTIONS,)
    video = dense.segments("video-1080p")
    plan = segment_scenarios(dense, "video-1080p", video, conc, settings.seconds, True)
    plan += manifest_scenarios(dense, conc, settings.seconds, licence=True)
    plan += segment_scenarios(demo, "all", demo.all_segments(), conc, settings.short_seconds,
                              True)
    plan += manifest_scenarios(demo, conc, settings.short_seconds, licence=False)
    for rendition in demo.renditions:  # the cost sweep; dense video-1080p is in the plan above
        plan += segment_scenarios(demo, rendition, demo.segments(rendition), sweep,
                                  settings.short_seconds, False)
    scaling = next(s for s in plan if (s.asset, s.name) == (dense.name, "aes128-miss"))
    plan.append(replace(scaling, server="cache-off-1w", connections=sweep))
    return plan


# --- running it --------------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def resolve_paths(base: str, scenario: Scenario) -> tuple[str, ...]:
    """Fill the key-id placeholder from the server's own AES-128 playlist."""
    if not any(KID in p for p in scenario.paths):
        return scenario.paths
    status, body = fetch(base + scenario.key_playlist)
    found = re.search(rb"/license/aes128/([0-9a-f]{32})", body)
    if status != 200 or found is None:
        raise LoadError(f"no AES-128 key id in the {scenario.asset} playlist ({status})")
    return tuple(p.replace(KID, found.group(1).decode()) for p in scenario.paths)


def label(scenario: Scenario, connections: int) -> str:
    return (f"{scenario.server} {scenario.asset} {scenario.name} {scenario.workload} "
            f"c{connections}")


def measure(base: str, scenario: Scenario, paths: tuple[str, ...], connections: int,
            all_pids: list[int], serving_pids: list[int], metrics: bool) -> dict[str, Any]:
    """One timed point: wrk, with CPU, memory and cache counters around it."""
    before = metrics_scrape.scrape(base) if metrics else None
    load = read_load_average()
    ticks, (user, system) = MachineTicks.read(), read_cpu_split(all_pids)
    with RssSampler(serving_pids) as rss:
        result = run_load(base, paths, connections, scenario.seconds)
    user_after, system_after = read_cpu_split(all_pids)
    server_user, server_system = user_after - user, system_after - system
    server_cpu = server_user + server_system
    busy = MachineTicks.read().busy_cpu_seconds_since(ticks)
    after = metrics_scrape.scrape(base) if metrics else None
    delta = metrics_scrape.difference(before, after)
    requests = int(result.summary["requests"])
    latency = {k: v / 1000 for k, v in result.summary["latency_us"].items()}
    command = [("PATHS" if part.endswith(".txt") else part) for part in result.command]
    return {
        "scenario": scenario.name,
        **{k: v for k, v in asdict(scenario).items() if k not in ("name", "paths", "connections")},
        "connections": connections, "paths": len(paths), "example_path": paths[0],
        "requests": requests, "rps": result.requests_per_second,
        "mbps": result.megabytes_per_second,
        "bytes_per_response": result.summary["bytes"] / requests if requests else None,
        "latency_ms": latency, "errors": result.errors, "errors_detail": result.summary["errors"],
        "server_cpu_s": round(server_cpu, 3), "server_user_s": round(server_user, 3),
        "server_system_s": round(server_system, 3),
        "client_cpu_s": round(result.client_cpu_seconds, 3),
        "machine_busy_cpu_s": round(busy, 3),
        "foreign_cpu_s": round(max(0.0, busy - server_cpu - result.client_cpu_seconds), 3),
        "cpu_us_per_request": server_cpu / requests * 1e6 if requests else None,
        "load_average": load, "max_rss": {str(p): r for p, r in rss.max_rss.items()},
        "cache_delta": delta,
        "cache_hit_ratio": metrics_scrape.cache_hit_ratios(
            delta, "manifest" if scenario.kind in ("playlist", "mpd") else "segment"),
        "wrk_command": command, "wrk": result.summary,
    }


def measure_point(base: str, scenario: Scenario, paths: tuple[str, ...], connections: int,
                  all_pids: list[int], serving_pids: list[int], metrics: bool,
                  settings: Settings) -> dict[str, Any]:
    """A point; a target point (dense asset, 32 connections) is timed
    ``settings.target_repeats`` times, nginx's as much as ours, and the run with the
    median req/s is the point (every run's req/s kept in ``repeats_rps``): one 4 s run
    moves by ±6 % on this machine, enough to flip a ratio near its bar."""
    repeats = (settings.target_repeats if scenario.asset == TARGET_ASSET
               and connections == TARGET_CONNECTIONS else 1)
    runs = sorted((measure(base, scenario, paths, connections, all_pids, serving_pids, metrics)
                   for _ in range(repeats)), key=lambda point: point["rps"])
    point = runs[len(runs) // 2]
    point["repeats_rps"] = [run["rps"] for run in runs]
    point["max_rss"] = {pid: max(run["max_rss"].get(pid, 0) for run in runs)
                        for pid in {pid for run in runs for pid in run["max_rss"]}}
    point["errors"] = max(run["errors"] for run in runs)
    return point


def run_scenario(base: str, scenario: Scenario, pids: Callable[[], tuple[list[int], list[int]]],
                 settings: Settings, metrics: bool, rss: dict[int, int]) -> list[dict[str, Any]]:
    """Probe, warm up, then one point per concurrency; failures become recorded points."""
    try:
        paths = resolve_paths(base, scenario)
        status, _ = fetch(base + paths[0])
        if status != 200:
            raise LoadError(f"GET {paths[0]} answered {status}")
        warm = settings.hit_warm_seconds if scenario.cache == "hit" else settings.warm_seconds
        if warm:
            run_load(base, paths, SWEEP_CONNECTIONS, warm)
    except (LoadError, OSError) as error:
        print(f"  {label(scenario, 0)}: FAILED {error}", flush=True)
        return [{"scenario": scenario.name,
                 **{k: v for k, v in asdict(scenario).items() if k not in ("name", "paths")},
                 "failed": str(error)}]
    points = []
    all_pids, serving = pids()
    for connections in scenario.connections:
        point = measure_point(base, scenario, paths, connections, all_pids, serving, metrics,
                              settings)
        for pid, peak in point["max_rss"].items():
            rss[int(pid)] = max(rss.get(int(pid), 0), peak)
        hit = point["cache_hit_ratio"]
        print(f"  {label(scenario, connections)}: {point['rps']:,.0f} req/s, "
              f"{point['mbps']:,.0f} MB/s, p50 {point['latency_ms']['p50']:.1f} ms, "
              f"p99 {point['latency_ms']['p99']:.1f} ms, "
              f"{point['cpu_us_per_request'] or 0:,.0f} CPU µs/req"
              + (f", errors {point['errors']}" if point["errors"] else "")
              + (f", hit {hit}" if hit else ""), flush=True)
        points.append(point)
    return points


def run_origin_config(config: OriginConfig, plan: list[Scenario], media: Path, state: Path,
                      settings: Settings, records: dict[str, ServerRecord]) -> list[dict[str, Any]]:
    scenarios = [s for s in plan if s.server == config.name]
    if not scenarios:
        return []
    print(f"[http] origin serve {' '.join(config.flags())} ({config.name})", flush=True)
    points: list[dict[str, Any]] = []
    with OriginServer(config, media, state / config.name) as server:
        shown = {sys.executable: "python", str(media): "MEDIA",
                 str(state / config.name): "STATE"}
        record = records.setdefault(config.name, ServerRecord(
            config.name, config.workers, config.cache_bytes,
            [shown.get(part, part) for part in server.command()]))
        workers = server.worker_pids()
        for pid in server.pids():
            role = "licence" if pid not in server.http_pids() else (
                "worker" if pid in workers else "main")
            record.roles[pid] = role
        has_metrics = metrics_scrape.scrape(server.base) is not None

        def pids() -> tuple[list[int], list[int]]:
            return server.pids(), server.http_pids()

        for scenario in scenarios:
            points += run_scenario(server.base, scenario, pids, settings, has_metrics, record.rss)
    return points


def run_nginx(plan: list[Scenario], media: Path, settings: Settings,
              records: dict[str, ServerRecord]) -> list[dict[str, Any]]:
    print("[http] nginx (static files, sendfile, 2 workers)", flush=True)
    points: list[dict[str, Any]] = []
    with NginxServer(media) as nginx:
        record = records.setdefault(NGINX, ServerRecord(NGINX, 2, 0, ["nginx", "-c", "CONF"]))
        record.roles = dict.fromkeys(nginx.pids()[1:], "worker") | {nginx.pids()[0]: "main"}

        def pids() -> tuple[list[int], list[int]]:
            return nginx.pids(), nginx.pids()

        for scenario in (s for s in plan if s.server == NGINX):
            points += run_scenario(nginx.base, scenario, pids, settings, False, record.rss)
    return points


def run_profiles(plan: list[Scenario], verdicts: list[Any], media: Path, state: Path,
                 settings: Settings) -> list[dict[str, Any]]:
    """For every missed or marginal HTTP target: py-spy on two workers under the same load,
    32 connections."""
    wanted = {v.profile for v in verdicts if v.profiled and v.profile
              and v.profile.startswith("http-")}
    if wanted & {f"http-{s}-{c}" for s in SCHEMES for c in ("miss", "hit")}:
        wanted.add("http-clear")  # what serving the bytes costs without any crypto
    chosen = [
        next(s for s in plan if f"http-{s.name}" == name and s.asset == "dense"
             and s.server in (CACHE_OFF, CACHE_ON))
        for name in sorted(wanted)
    ]
    profiles = []
    for config in CONFIGS:
        todo = [s for s in chosen if s.server == config.name]
        if not todo:
            continue
        with OriginServer(config, media, state / f"{config.name}-profile") as server:
            for scenario in todo:
                name = f"http-{scenario.name}"
                print(f"[profile] {name}: py-spy on the workers of {config.name}, "
                      f"{PROFILE_SECONDS} s under c{SWEEP_CONNECTIONS}", flush=True)
                paths = resolve_paths(server.base, scenario)
                if scenario.cache == "hit":
                    run_load(server.base, paths, SWEEP_CONNECTIONS, settings.hit_warm_seconds)
                # the licence module answers licence requests: profile it too, right after
                targets = [(name, server.worker_pids())]
                if scenario.kind == "licence":
                    module = [p for p in server.pids() if p not in server.http_pids()]
                    targets.append((f"{name}-module", module[:1]))
                seconds = PROFILE_SECONDS * len(targets) + 3
                with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
                    handle.write("\n".join(paths) + "\n")
                    handle.flush()
                    load = start_background_load(server.base, Path(handle.name),
                                                 SWEEP_CONNECTIONS, seconds)
                    try:
                        for target, pids in targets:
                            profile = record_pids(target, pids, PROFILE_SECONDS)
                            profiles.append(profile | {"scenario": scenario.name,
                                                       "server": config.name})
                    finally:
                        try:
                            load.communicate(timeout=seconds + 40)
                        except subprocess.TimeoutExpired:
                            load.kill()
                            load.communicate()
    return profiles


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTTP load benchmark: origin vs nginx")
    parser.add_argument("--quick", action="store_true",
                        help="32 connections only, 2 s points, no profiles")
    parser.add_argument("--seconds", type=int, default=4, help="seconds per dense-asset point")
    parser.add_argument("--short-seconds", type=int, default=3,
                        help="seconds per demo-asset and sweep point")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each target point (median kept)")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy on misses")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = (
        Settings(2, 2, 1, 2, (SWEEP_CONNECTIONS,), profile=False) if args.quick else
        Settings(args.seconds, args.short_seconds, 1, 2, CONCURRENCIES, not args.no_profile,
                 args.repeats)
    )
    started = time.monotonic()
    records: dict[str, ServerRecord] = {}
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        media, state = Path(tmp) / "media", Path(tmp) / "state"
        dense, demo = stage_media(media, (make_dense(), demo_asset()))
        plan = build_plan(dense, demo, settings)
        total = sum(len(s.connections) for s in plan)
        print(f"[http] {len(plan)} scenarios, {total} points", flush=True)
        points += run_nginx(plan, media, settings, records)
        for config in CONFIGS:
            points += run_origin_config(config, plan, media, state, settings, records)
        document: dict[str, Any] = {
            "benchmark": "HTTP load: origin serve vs nginx static files, wrk on loopback",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "unit": "req/s; MB/s of response bytes (headers included), MB = 10^6 bytes; "
                    "latency ms; CPU seconds",
            "settings": asdict(settings) | {"cache_bytes": CACHE_BYTES,
                                            "sweep_connections": SWEEP_CONNECTIONS},
            "machine": machine_info(None),
            "versions": tool_versions(),
            "nginx_config": build_config(Path("PREFIX"), Path("MEDIA"), 0, ""),
            "assets": {a.name: {r: {"segments": len(a.segments(r)),
                                    "mean_segment_bytes": a.mean_segment_bytes(r)}
                                for r in a.renditions} for a in (dense, demo)},
            "servers": {name: r.document() for name, r in records.items()},
            "points": points,
            "profiles": [],
        }
        verdicts = http_verdicts(document)
        if settings.profile:
            document["profiles"] = run_profiles(plan, verdicts, media, state, settings)
    document["seconds_taken"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    for verdict in verdicts:
        print(f"  {verdict.mark} {verdict.target}: {verdict.figure}", flush=True)
    print(f"wrote {args.out} ({document['seconds_taken']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
