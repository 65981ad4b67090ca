"""The licence proxy's HTTP/1.1 client (``origin.http.license_channel``) and its response
head parser (``origin.http.response_head``), against real peers on Unix sockets.

The peers are asyncio servers written here, byte for byte, so every framing, every
malformation and every connection-reuse rule is exercised for real: keep-alive reuse
(control: ``Connection: close`` costs a connection per request), chunked and long bodies,
bodies cut short, a full listen queue (control: the raw ``EAGAIN`` it gives), idle and
closed connections, time-outs.  The parser is fuzzed: only ``MalformedHead`` may escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.config import LicenseEndpoint
from origin.http.license_channel import ChannelError, LicenseChannel
from origin.http.response_head import Framing, MalformedHead, chunk_size, parse_head
from tests.tools.scripted_peer import read_request

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


# --- the head parser -------------------------------------------------------------------------


def test_head_fields_framing_and_reuse() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length:  16 \r\nX-Odd: caf\xc3\xa9", method="GET")
    assert (head.status, head.reason, head.framing, head.length, head.reusable) == (
        200, "OK", Framing.LENGTH, 16, True)
    assert head.fields == (("Content-Type", "application/octet-stream"),
                           ("Content-Length", "16"), ("X-Odd", "café"))
    chunked = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked", method="GET")
    assert (chunked.framing, chunked.length, chunked.reusable) == (Framing.CHUNKED, None, True)
    both = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
                      method="GET")
    assert (both.framing, both.reusable) == (Framing.CHUNKED, False)
    until_close = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", method="GET")
    assert (until_close.framing, until_close.reusable) == (Framing.UNTIL_CLOSE, False)
    assert parse_head(b"HTTP/1.1 200 OK", method="GET").framing is Framing.UNTIL_CLOSE
    for status in (b"204 No Content", b"304 Not Modified", b"103 Early Hints"):
        assert parse_head(b"HTTP/1.1 " + status, method="GET").framing is Framing.NONE
    head_request = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 16", method="HEAD")
    assert (head_request.framing, head_request.length) == (Framing.NONE, 16)
    assert not parse_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n"
                          b"Content-Length: 0", method="GET").reusable
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0", method="GET").reusable
    assert parse_head(b"HTTP/1.1 404", method="GET").reason == ""
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7", method="GET").length == 7


@pytest.mark.parametrize("head", [
    b"", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"ICY 200 OK",
    b"HTTP/1.1 200 OK\r\n folded: value", b"HTTP/1.1 200 OK\r\nno colon",
    b"HTTP/1.1 200 OK\r\n: empty name", b"HTTP/1.1 200 OK\r\nbad name: x",
    b"HTTP/1.1 200 OK\r\nX: a\nb", b"HTTP/1.1 200 OK\r\nX: a\rb", b"HTTP/1.1 200 OK\r\nX: \x00",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6", b"HTTP/1.1 200 OK\r\nContent-Length: -1",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x10", b"HTTP/1.1 200 OK\r\nContent-Length: ",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999",
    b"HTTP/1.1 200 OK" + b"\r\nX: y" * 101,
])
def test_malformed_heads(head: bytes) -> None:
    with pytest.raises(MalformedHead):
        parse_head(head, method="GET")


def test_chunk_sizes() -> None:
    assert [chunk_size(line) for line in (b"0", b"1a", b"FF;name=value", b"10 ")] == [
        0, 26, 255, 16]
    for bad in (b"", b"-1", b"0x10", b"g", b"1" * 17, b";ext"):
        with pytest.raises(MalformedHead):
            chunk_size(bad)


SEED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        b"Connection: keep-alive\r\nTransfer-Encoding: chunked")


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda cut, junk, at: SEED[:at] + junk + SEED[at:cut],
              st.integers(0, len(SEED)), st.binary(max_size=8), st.integers(0, len(SEED))),
), st.sampled_from(["GET", "HEAD", "POST"]))
def test_only_malformed_head_escapes(head: bytes, method: str) -> None:
    try:
        parsed = parse_head(head, method=method)
    except MalformedHead:
        return
    assert 100 <= parsed.status <= 999
    assert parsed.length is None or parsed.length >= 0
    assert all("\r" not in k + v and "\n" not in k + v for k, v in parsed.fields)


# --- peers on a Unix socket ------------------------------------------------------------------


@dataclass
class Peer:
    """A Unix-socket server answering each request with ``reply`` (False: close after)."""

    path: Path
    reply: Reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if not await self.reply(reader, writer):
                    return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def peer(tmp_path: Path, reply: Reply) -> AsyncIterator[Peer]:
    running = Peer(tmp_path / "licence.sock", reply)
    server = await asyncio.start_unix_server(running._serve, path=str(running.path))
    try:
        yield running
    finally:
        server.close()
        await server.wait_closed()


def answer(raw: bytes, *, keep: bool = True) -> Reply:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep
    return reply


def channel_to(path: Path, **options: float) -> LicenseChannel:
    return LicenseChannel(LicenseEndpoint("http://license", "t", str(path)),
                          timeout=options.pop("timeout", 5.0), **options)  # type: ignore[arg-type]


KEY = os.urandom(16)
KEY_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: 16\r\n\r\n" + KEY)


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "control-connection-close"])
async def test_keep_alive_reuses_one_connection(tmp_path: Path, close: bool) -> None:
    raw = KEY_ANSWER.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") if close \
        else KEY_ANSWER
    async with peer(tmp_path, answer(raw, keep=not close)) as running:
        channel = channel_to(running.path)
        for _ in range(5):
            got = await channel.exchange("GET", "/license/aes128/ab", [("X-A", "1")], b"")
            assert (got.head.status, got.body) == (200, KEY)
        await channel.close()
    assert running.connections == (5 if close else 1)
    assert running.requests[0] == (b"GET /license/aes128/ab HTTP/1.1\r\nHost: license\r\n"
                                   b"X-A: 1\r\n\r\n")


async def test_request_framing_with_a_body_and_a_path_prefix(tmp_path: Path) -> None:
    async with peer(tmp_path, answer(KEY_ANSWER)) as running:
        channel = LicenseChannel(LicenseEndpoint("http://h:81/base/", "t", str(running.path)),
                                 timeout=5)
        await channel.exchange("POST", "/license/clearkey?x=1", [], b"{}")
        await channel.exchange("POST", "/license/clearkey", [], b"")
        await channel.close()
        channel = LicenseChannel(LicenseEndpoint("http://[::1]:8081", "t", str(running.path)),
                                 timeout=5)
        await channel.exchange("GET", "/license/x", [], b"")
        await channel.close()
    assert running.requests == [
        b"POST /base/license/clearkey?x=1 HTTP/1.1\r\nHost: h:81\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /base/license/clearkey HTTP/1.1\r\nHost: h:81\r\nContent-Length: 0\r\n\r\n",
        b"GET /license/x HTTP/1.1\r\nHost: [::1]:8081\r\n\r\n"]


async def collect(channel: LicenseChannel, method: str = "GET") -> tuple[int, bytes, bool]:
    """Status, streamed body, and whether the body came whole with the head."""
    got = await channel.exchange(method, "/license/x", [], b"")
    whole = got.body is not None
    try:
        body = b"".join([piece async for piece in got.chunks()])
    finally:
        got.release()
    return got.head.status, body, whole


async def test_long_and_chunked_bodies_stream_and_keep_the_connection(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    pieces = [big[:70000], big[70000:70001], big[70001:]]
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    answers = iter([
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
        + b"0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + KEY_ANSWER,
        b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
    ])

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(answers))
        await writer.drain()
        return True

    async with peer(tmp_path, reply) as running:
        channel = channel_to(running.path)
        assert await collect(channel) == (200, big, False)
        assert await collect(channel) == (200, big, False)
        assert await collect(channel) == (200, KEY, True)
        assert await collect(channel) == (304, b"", False)
        await channel.close()
    assert running.connections == 1


async def test_close_delimited_body_is_read_to_the_end(tmp_path: Path) -> None:
    body = os.urandom(200_000)
    async with peer(tmp_path, answer(b"HTTP/1.1 200 OK\r\n\r\n" + body, keep=False)) as running:
        channel = channel_to(running.path)
        assert await collect(channel) == (200, body, False)
        assert await collect(channel) == (200, body, False)
        await channel.close()
    assert running.connections == 2


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + KEY[:5],
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + bytes(5000),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + KEY,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
    b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nBad Field\r\n\r\n" + KEY,
    b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"",
], ids=["short", "short-streamed", "chunk-short", "chunk-size", "chunk-crlf", "field",
        "head-cut", "switch", "nothing"])
async def test_broken_answers_are_channel_errors(tmp_path: Path, raw: bytes) -> None:
    async with peer(tmp_path, answer(raw, keep=False)) as running:
        channel = channel_to(running.path)
        with pytest.raises(ChannelError):
            await collect(channel)
        await channel.close()


async def test_head_over_the_limit_is_a_channel_error(tmp_path: Path) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 << 10) + b"\r\nContent-Length: 0\r\n\r\n"
    async with peer(tmp_path, answer(raw)) as running:
        channel = channel_to(running.path)
        with pytest.raises(ChannelError):
            await collect(channel)
        await channel.close()


async def test_an_answer_not_read_to_its_end_closes_its_connection(tmp_path: Path) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + bytes(1000000)
    async with peer(tmp_path, answer(big)) as running:
        channel = channel_to(running.path)
        got = await channel.exchange("GET", "/license/x", [], b"")
        async for _ in got.chunks():
            break  # the client went away after the first piece
        got.release()
        assert await collect(channel) == (200, bytes(1000000), False)
        await channel.close()
    assert running.connections == 2


async def test_idle_and_peer_closed_connections_are_not_reused(tmp_path: Path) -> None:
    async with peer(tmp_path, answer(KEY_ANSWER, keep=False)) as running:
        # The peer closes after each answer without saying so: the next request must
        # notice and open a new connection, not fail.
        channel = channel_to(running.path)
        for _ in range(3):
            assert await collect(channel) == (200, KEY, True)
            await asyncio.sleep(0.05)  # its FIN arrives
        await channel.close()
    assert running.connections == 3
    async with peer(tmp_path, answer(KEY_ANSWER)) as running:
        channel = channel_to(running.path, idle_timeout=0.05)
        assert await collect(channel) == (200, KEY, True)
        await asyncio.sleep(0.1)
        assert await collect(channel) == (200, KEY, True)
        assert await collect(channel) == (200, KEY, True)
        await channel.close()
    assert running.connections == 2


async def test_a_silent_peer_times_out(tmp_path: Path) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async with peer(tmp_path, never) as running:
        channel = channel_to(running.path, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await channel.exchange("GET", "/license/x", [], b"")
        assert time.monotonic() - started < 2
        await channel.close()


async def test_no_peer_is_an_os_error(tmp_path: Path) -> None:
    channel = channel_to(tmp_path / "missing.sock")
    with pytest.raises(OSError):
        await channel.exchange("GET", "/license/x", [], b"")


@pytest.mark.parametrize("retry", [True, False], ids=["channel", "control-raw-connect"])
async def test_a_full_listen_queue_is_waited_out(tmp_path: Path, retry: bool) -> None:
    """A Unix socket whose queue is full refuses at once (EAGAIN); the channel retries until
    the peer accepts.  The control: the raw connect that the channel retries does fail."""
    path = tmp_path / "full.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the queue: nobody accepts yet
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(str(path))
            except BlockingIOError:
                filler.close()
                break
            fillers.append(filler)
        if not retry:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.setblocking(False)
            with pytest.raises(BlockingIOError):
                probe.connect(str(path))
            probe.close()
            return
        listener.setblocking(False)

        async def accept_later() -> None:
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            for filler in fillers:
                filler.close()
            while True:
                conn, _ = await loop.sock_accept(listener)
                with conn:
                    data = b""
                    while not data.endswith(b"\r\n\r\n"):
                        more = await loop.sock_recv(conn, 4096)
                        if not more:
                            break  # a filler, closed
                        data += more
                    if b"/license/real" in data:
                        await loop.sock_sendall(conn, KEY_ANSWER)
                        return

        server = asyncio.create_task(accept_later())
        channel = channel_to(path)
        got = await channel.exchange("GET", "/license/real", [], b"")
        assert got.body == KEY
        await server
        await channel.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_errors_carry_nothing_sent_or_received(tmp_path: Path) -> None:
    secret = "Bearer " + hashlib.sha256(os.urandom(8)).hexdigest()
    raw = b"HTTP/1.1 200 OK\r\nX-Token: " + secret.encode() + b"\r\nBad Field\r\n\r\n"
    async with peer(tmp_path, answer(raw, keep=False)) as running:
        channel = channel_to(running.path)
        with pytest.raises(ChannelError) as caught:
            await channel.exchange("GET", "/license/x?token=" + secret, [("Authorization",
                                                                          secret)], b"")
        await channel.close()
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in repr(channel)
