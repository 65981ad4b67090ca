"""The ``origin`` command line: serve, licence module, keys, demo media.

uvloop is chosen here and only here.  Configuration comes from flags and
the environment (``ORIGIN_LICENSE_TOKEN``, ``ORIGIN_KEK``, ``ORIGIN_METRICS_TOKEN``),
read when a command runs, never at import time.

``origin serve --workers 1`` serves in this process; ``--workers N`` makes this
process the parent of N worker processes on one port (``origin.workers``), each
started as ``origin worker`` (``origin.worker``; not for direct use).

``--tls-cert``/``--tls-key`` serve HTTPS on the same port (``origin.tls``): the pair is
loaded once here, before anything starts, so a bad pair is a one-line error and exit
status 2; the announced URLs are then ``https://``.  ``--audit-log FILE`` is handed to
the co-hosted licence module (``origin.license.audit``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from origin.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_DISK_BYTES,
    CacheSettings,
    ClientLimits,
    LicenseEndpoint,
    OriginSettings,
    TlsFiles,
    parse_byte_size,
)
from origin.log_redaction import install_log_redaction
from origin.tls import TlsConfigError, key_file_warning, listening_scheme, server_context

if TYPE_CHECKING:
    from origin.packaging.catalog import Catalog

log = logging.getLogger("origin")

MAX_UNIX_PATH = 100
SHUTDOWN_TIMEOUT = 10.0  # seconds in-flight responses get to finish after SIGTERM/SIGINT
METRICS_TOKEN_ENV = "ORIGIN_METRICS_TOKEN"  # noqa: S105 - a variable's name, not a secret


def run_async(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``coro`` on uvloop (the one place the loop is chosen)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(coro())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro())


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()


def _license_socket(state_dir: Path) -> Path:
    path = state_dir / f"license-{os.getpid()}.sock"
    if len(str(path)) > MAX_UNIX_PATH:
        path = Path(tempfile.mkdtemp(prefix="origin-")) / "license.sock"
    return path


async def serve(args: argparse.Namespace, state_dir: Path) -> int:
    from origin.supervisor import LicenseProcess

    supervisor: LicenseProcess | None = None
    if args.license_url is None:
        token = secrets.token_urlsafe(32)
        supervisor = LicenseProcess(socket_path=_license_socket(state_dir), state_dir=state_dir,
                                    kek_file=Path(args.kek_file) if args.kek_file else None,
                                    token=token,
                                    license_config=args.license_config,
                                    audit_log=args.audit_log, log_level=args.log_level)
        await supervisor.start()
        endpoint = LicenseEndpoint("http://license", token, str(supervisor.socket_path))
    else:
        token = os.environ.get("ORIGIN_LICENSE_TOKEN", "")
        if not token:
            print("origin: --license-url needs ORIGIN_LICENSE_TOKEN in the environment",
                  file=sys.stderr)
            return 2
        endpoint = LicenseEndpoint(args.license_url.rstrip("/"), token, args.license_socket)

    settings = OriginSettings(
        media_root=Path(args.media),
        license=endpoint,
        cors_origins=tuple(args.cors_origin) or ("*",),
        public_url=args.public_url,
        web_dir=Path(args.web_dir),
        key_cache_ttl=args.key_cache_ttl,
        catalog_interval=args.catalog_interval,
        catalog_min_rescan=args.catalog_min_rescan,
        limits=ClientLimits(header_timeout=args.header_timeout,
                            body_timeout=args.body_timeout,
                            license_rate=args.license_rate,
                            license_burst=args.license_burst,
                            trust_forwarded=args.trust_forwarded),
        cache=CacheSettings(memory_bytes=args.cache_bytes,
                            disk_dir=Path(args.cache_dir) if args.cache_dir else None,
                            disk_bytes=args.cache_disk_bytes),
        encrypt_threads=args.encrypt_threads,
        tls=args.tls,
    )
    metrics_token = args.metrics_token or os.environ.get(METRICS_TOKEN_ENV, "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.workers > 1:
            return await _serve_workers(args, settings, metrics_token, state_dir, stop)
        await _serve_in_process(args, settings, metrics_token, stop)
    finally:
        if supervisor is not None:
            await supervisor.stop()
    return 0


async def _serve_in_process(args: argparse.Namespace, settings: OriginSettings,
                            metrics_token: str, stop: asyncio.Event) -> None:
    """``--workers 1``: this process serves, on a plain ``TCPSite``."""
    from origin.http.app import build_app
    from origin.http.hls_routes import CATALOG
    from origin.http.metrics import MetricsConfig
    from origin.worker import run_app

    def announce(runner: web.AppRunner) -> None:
        _announce(listening_scheme(settings.tls), args.host, runner.addresses[0][1],
                  runner.app[CATALOG].catalog)

    tls = None
    if settings.tls is not None:  # reads the files: blocking
        tls = await asyncio.get_running_loop().run_in_executor(None, server_context,
                                                               settings.tls)
    await run_app(build_app(settings, MetricsConfig(token=metrics_token)),
                  lambda runner: web.TCPSite(runner, args.host, args.port, ssl_context=tls),
                  stop, shutdown_timeout=SHUTDOWN_TIMEOUT, on_ready=announce)


async def _serve_workers(args: argparse.Namespace, settings: OriginSettings,
                         metrics_token: str, state_dir: Path, stop: asyncio.Event) -> int:
    """``--workers N``: N worker processes on one port (``origin.workers``)."""
    from origin.packaging.catalog import scan_catalog
    from origin.workers import PoolPlan, run_workers

    async def announce(port: int) -> None:
        loop = asyncio.get_running_loop()
        catalog = await loop.run_in_executor(None, scan_catalog, str(settings.media_root))
        _announce(listening_scheme(settings.tls), args.host, port, catalog)

    plan = PoolPlan(count=args.workers, host=args.host, port=args.port, settings=settings,
                    state_dir=state_dir, shutdown_timeout=SHUTDOWN_TIMEOUT,
                    metrics_token=metrics_token, log_level=args.log_level)
    return await run_workers(plan, stop, announce)


def _announce(scheme: str, host: str, port: int, catalog: Catalog) -> None:
    from origin.http.catalog_routes import asset_urls

    base = f"{scheme}://{host}:{port}"
    print(f"origin listening on {base}", flush=True)
    for asset in catalog.assets.values():
        for urls in asset_urls(asset).values():
            for url in urls.values():
                print(f"  {base}{url}", flush=True)
    print(f"  catalog: {base}/api/assets", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.workers is None:
        args.workers = os.cpu_count() or 1
    if args.encrypt_threads is None:
        args.encrypt_threads = max(1, (os.cpu_count() or 1) // args.workers)
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.license_config:
        args.license_config = Path(args.license_config).resolve()
    problem = _check_tls(args) or _check_audit_log(args)
    if problem:
        print(f"origin: {problem}", file=sys.stderr)
        return 2
    return run_async(lambda: serve(args, state_dir))


def _check_tls(args: argparse.Namespace) -> str | None:
    """Set ``args.tls`` from ``--tls-cert``/``--tls-key`` after loading them once (so a
    bad pair stops startup here, with a message); the problem, if any."""
    args.tls = None
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    if not args.tls_cert:
        return None
    files = TlsFiles(Path(args.tls_cert).resolve(), Path(args.tls_key).resolve())
    try:
        server_context(files)
    except TlsConfigError as exc:
        return str(exc)
    warning = key_file_warning(files)
    if warning:
        log.warning("%s", warning)
    args.tls = files
    return None


def _check_audit_log(args: argparse.Namespace) -> str | None:
    """Resolve ``--audit-log`` and check the file can be opened (created 0600)."""
    if not args.audit_log:
        args.audit_log = None
        return None
    if args.license_url is not None:
        return "--audit-log needs the co-hosted licence module (not --license-url): " \
               "give it to `origin license serve` instead"
    from origin.license.audit import open_audit_file

    args.audit_log = Path(args.audit_log).resolve()
    try:
        os.close(open_audit_file(args.audit_log))
    except OSError as exc:
        return f"cannot open --audit-log {args.audit_log}: {exc.strerror or exc}"
    return None


def _cmd_worker(args: argparse.Namespace) -> int:
    from origin.worker import read_spec, run_worker

    spec = read_spec(sys.stdin.fileno())
    return run_async(lambda: run_worker(spec))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return value


def _cmd_media_demo(args: argparse.Namespace) -> int:
    from origin.demo import make_demo

    make_demo(Path(args.out), ffmpeg=args.ffmpeg)
    print(f"demo asset written to {args.out}")
    return 0


def _byte_size(text: str) -> int:
    try:
        return parse_byte_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from origin.keys_cpix import add_cpix_commands
    from origin.license.cli import add_license_commands, store_options

    parser = argparse.ArgumentParser(prog="origin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    srv = sub.add_parser("serve", help="run the origin (with the licence module co-hosted)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    srv.add_argument("--media", default="media", help="media root (one folder per asset)")
    srv.add_argument("--state-dir", default="var",
                     help="keystore, default KEK and licence socket live here")
    srv.add_argument("--kek-file", help="key-encryption key file (else $ORIGIN_KEK, "
                     "else <state-dir>/kek, created on first run)")
    srv.add_argument("--license-config", help="licence configuration file (TOML) for the "
                     "co-hosted licence module (else <state-dir>/license.toml if present)")
    srv.add_argument("--license-url", help="use a remote licence module at this base URL "
                     "(token from $ORIGIN_LICENSE_TOKEN) instead of starting one")
    srv.add_argument("--license-socket", help="with --license-url: reach it over this "
                     "Unix socket")
    srv.add_argument("--web-dir", default=str(Path(__file__).resolve().parent.parent / "web"),
                     help="folder of the test player page (index.html, node_modules)")
    srv.add_argument("--public-url", default="",
                     help="public base URL for absolute licence URLs (PlayReady LA_URL); "
                     "default: the request's own scheme and host")
    srv.add_argument("--cors-origin", action="append", default=[],
                     help="allowed CORS origin (repeatable; default *)")
    srv.add_argument("--key-cache-ttl", type=float, default=300.0,
                     help="seconds the origin keeps a content key")
    srv.add_argument("--catalog-interval", type=float, default=10.0,
                     help="seconds between media root rescans")
    srv.add_argument("--catalog-min-rescan", type=float, default=1.0,
                     help="least seconds between rescans triggered by unknown URLs")
    srv.add_argument("--cache-bytes", type=_byte_size, default=DEFAULT_CACHE_BYTES,
                     help="memory for cached protected segments and manifests (e.g. 256M, "
                     "1G; default 256 MiB); 0 turns the whole cache off")
    srv.add_argument("--cache-dir", help="also keep protected segments on disk here "
                     "(created 0700); default: memory only")
    srv.add_argument("--cache-disk-bytes", type=_byte_size, default=DEFAULT_CACHE_DISK_BYTES,
                     help="disk budget of --cache-dir (default 4 GiB)")
    srv.add_argument("--header-timeout", type=_non_negative, default=10.0,
                     help="seconds a client may take to send a request head (from its "
                     "first byte; from the connection's start for the first request); "
                     "then the connection is closed (default 10; 0: no limit)")
    srv.add_argument("--body-timeout", type=_non_negative, default=10.0,
                     help="seconds a client may take to send a licence request body; "
                     "then 408 and the connection is closed (default 10; 0: no limit)")
    srv.add_argument("--license-rate", type=_non_negative, default=50.0,
                     help="licence requests per second per client address, per serving "
                     "process (token bucket; over it: 429 with Retry-After; default 50; "
                     "0: no limit)")
    srv.add_argument("--license-burst", type=_positive_int, default=100,
                     help="licence requests a client may make at once before "
                     "--license-rate applies (default 100)")
    srv.add_argument("--trust-forwarded", action="store_true",
                     help="the client address for --license-rate is the last "
                     "X-Forwarded-For entry (set only behind a proxy/CDN that appends it)")
    srv.add_argument("--log-level", default="info")
    srv.add_argument("--workers", type=_positive_int, default=None,
                     help="serving processes on the one port (SO_REUSEPORT; default: one "
                     "per CPU); 1 serves in this process")
    srv.add_argument("--encrypt-threads", type=_positive_int, default=None,
                     help="threads per serving process that read and encrypt segments "
                     "(default: CPUs ÷ --workers, at least 1)")
    srv.add_argument("--metrics-token", default="",
                     help="bearer token /metrics requires (else $ORIGIN_METRICS_TOKEN; "
                     "unset: /metrics is open — restrict it at the network edge)")
    srv.add_argument("--tls-cert", default="",
                     help="serve HTTPS with this PEM certificate chain (with --tls-key)")
    srv.add_argument("--tls-key", default="",
                     help="the PEM private key of --tls-cert (unencrypted; keep it 0600)")
    srv.add_argument("--audit-log", default="",
                     help="append the licence module's audit log of licence decisions "
                     "(JSON lines) to this file (created 0600)")
    srv.set_defaults(func=_cmd_serve)

    wrk = sub.add_parser("worker", help="(internal) one worker of origin serve --workers N; "
                         "reads its configuration from stdin")
    wrk.add_argument("--log-level", default="info")
    wrk.set_defaults(func=_cmd_worker)

    media = sub.add_parser("media", help="media tools")
    media_sub = media.add_subparsers(dest="media_command", required=True)
    demo = media_sub.add_parser("demo", help="make the demo asset with ffmpeg")
    demo.add_argument("--out", default="media/demo")
    demo.add_argument("--ffmpeg", default="ffmpeg")
    demo.set_defaults(func=_cmd_media_demo)

    keys_sub = add_license_commands(sub)
    add_cpix_commands(keys_sub, store_options())
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "info"))
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
