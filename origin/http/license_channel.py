"""HTTP/1.1 to the licence module for the licence proxy: pooled keep-alive connections.

A lean client on purpose (``origin.http.license_proxy`` is its one user): an aiohttp
``ClientSession`` request costs more CPU than the licence module takes to decide.

Rules:

- Where: the ``LicenseEndpoint`` — its Unix socket when it has one, else the host and
  port of its ``http://`` or ``https://`` base URL (TLS verified against the system's
  CAs); the base URL's path is the prefix of every request target, its authority the
  ``Host``.
- Connections: at most ``limit`` at once (more requests wait for one); an idle one is
  reused last-in first-out, and closed instead when it has been idle ``idle_timeout``
  seconds (before the licence module's own keep-alive time-out can race a request) or
  its peer has closed it.  One exchange at a time per connection; a connection goes
  back to the pool only once its answer was read whole and the answer allows reuse
  (``origin.http.response_head``); anything else — an error, a time-out, a
  cancellation, an answer not read to its end — closes it.  Nothing is retried.
- A request is written in one piece: request line, ``Host``, the given fields as they
  are, ``Content-Length`` when there is a body or the method has one (POST, PUT,
  PATCH), the body.
- Connecting: a Unix socket whose listen queue is full refuses with ``EAGAIN``; that is
  retried (1 ms, doubling to 50 ms) as TCP retries a dropped SYN.
- Time: connecting may take ``connect_timeout``; the whole exchange, ``timeout`` from
  the call — the head and a small body under one deadline, each streamed read under
  the same deadline.
- The answer: the head parsed by ``parse_head``, 1xx interim answers skipped.  A body
  framed by a ``Content-Length`` under ``WHOLE_BODY`` bytes is read before ``exchange``
  returns (``Answer.body``); any other body is read by iterating ``Answer.chunks``
  (pieces of at most ``CHUNK`` bytes; chunked bodies decoded), and the caller must
  ``release`` the answer.  A body cut short, a malformed head or chunk:
  ``ChannelError``.
- Errors are ``ChannelError``, ``OSError`` or ``TimeoutError``, and never carry what
  was sent or received: header fields hold tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence

from yarl import URL

from origin.config import LicenseEndpoint
from origin.http.response_head import Framing, MalformedHead, ResponseHead, chunk_size, parse_head

WHOLE_BODY = 64 * 1024
CHUNK = 64 * 1024
MAX_HEAD = 64 * 1024  # also the longest chunk-size or trailer line
MAX_TRAILERS = 100
DEFAULT_LIMIT = 256
IDLE_TIMEOUT = 15.0
CONNECT_RETRY_FIRST = 0.001  # seconds; doubled per retry, up to CONNECT_RETRY_MAX
CONNECT_RETRY_MAX = 0.05
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class ChannelError(Exception):
    """The licence module's answer could not be read (malformed, cut short)."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class Answer:
    """One answer of the licence module: its head, and its body or a way to stream it."""

    __slots__ = ("_channel", "_connection", "_deadline", "_done", "_framing", "_remaining",
                 "body", "head")

    def __init__(self, channel: LicenseChannel, connection: _Connection, head: ResponseHead,
                 deadline: float) -> None:
        self._channel = channel
        self._connection: _Connection | None = connection
        self._deadline = deadline
        self._framing = head.framing
        self._remaining = head.length if head.framing is Framing.LENGTH else None
        self._done = head.framing is Framing.NONE
        self.head = head
        self.body: bytes | None = None

    def __repr__(self) -> str:
        return f"Answer(status={self.head.status})"

    async def _read_whole(self, length: int) -> None:
        connection = self._connection
        assert connection is not None
        try:
            self.body = await connection.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise ChannelError("licence answer cut short") from None
        self._done = True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, in pieces (module rules); ``ChannelError`` if it is cut short."""
        if self.body is not None:
            if self.body:
                yield self.body
            return
        connection = self._connection
        if connection is None:
            return
        reader = connection.reader
        try:
            if self._framing is Framing.LENGTH:
                while self._remaining:
                    async with asyncio.timeout_at(self._deadline):
                        piece = await reader.read(min(self._remaining, CHUNK))
                    if not piece:
                        raise ChannelError("licence answer cut short")
                    self._remaining -= len(piece)
                    yield piece
            elif self._framing is Framing.CHUNKED:
                async for piece in self._dechunked(reader):
                    yield piece
            elif self._framing is Framing.UNTIL_CLOSE:
                while True:
                    async with asyncio.timeout_at(self._deadline):
                        piece = await reader.read(CHUNK)
                    if not piece:
                        break
                    yield piece
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, MalformedHead):
            raise ChannelError("licence answer cut short or malformed") from None
        self._done = True

    async def _dechunked(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            async with asyncio.timeout_at(self._deadline):
                size = chunk_size((await reader.readuntil(b"\r\n"))[:-2])
            if size == 0:
                break
            while size:
                async with asyncio.timeout_at(self._deadline):
                    piece = await reader.read(min(size, CHUNK))
                if not piece:
                    raise ChannelError("licence answer cut short")
                size -= len(piece)
                yield piece
            async with asyncio.timeout_at(self._deadline):
                if await reader.readexactly(2) != b"\r\n":
                    raise ChannelError("malformed chunk")
        for _ in range(MAX_TRAILERS + 1):
            async with asyncio.timeout_at(self._deadline):
                if await reader.readuntil(b"\r\n") == b"\r\n":
                    return
        raise ChannelError("too many trailer fields")

    def release(self) -> None:
        """Give the connection back (when the answer was read whole and allows it) or
        close it.  Idempotent."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._channel._put_back(connection, self._done and self.head.reusable)


