"""Reverse proxy for players' ``/license/…`` requests to the licence module.

Keep-alive through the shared session; request bodies are capped; the
response is streamed back.  Hop-by-hop headers are dropped both ways
(RFC 9110 §7.6.1).  The licence module unreachable or timing out → 503;
the internal API (``/internal/…``) is never reachable through here.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from origin.errors import BadRequest, DependencyUnavailable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# CORS is the origin's own business (middleware), not the licence module's.
DROP_FROM_UPSTREAM = HOP_BY_HOP | {
    "access-control-allow-origin", "access-control-expose-headers", "vary",
}


async def proxy_license_request(
    request: web.Request,
    session: aiohttp.ClientSession,
    base_url: str,
    max_body: int,
) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > max_body:
        raise BadRequest("licence request body too large")
    body = await request.content.read(max_body + 1)
    if len(body) > max_body:
        raise BadRequest("licence request body too large")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    url = base_url + request.rel_url.raw_path_qs
    try:
        upstream = await session.request(request.method, url, headers=headers, data=body,
                                         allow_redirects=False)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DependencyUnavailable("licence module unavailable") from exc
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in DROP_FROM_UPSTREAM:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(65536):
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError):
            # The status line is out: all that is left is to cut the connection,
            # so the client sees a truncated body rather than a complete-looking one.
            response.force_close()
            return response
        await response.write_eof()
        return response
