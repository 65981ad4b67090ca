"""Hostile requests against a real ``origin serve`` (issue 8 §2): each a test, each handled.

Raw sockets wherever a normal client would refuse to send the request or would tidy it
first.  What each part proves, and its control:

1. traversal — every route × every encoding of "one level up" (and the absolute form
   and ``//`` prefix of each) is a 400/404 that leaks nothing; the licence module's own
   access log shows that none reached its ``/internal/…`` or ``/admin/…`` routes (the
   control: a plain admin request does show up there); under ``strace`` the file outside
   the root is never opened (part 4 runs the same table);
2. malformed requests — oversized, malformed and smuggling-shaped heads and bodies get
   400/413/431, a good request right after succeeds, nothing of them reaches the log;
3. slow clients — a head trickling in is cut at ``--header-timeout``, a silent
   connection too, an idle keep-alive connection at 15 s (not earlier), a licence body
   trickling in gets 408 at ``--body-timeout``; a slow but timely head is served (the
   control); 200 slow connections do not delay a normal request;
4. XML entities in an asset's MPD (502) and in CPIX input (exit 1) read no file
   (``strace``: the canary outside the root is never opened, the documents themselves are);
5. hostile ``Range`` values on clear, freshly encrypted, memory- and disk-cached bodies are
   answered 200/206/416 as RFC 9110 §14 allows, each answer checked against the bytes;
6. 5,000 cache-busting query strings keep the serving process's RSS and the cache's
   byte accounting bounded;
7. per-client licence rate limits: a burst gets 429 + ``Retry-After``, another client
   address (127.0.0.2) and other routes are unaffected, the bucket refills;
   ``X-Forwarded-For`` counts only with ``--trust-forwarded``.

No sleep synchronises anything: waits are reads with a deadline, or polls with one.  The
slow clients' own pacing is a read with a one-second time-out (which also notices the
server closing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from origin.http.rate_limit import ClientBuckets
from tests.conftest import DEMO, ROOT, RunningOrigin, child_pids, start_origin

SECRET = b"HOSTILE-SECRET-OUTSIDE-THE-MEDIA-ROOT"
MARKER = "HOSTILEMARK7731"
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 15.0  # origin.config.ClientLimits.keepalive_timeout (no flag)
LINGERING = 10.0  # aiohttp drains an unread body this long before closing
SLACK = 4.0  # a loaded machine's scheduling, on top of every time-out
MIB = 1 << 20


# --- raw HTTP/1.1 over asyncio streams ------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict[str, object]:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


async def connect(port: int, source: str = "127.0.0.1"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_reply(reader: asyncio.StreamReader, *, to_head: bool = False) -> Reply | None:
    """One response (to a HEAD request: no body); None if the connection closed (or was
    reset) before a status line."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        assert not exc.partial, f"truncated response head {exc.partial[:200]!r}"
        return None
    except ConnectionResetError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if to_head:
        body = b""
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        body = await reader.read()
    return Reply(int(lines[0].split(" ", 2)[1]), headers, body)


