"""Processes under load, read from /proc: the tree, resident memory, CPU time, machine busy time.

Rules:

- Only /proc is read; a process that exits between two reads is skipped, never an error.
- ``RssSampler`` is a background thread that reads ``VmRSS`` of the given PIDs
  every ``interval`` seconds while a load runs and keeps each PID's maximum.
  It is a polling sampler: its wait is the sampling period, not a synchronisation.
- CPU figures are seconds of user + system time (``/proc/PID/stat`` fields 14
  and 15, in clock ticks); the machine's busy share comes from ``/proc/stat``,
  so work by other processes on the machine shows up as busy time no benchmarked
  process accounts for.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK")


def read_stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (field 3 onwards), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Direct children, by each process's parent PID."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = read_stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children_of(current))
    return tree


def read_cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def read_rss_bytes(pid: int) -> int | None:
    """``VmRSS`` of one process in bytes, or None once it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of ``pids`` so far (the living ones)."""
    user = system = 0
    for pid in pids:
        fields = read_stat_fields(pid)
        if fields is not None:
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / TICK, system / TICK


def read_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (the living ones)."""
    return sum(read_cpu_split(pids))


@dataclass(frozen=True, slots=True)
class MachineTicks:
    """``/proc/stat``'s first line: busy and total CPU ticks over all cores."""

    busy: int
    total: int

    @staticmethod
    def read() -> MachineTicks:
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
        idle = values[3] + values[4]
        return MachineTicks(sum(values) - idle, sum(values))

    def busy_cpu_seconds_since(self, earlier: MachineTicks) -> float:
        """CPU seconds (all cores) the machine spent busy between ``earlier`` and this."""
        return (self.busy - earlier.busy) / TICK


class RssSampler:
    """Maximum ``VmRSS`` per PID while the ``with`` block runs."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self._pids = list(pids)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.max_rss: dict[int, int] = {}

    def _sample(self) -> None:
        for pid in self._pids:
            rss = read_rss_bytes(pid)
            if rss is not None and rss > self.max_rss.get(pid, 0):
                self.max_rss[pid] = rss

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self._interval):
            self._sample()
        self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
