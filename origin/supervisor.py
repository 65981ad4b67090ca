"""Runs the co-hosted licence module as a child process and restarts it when it dies.

The child is ``python -m origin license serve`` on a Unix socket (mode 0600)
inside the state directory; the internal token reaches it through its
environment, never its command line (which ``ps`` shows).  Readiness is its
``/healthz`` answering; a child that exits is restarted with a capped
exponential back-off, and key requests answer 503 meanwhile.  ``stop`` removes the
socket, and the private directory holding it when it is not the state directory.
With an audit log file, the child writes its decisions there (``--audit-log``,
appended across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import aiohttp

log = logging.getLogger("origin.supervisor")

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
MAX_BACKOFF = 10.0


class LicenseProcess:
    def __init__(self, *, socket_path: Path, state_dir: Path, kek_file: Path | None,
                 token: str, license_config: Path | None = None,
                 audit_log: Path | None = None, log_level: str = "info") -> None:
        self.socket_path = socket_path
        self._state_dir = state_dir
        self._kek_file = kek_file
        self._license_config = license_config
        self._audit_log = audit_log
        self._log_level = log_level
        self._token = token
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"LicenseProcess(socket_path={str(self.socket_path)!r})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "origin", "license", "serve", "--log-level", self._log_level,
               "--socket", str(self.socket_path), "--state-dir", str(self._state_dir)]
        if self._kek_file is not None:
            cmd += ["--kek-file", str(self._kek_file)]
        if self._license_config is not None:
            cmd += ["--license-config", str(self._license_config)]
        if self._audit_log is not None:
            cmd += ["--audit-log", str(self._audit_log)]
        return cmd

    async def start(self) -> None:
        """Start the child and wait until it answers; RuntimeError if it cannot start."""
        await self._spawn()
        self._watch = asyncio.create_task(self._keep_running())

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        env = dict(os.environ, ORIGIN_LICENSE_TOKEN=self._token)
        self._proc = await asyncio.create_subprocess_exec(*self._command(), env=env)
        await self._wait_ready(self._proc)
        log.info("licence module running (pid %d)", self._proc.pid)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < deadline:
                if proc.returncode is not None:
                    raise RuntimeError(f"licence module exited with {proc.returncode}")
                try:
                    async with session.get("http://license/healthz",
                                           timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass
                # Poll the child's socket: there is no other readiness signal to await.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.05)
        raise RuntimeError("licence module did not become ready")

    async def _keep_running(self) -> None:
        backoff = 0.25
        while not self._stopping:
            assert self._proc is not None
            started = time.monotonic()
            code = await self._proc.wait()
            if self._stopping:
                return
            log.warning("licence module exited with %s; restarting", code)
            if time.monotonic() - started > 30:
                backoff = 0.25
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                await self._spawn()
            except RuntimeError:
                log.exception("licence module restart failed")

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self.socket_path.parent != self._state_dir:
            # The private directory made for a socket whose path in the state directory
            # would be too long (``origin.cli``): it goes with the socket (only if empty).
            with contextlib.suppress(OSError):
                self.socket_path.parent.rmdir()
