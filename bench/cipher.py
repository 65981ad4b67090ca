"""Benchmark: segment ciphers by segment size, origin vs the openssl CLI, one run.

For each segment size from 64 KiB to 8 MiB, single-threaded, MB/s of segment
bytes for

- AES-128 whole segment (``METHOD=AES-128``):
  ``origin.crypto.aes128.encrypt_segment_into(key, iv, data, out)`` — AES-128-CBC
  with PKCS#7 from the buffer the source was read into into a reused output buffer,
  as ``produce_segment`` does (openssl speed reuses its buffers too);
- cbcs fragment protection: ``origin.crypto.cbcs.encrypt_cbcs`` in place on a
  video-like layout (samples of 5–60 KB, ~30 clear bytes each, 1:9 pattern —
  ``protect_cipher.video_layout``);
- cenc fragment protection: ``origin.crypto.cenc.encrypt_cenc`` on the same layout;

beside ``openssl speed -evp aes-128-cbc`` and ``-evp aes-128-ctr`` at the
same sizes (``-bytes``), the ceilings.  Ratios: AES-128 ÷ openssl CBC; cbcs
and cenc count the bytes that went through AES ("AES MB/s": a tenth of the
bytes for cbcs 1:9) ÷ openssl CBC / CTR.  Best of several batches; the
batches go round-robin over the ciphers so a noisy stretch hits all of them.

Prints a Markdown table and writes ``bench/results/cipher.json``.  MB means
10^6 bytes (openssl's own unit is 1000 bytes).

    .venv/bin/python bench/cipher.py            # full run, ~30 s
    .venv/bin/python bench/cipher.py --quick    # three sizes, ~8 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from machine import machine_info, run_openssl_speed
from protect_cipher import cbcs_aes_bytes, cenc_aes_bytes, video_layout

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from origin.crypto.aes128 import encrypt_segment_into, output_room  # noqa: E402
from origin.crypto.cbcs import encrypt_cbcs  # noqa: E402
from origin.crypto.cenc import encrypt_cenc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cipher.json"
KIB = 1024
MIB = 1024 * KIB
MB = 1_000_000
FULL_SIZES = (64 * KIB, 256 * KIB, 1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB)
QUICK_SIZES = (64 * KIB, 1 * MIB, 8 * MIB)
OPENSSL_FALLBACK_BYTES = 16384  # accepted by every openssl that has -bytes
CIPHERS = ("aes128", "cbcs", "cenc")

Run = Callable[[], object]


@dataclass(frozen=True, slots=True)
class Settings:
    """How long to measure."""

    sizes: tuple[int, ...]
    batch_seconds: float  # target length of one timed batch
    batches: int  # best of this many
    openssl_seconds: int


@dataclass(frozen=True, slots=True)
class Row:
    """One segment size's result."""

    size: int
    origin_mbps: float  # AES-128 whole segment
    cbcs_mbps: float  # segment bytes per second
    cbcs_aes_share: float  # fraction of the segment that goes through AES
    cenc_mbps: float
    cenc_aes_share: float
    reps: dict[str, int]
    openssl_mbps: float | None  # aes-128-cbc
    openssl_bytes: int | None  # the -bytes openssl ran with (differs if it refused `size`)
    openssl_ctr_mbps: float | None

    @property
    def ratio(self) -> float | None:
        """AES-128 whole segment ÷ openssl aes-128-cbc."""
        return self.origin_mbps / self.openssl_mbps if self.openssl_mbps else None

    @property
    def cbcs_aes_ratio(self) -> float | None:
        """Bytes through AES in cbcs per second ÷ openssl aes-128-cbc."""
        if not self.openssl_mbps:
            return None
        return self.cbcs_mbps * self.cbcs_aes_share / self.openssl_mbps

    @property
    def cenc_aes_ratio(self) -> float | None:
        """Bytes through AES in cenc per second ÷ openssl aes-128-ctr."""
        if not self.openssl_ctr_mbps:
            return None
        return self.cenc_mbps * self.cenc_aes_share / self.openssl_ctr_mbps


def time_batch(run: Run, reps: int) -> float:
    """Seconds for ``reps`` calls of ``run``."""
    start = time.perf_counter()
    for _ in range(reps):
        run()
    return time.perf_counter() - start


def cipher_runs(size: int) -> tuple[dict[str, Run], dict[str, float]]:
    """The three ciphers on one ``size``-byte segment, and the AES share of cbcs/cenc."""
    rng = random.Random(size)
    key, iv = os.urandom(16), os.urandom(16)
    data = os.urandom(size)
    buf = bytearray(data)
    plain = memoryview(bytearray(data))
    out = bytearray(output_room(size))
    layout = video_layout(size, rng)
    ivs = [os.urandom(8) for _ in layout]
    runs: dict[str, Run] = {
        "aes128": lambda: encrypt_segment_into(key, iv, plain, out),
        "cbcs": lambda: encrypt_cbcs(key, iv, buf, layout, crypt=1, skip=9),
        "cenc": lambda: encrypt_cenc(key, buf, layout, ivs),
    }
    shares = {
        "cbcs": cbcs_aes_bytes(layout, 1, 9) / size,
        "cenc": cenc_aes_bytes(layout) / size,
    }
    return runs, shares


