"""Test harness: the real ``origin serve`` in a subprocess on a loopback port.

Readiness is the server's own "origin listening on" line, read from its
stdout with a deadline; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest_plugins = ["tests.tools.licence"]

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "media" / "demo"
START_TIMEOUT = 60.0


@dataclass
class RunningOrigin:
    proc: subprocess.Popen[str]
    base: str
    media: Path
    state_dir: Path
    log_path: Path
    pump: threading.Thread
    lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pump.join(timeout=10)  # EOF follows the exit
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_origin(media: Path, state_dir: Path, *extra: str,
                 env: dict[str, str] | None = None,
                 wrapper: tuple[str, ...] = (), workers: int = 1) -> RunningOrigin:
    """``origin serve`` on a free loopback port; one serving process unless ``workers``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "origin.log"
    cmd = [*wrapper, sys.executable, "-m", "origin", "serve", "--port", "0", "--media", str(media),
           "--state-dir", str(state_dir), "--catalog-min-rescan", "0",
           "--workers", str(workers), *extra]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    log_file = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True,
                            cwd=ROOT, env=full_env)
    log_file.close()
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            proc.kill()
            proc.wait()
            raise RuntimeError("origin did not start in time:\n" + log_path.read_text()) from None
        if line is None:
            proc.wait()
            proc.stdout.close()
            raise RuntimeError(f"origin exited ({proc.returncode}):\n" + log_path.read_text())
        seen.append(line)
        if line.startswith("origin listening on "):
            base = line.split()[-1].strip()
            return RunningOrigin(proc, base, media, state_dir, log_path, pumper, seen)


@pytest.fixture(scope="session")
def origin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    """One origin serving the committed demo media, licence module co-hosted."""
    state = tmp_path_factory.mktemp("state")
    server = start_origin(DEMO.parent, state)
    yield server
    assert server.stop() == 0


@pytest.fixture
def media_copy(tmp_path: Path) -> Path:
    """A private media root holding a copy of the demo asset."""
    root = tmp_path / "media"
    root.mkdir()
    shutil.copytree(DEMO, root / "demo")
    return root


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raw_get(port: int, raw_target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send one request with the target exactly as given (no client-side normalising)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(method + b" " + raw_target + b" HTTP/1.1\r\nHost: t\r\n"
                     b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body
