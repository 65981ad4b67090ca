"""wrk as the load generator: one fixed-length run over a rotating list of paths.

Rules:

- Every run goes to a loopback base URL, lasts a whole number of seconds and
  is bounded by a subprocess time-out of its length plus a margin.
- Requests rotate over the given paths (``bench/wrk/rotate.lua``, one paths
  file per run); wrk's ``--latency`` histogram gives the percentiles, printed
  by the script's ``done`` as one ``WRK_JSON`` line, kept raw.
- wrk runs ``min(connections, 2)`` threads: the machine has two cores and the
  server under test needs them too; the client's own CPU time is measured
  (``RUSAGE_CHILDREN``) and reported beside the server's.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROTATE = Path(__file__).resolve().parent / "wrk" / "rotate.lua"
MARGIN = 30.0
LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")


class LoadError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The raw wrk summary of one run and the client's CPU time."""

    command: tuple[str, ...]
    summary: dict[str, Any]  # requests, bytes, duration_us, errors{...}, latency_us{...}
    client_cpu_seconds: float

    @property
    def seconds(self) -> float:
        return float(self.summary["duration_us"]) / 1e6

    @property
    def requests_per_second(self) -> float:
        return float(self.summary["requests"]) / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return float(self.summary["bytes"]) / self.seconds / 1e6

    @property
    def errors(self) -> int:
        return sum(int(v) for v in self.summary["errors"].values())


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk not found (make bench-deps installs it)")
    return found


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_summary(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            summary: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return summary
    raise LoadError(f"wrk printed no WRK_JSON line:\n{output[-2000:]}")


def wrk_command(base: str, paths_file: Path, connections: int, seconds: int,
                timeout_s: float) -> list[str]:
    threads = max(1, min(connections, 2))
    return [
        wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(ROTATE), base, "--",
        str(paths_file),
    ]  # fmt: skip


def run_load(base: str, paths: tuple[str, ...], connections: int, seconds: int,
             timeout_s: float = 10.0) -> LoadResult:
    """One wrk run of ``seconds`` over ``paths`` (request targets) at ``connections``."""
    if not base.startswith(LOOPBACK):
        raise LoadError(f"refusing a load run against a non-loopback URL: {base}")
    with tempfile.NamedTemporaryFile("w", prefix="bench-paths-", suffix=".txt") as handle:
        handle.write("\n".join(paths) + "\n")
        handle.flush()
        command = wrk_command(base, Path(handle.name), connections, seconds, timeout_s)
        before = children_cpu_seconds()
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + timeout_s + MARGIN)
        client_cpu = children_cpu_seconds() - before
    if done.returncode != 0:
        raise LoadError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return LoadResult(tuple(command), parse_summary(done.stdout), client_cpu)


def start_background_load(base: str, paths_file: Path, connections: int,
                          seconds: int) -> subprocess.Popen[str]:
    """A wrk run left going (for a profile taken meanwhile); the caller waits on it."""
    if not base.startswith(LOOPBACK):
        raise LoadError(f"refusing a load run against a non-loopback URL: {base}")
    command = wrk_command(base, paths_file, connections, seconds, 10.0)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
