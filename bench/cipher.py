"""Benchmark: AES-128 whole-segment encryption, origin vs the openssl CLI.

Measures ``origin.crypto.aes128.encrypt_segment(key, iv, data)`` (AES-128-CBC
with PKCS#7 over one whole segment, output copied into a fresh ``bytes``) in
MB/s for several segment sizes, and runs ``openssl speed -evp aes-128-cbc``
at the same sizes as the ceiling to compare with.  Both are single-threaded.

Prints a Markdown table and writes ``bench/results/cipher.json``.
MB means 10^6 bytes throughout (openssl's own unit is 1000 bytes).

    .venv/bin/python bench/cipher.py            # full run, ~20 s
    .venv/bin/python bench/cipher.py --quick    # three sizes, ~5 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from machine import machine_info, run_openssl_speed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "cipher.json"
KIB = 1024
MIB = 1024 * KIB
MB = 1_000_000
FULL_SIZES = (64 * KIB, 256 * KIB, 1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB)
QUICK_SIZES = (64 * KIB, 1 * MIB, 8 * MIB)
OPENSSL_FALLBACK_BYTES = 16384  # accepted by every openssl that has -bytes

Encrypt = Callable[[bytes, bytes, bytes], bytes]


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
    origin_mbps: float
    reps: int
    openssl_mbps: float | None
    openssl_bytes: int | None  # the -bytes openssl ran with (differs if it refused `size`)

    @property
    def ratio(self) -> float | None:
        return self.origin_mbps / self.openssl_mbps if self.openssl_mbps else None


def load_encrypt() -> Encrypt:
    """``encrypt_segment`` from the working tree (the venv does not install ``origin``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from origin.crypto.aes128 import encrypt_segment

    return encrypt_segment


def time_batch(encrypt: Encrypt, key: bytes, iv: bytes, data: bytes, reps: int) -> float:
    """Seconds for ``reps`` encryptions of ``data``."""
    start = time.perf_counter()
    for _ in range(reps):
        encrypt(key, iv, data)
    return time.perf_counter() - start


def measure_origin(encrypt: Encrypt, size: int, settings: Settings) -> tuple[float, int]:
    """Best-of-N MB/s of ``encrypt`` on one ``size``-byte segment, and reps per batch."""
    key, iv, data = os.urandom(16), os.urandom(16), os.urandom(size)
    once = min(time_batch(encrypt, key, iv, data, 1) for _ in range(3))
    reps = max(1, round(settings.batch_seconds / max(once, 1e-9)))
    best = min(time_batch(encrypt, key, iv, data, reps) for _ in range(settings.batches))
    return size * reps / best / MB, reps


def measure_openssl(
    openssl: str | None, size: int, seconds: int
) -> tuple[float | None, int | None]:
    """openssl's MB/s at ``size``, falling back to 16 KiB if it refuses that size."""
    if openssl is None:
        return None, None
    for attempt in (size, OPENSSL_FALLBACK_BYTES):
        rate = run_openssl_speed(openssl, attempt, seconds)
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
        "| size | origin MB/s | openssl MB/s | ratio |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        openssl = format_number(row.openssl_mbps, 0)
        if row.openssl_bytes not in (None, row.size):
            openssl += f" (at {row.openssl_bytes} B)"
        origin = format_number(row.origin_mbps, 0)
        lines.append(
            f"| {format_size(row.size)} | {origin} | {openssl} | {format_number(row.ratio, 2)} |"
        )
    return "\n".join(lines)


def rounded(row: Row) -> dict[str, object]:
    """A row for the JSON file, rates to 0.1 MB/s."""

    def cut(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return {
        **asdict(row),
        "origin_mbps": cut(row.origin_mbps, 1),
        "openssl_mbps": cut(row.openssl_mbps, 1),
        "ratio": cut(row.ratio, 3),
    }


def write_results(
    path: Path, settings: Settings, info: dict[str, object], rows: Sequence[Row]
) -> None:
    """The JSON results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "aes128-cbc whole-segment encryption: origin.crypto.aes128.encrypt_segment",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": "MB/s, MB = 10^6 bytes",
        "settings": asdict(settings),
        "machine": info,
        "results": [rounded(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="AES-128 segment encryption benchmark")
    parser.add_argument("--quick", action="store_true", help="three sizes, shorter batches")
    parser.add_argument("--openssl", default="openssl", help="openssl CLI (default: openssl)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = (
        Settings(QUICK_SIZES, batch_seconds=0.15, batches=3, openssl_seconds=1)
        if args.quick
        else Settings(FULL_SIZES, batch_seconds=0.5, batches=3, openssl_seconds=1)
    )
    openssl = shutil.which(args.openssl)
    if openssl is None:
        print(f"warning: {args.openssl} not found; openssl column left empty", file=sys.stderr)
    encrypt = load_encrypt()
    rows: list[Row] = []
    for size in settings.sizes:
        origin_mbps, reps = measure_origin(encrypt, size, settings)
        openssl_mbps, openssl_bytes = measure_openssl(openssl, size, settings.openssl_seconds)
        rows.append(Row(size, origin_mbps, reps, openssl_mbps, openssl_bytes))
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
