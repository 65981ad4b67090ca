"""Segments produced for one request (``--cache-bytes 0``): written from pooled buffers.

Each body lies in a buffer the next segment reuses, so these tests check the bytes of
every answer (AES-128 segments decrypt to their clear files), under concurrency and with
a client that stops reading; and, under strace, that bodies leave by ``writev`` with no
joined copy.  Their controls: a body from a reused buffer that was overwritten too early
decrypts to garbage (or fails its padding), and a slow reader that held its buffers would
never log the copy-out.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from origin.crypto.aes128 import decrypt_segment
from origin.http.segment_cache import IN_FLIGHT
from tests.conftest import RunningOrigin, child_pids, start_origin

ASSET = "demo"
FOLDER = "video-720p"
CACHE_OFF = ("--cache-bytes", "0", "--log-level", "debug")
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9A-Fa-f]{32})')
DEADLINE = 20.0


async def fetch(session: aiohttp.ClientSession, url: str,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def segments_with_ivs(server: RunningOrigin) -> tuple[bytes, dict[str, bytes]]:
    """The AES-128 key and every segment of the rendition with its IV."""
    base = f"{server.base}/hls/{ASSET}/aes128/{FOLDER}"
    async with aiohttp.ClientSession() as s:
        _, _, playlist = await fetch(s, f"{base}/index.m3u8")
        lines = playlist.decode().splitlines()
        ivs: dict[str, bytes] = {}
        key_uri, iv = "", b""
        for line in lines:
            if match := KEY_LINE.match(line):
                key_uri, iv = match.group(1), bytes.fromhex(match.group(2))
            elif line and not line.startswith("#"):
                assert iv, line
                ivs[line], iv = iv, b""
        status, _, key = await fetch(s, server.base + key_uri)
    assert status == 200 and len(key) == 16
    assert len(ivs) >= 5
    return key, ivs


def check_decrypts(media: Path, key: bytes, iv: bytes, name: str, body: bytes) -> None:
    clear = (media / ASSET / FOLDER / name).read_bytes()
    assert decrypt_segment(key, iv, body) == clear, f"{name}: not the clear file"


async def test_concurrent_bodies_from_reused_buffers_are_each_right(
        media_copy: Path, tmp_path: Path) -> None:
    """Ten rounds of every segment at once: far more bodies than pooled buffers, each
    decrypting to its own clear file; HEAD gives the length and no body."""
    server = start_origin(media_copy, tmp_path / "state", *CACHE_OFF)
    try:
        key, ivs = await segments_with_ivs(server)
        base = f"{server.base}/hls/{ASSET}/aes128/{FOLDER}"
        names = list(ivs) * 10
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            results = await asyncio.gather(*(fetch(s, f"{base}/{n}") for n in names))
            head = await fetch(s, f"{base}/{names[0]}", "HEAD")
        for name, (status, headers, body) in zip(names, results, strict=True):
            assert status == 200
            assert headers["Content-Length"] == str(len(body))
            check_decrypts(media_copy, key, ivs[name], name, body)
        assert head[0] == 200 and head[2] == b""
        assert head[1]["Content-Length"] == str(len(results[0][2]))
        assert server.log_text().count("segment produced: aes128") == len(names) + 1
    finally:
        assert server.stop() == 0


def slow_request(port: int, path: str) -> socket.socket:
    """A GET from a client whose receive buffer is tiny and that reads nothing yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head, body


async def test_clients_that_stop_reading_do_not_hold_the_pooled_buffers(
        media_copy: Path, tmp_path: Path) -> None:
    """More clients that read nothing than a process has places for bodies on their way
    out (``IN_FLIGHT``): each one's body is copied out (logged) and its place given back,
    so others are served meanwhile from the same buffers, and every slow client still gets
    its exact bytes when it reads.  Their segment is 12 MB (AES-128 reads no structure:
    random bytes serve), more than the kernel's largest socket send buffer
    (``tcp_wmem``, 4 MiB).  Without the copy-out the fast requests would wait for a place
    for ever."""
    name = "seg-00001.m4s"
    (media_copy / ASSET / FOLDER / name).write_bytes(os.urandom(12 << 20))
    server = start_origin(media_copy, tmp_path / "state", *CACHE_OFF)
    slow_count = IN_FLIGHT + 2
    try:
        key, ivs = await segments_with_ivs(server)
        port = int(server.base.rsplit(":", 1)[1])
        slow = [await asyncio.to_thread(slow_request, port,
                                        f"/hls/{ASSET}/aes128/{FOLDER}/{name}")
                for _ in range(slow_count)]
        deadline = time.monotonic() + DEADLINE
        while server.log_text().count("slow reader:") < slow_count:
            assert time.monotonic() < deadline, "slow readers' bodies were not copied out"
            await asyncio.sleep(0.05)
        base = f"{server.base}/hls/{ASSET}/aes128/{FOLDER}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            others = [n for n in ivs if n != name] * 4
            results = await asyncio.wait_for(
                asyncio.gather(*(fetch(s, f"{base}/{n}") for n in others)), DEADLINE)
        for other, (status, _, body) in zip(others, results, strict=True):
            assert status == 200
            check_decrypts(media_copy, key, ivs[other], other, body)
        for sock in slow:
            head, body = await asyncio.to_thread(read_response, sock)
            assert head.startswith(b"HTTP/1.1 200")
            check_decrypts(media_copy, key, ivs[name], name, body)
    finally:
        assert server.stop() == 0


