"""``origin serve`` started by the benchmark: its own state dir, a given media root, loopback.

Rules:

- The command is ``python -m origin serve --host 127.0.0.1 --port 0 --media M
  --state-dir S --log-level warning --workers N --cache-bytes B --license-rate 0`` (the
  co-hosted licence module included); ``OriginConfig.flags`` is the one place
  the per-configuration flags are written.
- Ready when the server prints ``origin listening on URL`` (read with a
  deadline); a server that exits or stays silent is an error carrying the tail
  of its log.
- Its processes are told apart from /proc: the co-hosted licence module
  (``origin license serve``), and the rest — the main process and its workers —
  which serve HTTP.
- Stopped by PID (SIGTERM, then SIGKILL of every process of its tree still
  there) in ``stop``, which ``with OriginServer(...)`` runs in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from process_sampler import process_tree, read_cmdline

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
READY = "origin listening on "


class OriginServerError(RuntimeError):
    """``origin serve`` did not start or did not stop."""


@dataclass(frozen=True, slots=True)
class OriginConfig:
    """One server configuration of the HTTP benchmark."""

    name: str  # "cache-off", "cache-on", "cache-off-1w"
    workers: int
    cache_bytes: int  # 0: caching off

    def flags(self) -> list[str]:
        # --license-rate 0: every request comes from one client address (wrk on loopback).
        return ["--workers", str(self.workers), "--cache-bytes", str(self.cache_bytes),
                "--license-rate", "0"]


def server_environment() -> dict[str, str]:
    """This environment, unbuffered, without a metrics token (the bench scrapes /metrics)."""
    env = {k: v for k, v in os.environ.items() if k != "ORIGIN_METRICS_TOKEN"}
    return env | {"PYTHONUNBUFFERED": "1"}


def is_licence_module(pid: int) -> bool:
    return " license serve" in read_cmdline(pid)


class OriginServer:
    """``with OriginServer(config, media_root, state_dir) as server:`` — ``server.base`` etc."""

    def __init__(self, config: OriginConfig, media_root: Path, state_dir: Path) -> None:
        self.config = config
        self.media_root = media_root
        self.state_dir = state_dir
        self.base = ""
        self.proc: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "origin.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "origin", "serve", "--host", "127.0.0.1", "--port", "0",
            "--media", str(self.media_root), "--state-dir", str(self.state_dir),
            "--log-level", "warning", *self.config.flags(),
        ]  # fmt: skip

    def pids(self) -> list[int]:
        """Every process of the server: main, workers and the licence module."""
        return process_tree(self.proc.pid) if self.proc is not None else []

    def http_pids(self) -> list[int]:
        """The processes that serve HTTP: main and workers (not the licence module)."""
        return [pid for pid in self.pids() if not is_licence_module(pid)]

    def worker_pids(self) -> list[int]:
        """The workers; the main process itself when it has none."""
        main = self.proc.pid if self.proc is not None else -1
        workers = [pid for pid in self.http_pids() if pid != main]
        return workers or ([main] if main > 0 else [])

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
                env=server_environment())
        lines: queue.Queue[str | None] = queue.Queue()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        self._pump = threading.Thread(target=pump, name="origin-stdout", daemon=True)
        self._pump.start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.stop()
                raise OriginServerError(
                    f"origin did not start in {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
                ) from None
            if line is None:
                self.stop()
                raise OriginServerError(f"origin exited at start:\n{self.log_tail()}")
            if line.startswith(READY):
                self.base = line.split()[-1].strip()
                return

    def stop(self) -> None:
        """SIGTERM to the main process by PID; SIGKILL to whatever of its tree outlives that."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        tree = process_tree(proc.pid) if proc.poll() is None else []
        commands = {pid: read_cmdline(pid) for pid in tree}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        for pid in tree[1:]:
            if commands[pid] and read_cmdline(pid) == commands[pid]:  # still that process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> OriginServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
