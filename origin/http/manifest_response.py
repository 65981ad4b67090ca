"""The response for a rewritten manifest (playlist or MPD) held in memory.

Rules:

- a plain ``GET``/``HEAD`` (no ``If-None-Match``, no ``Range``) of a body under
  ``SEPARATE_HEADERS_FROM`` bytes — every cache hit of an ordinary manifest — is a
  ``web.Response`` made directly from the body and its headers, in the order
  ``origin.http.ranges.respond_bytes`` writes them (``ETag``, ``Cache-Control``,
  ``Accept-Ranges``, ``Content-Type``; aiohttp adds ``Content-Length``);
- everything else — conditional requests (304), ranges (206, 416, ``If-Range``),
  large bodies (``BulkResponse``) — goes through ``respond_bytes`` itself;
- either way the client sees the same status, headers and bytes
  (``tests/test_manifest_response.py`` compares the two paths).
"""

from __future__ import annotations

from aiohttp import web

from origin.http.bulk_response import SEPARATE_HEADERS_FROM
from origin.http.byte_lru import Stored
from origin.http.ranges import respond_bytes


def respond_manifest(request: web.Request, stored: Stored, *, content_type: str,
                     cache_control: str) -> web.Response:
    """``stored`` (a manifest body and its strong ETag) as the answer to ``request``."""
    body = stored.body
    headers = request.headers
    if "If-None-Match" in headers or "Range" in headers or len(body) >= SEPARATE_HEADERS_FROM:
        return respond_bytes(request, body, content_type=content_type, etag=stored.etag,
                             cache_control=cache_control)
    return web.Response(body=body, headers=(
        ("ETag", stored.etag), ("Cache-Control", cache_control), ("Accept-Ranges", "bytes"),
        ("Content-Type", content_type)))
