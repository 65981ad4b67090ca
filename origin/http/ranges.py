"""Byte ranges and conditional GET for bodies built in memory (RFC 9110 §13, §14).

Rules:
- one ``bytes=first-last`` or ``bytes=-suffix`` range is honoured (206);
  a multi-range request is answered whole (200), which §14.2 allows;
- a range that starts past the end is unsatisfiable (416 with
  ``Content-Range: bytes */size``); a malformed header is ignored (§14.2);
- a suffix range of an empty body is answered whole (200): no ``Content-Range``
  can name a part of nothing;
- ``If-None-Match`` matching the strong ETag answers 304; ``If-Range`` with
  another validator turns a range request into a full 200.
"""

from __future__ import annotations

import re

from aiohttp import web

from origin.errors import RangeNotSatisfiable
from origin.http.bulk_response import BulkResponse

_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.ASCII)  # \d: ASCII digits only


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return ``(start, end_exclusive)`` or None for "send it all"."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        if size == 0:  # satisfiable (§14.1.1) but nothing to cut: answer the empty body whole
            return None
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size)


def _etag_matches(header: str, etag: str) -> bool:
    return header.strip() == "*" or etag in (t.strip() for t in header.split(","))


def respond_bytes(
    request: web.Request,
    body: bytes | bytearray,
    *,
    content_type: str,
    etag: str,
    cache_control: str,
) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": cache_control, "Accept-Ranges": "bytes"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and _etag_matches(inm, etag):
        return web.Response(status=304, headers=headers)
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None
    span = parse_range(wanted, len(body))
    if span is None:
        return BulkResponse(body=body, content_type=content_type, headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
    return BulkResponse(status=206, body=body[start:end], content_type=content_type,
                        headers=headers)
