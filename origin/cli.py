"""The ``origin`` command line: serve, licence module, keys, demo media.

uvloop is chosen here and only here.  Configuration comes from flags and
the environment (``ORIGIN_LICENSE_TOKEN``, ``ORIGIN_KEK``), read when a
command runs, never at import time.
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
from typing import Any

from aiohttp import web

from origin.config import LicenseEndpoint, OriginSettings
from origin.log_redaction import install_log_redaction

log = logging.getLogger("origin")

MAX_UNIX_PATH = 100


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
    from origin.http.access_log import PathOnlyAccessLogger
    from origin.http.app import build_app
    from origin.supervisor import LicenseProcess

    supervisor: LicenseProcess | None = None
    if args.license_url is None:
        token = secrets.token_urlsafe(32)
        supervisor = LicenseProcess(socket_path=_license_socket(state_dir), state_dir=state_dir,
                                    kek_file=Path(args.kek_file) if args.kek_file else None,
                                    token=token,
                                    license_config=args.license_config)
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
    )
    runner = web.AppRunner(build_app(settings), access_log_class=PathOnlyAccessLogger,
                           handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=5.0)
        await site.start()
        _announce(runner, args.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        if supervisor is not None:
            await supervisor.stop()
    return 0


def _announce(runner: web.AppRunner, host: str) -> None:
    from origin.http.catalog_routes import asset_urls
    from origin.http.hls_routes import CATALOG

    port = runner.addresses[0][1]
    base = f"http://{host}:{port}"
    print(f"origin listening on {base}", flush=True)
    catalog = runner.app[CATALOG].catalog
    for asset in catalog.assets.values():
        for urls in asset_urls(asset).values():
            for url in urls.values():
                print(f"  {base}{url}", flush=True)
    print(f"  catalog: {base}/api/assets", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.license_config:
        args.license_config = Path(args.license_config).resolve()
    return run_async(lambda: serve(args, state_dir))


def _cmd_media_demo(args: argparse.Namespace) -> int:
    from origin.demo import make_demo

    make_demo(Path(args.out), ffmpeg=args.ffmpeg)
    print(f"demo asset written to {args.out}")
    return 0


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
    srv.add_argument("--log-level", default="info")
    srv.set_defaults(func=_cmd_serve)

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
