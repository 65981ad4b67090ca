"""The worker processes of ``origin serve --workers N``: start, watch, restart, stop.

Rules:

- The parent parses the configuration and starts the co-hosted licence module once
  (``origin.supervisor``); every worker reaches it over the same socket with the same
  internal token (inside its ``WorkerSpec``).  The parent serves no request.
- The port: the parent binds host:port first with ``SO_REUSEPORT`` and does not listen
  (``origin.worker.bind_reuseport``).  It holds the port — the one ``--port 0`` picked —
  for the pool's whole life and never takes a connection; each worker binds and listens
  on the same port, and the kernel spreads new connections over the workers.
- Metrics: the parent makes a fresh private directory under the state dir
  (``metrics_directory``: mode 0700, removed at the end; ones left by dead parents are
  removed at start) and puts ``PROMETHEUS_MULTIPROC_DIR`` in the workers' environment
  only — never its own, so the licence module keeps a plain registry — so that
  prometheus_client is in multiprocess mode from a worker's first import.  Each worker
  that exits gets ``mark_process_dead``.  Its counters stay in the directory: totals do
  not drop when a worker is replaced.
- A worker is ``python -m origin worker`` (``origin.worker``): its own interpreter,
  uvloop event loop and app.  Its environment caps glibc's malloc arenas at
  ``WORKER_MALLOC_ARENAS`` (unless ``MALLOC_ARENA_MAX`` is set already): by default every
  thread that allocates (the loop, the production threads, the default executor's) gets
  an arena of its own, each keeping its freed memory, and a worker's resident memory
  crept up by about 1 MB a minute under mixed traffic.  It is ready when it writes
  ``READY``; ``run_workers`` announces the URL once every worker is ready.
- A worker that exits while the pool runs is restarted after a capped exponential
  back-off (logged); ``MAX_START_FAILURES`` failures in a row to start one fail the
  pool and the parent exits non-zero.  At startup, any worker failing to start fails it.
- Stop (SIGTERM/SIGINT to the parent): SIGTERM to every worker; each finishes its
  in-flight responses and exits 0; one still running ``STOP_GRACE`` seconds after its
  shutdown time is killed, and the parent then exits non-zero.

The directory and port set-up are short blocking calls made before any worker starts
and after the last one stopped; the parent's loop only supervises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from origin.config import OriginSettings
from origin.worker import READY, WorkerSpec, bind_reuseport, write_spec

log = logging.getLogger("origin.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT = 60.0
STOP_GRACE = 5.0
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0  # seconds up after which a worker's exit starts the back-off afresh
MAX_START_FAILURES = 5
WORKER_MALLOC_ARENAS = "2"  # MALLOC_ARENA_MAX in a worker's environment (module rules)


class WorkerStartFailed(Exception):
    """A worker exited, or stayed silent, before it was ready."""


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """What ``run_workers`` starts."""

    count: int
    host: str
    port: int
    settings: OriginSettings
    state_dir: Path
    shutdown_timeout: float
    metrics_token: str = field(default="", repr=False)
    log_level: str = "info"


@contextlib.contextmanager
def metrics_directory(state_dir: Path) -> Iterator[Path]:
    """A fresh private directory for the workers' metric files, removed afterwards."""
    for stale in state_dir.glob("metrics-*"):
        owner = stale.name.removeprefix("metrics-")
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    path = state_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget(pid: int, metrics_dir: Path) -> None:
    """prometheus_client's bookkeeping for a worker that exited."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]


class _Slot:
    """One worker position: its current process, if any."""

    __slots__ = ("index", "process", "ready", "ready_at")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.ready_at = 0.0


class WorkerPool:
    def __init__(self, specs: Sequence[WorkerSpec], metrics_dir: Path) -> None:
        self._specs = tuple(specs)
        self._metrics_dir = metrics_dir
        self._slots = [_Slot(spec.index) for spec in self._specs]
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.failed = asyncio.Event()

    def __repr__(self) -> str:
        return f"WorkerPool({len(self._slots)} workers)"

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process is not None]

    async def start(self) -> None:
        """Start every worker at once and wait until all are ready; ``WorkerStartFailed``
        if one is not (call ``stop`` either way)."""
        results = await asyncio.gather(*(self._spawn(slot) for slot in self._slots),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self._watchers = [asyncio.create_task(self._supervise(slot)) for slot in self._slots]

    async def _spawn(self, slot: _Slot) -> None:
        spec = self._specs[slot.index]
        env = dict(os.environ, **{MULTIPROC_ENV: str(self._metrics_dir)})
        env.setdefault("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENAS)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "origin", "worker", "--log-level", spec.log_level,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        slot.process, slot.ready = proc, False
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(write_spec(spec))  # stdin stays open: the worker's lifeline
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise WorkerStartFailed(f"worker {slot.index} was not ready in time") from None
        if line != READY:
            code = await proc.wait()
            raise WorkerStartFailed(f"worker {slot.index} exited with {code} while starting")
        slot.ready, slot.ready_at = True, time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, proc.pid)

    async def _supervise(self, slot: _Slot) -> None:
        """Restart the slot's worker whenever it exits, with back-off; fail the pool when
        it keeps failing to start."""
        backoff = FIRST_BACKOFF
        while True:
            proc = slot.process
            assert proc is not None
            code = await proc.wait()
            if self._stopping.is_set():
                return
            slot.process = None
            _forget(proc.pid, self._metrics_dir)
            if time.monotonic() - slot.ready_at > STABLE_AFTER:
                backoff = FIRST_BACKOFF
            log.warning("worker %d (pid %d) exited with %s; restarting in %.2fs",
                        slot.index, proc.pid, code, backoff)
            failures = 0
            while True:
                if await self._stop_within(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
                try:
                    await self._spawn(slot)
                    break
                except WorkerStartFailed as exc:
                    failures += 1
                    log.error("%s (%d in a row); next try in %.2fs", exc, failures, backoff)
                    if slot.process is not None:
                        _forget(slot.process.pid, self._metrics_dir)
                        slot.process = None
                    if failures >= MAX_START_FAILURES:
                        log.error("worker %d keeps dying at startup; giving up", slot.index)
                        self.failed.set()
                        return

    async def _stop_within(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the pool stops first; whether it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def stop(self, shutdown_timeout: float) -> bool:
        """SIGTERM to every worker and wait for each; whether all stopped cleanly."""
        self._stopping.set()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        clean = await asyncio.gather(*(self._stop_slot(slot, shutdown_timeout + STOP_GRACE)
                                       for slot in self._slots))
        return all(clean)

    async def _stop_slot(self, slot: _Slot, patience: float) -> bool:
        proc = slot.process
        if proc is None:
            return True
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), patience)
        except TimeoutError:
            log.error("worker %d (pid %d) did not stop in %.0fs; killing it",
                      slot.index, proc.pid, patience)
            proc.kill()
            code = await proc.wait()
        _forget(proc.pid, self._metrics_dir)
        # A worker told to stop before it installed its handlers dies of SIGTERM: fine.
        clean = code == 0 or (not slot.ready and code == -signal.SIGTERM)
        if not clean:
            log.warning("worker %d (pid %d) stopped with %s", slot.index, proc.pid, code)
        return clean


async def run_workers(plan: PoolPlan, stop: asyncio.Event,
                      announce: Callable[[int], Awaitable[None]]) -> int:
    """Run ``plan.count`` workers on one port until ``stop`` is set; the exit status.

    ``announce(port)`` runs once every worker is ready.
    """
    from origin.http.metrics import MetricsConfig

    with bind_reuseport(plan.host, plan.port, listen=False) as reserved, \
            metrics_directory(plan.state_dir) as metrics_dir:
        port: int = reserved.getsockname()[1]
        metrics = MetricsConfig(plan.metrics_token, metrics_dir)
        specs = [WorkerSpec(i, plan.host, port, plan.settings, metrics, plan.shutdown_timeout,
                            plan.log_level) for i in range(plan.count)]
        pool = WorkerPool(specs, metrics_dir)
        failed = False
        try:
            await pool.start()
            await announce(port)
            stopped = asyncio.create_task(stop.wait())
            broken = asyncio.create_task(pool.failed.wait())
            await asyncio.wait((stopped, broken), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            broken.cancel()
            failed = pool.failed.is_set()
        except WorkerStartFailed as exc:
            log.error("%s; stopping", exc)
            failed = True
        finally:
            clean = await pool.stop(plan.shutdown_timeout)
    return 0 if clean and not failed else 1
