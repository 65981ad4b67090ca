"""py-spy profiles for missed targets: where the time goes, as files and as top frames.

Rules:

- ``record_pids`` samples running processes (HTTP workers under load, or an
  in-process workload once it is ready): collapsed stacks of the first
  (``bench/profiles/NAME.txt``) and a flamegraph of the second (``NAME.svg``;
  the same PID again when there is one process) at the same time.  Each
  py-spy has a time-out.  py-spy needs ptrace: root, or a permissive
  ``kernel.yama.ptrace_scope``.
- py-spy runs ``--nonblocking``: it reads the stacks without stopping the
  process, so the load is not slowed and py-spy can tell idle threads (a
  thread pool worker waiting for work, the loop in ``epoll_wait``) from busy
  ones.  Idle samples are left out (py-spy's default), so percentages are
  shares of the time threads were running — Python, or C called from the
  frame shown (an OpenSSL call, a socket ``write``).  Rare torn samples show
  as py-spy "Errors".
- ``summarise`` turns collapsed stacks into the top frames by self and by
  inclusive share, frames named ``function (file)`` without line numbers.
- Files over 1 MB are dropped (kept commit-worthy); the summary stays.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "bench" / "profiles"
RATE_HZ = 100
MAX_FILE_BYTES = 1_000_000
MARGIN = 30.0


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy not found (pip install -e '.[bench]')")
    return found


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` → ``func (path/file.py)``, site-packages prefix cut."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for cut in ("site-packages/", "lib/python3"):
        if cut in where:
            where = where.split(cut, 1)[1]
            break
    where = where.removeprefix(str(ROOT) + "/")
    return f"{name} ({where})" if where else name


# Frames on (nearly) every stack, which say nothing about where the time goes.
PLUMBING = ("threading.py", "runpy>", "asyncio/runners.py", "asyncio/base_events.py",
            "concurrent/futures/thread.py", "origin/__main__.py", "origin/cli.py",
            "origin/worker.py", "asyncio/events.py")


def is_plumbing(frame: str) -> bool:
    return frame.endswith(tuple(f"{name})" for name in PLUMBING))


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def summarise(text: str, top: int = 10) -> dict[str, Any]:
    """Samples, and the top frames by self share and by inclusive share (percent).

    The inclusive list leaves out ``PLUMBING`` frames (thread and loop start-up)."""
    stacks = parse_collapsed(text)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            if not is_plumbing(frame):
                inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[list[object]]:
        return [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(top)]

    return {"samples": total, "self": shares(own) if total else [],
            "inclusive": shares(inclusive) if total else []}


def keep_small(path: Path) -> str | None:
    """The path relative to the repo, or None (and the file removed) when missing or too big."""
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_FILE_BYTES:
        path.unlink()
        return None
    return str(path.relative_to(ROOT))


def spy_command(fmt: str, out: Path, seconds: int) -> list[str]:
    return [py_spy(), "record", "--nonblocking", "--rate", str(RATE_HZ), "--format", fmt,
            "-o", str(out), "--duration", str(seconds)]


def record_pids(name: str, pids: list[int], seconds: int) -> dict[str, Any]:
    """Profile ``pids[0]`` (collapsed stacks) and ``pids[1]`` (flamegraph), meanwhile."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    raw, svg = PROFILES / f"{name}.txt", PROFILES / f"{name}.svg"
    second = pids[1] if len(pids) > 1 else pids[0]
    jobs = [subprocess.Popen([*spy_command(fmt, out, seconds), "--pid", str(pid)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for fmt, out, pid in (("raw", raw, pids[0]), ("flamegraph", svg, second))]
    notes = []
    for job in jobs:
        try:
            out, _ = job.communicate(timeout=seconds + MARGIN)
        except subprocess.TimeoutExpired:
            job.kill()
            out, _ = job.communicate()
        notes.append(out.strip().splitlines()[-1] if out.strip() else "")
    return finish(name, raw, svg, notes, f"py-spy record --nonblocking --pid, {seconds} s")


def finish(name: str, raw: Path, svg: Path, notes: list[str], how: str) -> dict[str, Any]:
    text = raw.read_text() if raw.is_file() else ""
    return {"name": name, "how": how, "rate_hz": RATE_HZ, "collapsed": keep_small(raw),
            "flamegraph": keep_small(svg), "py_spy": notes, **summarise(text)}
