"""A cached playlist or MPD goes out byte for byte as before, however it is found.

Rewritten manifests have a fast way out: a repeated request is matched by its shape
(``origin.http.recent_manifests``) and a plain GET/HEAD is answered by
``origin.http.manifest_response`` without ``respond_bytes``.  Against a real origin, on
raw keep-alive connections, the status line, every header line in order (but ``Date``)
and the body must be the same for:

- the first request (worked out in full, then cached), a repeat (found by its shape),
  and a request that takes ``respond_bytes`` itself (``If-None-Match`` that does not
  match) — for GET and HEAD, open and tokenised, HLS and DASH, ``*`` and a listed CORS
  origin (with and without its ``Origin``);
- 304, 206, 416 and ``If-Range`` answers come from ``respond_bytes`` as before.

Controls: a tokenised URL and another key-system selection give other header lines or
bodies (the comparison sees a difference); in-process, a recalled answer is refused for
a new catalog generation, a key fetched again, a changed source stamp, an evicted body.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from origin.config import CacheSettings
from origin.crypto.key import ContentKey
from origin.http.recent_manifests import (
    LONG_TEXT,
    MAX_SHAPES,
    RecentAnswer,
    RecentManifests,
    manifest_shape,
)
from origin.http.segment_cache import SegmentCache
from origin.http.source_stamps import SourceStamps
from tests.conftest import ROOT, RunningOrigin, start_origin

ASSET = "demo"
PLAYER = "http://player.test"
TOKEN = "TokTok5555"
PATHS = [
    f"/hls/{ASSET}/cbcs/video-720p/index.m3u8",
    f"/hls/{ASSET}/aes128/master.m3u8",
    f"/hls/{ASSET}/cenc/audio-en/index.m3u8",
    f"/hls/{ASSET}/clear/master.m3u8?tracks=video",
    f"/dash/{ASSET}/cenc/manifest.mpd",
    f"/dash/{ASSET}/clear/manifest.mpd",
]


class Raw:
    """One keep-alive HTTP/1.1 connection, read as bytes (nothing normalised)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def ask(self, target: str, method: str = "GET",
                  **headers: str) -> tuple[list[bytes], bytes]:
        """The response's status and header lines (``Date`` left out) and its body."""
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        out = [ln for ln in head.split(b"\r\n")[:-2] if not ln.lower().startswith(b"date:")]
        length = next((int(ln.split(b":", 1)[1]) for ln in out
                       if ln.lower().startswith(b"content-length:")), 0)
        body = b"" if method == "HEAD" or b" 304 " in out[0] else \
            await asyncio.wait_for(self.reader.readexactly(length), 10)
        return out, body


def header(lines: list[bytes], name: str) -> str | None:
    prefix = name.lower().encode() + b":"
    found = [ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(prefix)]
    return found[0].decode() if found else None


@pytest.fixture(scope="module")
def listed_cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    """An origin that lets only ``PLAYER`` read its responses."""
    tmp = tmp_path_factory.mktemp("cors")
    server = start_origin(ROOT / "media", tmp / "state", "--cors-origin", PLAYER)
    try:
        yield server
    finally:
        assert server.stop() == 0


async def same_every_way(server: RunningOrigin, target: str,
                         **headers: str) -> tuple[list[bytes], bytes]:
    """Ask for ``target`` three ways per method; assert they agree; return the GET."""
    raw = await Raw.open(server.port)
    try:
        first = await raw.ask(target, **headers)
        assert first[0][0] == b"HTTP/1.1 200 OK", first[0]
        for method in ("GET", "HEAD"):
            worked_out = first if method == "GET" else await raw.ask(target, method, **headers)
            repeated = await raw.ask(target, method, **headers)
            through_ranges = await raw.ask(target, method, If_None_Match='"not-this-one"',
                                           **headers)
            assert repeated == worked_out, (method, repeated[0], worked_out[0])
            assert through_ranges == worked_out, (method, through_ranges[0], worked_out[0])
            assert worked_out[0] == first[0]  # HEAD: the very header lines of GET
        return first
    finally:
        await raw.close()