async def exchange(port: int, raw: bytes, *, source: str = "127.0.0.1",
                   deadline: float = 30.0) -> Reply | None:
    """Send ``raw`` as it is on a fresh connection; the first response, if any."""
    reader, writer = await connect(port, source)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(raw)
            await writer.drain()
        return await asyncio.wait_for(read_reply(reader, to_head=raw.startswith(b"HEAD ")),
                                      deadline)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def get(target: str | bytes, *headers: str, close: bool = True) -> bytes:
    raw_target = target if isinstance(target, bytes) else target.encode()
    lines = [b"GET " + raw_target + b" HTTP/1.1", b"Host: t",
             *(h.encode() for h in headers)]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def closed_within(reader: asyncio.StreamReader, deadline: float) -> float | None:
    """Seconds until the server closes the connection (unread bytes are discarded), or None
    if it is still open at ``deadline``."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


async def healthy(port: int) -> bool:
    reply = await exchange(port, get("/healthz"))
    return reply is not None and reply.status == 200 and reply.body == b"ok\n"


# --- the servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media root holding the demo asset, with a secret file next to it (outside)."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "secret.txt").write_bytes(SECRET)
    media = base / "media"
    media.mkdir()
    shutil.copytree(DEMO, media / "demo")
    return media


@pytest.fixture(scope="module")
def origin(hostile_root: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningOrigin]:
    """Two workers, short client time-outs, no rate limit; segments bigger than 1/8 of
    the memory cache (32 KiB) are kept on disk only, so repeats come from the disk tier."""
    state = tmp_path_factory.mktemp("hostile-state")
    server = start_origin(hostile_root, state, "--header-timeout", str(HEADER_TIMEOUT),
                          "--body-timeout", str(BODY_TIMEOUT), "--license-rate", "0",
                          "--cache-bytes", "256K", "--cache-dir", str(state / "cache"),
                          workers=2)
    yield server
    assert server.stop() == 0


# --- 1. traversal: every route × every encoding ------------------------------------------------

ROUTES = {
    "hls-clear": "/hls/demo/clear/",
    "hls-aes128": "/hls/demo/aes128/video-360p/",
    "hls-cbcs": "/hls/demo/cbcs/",
    "dash-cenc": "/dash/demo/cenc/",
    "web": "/web/",
    "license": "/license/",
    "license-key": "/license/aes128/",
    "admin": "/admin/v1/",
}
ESCAPES = {  # one level up, each way a path can say it
    "dot-dot": "../",
    "encoded-dots": "%2e%2e/",
    "encoded-all": "%2E%2E%2F",
    "encoded-slash": "..%2f",
    "encoded-backslash": "..%5c",
    "backslash": "..\\",
    "double-encoded": "%252e%252e%252f",
    "overlong-dot": "%c0%ae%c0%ae/",
    "overlong-slash": "..%c0%af",
    "fullwidth-dots": "%ef%bc%8e%ef%bc%8e/",
    "nul": "..%00/",
    "nul-after": "%00/../",
    "path-param": "..;/",
    "param-segment": ";x=1/../",
    "dot-segment": "./../",
    "empty-segment": "/../",
}
CLIMB = 6  # more levels than any route has
UP_TARGETS = ("secret.txt", "internal/v1/metrics", f"internal/v1/keys/{'ab' * 16}",
              "internal/v1/assets/demo/key", "admin/v1/policies", "etc/passwd")
CONTROL_ADMIN = "/admin/v1/policies/hostile-control"
LICENCE_ACCESS = re.compile(r'aiohttp\.access: - "[A-Z]+ (/(?:internal|admin)/[^"]*)" (\d{3})')


def traversal_targets(route: str, escape: str) -> list[bytes]:
    """The request targets for one route × escape: origin-form, absolute-form, ``//``."""
    out = []
    for target in UP_TARGETS:
        path = (route + escape * CLIMB + target).encode("latin-1")
        out += [path, b"http://x" + path, b"/" + path]
    return out


def all_traversal_targets() -> list[bytes]:
    return [t for route in ROUTES.values() for esc in ESCAPES.values()
            for t in traversal_targets(route, esc)]


def check_refused(target: bytes, reply: Reply | None) -> None:
    assert reply is not None, target
    assert reply.status in (400, 404), (target, reply.status, reply.body[:200])
    assert SECRET not in reply.body and b"root:" not in reply.body, target
    assert reply.headers.get("content-type", "").startswith("application/json"), target


@pytest.mark.parametrize("route", list(ROUTES.values()), ids=list(ROUTES))
@pytest.mark.parametrize("escape", list(ESCAPES.values()), ids=list(ESCAPES))
async def test_traversal_is_refused_everywhere(origin: RunningOrigin, route: str,
                                               escape: str) -> None:
    for target in traversal_targets(route, escape):
        check_refused(target, await exchange(origin.port, get(target)))


async def test_no_traversal_reaches_the_licence_modules_internal_routes(
        origin: RunningOrigin) -> None:
    for target in all_traversal_targets():
        if b"/license/" in target or b"/admin/" in target:
            check_refused(target, await exchange(origin.port, get(target)))
    # Control: a real admin request goes through the proxy and the licence module logs it.
    reply = await exchange(origin.port, get(CONTROL_ADMIN))
    assert reply is not None and reply.status == 403  # no ORIGIN_ADMIN_TOKEN: disabled
    deadline = time.monotonic() + 10
    while True:  # its line comes after every earlier line of the licence module
        reached = LICENCE_ACCESS.findall(origin.log_text())
        if (CONTROL_ADMIN, "403") in reached or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # polling the log file, with a deadline
    assert (CONTROL_ADMIN, "403") in reached
    # Only the origin's own authenticated key look-ups (200) may appear besides it.
    strays = [hit for hit in reached if hit != (CONTROL_ADMIN, "403") and hit[1] != "200"]
    assert strays == []


# --- 2. oversized and malformed requests -----------------------------------------------------

HEAD = f"GET /healthz?token={MARKER} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()


