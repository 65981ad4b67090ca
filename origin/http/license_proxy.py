"""Reverse proxy for players' ``/license/…`` (and ``/admin/…``) requests to the licence module.

Over the pooled keep-alive connections of ``origin.http.license_channel``.  Hop-by-hop
headers are dropped both ways (RFC 9110 §7.6.1), and so are the licence module's CORS
headers (CORS is the origin's own, ``origin.http.middleware``).  The licence module
unreachable, timing out or answering malformed HTTP before its status line is relayed
→ 503 (``DependencyUnavailable``).

Rules for what goes upstream:

- The path: every segment of the request path, percent-decoded once, must be a
  plain name (``SAFE_SEGMENT``: letters, digits, ``-._~`` and ``!$&'()*+,=:@``) and
  not ``.``/``..``; the first must be the route's own (``license`` or ``admin``).
  Anything else — dot segments in any encoding, an encoded ``/`` or ``\\``,
  ``%00``, ``;`` parameters, double encoding, overlong or invalid UTF-8, empty
  segments — is a 404 and nothing is sent: the licence module's internal API
  (``/internal/…``) is never reachable through here.  The decoded path is what is
  sent (it needs no encoding), so no client-side normalising can change it.  The
  query goes as it came (aiohttp admitted it to a request line).
- The body: read whole before anything is sent, at most ``max_body`` bytes (more →
  413, whether announced by ``Content-Length`` or found while reading a chunked
  body), within ``body_timeout`` seconds of the handler starting (a body trickling
  in slower → 408, and the connection is closed).
- The header fields: the request's own, in order, but the hop-by-hop ones and any
  ``X-Forwarded-For``; then ``X-Forwarded-For`` with the peer's address (what the
  licence module's audit log names as the client).

And what comes back:

- An answer with a ``Content-Length`` body under ``WHOLE_BODY`` bytes (every key,
  Clear Key licence and error of the licence module) is read whole first and sent as
  one ``web.Response``: headers and body in one write, and a body cut short is a clean
  503 instead of a truncated answer.
- Anything else — larger bodies (upstream Widevine/PlayReady/FairPlay answers),
  chunked or close-delimited ones, ``HEAD``, 204/304 — is streamed: status and
  headers first (``Content-Length`` as the licence module sent it), then the body in
  pieces as it arrives.  Once the status is out, a failure can only cut the
  connection, so the client sees a truncated body, never a complete-looking one.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

from aiohttp import web

from origin.errors import DependencyUnavailable, NotFound, PayloadTooLarge, RequestTimeout
from origin.http.license_channel import WHOLE_BODY, Answer, ChannelError, LicenseChannel

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# CORS is the origin's own business (middleware), not the licence module's.
DROP_FROM_UPSTREAM = HOP_BY_HOP | {
    "access-control-allow-origin", "access-control-expose-headers", "vary",
}
DROP_FROM_CLIENT = HOP_BY_HOP | {"x-forwarded-for"}


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
    if not request.body_exists:
        return b""
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
    channel: LicenseChannel,
    max_body: int,
    *,
    root: str = "license",
    body_timeout: float = 10.0,
) -> web.StreamResponse:
    path = upstream_path(request.rel_url.raw_path, root)
    body = await read_capped_body(request, max_body, body_timeout)
    fields = [(k, v) for k, v in request.headers.items() if k.lower() not in DROP_FROM_CLIENT]
    if request.remote:
        fields.append(("X-Forwarded-For", request.remote))
    query = request.rel_url.raw_query_string
    try:
        answer = await channel.exchange(request.method, path + ("?" + query if query else ""),
                                        fields, body)
    except (ChannelError, TimeoutError, OSError) as exc:
        raise DependencyUnavailable("licence module unavailable") from exc
    head = answer.head
    relayed = [(k, v) for k, v in head.fields if k.lower() not in DROP_FROM_UPSTREAM]
    if answer.body is not None and request.method != "HEAD" and len(answer.body) < WHOLE_BODY:
        return web.Response(status=head.status, reason=head.reason, body=answer.body,
                            headers=relayed)
    try:
        return await _stream(request, answer, relayed)
    finally:
        answer.release()


async def _stream(request: web.Request, answer: Answer,
                  relayed: list[tuple[str, str]]) -> web.StreamResponse:
    """Status and headers now, the body as it comes (module rules)."""
    response = web.StreamResponse(status=answer.head.status, reason=answer.head.reason)
    for name, value in relayed:
        response.headers.add(name, value)
    if answer.head.length is not None:
        response.content_length = answer.head.length
    await response.prepare(request)
    try:
        async for chunk in answer.chunks():
            await response.write(chunk)
    except (ChannelError, TimeoutError, OSError):
        # The status line is out: all that is left is to cut the connection,
        # so the client sees a truncated body rather than a complete-looking one.
        response.force_close()
        return response
    await response.write_eof()
    return response
