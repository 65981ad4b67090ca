"""The licence app's one error→response middleware.

``OriginError`` becomes ``{"error": detail}`` with its status; ``web.HTTPException``
passes through; anything else is a 500 ``{"error": "internal error"}``.  The log
line for an unexpected error names the exception type, method, path and stack,
but not the exception's message or the query string, which may carry key
material or tokens.
"""

from __future__ import annotations

import logging
import traceback

from aiohttp import web
from aiohttp.typedefs import Handler

from origin.errors import OriginError

log = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except OriginError as exc:
        return web.json_response(
            {"error": exc.detail},
            status=exc.status,
            headers={"Cache-Control": "no-store", **(exc.headers or {})},
        )
    except Exception as exc:
        stack = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
        log.error(
            "unhandled %s in %s %s\n%s",
            type(exc).__qualname__,
            request.method,
            request.path,
            stack.rstrip(),
        )
        return web.json_response({"error": "internal error"}, status=500)