def post(path: str, *headers: str, body: bytes = b"", method: str = "POST") -> bytes:
    return (f"{method} {path}?token={MARKER} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


def chunked(body: bytes, size: int = 0x10000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


MALFORMED = {
    "request line over 8 KiB": (
        f"GET /hls/demo/clear/{'a' * 9000}?token={MARKER} HTTP/1.1\r\nHost: t\r\n\r\n"
        .encode(), {400, 414}),
    "query over 8 KiB": (
        f"GET /healthz?token={MARKER}{'a' * 9000} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
        {400, 414}),
    "header over 8 KiB": (HEAD + f"X-A: {MARKER}{'b' * 9000}\r\n\r\n".encode(), {400, 431}),
    "200 headers": (HEAD + b"".join(b"X-H%d: %s\r\n" % (i, MARKER.encode())
                                    for i in range(200)) + b"\r\n", {400, 431}),
    "NUL in a header value": (HEAD + f"X-A: a\x00{MARKER}\r\n\r\n".encode(), {400}),
    "control byte in a name": (HEAD + f"X\x01A: {MARKER}\r\n\r\n".encode(), {400}),
    "space in a name": (HEAD + f"X A: {MARKER}\r\n\r\n".encode(), {400}),
    "8-bit garbage in a name": (HEAD + b"X\xff\xfe: " + MARKER.encode() + b"\r\n\r\n", {400}),
    "obsolete line folding": (HEAD + f"X-A: a\r\n {MARKER}\r\n\r\n".encode(), {400}),
    "bare LF line ends": (HEAD.replace(b"\r\n", b"\n") + b"\n", {400}),
    "no Host": (f"GET /healthz?token={MARKER} HTTP/1.1\r\n\r\n".encode(), {400}),
    "two Hosts": (HEAD + f"Host: {MARKER}\r\n\r\n".encode(), {400}),
    "control byte in the method": (f"G\x01T /healthz?token={MARKER} HTTP/1.1\r\n\r\n"
                                   .encode(), {400}),
    "TLS on the HTTP port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                             + MARKER.encode() + b"\r\n\r\n", {400}),
    "Content-Length not a number": (post("/license/clearkey", "Content-Length: abc"), {400}),
    "negative Content-Length": (post("/license/clearkey", "Content-Length: -1"), {400}),
    "signed Content-Length": (post("/license/clearkey", "Content-Length: +2", body=b"{}"),
                              {400}),
    "Content-Length overflow": (post("/license/clearkey", "Content-Length: " + "9" * 30,
                                     body=b"{}"), {400}),
    "two Content-Lengths": (post("/license/clearkey", "Content-Length: 2",
                                 "Content-Length: 3", body=b"{}"), {400}),
    "Content-Length with Transfer-Encoding": (
        post("/license/clearkey", "Content-Length: 5", "Transfer-Encoding: chunked",
             body=b"0\r\n\r\n"), {400}),
    "unknown Transfer-Encoding": (post("/license/clearkey", "Transfer-Encoding: gzip, x",
                                       body=b"0\r\n\r\n"), {400, 501}),
    "bad chunk size": (post("/license/clearkey", "Transfer-Encoding: chunked",
                            body=b"zz\r\nhello\r\n0\r\n\r\n"), {400}),
    "chunked body over the proxy's 1 MiB": (
        post("/license/clearkey", "Transfer-Encoding: chunked",
             body=chunked(b"x" * (2 * MIB))), {413}),
    "Content-Length over the proxy's 1 MiB": (
        post("/license/clearkey", f"Content-Length: {2 * MIB}", body=b"x" * (2 * MIB)),
        {413}),
    "chunked body over the Clear Key route's cap": (
        post("/license/clearkey", "Transfer-Encoding: chunked",
             body=chunked(b"x" * (200 << 10), size=4096)), {413}),
    "body over the admin API's cap": (
        post("/admin/v1/policies/demo", "Transfer-Encoding: chunked",
             body=chunked(b"x" * (200 << 10), size=4096), method="PUT"), {403, 413}),
    "body on GET": (HEAD + b"Content-Length: 5\r\n\r\nhello", {400}),
    "chunked body on GET": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                            {400}),
    "body on HEAD": (HEAD.replace(b"GET", b"HEAD", 1) + b"Content-Length: 5\r\n\r\nhello",
                     {400}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_requests_are_refused_and_the_server_stays_up(
        origin: RunningOrigin, case: str) -> None:
    raw, statuses = MALFORMED[case]
    reply = await exchange(origin.port, raw)
    assert reply is not None
    assert reply.status in statuses, (reply.status, reply.body[:200])
    assert MARKER.encode() not in reply.body  # nothing of the request is echoed back
    assert raw.startswith(b"HEAD ") or reply.json()["error"]
    assert await healthy(origin.port)


async def test_an_empty_body_on_get_is_no_body(origin: RunningOrigin) -> None:
    """Control for "body on GET": ``Content-Length: 0`` announces none, and is served."""
    reply = await exchange(origin.port, HEAD + b"Content-Length: 0\r\n\r\n")
    assert reply is not None and reply.status == 200 and reply.body == b"ok\n"


async def test_malformed_requests_leave_no_trace_of_themselves_in_the_log(
        origin: RunningOrigin) -> None:
    for raw, _ in MALFORMED.values():
        await exchange(origin.port, raw)
    # Control: the access log is written, and a marker outside the query would show.
    reply = await exchange(origin.port, get(f"/healthz/{MARKER}-visible"))
    assert reply is not None and reply.status == 404
    deadline = time.monotonic() + 10
    while f"{MARKER}-visible" not in origin.log_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling the log file, with a deadline
    log = origin.log_text()
    assert f"{MARKER}-visible" in log
    assert log.count(MARKER) == log.count(f"{MARKER}-visible")
    assert "Traceback" not in log


async def test_a_normal_body_still_reaches_the_licence_module_whole(
        origin: RunningOrigin) -> None:
    """Control for the caps: a chunked Clear Key request in pieces arrives whole (the
    licence module parses it: 404 for an unknown kid, not 400 for a cut body)."""
    body = json.dumps({"kids": ["q83vEjRWeJCrze8SNFZ4kA"], "type": "temporary"}).encode()
    reply = await exchange(origin.port, post("/license/clearkey", "Transfer-Encoding: chunked",
                                             body=chunked(body, size=7)))
    assert reply is not None
    assert reply.status == 404, reply.body


# --- 3. slow clients ----------------------------------------------------------------------------

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\nX-Padding: abcdefgh\r\n\r\n"


async def trickle_head(port: int, prefix: bytes = b"", *,
                       connected: asyncio.Event | None = None) -> tuple[float | None, int]:
    """Send ``prefix`` whole, then ``SLOW_HEAD`` one byte a second; (seconds from the
    first byte of that head until the server closed — None if it answered or never
    closed — , bytes of the head sent)."""
    reader, writer = await connect(port)
    try:
        if prefix:
            writer.write(prefix)
            reply = await asyncio.wait_for(read_reply(reader), 30)
            assert reply is not None and reply.status == 200
        if connected is not None:
            connected.set()
        start = time.monotonic()
        for sent in range(len(SLOW_HEAD)):
            try:
                writer.write(SLOW_HEAD[sent:sent + 1])
                await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), 1.0)  # the pacing
            except TimeoutError:
                continue
            except ConnectionError:
                return time.monotonic() - start, sent + 1
            return (time.monotonic() - start if data == b"" else None), sent + 1
        return None, len(SLOW_HEAD)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def silent_connection(port: int) -> float | None:
    reader, writer = await connect(port)
    try:
        return await closed_within(reader, HEADER_TIMEOUT + SLACK + 10)
    finally:
        writer.close()


async def idle_keep_alive(port: int) -> float | None:
    reader, writer = await connect(port)
    try:
        writer.write(get("/healthz", close=False))
        reply = await asyncio.wait_for(read_reply(reader), 30)
        assert reply is not None and reply.status == 200
        return await closed_within(reader, KEEPALIVE_TIMEOUT + SLACK + 10)
    finally:
        writer.close()


async def timely_slow_head(port: int) -> Reply | None:
    """The control: a head in two parts, the second after a pause well within the limit."""
    reader, writer = await connect(port)
    try:
        writer.write(SLOW_HEAD[:20])
        with contextlib.suppress(TimeoutError):
            early = await asyncio.wait_for(reader.read(65536), HEADER_TIMEOUT / 2)  # pacing
            pytest.fail(f"the server answered a half head: {early!r}")
        writer.write(SLOW_HEAD[20:])
        return await asyncio.wait_for(read_reply(reader), 30)
    finally:
        writer.close()


async def trickle_body(port: int, *, chunk_it: bool) -> tuple[Reply | None, float, float | None]:
    """A licence POST whose body comes one byte a second: (the reply, seconds until it came,
    seconds from then until the server closed)."""
    reader, writer = await connect(port)
    framing = "Transfer-Encoding: chunked" if chunk_it else "Content-Length: 200"
    writer.write(f"POST /license/clearkey HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n".encode())
    start = time.monotonic()
    answer = asyncio.create_task(read_reply(reader))
    try:
        for _ in range(200):
            with contextlib.suppress(ConnectionError):
                writer.write(b"1\r\nx\r\n" if chunk_it else b"x")
            done, _ = await asyncio.wait({answer}, timeout=1.0)  # the pacing
            if done:
                break
        reply = await asyncio.wait_for(answer, 1.0)
        took = time.monotonic() - start
        return reply, took, await closed_within(reader, LINGERING + SLACK + 5)
    finally:
        answer.cancel()
        writer.close()


async def test_slow_clients_are_cut_off_by_time_outs(origin: RunningOrigin) -> None:
    """All at once, so the whole test takes one keep-alive time-out."""
    port = origin.port
    (head, head_sent), (second, second_sent), silent, idle, control, body, chunked_body = \
        await asyncio.gather(
            trickle_head(port), trickle_head(port, get("/healthz", close=False)),
            silent_connection(port), idle_keep_alive(port), timely_slow_head(port),
            trickle_body(port, chunk_it=False), trickle_body(port, chunk_it=True))
    # A head one byte a second: closed at the header time-out, long before it was complete.
    assert head is not None and HEADER_TIMEOUT - 0.5 < head < HEADER_TIMEOUT + SLACK, head
    assert head_sent < len(SLOW_HEAD)
    # The same as the second request of a keep-alive connection: its clock starts anew.
    assert second is not None and HEADER_TIMEOUT - 0.5 < second < HEADER_TIMEOUT + SLACK
    assert second_sent < len(SLOW_HEAD)
    # A connection that never says anything.
    assert silent is not None and HEADER_TIMEOUT - 0.5 < silent < HEADER_TIMEOUT + SLACK
    # Idle after a complete request: the keep-alive time-out (15 s), not the header one.
    assert idle is not None and KEEPALIVE_TIMEOUT - 1 < idle < KEEPALIVE_TIMEOUT + SLACK, idle
    # Control: slow, but complete in time — served.
    assert control is not None and control.status == 200 and control.body == b"ok\n"
    # Licence bodies one byte a second: 408 at the body time-out, then the connection ends.
    for reply, took, closed in (body, chunked_body):
        assert reply is not None and reply.status == 408, reply
        assert reply.json() == {"error": "licence request body not received in time"}
        assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + SLACK, took
        assert closed is not None
    assert await healthy(port)


async def test_many_slow_connections_do_not_hold_up_a_normal_request(
        origin: RunningOrigin) -> None:
    count = 200
    connected = [asyncio.Event() for _ in range(count)]
    slow = [asyncio.create_task(trickle_head(origin.port, connected=event))
            for event in connected]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(event.wait() for event in connected))
        assert not any(task.done() for task in slow)  # all 200 are open and trickling
        start = time.monotonic()
        async with aiohttp.ClientSession() as session, \
                session.get(f"{origin.base}/hls/demo/clear/video-360p/seg-00001.m4s") as resp:
            assert resp.status == 200
            assert len(await resp.read()) > 0
        assert time.monotonic() - start < 2.0
        results = await asyncio.wait_for(asyncio.gather(*slow), HEADER_TIMEOUT + SLACK + 30)
    finally:
        for task in slow:
            task.cancel()
    assert all(took is not None and sent < len(SLOW_HEAD) for took, sent in results)
    assert await healthy(origin.port)


