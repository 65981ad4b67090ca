"""Benchmark: cbcs/cenc protection of real segments, origin vs Shaka Packager, in one run.

For each rendition — 360p (~400 kbit/s) and 720p (~1 Mbit/s) like the demo's,
and the video of the HTTP benchmark's dense asset (``assets.make_dense``: 1080p,
noisy picture, ~10 Mbit/s, ~2.5 MB segments), all H.264 with 2 s segments and
long enough (300 s, 120 s, 20 s: 15–26 MB each) that per-byte rates are not
start-up noise, made here with ffmpeg once and cached in ``bench/.cache`` —
and each scheme:

- origin: ``protect_fragment`` over every media segment of the rendition, in
  process, single-threaded (the best of several passes) — parse, NAL
  subsample map, cipher, rebuilt ``moof``;
- Shaka Packager: ``packager`` encrypting the same rendition (init + the same
  segments joined into one fMP4) with the same key, best wall time of several
  runs.  Two figures: the whole run (start-up included), and the marginal
  rate — the least-squares slope of time over input bytes across runs on the
  first segment, half the rendition and all of it — which leaves the
  start-up out and is the fair per-byte comparison;
- the ceiling: ``openssl speed -evp aes-128-cbc`` / ``aes-128-ctr``.

Throughput is segment bytes in per second.  cbcs video encrypts about a
tenth of its bytes (1:9 pattern), so it can exceed the raw cipher speed.
Writes ``bench/results/protect.json`` and prints a Markdown table.

    .venv/bin/python bench/protect.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from assets import DENSE_RUNG, make_dense
from machine import MB, machine_info, run_openssl_speed

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "protect.json"
KID = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")

sys.path.insert(0, str(ROOT))
from origin.container.init_segment import parse_init  # noqa: E402
from origin.crypto.key import ContentKey  # noqa: E402
from origin.crypto.subsample import CommonScheme  # noqa: E402
from origin.packaging.segments import protect_fragment  # noqa: E402
from tests.tools.packager import PACKAGER  # noqa: E402


@dataclass(frozen=True, slots=True)
class Rendition:
    name: str
    folder: Path

    @property
    def init(self) -> bytes:
        return (self.folder / "init.mp4").read_bytes()

    @property
    def segments(self) -> list[tuple[str, bytes]]:
        return [(p.name, p.read_bytes()) for p in sorted(self.folder.glob("seg-*.m4s"))]


@dataclass(frozen=True, slots=True)
class Row:
    rendition: str
    scheme: str
    segment_bytes: int
    mean_segment_kb: float
    origin_mbps: float
    shaka_mbps: float
    shaka_marginal_mbps: float
    openssl_mbps: float | None

    @property
    def vs_shaka(self) -> float:
        return self.origin_mbps / self.shaka_mbps

    @property
    def vs_shaka_marginal(self) -> float:
        return self.origin_mbps / self.shaka_marginal_mbps


def make_rendition(folder: Path, *, size: str, bitrate: str, seconds: int,
                   noise: int = 0) -> Path:
    """An H.264 fMP4 HLS rendition with 2 s segments, made once with ffmpeg."""
    if (folder / "index.m3u8").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = f"testsrc2=size={size}:rate=25:duration={seconds}"
    if noise:
        source += f",noise=alls={noise}:allf=t"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", source,
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-maxrate", bitrate,
         "-bufsize", "2M" if not noise else "16M", "-g", "50", "-keyint_min", "50",
         "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "2",
         "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
         "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", str(folder / "seg-%05d.m4s"), str(folder / "index.m3u8")],
        check=True, timeout=900)
    return folder


def time_origin(rendition: Rendition, scheme: CommonScheme, passes: int) -> float:
    """Best seconds to protect every segment of the rendition once."""
    info = parse_init(rendition.init)
    key = ContentKey(KID, KEY)
    segments = rendition.segments
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for name, data in segments:
            protect_fragment(data, info, scheme, key, name)
        best = min(best, time.perf_counter() - start)
    return best


def time_shaka(rendition: Rendition, scheme: CommonScheme, work: Path, runs: int,
               segments: int | None = None) -> float:
    """Best wall seconds for Shaka Packager to encrypt the joined rendition (or its start)."""
    joined = work / f"{rendition.name}-{segments}.mp4"
    chosen = rendition.segments[:segments]
    joined.write_bytes(rendition.init + b"".join(d for _, d in chosen))
    best = float("inf")
    for _ in range(runs):
        out = work / f"{rendition.name}-{scheme.value}.mp4"
        start = time.perf_counter()
        subprocess.run(
            [str(PACKAGER), f"in={joined},stream=video,output={out}",
             "--enable_raw_key_encryption", "--keys", f"label=:key_id={KID.hex()}:key={KEY.hex()}",
             "--protection_scheme", scheme.value, "--clear_lead", "0"],
            check=True, capture_output=True, timeout=300)
        best = min(best, time.perf_counter() - start)
    return best


def least_squares_slope(points: list[tuple[int, float]]) -> float:
    """Seconds per byte: the slope of the best line through (bytes, seconds)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return max(num / den, 1e-12)