@pytest.mark.parametrize("path", PATHS)
async def test_cached_answers_equal_the_first_and_respond_bytes(
        origin_server: RunningOrigin, path: str) -> None:
    lines, body = await same_every_way(origin_server, path)
    assert header(lines, "Cache-Control") == "public, max-age=2"
    assert header(lines, "Content-Length") == str(len(body)) and body
    assert header(lines, "Access-Control-Allow-Origin") == "*"
    assert header(lines, "X-Content-Type-Options") == "nosniff"
    separator = "&" if "?" in path else "?"
    tokenised, token_body = await same_every_way(origin_server,
                                                 f"{path}{separator}token={TOKEN}")
    assert header(tokenised, "Cache-Control") == "private, no-cache"
    # Control: the comparison sees a difference in the header lines.
    assert tokenised != lines
    assert (TOKEN.encode() in token_body) is ("/clear/" not in path or "master" in path)


async def test_a_query_change_is_another_answer(origin_server: RunningOrigin) -> None:
    path = f"/hls/{ASSET}/cbcs/video-720p/index.m3u8"
    lines, body = await same_every_way(origin_server, path)
    other_lines, other = await same_every_way(origin_server, path + "?key_systems=widevine")
    assert other != body and b"skd://" in body and b"skd://" not in other
    assert header(other_lines, "ETag") != header(lines, "ETag")


@pytest.mark.parametrize("path", [PATHS[0], PATHS[4]])
async def test_listed_cors_origin_on_every_way(listed_cors: RunningOrigin, path: str) -> None:
    lines, _ = await same_every_way(listed_cors, path, Origin=PLAYER)
    assert header(lines, "Access-Control-Allow-Origin") == PLAYER
    assert header(lines, "Vary") == "Origin"
    stranger, _ = await same_every_way(listed_cors, path, Origin="http://elsewhere.test")
    bare, _ = await same_every_way(listed_cors, path)
    assert header(stranger, "Access-Control-Allow-Origin") is None
    assert stranger == bare != lines


@pytest.mark.parametrize("path", [PATHS[0], PATHS[4]])
async def test_conditional_and_range_requests(origin_server: RunningOrigin, path: str) -> None:
    raw = await Raw.open(origin_server.port)
    try:
        lines, body = await raw.ask(path)
        await raw.ask(path)  # now a repeat: found by its shape
        etag = header(lines, "ETag")
        assert etag is not None and etag.startswith('"')
        cache_control = header(lines, "Cache-Control")
        not_modified, empty = await raw.ask(path, If_None_Match=etag)
        assert not_modified[0] == b"HTTP/1.1 304 Not Modified" and empty == b""
        assert header(not_modified, "ETag") == etag
        assert header(not_modified, "Cache-Control") == cache_control
        assert header(not_modified, "Content-Length") is None
        part, piece = await raw.ask(path, Range="bytes=0-9")
        assert part[0] == b"HTTP/1.1 206 Partial Content" and piece == body[:10]
        assert header(part, "Content-Range") == f"bytes 0-9/{len(body)}"
        whole, again = await raw.ask(path, Range="bytes=0-9", If_Range='"stale"')
        assert whole[0] == b"HTTP/1.1 200 OK" and again == body
        beyond, _ = await raw.ask(path, Range=f"bytes={len(body)}-")
        assert beyond[0].startswith(b"HTTP/1.1 416 ")
        assert header(beyond, "Content-Range") == f"bytes */{len(body)}"
        assert header(beyond, "Cache-Control") == "no-store"
    finally:
        await raw.close()


# --- in-process: when a remembered answer is refused ------------------------------------