# --- 4. XML entities in MPD and CPIX input ---------------------------------------------------

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"


def hostile_xml(root: str, attrs: str, inner: str, canary: Path) -> dict[str, str]:
    """Entity attacks on one document type; ``inner`` is where an entity is used."""
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    body = f"<{root} {attrs}>{inner}</{root}>"
    return {
        "billion-laughs": (f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n '
                           + "\n ".join(levels) + "\n]>\n" + body.replace("ENT", "&lol9;")),
        "external-passwd": (f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                            + body.replace("ENT", "&xxe;")),
        "external-canary": (f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file://{canary}">]>'
                            + body.replace("ENT", "&xxe;")),
        "parameter-entity": (f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM "file://{canary}"> %p;]>'
                             + body.replace("ENT", "")),
        "external-dtd": f'<!DOCTYPE {root} SYSTEM "file://{canary}">' + body.replace("ENT", ""),
    }


def traced(trace: Path) -> tuple[str, ...]:
    return ("strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace))


async def test_xml_entities_in_an_mpd_are_refused_and_read_no_file(tmp_path: Path) -> None:
    canary = tmp_path / "secret.txt"  # outside the media root, where traversal would land
    canary.write_bytes(SECRET)
    media = tmp_path / "media"
    shutil.copytree(DEMO, media / "demo")
    documents = hostile_xml("MPD", f'xmlns="{MPD_NS}"',
                            "<Period><AdaptationSet><Label>ENT</Label></AdaptationSet></Period>",
                            canary)
    for name, text in documents.items():
        (media / name).mkdir()
        shutil.copy(DEMO / "master.m3u8", media / name / "master.m3u8")
        (media / name / "manifest.mpd").write_text(text)
    trace = tmp_path / "trace.txt"
    server = start_origin(media, tmp_path / "state", "--license-rate", "0",
                          wrapper=traced(trace))
    try:
        for name in documents:
            for scheme in ("clear", "cenc"):
                reply = await exchange(server.port, get(f"/dash/{name}/{scheme}/manifest.mpd"))
                assert reply is not None and reply.status == 502, (name, scheme, reply)
                assert reply.json() == {"error": "MPD declares a DTD or entities"}
                assert SECRET not in reply.body and b"root:" not in reply.body
        for target in all_traversal_targets():  # part 1's table, under the same trace
            check_refused(target, await exchange(server.port, get(target)))
        reply = await exchange(server.port, get("/dash/demo/cenc/manifest.mpd"))
        assert reply is not None and reply.status == 200  # control: DASH works
    finally:
        (origin_pid,) = child_pids(server.proc.pid)
        os.kill(origin_pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        server.stop()
    text = trace.read_text()
    assert str(media / "billion-laughs" / "manifest.mpd") in text  # the probe sees opens
    assert str(canary) not in text


def cpix_import(document: Path, state: Path, trace: Path) -> subprocess.CompletedProcess[bytes]:
    command = [*traced(trace), sys.executable, "-m", "origin", "keys", "import", str(document),
               "--asset", "demo", "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, ORIGIN_KEK="11" * 32))


def test_xml_entities_in_cpix_are_refused_and_read_no_file(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_bytes(SECRET)
    kid = "5e629af5-38da-4063-8977-97ffbd9902d4"
    inner = (f'<ContentKeyList><ContentKey kid="{kid}"><Data><pskc:Secret>'
             "<pskc:PlainValue>ENT</pskc:PlainValue></pskc:Secret></Data></ContentKey>"
             "</ContentKeyList>")
    attrs = ('xmlns="urn:dashif:org:cpix" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" '
             'contentId="demo" version="2.3"')
    documents = hostile_xml("CPIX", attrs, inner, canary)
    key = base64.b64encode(bytes(range(16))).decode()
    documents["control"] = f"<CPIX {attrs}>{inner.replace('ENT', key)}</CPIX>"  # no DTD
    results = {}
    for name, text in documents.items():
        path = tmp_path / f"{name}.xml"
        path.write_text(text)
        trace = tmp_path / f"{name}.trace"
        result = cpix_import(path, tmp_path / "state", trace)
        results[name] = result.returncode
        assert str(path) in trace.read_text()  # the probe sees the import open its file
        assert str(canary) not in trace.read_text(), name
        assert SECRET not in result.stderr + result.stdout
        assert b"root:" not in result.stderr + result.stdout
        if name != "control":
            assert result.stderr.startswith(b"error: "), result.stderr
            assert b"DTD or entities" in result.stderr, result.stderr
    assert results.pop("control") == 0  # the same document without entities imports
    assert set(results.values()) == {1}


# --- 5. hostile Range values ----------------------------------------------------------------

RANGES = {  # header → the statuses RFC 9110 §14 allows for a ~90 KiB body
    "bytes=0-0": {206},  # control: ranges do work
    "bytes=-1": {206},
    "bytes=0-": {206},
    "bytes=-0": {200, 416},  # a suffix of nothing: unsatisfiable, or ignored — never 206
    "bytes=99999999999999999999-": {200, 416},
    "bytes=18446744073709551616-18446744073709551617": {200, 416},
    "bytes=0-18446744073709551616": {200, 206},
    "bytes=5-1": {200, 416},  # invalid: last before first
    "bytes=-99999999999999999999": {200, 206},  # more than all: the whole body
    "bytes=" + "9" * 5000 + "-": {200, 416},
    "bytes=0-0,1-1,2-2": {200, 206, 416},
    "bytes=" + ",".join(f"{i}-{i}" for i in range(500)): {200, 206, 416},
    "bytes=10-5,0-1": {200, 206, 416},
    "garbage": {200, 416},
    "bytes=": {200, 416},
    "bytes=-": {200, 416},
    "bytes=1-2-3": {200, 416},
    "bytes=\u0663-": {200, 416},  # an Arabic-Indic digit
    "items=0-1": {200},  # an unknown unit MUST be ignored (§14.2)
    "BYTES=0-1": {200, 206},
}
RANGED_URLS = {
    "clear": "/hls/demo/clear/video-360p/seg-00001.m4s",
    "encrypted": "/hls/demo/cbcs/video-360p/seg-00002.m4s",
    "init": "/hls/demo/cenc/video-360p/init.mp4",
    "playlist": "/hls/demo/aes128/video-360p/index.m3u8",
}


def check_range_reply(header: str, reply: Reply, whole: bytes) -> None:
    size = len(whole)
    assert reply.status in RANGES[header], (header, reply.status)
    if reply.status == 200:
        assert reply.body == whole
    elif reply.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", reply.headers["content-range"])
        assert match is not None, reply.headers
        first, last, total = map(int, match.groups())
        assert total == size and first <= last < size
        assert reply.body == whole[first:last + 1]
        if header == "bytes=-99999999999999999999":
            assert reply.body == whole
    else:
        assert reply.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("kind", list(RANGED_URLS))
async def test_hostile_ranges_get_rfc_answers(origin: RunningOrigin, kind: str) -> None:
    """Each header three times: the first encrypted answer may be freshly produced, the
    later ones come from the memory cache (small bodies) or the disk cache (segments)."""
    url = RANGED_URLS[kind]
    whole_reply = await exchange(origin.port, get(url))
    assert whole_reply is not None and whole_reply.status == 200
    whole = whole_reply.body
    if kind == "clear":
        assert whole == (origin.media / "demo/video-360p/seg-00001.m4s").read_bytes()
    for _ in range(3):
        for header in RANGES:
            reply = await exchange(origin.port, get(url, f"Range: {header}"))
            assert reply is not None, header
            check_range_reply(header, reply, whole)
    assert await healthy(origin.port)


# --- 6. cache-busting query strings ----------------------------------------------------------

BUSTING_REQUESTS = 5000
RSS_GROWTH_LIMIT = 64 * MIB
CACHE_BYTES = 16 * MIB


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def busting_url(n: int) -> str:
    kinds = (
        f"/hls/demo/clear/master.m3u8?x={n}",
        f"/hls/demo/aes128/master.m3u8?x={n}",
        f"/hls/demo/cbcs/master.m3u8?token=fake-{n}",
        f"/hls/demo/aes128/video-360p/index.m3u8?token=fake-{n}",
        f"/dash/demo/cenc/manifest.mpd?x={n}",
        f"/dash/demo/cbcs/manifest.mpd?token=fake-{n}",
        f"/hls/demo/aes128/video-360p/seg-0000{1 + n % 6}.m4s?x={n}",
        f"/hls/demo/cenc/audio-en/seg-0000{1 + n % 6}.m4s?token=fake-{n}",
        f"/dash/demo/cbcs/video-720p/seg-0000{1 + n % 6}.m4s?x={n}",
        f"/hls/demo/clear/video-720p/seg-0000{1 + n % 6}.m4s?x={n}",
    )
    return kinds[n % len(kinds)]


async def test_cache_busting_queries_keep_memory_bounded(tmp_path: Path,
                                                         media_copy: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "16M")
    try:
        statuses: dict[int, int] = {}
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8)) as session:
            async with session.get(f"{server.base}/healthz") as resp:
                pid = int(resp.headers["X-Origin-Worker"])

            async def fetch(n: int) -> None:
                async with session.get(server.base + busting_url(n)) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

            await asyncio.gather(*(fetch(n) for n in range(-500, 0)))  # warm up
            before = vm_rss(pid)
            for start in range(0, BUSTING_REQUESTS, 500):
                await asyncio.gather(*(fetch(n) for n in range(start, start + 500)))
            after = vm_rss(pid)
        assert statuses == {200: BUSTING_REQUESTS + 500}
        assert after - before < RSS_GROWTH_LIMIT, (before, after)
    finally:
        assert server.stop() == 0
    stats = re.findall(r"cache memory: (\d+) entries, (\d+) bytes \(bodies \d+\) of (\d+), "
                       r"peak (\d+)", server.log_text())
    assert stats, "the cache reports its accounting when it closes"
    entries, now, budget, peak = map(int, stats[-1])
    assert budget == CACHE_BYTES
    assert entries > 0 and 0 < now <= peak <= CACHE_BYTES  # used, never over its budget


# --- 7. per-client licence rate limits --------------------------------------------------------

RATE = 2.0
BURST = 5


@pytest.fixture(scope="module")
def limited(hostile_root: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningOrigin]:
    server = start_origin(hostile_root, tmp_path_factory.mktemp("limited-state"),
                          "--license-rate", str(RATE), "--license-burst", str(BURST))
    yield server
    assert server.stop() == 0


async def key_path(server: RunningOrigin) -> str:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{server.base}/api/assets/demo/playback") as resp:
        doc = await resp.json()
    return f"/license/aes128/{doc['key_ids'][0]}"


async def burst_of(server: RunningOrigin, path: str, count: int, *headers: str,
                   source: str = "127.0.0.1") -> list[Reply]:
    """``count`` requests on one keep-alive connection from ``source``."""
    reader, writer = await connect(server.port, source)
    replies = []
    try:
        for _ in range(count):
            writer.write(get(path, *headers, close=False))
            reply = await asyncio.wait_for(read_reply(reader), 30)
            assert reply is not None
            replies.append(reply)
    finally:
        writer.close()
    return replies


async def test_licence_requests_over_the_rate_get_429(limited: RunningOrigin) -> None:
    path = await key_path(limited)
    start = time.monotonic()
    replies = await burst_of(limited, path, 3 * BURST)
    elapsed = time.monotonic() - start
    statuses = [r.status for r in replies]
    assert statuses[:BURST] == [200] * BURST, statuses
    refilled = int(elapsed * RATE) + 1
    assert statuses.count(429) >= 2 * BURST - refilled, statuses
    refused = next(r for r in replies if r.status == 429)
    assert refused.json() == {"error": "too many licence requests"}
    assert refused.headers["retry-after"] == str(math.ceil(1 / RATE))
    assert len(refused.body) < 100 and b"\x00" not in refused.body
    # X-Forwarded-For is not trusted: a made-up address does not get a fresh bucket.
    spoofed = await burst_of(limited, path, 1, "X-Forwarded-For: 10.9.8.7")
    assert spoofed[0].status == 429
    # Other routes are not limited, and another client address has its own bucket.
    assert [r.status for r in await burst_of(limited, "/healthz", 3)] == [200] * 3
    assert [r.status for r in await burst_of(limited, path, BURST, source="127.0.0.2")] == \
        [200] * BURST
    # After Retry-After the bucket has a token again: poll until one passes, with a deadline.
    retry_after = int(refused.headers["retry-after"])
    deadline = time.monotonic() + retry_after + SLACK
    while (status := (await burst_of(limited, path, 1))[0].status) == 429:
        assert time.monotonic() < deadline, "the bucket never refilled"
        await asyncio.sleep(0.1)  # polling, with a deadline
    assert status == 200


async def test_forwarded_addresses_count_only_when_trusted(hostile_root: Path,
                                                           tmp_path: Path) -> None:
    server = start_origin(hostile_root, tmp_path / "state", "--license-rate", "0.5",
                          "--license-burst", "2", "--trust-forwarded")
    try:
        path = await key_path(server)
        first = await burst_of(server, path, 3, "X-Forwarded-For: 203.0.113.9, 10.0.0.1")
        assert [r.status for r in first] == [200, 200, 429]
        # The last entry is the client: another one there has its own bucket ...
        other = await burst_of(server, path, 2, "X-Forwarded-For: 10.0.0.1, 10.0.0.2")
        assert [r.status for r in other] == [200, 200]
        # ... and an entry that is no address counts against the peer itself.
        peer = await burst_of(server, path, 3, "X-Forwarded-For: not-an-address")
        assert [r.status for r in peer] == [200, 200, 429]
        assert (await burst_of(server, path, 1))[0].status == 429  # the same peer bucket
    finally:
        assert server.stop() == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_buckets_refill_and_stay_bounded() -> None:
    clock = FakeClock()
    buckets = ClientBuckets(4.0, 2, max_clients=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.25]
    clock.now += 0.25
    assert buckets.take("a") == 0.0  # one token back after 1/rate seconds
    assert buckets.take("a") == pytest.approx(0.25)
    clock.now += 10
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.25]  # never over the burst
    for client in ("b", "c", "d"):
        buckets.take(client)
    assert len(buckets) == 3  # "a", least recently seen, was forgotten ...
    assert buckets.take("a") == 0.0  # ... and comes back with a full bucket
    assert len(buckets) == 3
    with pytest.raises(ValueError, match="rate"):
        ClientBuckets(0, 1)
