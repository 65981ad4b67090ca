"""One serving process: the origin app on its own event loop until told to stop.

``run_app`` is what every serving process does — the single process of
``--workers 1`` and each worker of ``--workers N`` — and ``run_worker`` is a worker's
main (``python -m origin worker``, started by ``origin.workers``).

Rules:

- A worker binds its own listening socket to the shared host:port with
  ``SO_REUSEPORT`` (``bind_reuseport``); the kernel spreads new connections over the
  workers' sockets.  It never blocks on another worker.
- Its ``WorkerSpec`` (settings, internal token included) arrives pickled on its
  stdin — the parent's own object over a private pipe, never the command line — and
  stdin then stays open as a lifeline: end of file means the parent is gone, and the
  worker stops as if told to.
- It writes ``READY`` on its stdout once its socket listens, then points its stdout
  at its stderr (nothing else may fill a pipe the parent no longer reads).
- ``PROMETHEUS_MULTIPROC_DIR`` is already in its environment when it starts (the
  parent sets it there), so prometheus_client is in multiprocess mode from its first
  import; ``build_app`` checks it (``origin.http.metrics.check_value_mode``).
- HTTPS (``settings.tls``): each worker loads the certificate and key itself before
  it serves (``origin.tls.server_context``: a short blocking read at startup; an
  ``SSLContext`` cannot be pickled) and wraps its socket in it.
- Its connections are guarded (``origin.http.guarded_server``): a request head must
  arrive within ``--header-timeout`` seconds, an idle keep-alive connection closes
  after ``keepalive_timeout`` (15 s).
- SIGTERM/SIGINT, or the lifeline: stop accepting, finish in-flight responses (up to
  ``shutdown_timeout``: aiohttp's graceful shutdown), exit 0.
  CPU work never runs on the loop (the routes use the executor already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from origin.config import OriginSettings
from origin.errors import OriginError
from origin.tls import TlsConfigError, server_context

if TYPE_CHECKING:
    from aiohttp import web

    from origin.http.metrics import MetricsConfig

log = logging.getLogger("origin.worker")

READY = b"ready\n"
SPEC_HEADER = struct.Struct("!I")  # length of the pickled spec that follows on stdin
MAX_SPEC_BYTES = 1 << 20
LISTEN_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, handed over on its stdin (see the module rules)."""

    index: int
    host: str
    port: int
    settings: OriginSettings
    metrics: MetricsConfig
    shutdown_timeout: float
    log_level: str = "info"


def bind_reuseport(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (and listening if asked).

    Port 0 picks a free port: bind one without listening to reserve it for workers.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def run_app(app: web.Application, site_for: Callable[[web.AppRunner], web.BaseSite],
                  stop: asyncio.Event, *, shutdown_timeout: float,
                  on_ready: Callable[[web.AppRunner], None]) -> None:
    """Serve ``app`` on the site ``site_for`` makes until ``stop`` is set, then stop
    accepting and finish in-flight responses (for up to ``shutdown_timeout`` seconds)."""
    from origin.http.access_log import PathOnlyAccessLogger
    from origin.http.app import SETTINGS
    from origin.http.guarded_server import GuardedRunner

    limits = app[SETTINGS].limits
    runner = GuardedRunner(app, head_timeout=limits.header_timeout,
                           keepalive_timeout=limits.keepalive_timeout,
                           access_log_class=PathOnlyAccessLogger, handle_signals=False,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await site_for(runner).start()
        on_ready(runner)
        await stop.wait()
    finally:
        await runner.cleanup()


def read_spec(fd: int) -> WorkerSpec:
    """The spec the parent wrote on ``fd`` (blocking; before the loop starts)."""
    header = _read_exactly(fd, SPEC_HEADER.size)
    (size,) = SPEC_HEADER.unpack(header)
    if size > MAX_SPEC_BYTES:
        raise RuntimeError("worker spec too large")
    # The parent's own frozen dataclass, over the private pipe it created for this process.
    spec = pickle.loads(_read_exactly(fd, size))  # noqa: S301
    if not isinstance(spec, WorkerSpec):
        raise RuntimeError("not a worker spec")
    return spec


def write_spec(spec: WorkerSpec) -> bytes:
    """The bytes ``read_spec`` reads back."""
    data = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    return SPEC_HEADER.pack(len(data)) + data


def _read_exactly(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise RuntimeError("parent closed the worker's stdin early")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


async def _watch_lifeline(fd: int, stop: asyncio.Event) -> None:
    """Set ``stop`` when the parent's end of ``fd`` closes (the parent is gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while await reader.read(4096):
            pass
        if not stop.is_set():
            log.warning("parent process gone; stopping")
            stop.set()
    finally:
        transport.close()


async def run_worker(spec: WorkerSpec) -> int:
    """A worker's main: serve on a ``SO_REUSEPORT`` socket until SIGTERM/SIGINT/lifeline."""
    try:  # HTTPS: each worker loads its own context (an SSLContext cannot be pickled)
        tls = server_context(spec.settings.tls) if spec.settings.tls is not None else None
    except TlsConfigError as exc:
        log.error("worker %d cannot serve: %s", spec.index, exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lifeline = asyncio.create_task(_watch_lifeline(sys.stdin.fileno(), stop))

    from aiohttp import web

    from origin.http.app import build_app

    def site_for(runner: web.AppRunner) -> web.BaseSite:
        sock = bind_reuseport(spec.host, spec.port, listen=True)
        return web.SockSite(runner, sock, ssl_context=tls)

    def ready(runner: web.AppRunner) -> None:
        os.write(sys.stdout.fileno(), READY)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        log.info("worker %d listening (pid %d)", spec.index, os.getpid())

    try:
        await run_app(build_app(spec.settings, spec.metrics), site_for, stop,
                      shutdown_timeout=spec.shutdown_timeout, on_ready=ready)
    except OriginError as exc:  # e.g. the media root is gone: a short reason, no trace
        log.error("worker %d cannot serve: %s", spec.index, exc.detail)
        return 1
    finally:
        lifeline.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifeline
    log.info("worker %d stopped", spec.index)
    return 0
