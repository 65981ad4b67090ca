"""Reverse proxy for players' ``/license/…`` (and ``/admin/…``) requests to the licence module.

Keep-alive through the shared session; the response is streamed back.  Hop-by-hop
headers are dropped both ways (RFC 9110 §7.6.1).  The licence module unreachable or
timing out → 503.

Rules for what goes upstream:

- The path: every segment of the request path, percent-decoded once, must be a
  plain name (``SAFE_SEGMENT``: letters, digits, ``-._~`` and ``!$&'()*+,=:@``) and
  not ``.``/``..``; the first must be the route's own (``license`` or ``admin``).
  Anything else — dot segments in any encoding, an encoded ``/`` or ``\\``,
  ``%00``, ``;`` parameters, double encoding, overlong or invalid UTF-8, empty
  segments — is a 404 and nothing is sent: the licence module's internal API
  (``/internal/…``) is never reachable through here.  The decoded path is what is
  sent (it needs no encoding), so no client-side normalising can change it.
- The body: read whole before anything is sent, at most ``max_body`` bytes (more →
  413, whether announced by ``Content-Length`` or found while reading a chunked
  body), within ``body_timeout`` seconds of the handler starting (a body trickling
  in slower → 408, and the connection is closed).
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from yarl import URL

from origin.errors import DependencyUnavailable, NotFound, PayloadTooLarge, RequestTimeout

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# CORS is the origin's own business (middleware), not the licence module's.
DROP_FROM_UPSTREAM = HOP_BY_HOP | {
    "access-control-allow-origin", "access-control-expose-headers", "vary",
}


SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,=:@-]+")


def upstream_path(raw_path: str, root: str) -> str:
    """The path to ask the licence module for (module rules); ``NotFound`` otherwise."""
    segments = raw_path.split("/")
    if segments[0] != "" or len(segments) < 2:
        raise NotFound("no such licence route")
    decoded = []
    for segment in segments[1:]:
        try:
            name = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise NotFound("no such licence route") from None
        if SAFE_SEGMENT.fullmatch(name) is None or name in (".", ".."):
            raise NotFound("no such licence route")
        decoded.append(name)
    if decoded[0] != root:
        raise NotFound("no such licence route")
    return "/" + "/".join(decoded)


async def read_capped_body(request: web.Request, max_body: int, within: float) -> bytes:
    """The whole request body: ``PayloadTooLarge`` over ``max_body`` bytes,
    ``RequestTimeout`` (and the connection closed) if it takes over ``within`` seconds."""
    if request.content_length is not None and request.content_length > max_body:
        raise PayloadTooLarge("licence request body too large")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within if within > 0 else None):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_body:
                    raise PayloadTooLarge("licence request body too large")
                parts.append(chunk)
    except TimeoutError:
        if request.transport is not None:
            request.protocol.close()  # no keep-alive after a body cut short
        raise RequestTimeout("licence request body not received in time") from None
    return b"".join(parts)


async def proxy_license_request(
    request: web.Request,
    session: aiohttp.ClientSession,
    base_url: str,
    max_body: int,
    *,
    root: str = "license",
    body_timeout: float = 10.0,
) -> web.StreamResponse:
    path = upstream_path(request.rel_url.raw_path, root)
    body = await read_capped_body(request, max_body, body_timeout)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    query = request.rel_url.raw_query_string
    url = URL(base_url + path + ("?" + query if query else ""), encoded=True)
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
