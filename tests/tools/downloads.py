"""Slow downloads of a clear file from a running origin, for graceful-stop and
changed-file tests.

``clear_download`` opens a raw HTTP/1.1 connection with a small receive buffer, so the
server's writes back up behind a reader that takes its time; ``read_throttled`` is
that reader.  Every read has a deadline: a server that neither sends nor closes fails
the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator

DEADLINE = 30.0
CLIENT_RCVBUF = 16 << 10
CHUNK = 16 << 10


@contextlib.asynccontextmanager
async def clear_download(port: int, path: str, *, keep_alive: bool
                         ) -> AsyncIterator[tuple[asyncio.StreamReader, int]]:
    """GET ``path`` on 127.0.0.1:``port`` on a socket with a small receive buffer; yields
    the body reader (headers consumed) and the announced length.  Without ``keep_alive``
    the request asks ``Connection: close``; with it, the answer must not announce a close
    either (only the length ends the body)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
    try:
        close = "" if keep_alive else "Connection: close\r\n"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n{close}\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 200"), head
        if keep_alive:
            assert b"connection: close" not in head.lower()
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        yield reader, length
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_throttled(reader: asyncio.StreamReader, digest: hashlib._Hash,
                         limit: int) -> int:
    """Read up to ``limit`` bytes slowly (a throttled loop, one chunk per tick)."""
    got = 0
    while got < limit:
        chunk = await asyncio.wait_for(reader.read(min(CHUNK, limit - got)), DEADLINE)
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
        await asyncio.sleep(0.005)  # throttling the client, not synchronising
    return got