def measure_origin(size: int, settings: Settings) -> tuple[dict[str, float], dict[str, int],
                                                            dict[str, float]]:
    """Best-of-N MB/s of each cipher at ``size``, reps per batch, and the AES shares."""
    runs, shares = cipher_runs(size)
    reps: dict[str, int] = {}
    for name, run in runs.items():
        once = min(time_batch(run, 1) for _ in range(3))
        reps[name] = max(1, round(settings.batch_seconds / max(once, 1e-9)))
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(settings.batches):
        for name, run in runs.items():
            best[name] = min(best[name], time_batch(run, reps[name]))
    rates = {name: size * reps[name] / best[name] / MB for name in runs}
    return rates, reps, shares


def measure_openssl(
    openssl: str | None, size: int, seconds: int, cipher: str
) -> tuple[float | None, int | None]:
    """openssl's MB/s at ``size``, falling back to 16 KiB if it refuses that size."""
    if openssl is None:
        return None, None
    for attempt in (size, OPENSSL_FALLBACK_BYTES):
        rate = run_openssl_speed(openssl, attempt, seconds, cipher)
        if rate is not None:
            return rate, attempt
    return None, None


def format_size(size: int) -> str:
    """64 KiB, 1 MiB, ..."""
    return f"{size // MIB} MiB" if size >= MIB and size % MIB == 0 else f"{size // KIB} KiB"


def format_number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_table(rows: Sequence[Row]) -> str:
    """The Markdown table."""
    lines = [
        "| size | AES-128 MB/s | openssl CBC MB/s | AES-128 ÷ openssl | cbcs MB/s "
        "| cbcs AES ÷ CBC | cenc MB/s | openssl CTR MB/s | cenc AES ÷ CTR |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        openssl = format_number(row.openssl_mbps, 0)
        if row.openssl_bytes not in (None, row.size):
            openssl += f" (at {row.openssl_bytes} B)"
        lines.append(
            f"| {format_size(row.size)} | {row.origin_mbps:.0f} | {openssl} "
            f"| {format_number(row.ratio, 2)} | {row.cbcs_mbps:.0f} "
            f"| {format_number(row.cbcs_aes_ratio, 2)} | {row.cenc_mbps:.0f} "
            f"| {format_number(row.openssl_ctr_mbps, 0)} | {format_number(row.cenc_aes_ratio, 2)} |"
        )
    return "\n".join(lines)


def rounded(row: Row) -> dict[str, object]:
    """A row for the JSON file, rates to 0.1 MB/s."""

    def cut(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return {
        **asdict(row),
        "origin_mbps": cut(row.origin_mbps, 1),
        "cbcs_mbps": cut(row.cbcs_mbps, 1),
        "cenc_mbps": cut(row.cenc_mbps, 1),
        "cbcs_aes_share": cut(row.cbcs_aes_share, 4),
        "cenc_aes_share": cut(row.cenc_aes_share, 4),
        "openssl_mbps": cut(row.openssl_mbps, 1),
        "openssl_ctr_mbps": cut(row.openssl_ctr_mbps, 1),
        "ratio": cut(row.ratio, 3),
        "cbcs_aes_ratio": cut(row.cbcs_aes_ratio, 3),
        "cenc_aes_ratio": cut(row.cenc_aes_ratio, 3),
    }


def write_results(
    path: Path, settings: Settings, info: dict[str, object], rows: Sequence[Row]
) -> None:
    """The JSON results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "segment ciphers by size: origin.crypto.aes128."
        "encrypt_segment_into (whole segment), encrypt_cbcs (1:9) and encrypt_cenc on "
        "a video layout; openssl speed aes-128-cbc / aes-128-ctr at the same sizes",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "MB/s of segment bytes, MB = 10^6 bytes, single-threaded",
        "settings": asdict(settings),
        "machine": info,
        "results": [rounded(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="segment cipher benchmark")
    parser.add_argument("--quick", action="store_true", help="three sizes, shorter batches")
    parser.add_argument("--openssl", default="openssl", help="openssl CLI (default: openssl)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = (
        Settings(QUICK_SIZES, batch_seconds=0.1, batches=3, openssl_seconds=1)
        if args.quick
        else Settings(FULL_SIZES, batch_seconds=0.3, batches=3, openssl_seconds=1)
    )
    openssl = shutil.which(args.openssl)
    if openssl is None:
        print(f"warning: {args.openssl} not found; openssl columns left empty", file=sys.stderr)
    rows: list[Row] = []
    for size in settings.sizes:
        print(f"  cipher {format_size(size)} ...", flush=True)
        rates, reps, shares = measure_origin(size, settings)
        cbc, cbc_bytes = measure_openssl(openssl, size, settings.openssl_seconds, "aes-128-cbc")
        ctr, _ = measure_openssl(openssl, size, settings.openssl_seconds, "aes-128-ctr")
        rows.append(Row(size, rates["aes128"], rates["cbcs"], shares["cbcs"], rates["cenc"],
                        shares["cenc"], reps, cbc, cbc_bytes, ctr))
    info = machine_info(openssl)
    header = (
        f"{info['cpu_model']}, Python {info['python']}, {info['openssl_cli']} (CLI), "
        f"{info['cryptography_openssl']} (cryptography {info['cryptography']})"
    )
    print(header + "\n")
    print(render_table(rows))
    write_results(args.out, settings, info, rows)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
