"""The one middleware every request passes, and the one hook every response passes.

``front_door`` is the app's middleware.  In this order, as one call:

1. it stamps the request's start (``origin.http.metrics.stamp_request``);
2. it is the one place typed errors become HTTP responses: ``OriginError`` → its
   status, ``HTTPException`` ≥ 400 (aiohttp's 404/405…) → that status, anything else →
   500, logged server-side (the log line names the route, never the query string);
   error bodies are JSON ``{"error": "<short reason>"}``, no traceback, key or token;
3. inside it: ``GET``/``HEAD`` with a body are refused
   (``origin.http.request_shape``), then the licence rate limit runs when configured
   (``origin.http.rate_limit``), then CORS preflights (``OPTIONS`` with
   ``Access-Control-Request-Method``) are answered, then the route.

``response_finisher`` makes the app's one ``on_response_prepare`` hook, run for every
response, errors included.  In this order: CORS headers (``Access-Control-Allow-Origin``
and ``Access-Control-Expose-Headers``; ``Vary: Origin`` when the allowed origin is
echoed), ``X-Content-Type-Options: nosniff``, ``Cache-Control: no-store`` on 4xx/5xx
(``origin.http.cache_headers``), then the request is counted
(``origin.http.metrics.count_response``).  One middleware and one hook instead of a
chain of each: every layer is a coroutine call on every request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Middleware

from origin.errors import OriginError
from origin.http.cache_headers import forbid_storing_errors
from origin.http.metrics import count_response, stamp_request
from origin.http.request_shape import refuse_body_without_meaning

log = logging.getLogger("origin.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

CORS_ORIGINS: web.AppKey[tuple[str, ...]] = web.AppKey("cors_origins", tuple)
EXPOSED = "Content-Length, Content-Range, ETag, Accept-Ranges"
ANY_ORIGIN = "*"


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": detail}, status=status, headers=headers)


def front_door(rate_limit: Middleware | None = None) -> Middleware:
    """The app's one middleware (module rules); ``rate_limit`` runs inside it, after the
    request shape check and before preflights, as its own middleware would."""

    @web.middleware
    async def front_door_middleware(request: web.Request,
                                    handler: Handler) -> web.StreamResponse:
        stamp_request(request)
        try:
            refuse_body_without_meaning(request)
            if request.method == "OPTIONS":
                handler = partial(answer_preflight, handler=handler)
            if rate_limit is None:
                return await handler(request)
            return await rate_limit(request, handler)
        except OriginError as exc:
            return error_response(exc.status, exc.detail, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            keep = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(exc.status, (exc.reason or "error").lower(), keep)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal error")

    return front_door_middleware


async def answer_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) answered 204;
    any other request goes on to ``handler``."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        headers = {
            "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
            "Access-Control-Max-Age": "600",
        }
        wanted = request.headers.get("Access-Control-Request-Headers")
        if wanted:
            headers["Access-Control-Allow-Headers"] = wanted
        return web.Response(status=204, headers=headers)
    return await handler(request)


def add_cors_headers(request: web.Request, response: web.StreamResponse,
                     allowed: tuple[str, ...]) -> None:
    """CORS headers for ``response`` when ``allowed`` lets the request's origin read it."""
    if ANY_ORIGIN in allowed:
        response.headers["Access-Control-Allow-Origin"] = ANY_ORIGIN
    else:
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    response.headers["Access-Control-Expose-Headers"] = EXPOSED


def response_finisher(cors_origins: tuple[str, ...]) -> ResponseHook:
    """The app's one ``on_response_prepare`` hook (module rules), for these CORS origins."""
    any_origin = ANY_ORIGIN in cors_origins

    async def finish_response(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        if any_origin:
            headers["Access-Control-Allow-Origin"] = ANY_ORIGIN
            headers["Access-Control-Expose-Headers"] = EXPOSED
        else:
            add_cors_headers(request, response, cors_origins)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        forbid_storing_errors(response)
        count_response(request, response)

    return finish_response
