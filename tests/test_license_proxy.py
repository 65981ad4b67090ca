"""The origin's licence proxy (``origin.http.license_proxy``) end to end: the real
``origin serve --license-url`` in front of a scripted licence module on loopback TCP.

The scripted module answers byte for byte, so what the proxy forwards (path, query,
fields, ``X-Forwarded-For``) and what it relays (status, fields without hop-by-hop and
CORS ones, small bodies whole, large and chunked bodies streamed intact, cut-short
bodies, malformed or missing answers as 503) is checked on the wire.  Keep-alive has its
control: an answer with ``Connection: close`` costs a connection per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningOrigin, start_origin
from tests.tools.scripted_peer import read_request

TOKEN = "proxy-test-internal-token-0123456789"
KEY = os.urandom(16)
BIG = os.urandom(3 << 20)
CHUNKS = [os.urandom(100_000), os.urandom(1), os.urandom(200_000)]
REFUSAL = b'{"error": "a token is required"}'


def small(extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Cache-Control: no-store\r\nX-Licence: yes\r\n"
            b"Access-Control-Allow-Origin: https://evil.example\r\nVary: Origin\r\n"
            b"Keep-Alive: timeout=5\r\n" + extra + b"Content-Length: 16\r\n\r\n" + KEY)


ANSWERS: dict[bytes, tuple[bytes, bool]] = {  # path → (bytes to send, keep the connection)
    b"/license/small": (small(), True),
    b"/license/close": (small(b"Connection: close\r\n"), False),
    b"/license/big": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG), BIG), True),
    b"/license/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS) + b"0\r\n\r\n", True),
    b"/license/short": (b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + KEY[:5], False),
    b"/license/short-big": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
                            + bytes(100_000), False),
    b"/license/garbage": (b"HELLO THERE\r\n\r\n", False),
    b"/license/hangup": (b"", False),
    b"/license/refused": (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer "
                          b"realm=\"origin-license\"\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(REFUSAL), REFUSAL), True),
}


@dataclass
class ScriptedLicence:
    """A loopback HTTP/1.1 server answering ``ANSWERS`` by request path."""

    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    handlers: list[asyncio.Task[None]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                path = request.split(b" ")[1].split(b"?")[0]
                raw, keep = ANSWERS[path]
                writer.write(raw)
                await writer.drain()
                if not keep:
                    return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def proxied(media_copy: Path, tmp_path: Path) -> AsyncIterator[
        tuple[RunningOrigin, ScriptedLicence, aiohttp.ClientSession]]:
    licence = ScriptedLicence()
    server = await asyncio.start_server(licence.serve, "127.0.0.1", 0)
    licence.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    origin = start_origin(media_copy, tmp_path / "state", "--license-url", licence.url,
                          "--license-rate", "0", env={"ORIGIN_LICENSE_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as session:
            yield origin, licence, session
    finally:
        assert origin.stop() == 0  # its connections close: every handler ends
        await asyncio.wait_for(asyncio.gather(*licence.handlers), 10)
        server.close()
        await server.wait_closed()


@pytest.fixture
async def rig(media_copy: Path, tmp_path: Path) -> AsyncIterator[
        tuple[RunningOrigin, ScriptedLicence, aiohttp.ClientSession]]:
    async with proxied(media_copy, tmp_path) as running:
        yield running


Rig = tuple[RunningOrigin, ScriptedLicence, aiohttp.ClientSession]


async def test_small_answer_and_what_goes_upstream(rig: Rig) -> None:
    origin, licence, session = rig
    headers = {"Authorization": "Bearer player-token", "X-Forwarded-For": "203.0.113.66",
               "X-Request-Id": "cdn-1", "Connection": "keep-alive"}
    async with session.get(f"{origin.base}/license/small?token=t%20k&ks=1",
                           headers=headers) as resp:
        body = await resp.read()
        assert (resp.status, body) == (200, KEY)
        assert resp.headers["X-Licence"] == "yes"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # the origin's, not theirs
        assert "Vary" not in resp.headers and "Keep-Alive" not in resp.headers
        assert resp.headers["Content-Length"] == "16"
    (sent,) = licence.requests
    lines = sent.split(b"\r\n")
    assert lines[0] == b"GET /license/small?token=t%20k&ks=1 HTTP/1.1"
    fields = [tuple(line.split(b": ", 1)) for line in lines[1:] if line]
    names = [name.lower() for name, _ in fields]
    assert fields[0] == (b"Host", licence.url.removeprefix("http://").encode())
    assert (b"Authorization", b"Bearer player-token") in fields
    assert (b"x-request-id", b"cdn-1") in [(name.lower(), value) for name, value in fields]
    assert fields[-1] == (b"X-Forwarded-For", b"127.0.0.1")  # the peer, and only it
    assert names.count(b"x-forwarded-for") == 1
    assert b"connection" not in names and b"content-length" not in names


async def test_large_and_chunked_answers_are_streamed_intact(rig: Rig) -> None:
    origin, _, session = rig
    async with session.get(f"{origin.base}/license/big") as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(len(BIG))
        assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(BIG).digest()
    async with session.get(f"{origin.base}/license/chunked") as resp:
        assert resp.status == 200 and "Content-Length" not in resp.headers
        assert await resp.read() == b"".join(CHUNKS)


async def test_refusals_are_relayed_as_they_are(rig: Rig) -> None:
    origin, _, session = rig
    async with session.get(f"{origin.base}/license/refused") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="origin-license"'
        assert await resp.json() == {"error": "a token is required"}


@pytest.mark.parametrize("path", ["short", "garbage", "hangup"])
async def test_broken_answers_are_a_clean_503(rig: Rig, path: str) -> None:
    origin, _, session = rig
    async with session.get(f"{origin.base}/license/{path}") as resp:
        assert resp.status == 503
        assert await resp.json() == {"error": "licence module unavailable"}
        assert resp.headers["Cache-Control"] == "no-store"


async def test_a_large_answer_cut_short_is_cut_short(rig: Rig) -> None:
    origin, _, session = rig
    async with session.get(f"{origin.base}/license/short-big") as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "1000000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


@pytest.mark.parametrize("path", ["small", "close"], ids=["keep-alive", "control-close"])
async def test_one_upstream_connection_for_many_requests(rig: Rig, path: str) -> None:
    origin, licence, session = rig
    for _ in range(20):
        async with session.get(f"{origin.base}/license/{path}") as resp:
            assert (resp.status, await resp.read()) == (200, KEY)
    assert licence.connections == (1 if path == "small" else 20)


async def test_no_licence_module_is_a_503(media_copy: Path, tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now
    origin = start_origin(media_copy, tmp_path / "state", "--license-url",
                          f"http://127.0.0.1:{port}", env={"ORIGIN_LICENSE_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"{origin.base}/license/aes128/{KEY.hex()}") as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": "licence module unavailable"}
    finally:
        assert origin.stop() == 0