class LicenseChannel:
    """Pooled HTTP/1.1 connections to the licence module (module rules)."""

    def __init__(self, endpoint: LicenseEndpoint, *, timeout: float,
                 connect_timeout: float = 3.0, limit: int = DEFAULT_LIMIT,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        url = URL(endpoint.base_url)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError("the licence module's URL must be http:// or https://")
        self._unix_path = endpoint.unix_path
        self._host = url.raw_host
        self._port = url.port
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None)
        authority = url.host_port_subcomponent  # "[::1]:8081"; no default port
        self._prefix = url.raw_path.rstrip("/")
        self._host_field = f"\r\nHost: {authority}\r\n"
        self._timeout = timeout
        self._connect_timeout = min(timeout, connect_timeout)
        self._idle_timeout = idle_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"LicenseChannel({len(self._idle)} idle)"

    async def exchange(self, method: str, target: str, fields: Sequence[tuple[str, str]],
                       body: bytes) -> Answer:
        """Send one request (``target``: path and query, below the base URL's path) and
        read the answer's head, and its body when small (module rules)."""
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                connection = await self._connection()
                connection.writer.write(self._request(method, target, fields, body))
                head = await self._read_head(connection.reader, method)
                answer = Answer(self, connection, head, deadline.when() or 0.0)
                if head.framing is Framing.LENGTH and head.length is not None \
                        and head.length < WHOLE_BODY:
                    await answer._read_whole(head.length)
                    answer.release()
                return answer
        except BaseException:
            if connection is not None:
                connection.close()
            self._slots.release()
            raise

    def _request(self, method: str, target: str, fields: Sequence[tuple[str, str]],
                 body: bytes) -> bytes:
        parts = [method, " ", self._prefix, target, " HTTP/1.1", self._host_field]
        for name, value in fields:
            parts += (name, ": ", value, "\r\n")
        if body or method in _WITH_BODY:
            parts += ("Content-Length: ", str(len(body)), "\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + body

    async def _read_head(self, reader: asyncio.StreamReader, method: str) -> ResponseHead:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                raise ChannelError("licence module closed the connection") from None
            except asyncio.LimitOverrunError:
                raise ChannelError("licence answer head too large") from None
            try:
                head = parse_head(raw[:-4], method=method)
            except MalformedHead:
                raise ChannelError("malformed licence answer") from None
            if head.status >= 200:
                return head
            if head.status == 101:
                raise ChannelError("unexpected protocol switch")

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if (now - connection.idle_since < self._idle_timeout
                    and not connection.writer.is_closing() and not connection.reader.at_eof()):
                return connection
            connection.close()
        pause = CONNECT_RETRY_FIRST
        async with asyncio.timeout(self._connect_timeout):
            while True:
                try:
                    if self._unix_path is not None:
                        reader, writer = await asyncio.open_unix_connection(
                            sock=_connected_unix_socket(self._unix_path), limit=MAX_HEAD)
                    else:
                        reader, writer = await asyncio.open_connection(
                            self._host, self._port, ssl=self._ssl, limit=MAX_HEAD)
                    return _Connection(reader, writer)
                except BlockingIOError:
                    # EAGAIN from connect(2): a Unix socket's listen queue is full
                    # (unix(7)).  TCP would retry a dropped SYN; so do we, within the
                    # connect time-out.
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, CONNECT_RETRY_MAX)

    def _put_back(self, connection: _Connection, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def _connected_unix_socket(path: str) -> socket.socket:
    """A non-blocking Unix stream socket connected to ``path``.  Connected here, not by the
    loop: a Unix socket's ``connect(2)`` completes at once or fails, ``EAGAIN`` when the
    listen queue is full (``BlockingIOError``) — which asyncio's own loop would take for
    "in progress" and report only at the first write."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock
