"""The origin's aiohttp application: routes, middleware and app state.

App state lives in typed ``web.AppKey``s set up in ``cleanup_ctx``; nothing
is read from the environment here — :class:`OriginSettings` comes in whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from origin.config import OriginSettings
from origin.http.catalog_routes import healthz, list_assets
from origin.http.catalog_service import CatalogService
from origin.http.dash_routes import serve_dash
from origin.http.hls_routes import CATALOG, KEYS, PUBLIC_URL, serve_hls
from origin.http.key_client import KeyClient, make_license_session
from origin.http.license_channel import LicenseChannel
from origin.http.license_proxy import proxy_license_request
from origin.http.metrics import METRICS_CONFIG, MetricsConfig, check_value_mode
from origin.http.metrics_routes import serve_metrics
from origin.http.middleware import CORS_ORIGINS, Handler, front_door, response_finisher
from origin.http.playback_routes import playback_context
from origin.http.rate_limit import license_rate_limit
from origin.http.segment_cache import segment_cache_ctx
from origin.http.web_routes import WEB_DIR, player_page, web_file

WORKER_HEADER = "X-Origin-Worker"
SETTINGS: web.AppKey[OriginSettings] = web.AppKey("settings", OriginSettings)
LICENSE_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey(
    "license_session", aiohttp.ClientSession
)
LICENSE_CHANNEL: web.AppKey[LicenseChannel] = web.AppKey("license_channel", LicenseChannel)


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    service = CatalogService(str(settings.media_root), interval=settings.catalog_interval,
                             min_rescan=settings.catalog_min_rescan)
    await service.rescan()
    app[CATALOG] = service
    task = asyncio.create_task(service.run_periodic())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _license_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = make_license_session(settings.license, settings.license_timeout)
    app[LICENSE_SESSION] = session
    app[KEYS] = KeyClient(session, settings.license, settings.key_cache_ttl)
    # The players' requests go through the proxy's own lean connections; the key
    # client's internal API calls (cached, rare) keep the aiohttp session.
    channel = LicenseChannel(settings.license, timeout=settings.license_timeout)
    app[LICENSE_CHANNEL] = channel
    yield
    await channel.close()
    await session.close()


async def proxy_license(request: web.Request) -> web.StreamResponse:
    """``/license/…`` to the licence module (``origin.http.license_proxy``)."""
    return await _proxy(request, "license")


async def proxy_admin(request: web.Request) -> web.StreamResponse:
    """``/admin/…`` to the licence module's admin API (its own admin token guards it)."""
    return await _proxy(request, "admin")


async def _proxy(request: web.Request, root: str) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    return await proxy_license_request(
        request, request.app[LICENSE_CHANNEL], settings.max_license_body, root=root,
        body_timeout=settings.limits.body_timeout,
    )


def _healthz_naming(pid: int) -> Handler:
    """``/healthz`` naming the process that answered (``X-Origin-Worker: <pid>``), so one
    can see which worker a connection reached; no other route says it."""
    async def healthz_of_worker(request: web.Request) -> web.StreamResponse:
        response = await healthz(request)
        response.headers[WORKER_HEADER] = str(pid)
        return response
    return healthz_of_worker


def build_app(settings: OriginSettings, metrics: MetricsConfig | None = None) -> web.Application:
    metrics = metrics if metrics is not None else MetricsConfig()
    check_value_mode(metrics)
    rate_limit = license_rate_limit(settings.limits)
    # One middleware and one response hook (``origin.http.middleware``): metrics stamp,
    # errors, request shape, rate limit, preflight; CORS, nosniff, no-store, metrics count.
    app = web.Application(middlewares=[front_door(rate_limit)],
                          client_max_size=settings.max_license_body)
    app[SETTINGS] = settings
    app[METRICS_CONFIG] = metrics
    app[CORS_ORIGINS] = settings.cors_origins
    app[PUBLIC_URL] = settings.public_url.rstrip("/")
    app.cleanup_ctx.append(_catalog_ctx)
    app.cleanup_ctx.append(_license_ctx)
    app.cleanup_ctx.append(segment_cache_ctx(settings.cache, settings.encrypt_threads))
    app.on_response_prepare.append(response_finisher(settings.cors_origins))
    app[WEB_DIR] = settings.web_dir
    app.router.add_get("/", player_page)
    app.router.add_get("/web/{name}", web_file)
    app.router.add_get("/healthz", _healthz_naming(os.getpid()))
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/api/assets", list_assets)
    app.router.add_get("/api/assets/{asset}/playback", playback_context)
    app.router.add_get("/hls/{asset}/{scheme}/{tail:.+}", serve_hls)
    app.router.add_get("/dash/{asset}/{scheme}/{tail:.+}", serve_dash)
    app.router.add_route("*", "/license/{tail:.*}", proxy_license)
    # The licence module's admin API (policies, key records): its own admin token guards it.
    app.router.add_route("*", "/admin/{tail:.*}", proxy_admin)
    return app
