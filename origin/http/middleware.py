"""The one place typed errors become HTTP responses, and CORS for every response.

Error bodies are JSON ``{"error": "<short reason>"}``; no traceback, key or
token ever reaches a client.  Unexpected exceptions are logged server-side
(the log line names the route, never the query string) and answered 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from origin.errors import OriginError

log = logging.getLogger("origin.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_ORIGINS: web.AppKey[tuple[str, ...]] = web.AppKey("cors_origins", tuple)
EXPOSED = "Content-Length, Content-Range, ETag, Accept-Ranges"


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": detail}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
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


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflight requests (``OPTIONS`` with ``Access-Control-Request-Method``)."""
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


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: CORS headers on every response, errors included."""
    allowed = request.app[CORS_ORIGINS]
    origin = request.headers.get("Origin")
    if "*" in allowed:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin is not None and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    else:
        return
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
