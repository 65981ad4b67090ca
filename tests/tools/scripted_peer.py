"""Reading what a client sends to a byte-scripted HTTP/1.1 peer (tests of the licence
proxy and its channel play the licence module byte by byte)."""

from __future__ import annotations

import asyncio


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request (head and its ``Content-Length`` body) as sent, or None when the
    client closed the connection instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)