def test_shapes_hold_no_token_and_stay_small() -> None:
    shape = manifest_shape("hls", "a", "p.m3u8", "cbcs", "http://h", f"token={TOKEN}")
    assert TOKEN not in repr(shape) and len(shape[5]) == 64
    assert manifest_shape("hls", "a", "p.m3u8", "cbcs", "http://h", "")[5] == ""
    assert shape != manifest_shape("hls", "a", "p.m3u8", "cbcs", "http://h", "token=other")
    host = "http://" + "h" * 8000
    long = manifest_shape("hls", "a", "p.m3u8", "cbcs", host, "")
    assert len(long[4]) == 64 and long != manifest_shape("hls", "a", "p.m3u8", "cbcs",
                                                         host + "x", "")
    short = "http://" + "h" * (LONG_TEXT - 7)
    assert manifest_shape("hls", "a", "p.m3u8", "cbcs", short, "")[4] == short  # control


def test_recent_manifests_are_bounded() -> None:
    recent = RecentManifests(max_shapes=3)
    key = ContentKey(bytes(16), bytes(16))
    digest = manifest_shape("hls", "a", "p", "cbcs", "http://h", f"token={TOKEN}")[5]
    for n in range(5):
        recent.remember(("hls", "a", f"p{n}", "cbcs", "http://h", digest),
                        RecentAnswer(1, key, (), f"m{n}", "private, no-cache"))
    assert len(recent) == 3 and MAX_SHAPES >= 1024
    assert recent.recall(("hls", "a", "p0", "cbcs", "http://h", digest), 1, key) is None
    found = recent.recall(("hls", "a", "p4", "cbcs", "http://h", digest), 1, key)
    assert found is not None and found.cache_key == "m4"
    assert TOKEN not in repr(recent) + repr(found) and "(generation=1, stamps" in repr(found)
    # An answer worked out across a rescan does not push the newer generation out.
    recent.remember(("hls", "a", "old", "cbcs", "http://h", ""),
                    RecentAnswer(0, key, (), "m-old", "public, max-age=2"))
    assert recent.recall(("hls", "a", "old", "cbcs", "http://h", ""), 0, key) is None
    assert len(recent) == 3
    recent.remember(("hls", "a", "new", "cbcs", "http://h", ""),
                    RecentAnswer(2, key, (), "m-new", "public, max-age=2"))
    assert len(recent) == 1  # a new generation drops every older answer


async def test_recalled_answers_are_refused_when_what_made_them_changed(
        tmp_path: Path) -> None:
    source = tmp_path / "index.m3u8"
    source.write_text("#EXTM3U\n")
    cache = SegmentCache(CacheSettings(memory_bytes=1 << 20))
    cache.stamps = SourceStamps(revalidate=0.0)  # every call stats: a change shows at once
    key, refetched = ContentKey(bytes(16), bytes(16)), ContentKey(bytes(16), bytes(16))
    shape = ("hls", "a", "index.m3u8", "cbcs", "http://h", "")
    builds = 0

    async def build() -> bytes:
        nonlocal builds
        builds += 1
        return b"#EXTM3U\n#EXT-X-KEY:...\n"

    sources = (str(source),)
    stored = await cache.manifest(("hls", "a", "index.m3u8"), build, sources=sources,
                                  recall=(shape, 7, key, "public, max-age=2"))
    recalled = await cache.recent_manifest(shape, 7, key, sources)
    assert recalled == (stored, "public, max-age=2") and builds == 1
    assert await cache.recent_manifest(shape, 8, key, sources) is None  # a new snapshot
    assert await cache.recent_manifest(shape, 7, refetched, sources) is None  # a new key
    other_query = manifest_shape("hls", "a", "index.m3u8", "cbcs", "http://h", "x=1")
    assert await cache.recent_manifest(other_query, 7, key, sources) is None
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert await cache.recent_manifest(shape, 7, key, sources) is None  # a new stamp
    assert cache.memory is not None
    await cache.manifest(("hls", "a", "index.m3u8"), build, sources=sources,
                         recall=(shape, 7, key, "public, max-age=2"))
    assert builds == 2 and await cache.recent_manifest(shape, 7, key, sources) is not None
    answer = cache.recent.recall(shape, 7, key)
    assert answer is not None
    cache.memory.discard(answer.cache_key)  # evicted
    assert await cache.recent_manifest(shape, 7, key, sources) is None
