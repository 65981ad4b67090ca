"""Benchmark: Common Encryption of whole fragments, ``cbcs`` and ``cenc``, vs openssl speed.

Measures, single-threaded, MB/s of SEGMENT bytes (the whole buffer handed to
the encryptor, clear bytes included) for

- ``origin.crypto.cbcs.encrypt_cbcs``: video-like layout (samples of 5–60 KB,
  one subsample each with ~30 clear bytes, pattern 1:9) and audio-like layout
  (~400-byte samples, full-sample, pattern 0:0);
- ``origin.crypto.cenc.encrypt_cenc`` (hybrid: per-sample CTR for samples of
  16 KiB and more, batched ECB keystream for the rest) and its two pure
  strategies ``encrypt_cenc_batched`` and ``encrypt_cenc_per_sample`` on the
  same layouts;
- ``encrypt_cbcs`` on audio with lockstep disabled (one CBC call per chain),
  to show what the lockstep path buys;

for 1 MiB and 4 MiB buffers, beside ``openssl speed -evp aes-128-cbc`` and
``-evp aes-128-ctr`` (the raw cipher ceiling, 16 KiB blocks) and the same
ciphers through ``cryptography`` on the whole buffer in one call (the
OpenSSL the origin actually links, which may differ from the CLI's).  cbcs 1:9 only
encrypts ~1/10 of the bytes, so its segment-byte rate can exceed the raw
cipher speed; the "AES MB/s" column counts only bytes that went through AES.

Prints a Markdown table and writes ``bench/results/protect_cipher.json``.
MB means 10^6 bytes.

    .venv/bin/python bench/protect_cipher.py            # ~30 s
    .venv/bin/python bench/protect_cipher.py --quick    # ~10 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from machine import machine_info, run_openssl_speed

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from origin.crypto import cbcs  # noqa: E402
from origin.crypto.cbcs import encrypt_cbcs  # noqa: E402
from origin.crypto.cenc import (  # noqa: E402
    encrypt_cenc,
    encrypt_cenc_batched,
    encrypt_cenc_per_sample,
)
from origin.crypto.subsample import SampleCrypto, Subsample  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "protect_cipher.json"
KIB = 1024
MIB = 1024 * KIB
MB = 1_000_000
SIZES = (1 * MIB, 4 * MIB)
OPENSSL_BYTES = 16384
TARGET_MBPS = 1000.0  # cbcs video, segment bytes per second per core

Run = Callable[[bytearray], None]


@dataclass(frozen=True, slots=True)
class Settings:
    batch_seconds: float  # target length of one timed batch
    batches: int  # best of this many
    openssl_seconds: int


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    layout: str
    size: int
    samples: int
    aes_bytes: int  # bytes that actually go through AES per call
    mbps: float  # segment bytes
    reps: int

    @property
    def aes_mbps(self) -> float:
        return self.mbps * self.aes_bytes / self.size


def video_layout(size: int, rng: random.Random) -> list[SampleCrypto]:
    """Samples of 5–60 KB back to back, each (20–40 clear, rest protected)."""
    samples: list[SampleCrypto] = []
    pos = 0
    while pos < size:
        n = min(rng.randint(5_000, 60_000), size - pos)
        clear = min(rng.randint(20, 40), n)
        samples.append(SampleCrypto(pos, n, (Subsample(clear, n - clear),)))
        pos += n
    return samples


def audio_layout(size: int, rng: random.Random) -> list[SampleCrypto]:
    """Full-sample AAC-like frames of 300–500 bytes back to back."""
    samples: list[SampleCrypto] = []
    pos = 0
    while pos < size:
        n = min(rng.randint(300, 500), size - pos)
        samples.append(SampleCrypto(pos, n))
        pos += n
    return samples


def cbcs_aes_bytes(samples: Sequence[SampleCrypto], crypt: int, skip: int) -> int:
    """Bytes encrypted by cbcs (whole blocks, pattern on subsample ranges)."""
    total = 0
    for s in samples:
        if not s.subsamples:
            total += s.size // 16 * 16
            continue
        for sub in s.subsamples:
            period = 16 * (crypt + skip) if skip else 16
            per = crypt if skip else 1
            full, rem = divmod(sub.protected, period)
            total += 16 * (full * per + min(per, rem // 16))
    return total


def cenc_aes_bytes(samples: Sequence[SampleCrypto]) -> int:
    return sum(
        sum(sub.protected for sub in s.subsamples) if s.subsamples else s.size for s in samples
    )


@contextmanager
def lockstep_disabled() -> Iterator[None]:
    """Force one CBC call per chain in ``encrypt_cbcs`` (for comparison only)."""
    saved = cbcs._lockstep_split
    cbcs._lockstep_split = lambda nblocks, slot_cost: len(nblocks)  # every chain runs alone
    try:
        yield
    finally:
        cbcs._lockstep_split = saved


def time_batch(run: Run, buf: bytearray, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        run(buf)
    return time.perf_counter() - start


def measure_all(runs: Sequence[Run], size: int, settings: Settings) -> list[tuple[float, int]]:
    """Best-of-N segment MB/s of each run (in place on one buffer), and reps per batch.

    The batches go round-robin over the runs, so a noisy stretch on a shared
    machine hits every run rather than one.
    """
    buf = bytearray(os.urandom(size))
    reps = []
    for run in runs:
        once = min(time_batch(run, buf, 1) for _ in range(3))
        reps.append(max(1, round(settings.batch_seconds / max(once, 1e-9))))
    best = [float("inf")] * len(runs)
    for _ in range(settings.batches):
        for i, run in enumerate(runs):
            best[i] = min(best[i], time_batch(run, buf, reps[i]))
    return [(size * n / t / MB, n) for n, t in zip(reps, best, strict=True)]


def openssl_mbps(openssl: str | None, cipher: str, seconds: int) -> float | None:
    """MB/s of ``openssl speed -evp cipher`` at 16 KiB blocks; None if unavailable."""
    return run_openssl_speed(openssl, OPENSSL_BYTES, seconds, cipher) if openssl else None


def cases(size: int) -> list[tuple[str, str, list[SampleCrypto], int, Run]]:
    """(name, layout, samples, AES bytes per call, run) for one buffer size."""
    rng = random.Random(size)
    key, iv = os.urandom(16), os.urandom(16)
    video, audio = video_layout(size, rng), audio_layout(size, rng)
    vivs = [os.urandom(8) for _ in video]
    aivs = [os.urandom(8) for _ in audio]

    def cbcs_video(buf: bytearray) -> None:
        encrypt_cbcs(key, iv, buf, video, crypt=1, skip=9)

    def cbcs_audio(buf: bytearray) -> None:
        encrypt_cbcs(key, iv, buf, audio, crypt=0, skip=0)

    def cbcs_audio_no_lockstep(buf: bytearray) -> None:
        with lockstep_disabled():
            encrypt_cbcs(key, iv, buf, audio, crypt=0, skip=0)

    def cenc_video(buf: bytearray) -> None:
        encrypt_cenc(key, buf, video, vivs)

    def cenc_audio(buf: bytearray) -> None:
        encrypt_cenc(key, buf, audio, aivs)

    def cenc_b_video(buf: bytearray) -> None:
        encrypt_cenc_batched(key, buf, video, vivs)

    def cenc_b_audio(buf: bytearray) -> None:
        encrypt_cenc_batched(key, buf, audio, aivs)

    aes = algorithms.AES(key)
    out = bytearray(size + 16)

    def raw_cbc(buf: bytearray) -> None:
        Cipher(aes, modes.CBC(iv)).encryptor().update_into(buf, out)

    def raw_ctr(buf: bytearray) -> None:
        Cipher(aes, modes.CTR(iv)).encryptor().update_into(buf, out)

    def cenc_ps_video(buf: bytearray) -> None:
        encrypt_cenc_per_sample(key, buf, video, vivs)

    def cenc_ps_audio(buf: bytearray) -> None:
        encrypt_cenc_per_sample(key, buf, audio, aivs)

    return [
        ("cbcs 1:9", "video", video, cbcs_aes_bytes(video, 1, 9), cbcs_video),
        ("cbcs full", "audio", audio, cbcs_aes_bytes(audio, 0, 0), cbcs_audio),
        ("cbcs full, no lockstep", "audio", audio, cbcs_aes_bytes(audio, 0, 0),
         cbcs_audio_no_lockstep),
        ("cenc (hybrid)", "video", video, cenc_aes_bytes(video), cenc_video),
        ("cenc (hybrid)", "audio", audio, cenc_aes_bytes(audio), cenc_audio),
        ("cenc batched ECB", "video", video, cenc_aes_bytes(video), cenc_b_video),
        ("cenc batched ECB", "audio", audio, cenc_aes_bytes(audio), cenc_b_audio),
        ("cenc CTR per sample", "video", video, cenc_aes_bytes(video), cenc_ps_video),
        ("cenc CTR per sample", "audio", audio, cenc_aes_bytes(audio), cenc_ps_audio),
        ("cryptography AES-128-CBC, one call", "-", [], size, raw_cbc),
        ("cryptography AES-128-CTR, one call", "-", [], size, raw_ctr),
    ]  # fmt: skip


def render(rows: Sequence[Row], ceilings: dict[str, float | None]) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    lines = [
        "| cipher | layout | buffer | samples | segment MB/s | AES MB/s | AES bytes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        share = f"{100 * r.aes_bytes / r.size:.0f}%"
        lines.append(
            f"| {r.name} | {r.layout} | {r.size // MIB} MiB | {r.samples} | {num(r.mbps)} "
            f"| {num(r.aes_mbps)} | {share} |"
        )
    for cipher, rate in ceilings.items():
        lines.append(f"| openssl speed -evp {cipher} | 16 KiB | | | {num(rate)} | {num(rate)} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cbcs/cenc fragment encryption benchmark")
    parser.add_argument("--quick", action="store_true", help="shorter batches")
    parser.add_argument("--openssl", default="openssl", help="openssl CLI (default: openssl)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS})")
    args = parser.parse_args(argv)
    settings = (
        Settings(batch_seconds=0.05, batches=3, openssl_seconds=1)
        if args.quick
        else Settings(batch_seconds=0.15, batches=8, openssl_seconds=2)
    )
    openssl = shutil.which(args.openssl)
    if openssl is None:
        print(f"warning: {args.openssl} not found; no openssl ceiling", file=sys.stderr)

    rows: list[Row] = []
    for size in SIZES:
        todo = cases(size)
        results = measure_all([case[4] for case in todo], size, settings)
        for (name, layout, samples, aes_bytes, _), (mbps, reps) in zip(todo, results, strict=True):
            rows.append(Row(name, layout, size, len(samples), aes_bytes, mbps, reps))
    ceilings = {
        cipher: openssl_mbps(openssl, cipher, settings.openssl_seconds)
        for cipher in ("aes-128-cbc", "aes-128-ctr")
    }

    import numpy

    info = machine_info(openssl) | {"numpy": numpy.__version__}
    print(
        f"{info['cpu_model']}, Python {info['python']}, numpy {info['numpy']}, "
        f"{info['cryptography_openssl']} (cryptography {info['cryptography']})\n"
    )
    print(render(rows, ceilings))
    video_cbcs = [r for r in rows if r.name == "cbcs 1:9"]
    worst = min(r.mbps for r in video_cbcs)
    verdict = "meets" if worst >= TARGET_MBPS else "MISSES"
    print(
        f"\ncbcs video: {worst:,.0f} MB/s worst case, {verdict} the {TARGET_MBPS:,.0f} MB/s target"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "cbcs/cenc in-place fragment encryption: origin.crypto.{cbcs,cenc}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "MB/s of segment bytes (clear bytes included), MB = 10^6 bytes",
        "settings": asdict(settings),
        "machine": info,
        "openssl_speed_16k_mbps": {
            k: None if v is None else round(v, 1) for k, v in ceilings.items()
        },
        "target_cbcs_video_mbps": TARGET_MBPS,
        "results": [
            {**asdict(r), "mbps": round(r.mbps, 1), "aes_mbps": round(r.aes_mbps, 1)} for r in rows
        ],
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