async def test_failed_productions_give_their_places_back(media_copy: Path,
                                                         tmp_path: Path) -> None:
    """More failing productions than places, then a good one: it is served (a failure
    that kept its place would leave it waiting for ever)."""
    broken = media_copy / ASSET / FOLDER / "seg-00003.m4s"
    broken.write_bytes(b"\x00\x00\x00\x10moof" + bytes(8) + b"\x00\x00\x00\x08mdat")
    server = start_origin(media_copy, tmp_path / "state", *CACHE_OFF)
    try:
        base = f"{server.base}/hls/{ASSET}/cbcs/{FOLDER}"
        async with aiohttp.ClientSession() as s:
            failed = await asyncio.gather(*(fetch(s, f"{base}/seg-00003.m4s")
                                            for _ in range(2 * IN_FLIGHT)))
            status, _, _ = await asyncio.wait_for(fetch(s, f"{base}/seg-00001.m4s"), DEADLINE)
        assert {a[0] for a in failed} == {502}
        assert status == 200
    finally:
        assert server.stop() == 0


def writev_calls(trace: Path) -> list[tuple[str, int]]:
    """(start of the first buffer, bytes written) of each writev the traced process made
    to a socket, from strace's log."""
    calls = []
    for line in trace.read_text().splitlines():
        match = re.search(r'writev\(\d+<(?:TCP|socket)[^>]*>, \[\{iov_base="(.{0,12}).*\) = (\d+)$',
                          line)
        if match:
            calls.append((match.group(1), int(match.group(2))))
    return calls


async def test_produced_bodies_leave_by_writev(media_copy: Path, tmp_path: Path) -> None:
    """With the cache off, each produced segment leaves in one writev: its status line and
    headers, then its bytes straight from the pooled buffers (no joined copy through the
    transport, no second call)."""
    trace = tmp_path / "writev.trace"
    server = start_origin(media_copy, tmp_path / "state", *CACHE_OFF,
                          wrapper=("strace", "-f", "-qq", "-y", "-e", "trace=writev",
                                   "-o", str(trace)))
    try:
        base = f"{server.base}/hls/{ASSET}"
        async with aiohttp.ClientSession() as s:
            bodies = [await fetch(s, f"{base}/{scheme}/{FOLDER}/seg-00002.m4s")
                      for scheme in ("aes128", "cbcs", "cenc")]
    finally:
        (origin_pid,) = child_pids(server.proc.pid)  # SIGTERM to strace would detach it
        os.kill(origin_pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        server.stop()
    assert [status for status, _, _ in bodies] == [200] * 3
    calls = writev_calls(trace)
    assert [start for start, _ in calls] == ["HTTP/1.1 200"] * 3, calls
    heads = sum(n for _, n in calls) - sum(len(body) for _, _, body in bodies)
    assert 3 * 100 < heads < 3 * 1000, heads  # a status line and headers each, no more


@pytest.mark.parametrize("scheme", ["cbcs", "cenc", "aes128"])
async def test_ranges_of_produced_segments(media_copy: Path, tmp_path: Path,
                                           scheme: str) -> None:
    server = start_origin(media_copy, tmp_path / "state", *CACHE_OFF)
    try:
        url = f"{server.base}/hls/{ASSET}/{scheme}/{FOLDER}/seg-00001.m4s"
        async with aiohttp.ClientSession() as s:
            _, _, whole = await fetch(s, url)
            async with s.get(url, headers={"Range": "bytes=10-99"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
                assert await resp.read() == whole[10:100]
    finally:
        assert server.stop() == 0
