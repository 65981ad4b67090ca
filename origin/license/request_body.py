"""Reading a licence module request's body under a byte cap.

Rule: at most ``limit`` bytes are ever held; a ``Content-Length`` over the cap, or a
body (chunked or not) that grows past it, is ``LicenseRequestTooLarge`` (413) before
anything parses it.  Routes with their own 413 text catch it and raise their own.
"""

from __future__ import annotations

from aiohttp import web

from origin.license.clearkey import LicenseRequestTooLarge


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or ``LicenseRequestTooLarge`` once it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise LicenseRequestTooLarge()
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise LicenseRequestTooLarge()
    return bytes(body)
