"""Benchmark: MPEG-TS SAMPLE-AES on request beside AES-128 whole-segment, same segments, one run.

Both run in process, single-threaded, best of several passes over the demo's
MPEG-TS rendition (``media/demo/ts-360p``) and a denser 720p TS rendition made
once with ffmpeg (``bench/.cache``).  SAMPLE-AES parses the transport stream,
walks NAL units and ADTS frames and re-packetises; AES-128 is one OpenSSL
call per segment — the ratio shows what the per-sample work costs.

    .venv/bin/python bench/sample_aes.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import MB, machine_info

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "sample_aes.json"
KEY, IV = bytes(range(16)), bytes(range(16, 32))

sys.path.insert(0, str(ROOT))
from origin.container.sample_aes import protect_ts_segment  # noqa: E402
from origin.crypto.aes128 import encrypt_segment  # noqa: E402


def make_ts_720p(folder: Path) -> Path:
    if not (folder / "index.m3u8").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=20,noise=alls=8:allf=t",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=20",
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-g", "50",
             "-sc_threshold", "0", "-c:a", "aac", "-f", "hls", "-hls_time", "2",
             "-hls_playlist_type", "vod", "-hls_segment_filename", str(folder / "seg-%05d.ts"),
             str(folder / "index.m3u8")], check=True, timeout=600)
    return folder


def best(passes: int, run: object) -> float:
    assert callable(run)
    run()
    fastest = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def main() -> int:
    rows = []
    for name, folder in (("demo 360p", ROOT / "media/demo/ts-360p"),
                         ("720p 4 Mbit/s", make_ts_720p(CACHE / "ts-720p"))):
        segments = [p.read_bytes() for p in sorted(folder.glob("seg-*.ts"))]
        total = sum(map(len, segments))
        sample_aes = best(5, lambda s=segments: [protect_ts_segment(x, KEY, IV) for x in s])
        aes128 = best(5, lambda s=segments: [encrypt_segment(KEY, IV, x) for x in s])
        rows.append({"rendition": name, "segments": len(segments),
                     "mean_segment_kb": round(total / len(segments) / 1000),
                     "sample_aes_mbps": round(total / sample_aes / MB, 1),
                     "aes128_mbps": round(total / aes128 / MB, 1),
                     "ratio": round(aes128 / sample_aes, 3)})
    print("| rendition | mean segment | SAMPLE-AES MB/s | AES-128 MB/s | SAMPLE-AES ÷ AES-128 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['rendition']} | {r['mean_segment_kb']} KB | {r['sample_aes_mbps']:.0f} | "
              f"{r['aes128_mbps']:.0f} | {r['ratio']:.2f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "MPEG-TS SAMPLE-AES vs AES-128 whole segment, in process",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "MB/s of segment bytes, MB = 10^6 bytes, single-threaded",
        "machine": machine_info(None), "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