def render(rows: list[Row]) -> str:
    lines = ["| rendition | scheme | mean segment | origin MB/s | Shaka MB/s (whole run) | "
             "Shaka MB/s (marginal) | × Shaka (marginal) | openssl MB/s (ceiling) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ceiling = "n/a" if r.openssl_mbps is None else f"{r.openssl_mbps:.0f}"
        lines.append(f"| {r.rendition} | {r.scheme} | {r.mean_segment_kb:.0f} KB | "
                     f"{r.origin_mbps:.0f} | {r.shaka_mbps:.0f} | {r.shaka_marginal_mbps:.0f} | "
                     f"{r.vs_shaka_marginal:.1f} | {ceiling} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer passes and runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    passes, runs = (3, 2) if args.quick else (8, 4)
    print("preparing the renditions (ffmpeg, once; cached in bench/.cache)...", flush=True)
    renditions = [
        Rendition("360p", make_rendition(CACHE / "360p-300s", size="640x360", bitrate="400k",
                                         seconds=300)),
        Rendition("720p", make_rendition(CACHE / "720p-120s", size="1280x720", bitrate="1M",
                                         seconds=120)),
        Rendition("1080p-dense", make_dense().folder / DENSE_RUNG.folder),
    ]
    openssl = shutil.which("openssl")
    ceilings = {
        CommonScheme.CBCS: run_openssl_speed(openssl, 16384, 1, "aes-128-cbc") if openssl else None,
        CommonScheme.CENC: run_openssl_speed(openssl, 16384, 1, "aes-128-ctr") if openssl else None,
    }
    rows = []
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)
    for rendition in renditions:
        segments = rendition.segments
        total = sum(len(d) for _, d in segments)
        for scheme in CommonScheme:
            print(f"  protect {rendition.name} {scheme.value} ...", flush=True)
            ours = time_origin(rendition, scheme, passes)
            shaka = time_shaka(rendition, scheme, work, runs)
            points = [(total, shaka)]
            for count in (1, len(segments) // 2):
                size = sum(len(d) for _, d in segments[:count])
                points.append((size, time_shaka(rendition, scheme, work, runs, segments=count)))
            joined_size = len(rendition.init) + total
            marginal = 1 / least_squares_slope(points)
            rows.append(Row(rendition.name, scheme.value, total, total / len(segments) / 1000,
                            total / ours / MB, joined_size / shaka / MB, marginal / MB,
                            ceilings[scheme]))
    table = render(rows)
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "cbcs/cenc protection of fMP4 segments: origin vs Shaka Packager",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "MB/s of segment bytes, MB = 10^6 bytes, single-threaded",
        "machine": machine_info(openssl),
        "results": [asdict(r) | {"vs_shaka": round(r.vs_shaka, 2),
                                 "vs_shaka_marginal": round(r.vs_shaka_marginal, 2)}
                    for r in rows],
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
