"""Serving the licence app: on loopback TCP or on a Unix socket, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from origin.license.access_log import LicenseAccessLogger
from origin.license.app import build_license_app
from origin.license.settings import LicenseSettings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
UNIX_SOCKET_MODE = 0o600
# Every serving process pools up to 256 connections to the licence module
# (``origin.http.license_channel``, ``origin.http.key_client.make_license_session``), and
# connect(2) on a Unix socket whose backlog is full fails at once (EAGAIN: no SYN to retry,
# unlike TCP); the proxy's channel retries that within its connect time-out, but a burst
# should not have to wait.  aiohttp's default backlog is 128.
LISTEN_BACKLOG = 4096
SHUTDOWN_TIMEOUT_S = 10.0


class LicenseRunner(web.AppRunner):
    """An ``AppRunner`` that logs path-only access lines and removes its Unix socket."""

    __slots__ = ("_unix_path",)

    def __init__(self, app: web.Application) -> None:
        super().__init__(
            app,
            access_log_class=LicenseAccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        self._unix_path: Path | None = None

    def remove_on_cleanup(self, unix_path: Path) -> None:
        """Unlink this Unix socket file when the runner is cleaned up."""
        self._unix_path = unix_path

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            if self._unix_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._unix_path.unlink()
                self._unix_path = None


async def start_license_site(
    app: web.Application, *, host: str | None, port: int | None, unix_path: str | None
) -> web.AppRunner:
    """Set up ``app`` and listen on a Unix socket (mode 0600) or on TCP.

    With ``unix_path``, ``host`` and ``port`` must be ``None``.  Otherwise the defaults
    are ``127.0.0.1`` (the internal API should not face the network) and port 8081;
    port 0 picks a free port (read it back from ``runner.addresses``).  The caller
    owns the returned runner and must ``await runner.cleanup()``.  Startup errors
    (such as a wrong KEK) propagate after the runner has been cleaned up.
    """
    if unix_path is not None and (host is not None or port is not None):
        raise ValueError("listen on a unix socket or on host/port, not both")
    runner = LicenseRunner(app)
    try:
        await runner.setup()
        if unix_path is not None:
            sock = _bind_unix_socket(Path(unix_path))
            runner.remove_on_cleanup(Path(unix_path))
            site: web.BaseSite = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
        else:
            site = web.TCPSite(
                runner,
                host if host is not None else DEFAULT_HOST,
                port if port is not None else DEFAULT_PORT,
                backlog=LISTEN_BACKLOG,
            )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("license module listening on %s", ", ".join(map(str, runner.addresses)))
    return runner


def run_license_server(
    settings: LicenseSettings,
    *,
    host: str | None,
    port: int | None,
    unix_path: str | None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Serve the licence module until SIGTERM or SIGINT.  Blocking.

    ``loop_factory`` defaults to ``uvloop.new_event_loop`` when uvloop is importable;
    the entry point may pass its own choice instead.
    """
    factory = loop_factory if loop_factory is not None else _default_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(settings, host=host, port=port, unix_path=unix_path))


async def _serve(
    settings: LicenseSettings, *, host: str | None, port: int | None, unix_path: str | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        runner = await start_license_site(
            build_license_app(settings), host=host, port=port, unix_path=unix_path
        )
        try:
            await stop.wait()
            log.info("license module stopping")
        finally:
            await runner.cleanup()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _default_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _bind_unix_socket(path: Path) -> socket.socket:
    """Bind a Unix stream socket at ``path`` and make it 0600 before it listens.

    Connections are refused until ``listen()`` (done when the site starts), so no
    client can connect while the socket still has the umask's mode.  A stale socket
    left by an earlier run is replaced; any other file at ``path`` is an error.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ValueError(f"{path} exists and is not a socket")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
