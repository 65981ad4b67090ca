"""A throwaway aiohttp app on a free loopback port, for tests that need a second server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, *,
                    access_log_class: type[AbstractAccessLogger] | None = None
                    ) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) and yield its base URL; stop it afterwards.

    No access log, unless ``access_log_class`` names one (the licence app's query-free one).
    """
    runner = (web.AppRunner(app, access_log=None) if access_log_class is None
              else web.AppRunner(app, access_log_class=access_log_class))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
