"""The segment cache against a real origin on loopback: memory LRU, disk tier, single flight,
conditional requests before work, manifest keys, Cache-Control; plus its parts in-process.

Productions are counted from the origin's own debug log ("segment produced: …"), one line
per body encrypted.  Every end-to-end check has a control that turns it red: the same
requests with ``--cache-bytes 0`` (or a wrong validator) must behave the other way.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from origin.config import parse_byte_size
from origin.crypto.key import ContentKey
from origin.http.byte_lru import ENTRY_OVERHEAD, ByteLru, Stored, StoredFile
from origin.http.intact_file import CHECKED_TAIL
from origin.http.memory_file import (
    MEMORY_FILE_MIN,
    MemoryFile,
    read_memory_file,
    write_memory_file,
)
from origin.http.playback_query import PlaybackQuery, parse_playback_query
from origin.http.segment_cache import manifest_key, query_parts, signalling_parts
from origin.http.single_flight import SingleFlight
from origin.packaging.drm import DrmContext, parse_key_selection
from origin.packaging.key_system import KeySystem
from tests.conftest import ROOT, RunningOrigin, child_pids, start_origin

ASSET = "demo"
DEBUG = ("--log-level", "debug")
CACHE_OFF = ("--cache-bytes", "0")
IMMUTABLE = "public, max-age=31536000, immutable"
CONCURRENT = 40
DEADLINE = 20.0
MEMORY_LINE = re.compile(r"cache memory: (\d+) entries, (\d+) bytes \(bodies (\d+)\) of (\d+), "
                         r"peak (\d+), (\d+) evictions")

Response = tuple[int, CIMultiDict[str], bytes]


async def get(session: aiohttp.ClientSession, url: str, method: str = "GET",
              **headers: str) -> Response:
    async with session.request(method, url, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))


def productions(server: RunningOrigin, etag: str | None = None) -> int:
    lines = [ln for ln in server.log_text().splitlines() if "segment produced:" in ln]
    return len([ln for ln in lines if etag is None or etag in ln])


def failed_productions(server: RunningOrigin, rel: str) -> int:
    return server.log_text().count(f"segment not produced: cbcs {rel}: ")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition the origin reaches on its own (a background write), with a
    deadline; nothing else here waits on time."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{"):
            got = ",".join(sorted(head[len(name) + 1:-1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


def segment_url(server: RunningOrigin, scheme: str, path: str) -> str:
    return f"{server.base}/hls/{ASSET}/{scheme}/{path}"


# --- single flight -------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [((), 1), (CACHE_OFF, CONCURRENT)],
                         ids=["cache-on", "control-cache-off"])
async def test_concurrent_misses_encrypt_once(media_copy: Path, tmp_path: Path,
                                              args: tuple[str, ...], expected: int) -> None:
    server = start_origin(media_copy, tmp_path / "state", *DEBUG, *args)
    try:
        url = segment_url(server, "cenc", "video-720p/seg-00003.m4s")
        async with session(limit=0) as s:
            results = await asyncio.gather(*(get(s, url) for _ in range(CONCURRENT)))
        assert {status for status, _, _ in results} == {200}
        assert len({body for _, _, body in results}) == 1
        etags = {headers["ETag"] for _, headers, _ in results}
        assert len(etags) == 1
        assert productions(server, etags.pop()) == expected
        async with session() as s:
            status, _, text = await get(s, f"{server.base}/metrics")
        assert status == 200
        size = len(results[0][2])
        assert metric(text.decode(), "origin_bytes_encrypted_total", scheme="cenc") == \
            expected * size
        lookups = sum(metric(text.decode(), "origin_cache_lookups_total", kind="segment",
                             tier="memory", result=result) for result in ("hit", "miss"))
        assert lookups == (CONCURRENT if not args else 0)
    finally:
        assert server.stop() == 0


async def test_failed_production_reaches_every_waiter_and_is_not_cached(
    media_copy: Path, tmp_path: Path,
) -> None:
    """The broken source is 64 MiB (a moof without a traf, then zeros), so its one
    production takes longer to fail than the requests take to arrive on connections
    already open; a production per request would show as more than one failure."""
    rel = "video-720p/seg-00004.m4s"
    source = media_copy / ASSET / rel
    good = source.read_bytes()
    source.write_bytes(b"\x00\x00\x00\x10moof" + bytes(8) + b"\x00\x00\x00\x08mdat"
                       + bytes(64 << 20))
    server = start_origin(media_copy, tmp_path / "state", *DEBUG)
    try:
        url = segment_url(server, "cbcs", rel)
        async with session(limit=0) as s:
            await asyncio.gather(*(get(s, f"{server.base}/healthz") for _ in range(CONCURRENT)))
            results = await asyncio.gather(*(get(s, url) for _ in range(CONCURRENT)))
            assert {status for status, _, _ in results} == {502}
            assert all(h["Cache-Control"] == "no-store" for _, h, _ in results)
            assert failed_productions(server, rel) == 1  # one attempt for all of them
            status, _, _ = await get(s, url)
            assert status == 502
            assert failed_productions(server, rel) == 2  # the failure was not kept
            source.write_bytes(good)
            status, headers, body = await get(s, url)
            assert status == 200 and len(body) > len(good)
            assert productions(server, headers["ETag"]) == 1
    finally:
        assert server.stop() == 0


# --- conditional requests, ranges, headers ------------------------------------------------


@pytest.mark.parametrize("args", [(), CACHE_OFF], ids=["cache-on", "cache-off"])
async def test_if_none_match_is_answered_before_any_work(media_copy: Path, tmp_path: Path,
                                                         args: tuple[str, ...]) -> None:
    server = start_origin(media_copy, tmp_path / "state", *DEBUG, *args)
    try:
        url = segment_url(server, "aes128", "video-360p/seg-00002.m4s")
        async with session() as s:
            status, headers, body = await get(s, url)
            assert status == 200
            etag = headers["ETag"]
            assert productions(server, etag) == 1
            for validator in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
                status, h304, empty = await get(s, url, **{"If-None-Match": validator})
                assert (status, empty) == (304, b""), validator
                assert h304["ETag"] == etag and h304["Cache-Control"] == IMMUTABLE
            assert productions(server, etag) == 1  # nothing was encrypted for the 304s
            # control: a validator that does not match gets the body
            status, _, again = await get(s, url, **{"If-None-Match": '"0123"'})
            assert (status, again) == (200, body)
        assert productions(server, etag) == (1 if not args else 2)
    finally:
        assert server.stop() == 0


async def test_ranges_and_headers_from_the_memory_cache(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", *DEBUG)
    try:
        url = segment_url(server, "cbcs", "audio-en/seg-00002.m4s")
        async with session() as s:
            status, headers, body = await get(s, url)
            assert status == 200 and headers["Cache-Control"] == IMMUTABLE
            etag = headers["ETag"]
            status, headers, part = await get(s, url, Range="bytes=10-109")
            assert (status, part) == (206, body[10:110])
            assert headers["Content-Range"] == f"bytes 10-109/{len(body)}"
            status, _, part = await get(s, url, Range="bytes=-100", **{"If-Range": etag})
            assert (status, part) == (206, body[-100:])
            status, _, whole = await get(s, url, Range="bytes=0-9", **{"If-Range": '"old"'})
            assert (status, whole) == (200, body)
            status, headers, _ = await get(s, url, Range=f"bytes={len(body)}-")
            assert status == 416 and headers["Cache-Control"] == "no-store"
            status, headers, _ = await get(s, segment_url(server, "cbcs", "audio-en/nope.m4s"))
            assert status == 404 and headers["Cache-Control"] == "no-store"
            status, headers, _ = await get(s, segment_url(server, "clear", "ts-360p/seg-00001.ts"))
            assert status == 200 and headers["Cache-Control"] == IMMUTABLE
        assert productions(server, etag) == 1
    finally:
        assert server.stop() == 0


# --- what the key covers -------------------------------------------------------------------


async def test_segment_etags_follow_the_key_and_the_init_signalling(
    media_copy: Path, tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    server = start_origin(media_copy, state, "--key-cache-ttl", "0")
    try:
        seg = segment_url(server, "cenc", "video-360p/seg-00001.m4s")
        init = segment_url(server, "cenc", "video-360p/init.mp4")
        async with session() as s:
            _, seg_before, seg_body = await get(s, seg)
            _, init_before, init_body = await get(s, init)
            # The PlayReady pssh of an init carries the licence URL, on the request's host.
            _, init_other_host, init_other = await get(s, init, Host="cdn.example")
            assert init_other_host["ETag"] != init_before["ETag"]
            host = "cdn.example".encode("utf-16-le")  # PlayReady headers are UTF-16
            assert host in init_other and host not in init_body
            rotated = subprocess.run(
                [sys.executable, "-m", "origin", "keys", "rotate", ASSET, "--state-dir",
                 str(state)], capture_output=True, text=True, cwd=ROOT, timeout=60)
            assert rotated.returncode == 0, rotated.stderr
            _, seg_after, seg_body_after = await get(s, seg)
            _, init_after, _ = await get(s, init)
        assert seg_after["ETag"] != seg_before["ETag"] and seg_body_after != seg_body
        assert init_after["ETag"] != init_before["ETag"]
    finally:
        assert server.stop() == 0


# --- manifests -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "cached"), [((), True), (CACHE_OFF, False)],
                         ids=["cache-on", "control-cache-off"])
async def test_playlists_are_cached_under_their_source_stamp_and_query(
    media_copy: Path, tmp_path: Path, args: tuple[str, ...], cached: bool,
) -> None:
    playlist = media_copy / ASSET / "video-720p" / "index.m3u8"
    server = start_origin(media_copy, tmp_path / "state", *args)
    try:
        url = f"{server.base}/hls/{ASSET}/cbcs/video-720p/index.m3u8"
        async with session() as s:
            status, headers, first = await get(s, url)
            assert status == 200 and headers["Cache-Control"] == "public, max-age=2"
            # Every token gets its own body, never another caller's: the query is in the key.
            _, ha, a = await get(s, url + "?token=AAAA1111")
            _, hb, b = await get(s, url + "?token=BBBB2222")
            assert b"AAAA1111" in a and b"BBBB2222" not in a
            assert b"BBBB2222" in b and b"AAAA1111" not in b
            assert ha["Cache-Control"] == hb["Cache-Control"] == "private, no-cache"
            _, _, widevine = await get(s, url + "?key_systems=widevine")
            assert widevine != first and b"skd://" not in widevine
            # A same-size edit that keeps the mtime is invisible to the stamp: a cached body
            # stays (and proves it was cached); without the cache the edit shows at once.
            st = playlist.stat()
            text = playlist.read_text()
            playlist.write_text(text.replace("#EXTINF:2.000000,", "#EXTINF:1.999999,", 1))
            os.utime(playlist, ns=(st.st_atime_ns, st.st_mtime_ns))
            _, _, second = await get(s, url)
            assert (second == first) is cached
            # A new mtime is noticed within the revalidation time.
            os.utime(playlist, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            bodies = [second]

            def edited() -> bool:
                return b"#EXTINF:1.999999," in bodies[-1]

            deadline = time.monotonic() + DEADLINE
            while not edited() and time.monotonic() < deadline:
                bodies.append((await get(s, url))[2])
            assert edited()
    finally:
        assert server.stop() == 0
    assert "AAAA1111" not in server.log_text()


async def test_mpd_cache_keys_on_token_and_scheme(origin_server: RunningOrigin) -> None:
    base = f"{origin_server.base}/dash/{ASSET}"
    async with session() as s:
        _, h1, cenc = await get(s, f"{base}/cenc/manifest.mpd")
        _, _, cbcs = await get(s, f"{base}/cbcs/manifest.mpd")
        _, h2, token = await get(s, f"{base}/cenc/manifest.mpd?token=CCCC3333")
        _, _, again = await get(s, f"{base}/cenc/manifest.mpd")
    assert cenc != cbcs and again == cenc
    assert b"CCCC3333" in token and b"CCCC3333" not in again
    assert h1["Cache-Control"] == "public, max-age=2"
    assert h2["Cache-Control"] == "private, no-cache"


# --- the memory budget ---------------------------------------------------------------------


async def test_memory_stays_within_its_budget(media_copy: Path, tmp_path: Path) -> None:
    budget = 1 << 20
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "1M")
    served = 0
    try:
        urls = [f"{server.base}/hls/{ASSET}/cbcs/video-720p/index.m3u8?token=t{i}"
                for i in range(2500)]
        urls += [f"{server.base}/dash/{ASSET}/cenc/manifest.mpd?token=d{i}" for i in range(300)]
        for scheme in ("aes128", "cbcs", "cenc"):
            for folder in ("video-360p", "video-720p", "audio-en"):
                urls += [segment_url(server, scheme, f"{folder}/seg-0000{n}.m4s")
                         for n in range(1, 7)]
        random.Random(7).shuffle(urls)
        gate = asyncio.Semaphore(16)

        async def one(s: aiohttp.ClientSession, url: str) -> int:
            async with gate:
                status, _, body = await get(s, url)
                assert status == 200, url
                return len(body)

        async with session() as s:
            served = sum(await asyncio.gather(*(one(s, url) for url in urls)))
    finally:
        assert server.stop() == 0
    match = MEMORY_LINE.search(server.log_text())
    assert match, "no cache summary in the log"
    entries, used, bodies, of, peak, evictions = map(int, match.groups())
    assert of == budget
    assert served > 5 * budget  # the run pushed far more than the budget through
    assert bodies <= used <= budget and peak <= budget
    assert used >= bodies + entries * ENTRY_OVERHEAD
    assert evictions > 0 and entries > 100


# --- the disk tier -------------------------------------------------------------------------


async def test_disk_tier_serves_stored_bodies_like_static_files(media_copy: Path,
                                                                 tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache" / "segments"
    state = tmp_path / "state"
    # 1 MiB of memory keeps nothing over 128 KiB: the 720p segment lives on disk only.
    args = ("--cache-bytes", "1M", "--cache-dir", str(cache_dir), *DEBUG)
    rel = "video-720p/seg-00002.m4s"
    server = start_origin(media_copy, state, *args)
    try:
        url = segment_url(server, "cbcs", rel)
        async with session() as s:
            status, headers, body = await get(s, url)
            assert status == 200 and len(body) > (1 << 20) // 8
            etag = headers["ETag"]
            stored = cache_dir / etag.strip('"')
            await wait_until(stored.exists, "the body on disk")
            assert stored.read_bytes() == body
            assert stored.stat().st_mode & 0o777 == 0o600
            assert cache_dir.stat().st_mode & 0o777 == 0o700
            assert [p.name for p in cache_dir.iterdir()] == [stored.name]  # no temp left

            status, headers, again = await get(s, url)
            assert (status, again) == (200, body)
            assert headers["ETag"] == etag and "Last-Modified" not in headers
            assert headers["Cache-Control"] == IMMUTABLE
            assert headers["Content-Type"] == "video/mp4"
            status, headers, part = await get(s, url, Range="bytes=1000-1999")
            assert (status, part) == (206, body[1000:2000])
            assert headers["Content-Range"] == f"bytes 1000-1999/{len(body)}"
            assert headers["ETag"] == etag
            status, _, _ = await get(s, url, **{"If-None-Match": etag})
            assert status == 304
            status, _, whole = await get(s, url, Range="bytes=0-9", **{"If-Range": '"old"'})
            assert (status, whole) == (200, body)
            status, _, part = await get(s, url, Range="bytes=0-9", **{"If-Range": etag})
            assert (status, part) == (206, body[:10])
            status, headers, empty = await get(s, url, method="HEAD")
            assert (status, empty) == (200, b"")
            assert headers["Content-Length"] == str(len(body))
        assert productions(server, etag) == 1  # every later answer came from the file
    finally:
        assert server.stop() == 0

    # A restart rebuilds the index from the directory: temp leftovers go, foreign files stay.
    leftover = cache_dir / f".{'0' * 32}.123.deadbeef.tmp"
    leftover.write_bytes(b"partial")
    foreign = cache_dir / "README.txt"
    foreign.write_text("the operator's file")
    server = start_origin(media_copy, state, *args)
    try:
        async with session() as s:
            status, headers, again = await get(s, segment_url(server, "cbcs", rel))
        assert (status, again, headers["ETag"]) == (200, body, etag)
        assert productions(server) == 0
        assert not leftover.exists() and foreign.exists()
    finally:
        assert server.stop() == 0


SENDFILE = re.compile(r"^\d+ +sendfile\(\d+<[^>]*>, \d+<(?P<path>[^>]*)>(?:\(deleted\))?, "
                      r".*\) = (?P<sent>\d+)$")


def sendfile_totals(trace: Path) -> dict[str, int]:
    """Bytes moved by ``sendfile(2)`` per source file, from ``strace -f -y`` output."""
    totals: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        found = SENDFILE.match(line)
        if found is not None:
            totals[found["path"]] = totals.get(found["path"], 0) + int(found["sent"])
    return totals


async def test_disk_tier_hits_leave_by_sendfile(media_copy: Path, tmp_path: Path) -> None:
    """A disk-tier hit goes from the cache file to the socket by ``sendfile(2)`` — all of
    it but the tail that is read and checked — and arrives byte-exact.  The control, in
    the same trace: a clear media file is copied, never sendfile'd (a file rewritten in
    place must not change bytes already in flight, ``origin.http.intact_file``)."""
    cache_dir = tmp_path / "cache"
    trace = tmp_path / "sendfile.trace"
    rel = "video-720p/seg-00002.m4s"
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "1M",
                          "--cache-dir", str(cache_dir), *DEBUG,
                          wrapper=("strace", "-f", "-qq", "-y", "-e", "trace=sendfile",
                                   "-o", str(trace)))
    try:
        async with session() as s:
            _, headers, body = await get(s, segment_url(server, "cbcs", rel))
            stored = cache_dir / headers["ETag"].strip('"')
            await wait_until(stored.exists, "the body on disk")
            status, _, again = await get(s, segment_url(server, "cbcs", rel))
            _, _, clear = await get(s, segment_url(server, "clear", rel))
        assert (status, again) == (200, body)
        assert clear == (media_copy / ASSET / rel).read_bytes()
        assert productions(server) == 1
    finally:
        (origin_pid,) = child_pids(server.proc.pid)  # SIGTERM to strace would detach it
        os.kill(origin_pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        server.stop()
    totals = sendfile_totals(trace)
    assert totals.get(str(stored)) == len(body) - CHECKED_TAIL, totals
    assert not [path for path in totals if path.endswith(rel)], totals


async def test_memory_hits_leave_by_sendfile_from_a_memory_file(media_copy: Path,
                                                                 tmp_path: Path) -> None:
    """A large segment kept in memory lives in a memfd, and its hits go to the socket by
    ``sendfile(2)`` from it, whole; a Range request on it is answered from the same bytes.
    The control, in the same trace: a segment under ``MEMORY_FILE_MIN`` is kept as bytes
    and written, never sendfile'd."""
    trace = tmp_path / "sendfile.trace"
    large, small = "video-720p/seg-00002.m4s", "audio-en/seg-00002.m4s"
    server = start_origin(media_copy, tmp_path / "state", *DEBUG,
                          wrapper=("strace", "-f", "-qq", "-y", "-e", "trace=sendfile",
                                   "-o", str(trace)))
    try:
        async with session() as s:
            _, headers, body = await get(s, segment_url(server, "cenc", large))
            hits = [await get(s, segment_url(server, "cenc", large)) for _ in range(3)]
            status, _, part = await get(s, segment_url(server, "cenc", large),
                                        Range="bytes=100-199")
            _, _, audio = await get(s, segment_url(server, "cenc", small))
            _, _, audio_again = await get(s, segment_url(server, "cenc", small))
        assert len(body) >= MEMORY_FILE_MIN > len(audio)
        assert [(h[0], h[2], h[1]["ETag"]) for h in hits] == [(200, body, headers["ETag"])] * 3
        assert all(h[1]["Content-Length"] == str(len(body)) for h in hits)
        assert (status, part) == (206, body[100:200])
        assert audio_again == audio
        assert productions(server) == 2
    finally:
        (origin_pid,) = child_pids(server.proc.pid)  # SIGTERM to strace would detach it
        os.kill(origin_pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        server.stop()
    totals = sendfile_totals(trace)
    memory = {path: sent for path, sent in totals.items() if path.startswith("/memfd:")}
    assert sum(memory.values()) == 4 * len(body), totals  # the miss and the three hits
    assert set(totals) == set(memory), totals


async def test_disk_tier_evicts_by_total_size(media_copy: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    budget = 200_000
    # 64 KiB of memory keeps nothing over 8 KiB, so every ~21 KB audio body goes to disk.
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "64K",
                          "--cache-dir", str(cache_dir), "--cache-disk-bytes", str(budget),
                          *DEBUG)
    try:
        etags, total = set(), 0
        async with session() as s:
            for scheme in ("aes128", "cbcs", "cenc"):
                for n in range(1, 7):
                    status, headers, body = await get(
                        s, segment_url(server, scheme, f"audio-en/seg-0000{n}.m4s"))
                    assert status == 200
                    etags.add(headers["ETag"].strip('"'))
                    total += len(body)
        assert total > budget and len(etags) == 18
        await wait_until(lambda: server.log_text().count("disk cache stored") == 18,
                         "18 disk writes")
        files = list(cache_dir.iterdir())
        assert sum(p.stat().st_size for p in files) <= budget
        assert 0 < len(files) < 18
        assert {p.name for p in files} <= etags
    finally:
        assert server.stop() == 0


async def test_worker_processes_share_the_disk_tier(media_copy: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "1M",
                          "--cache-dir", str(cache_dir), *DEBUG, workers=2)
    try:
        urls = [segment_url(server, scheme, f"video-720p/seg-0000{n}.m4s")
                for scheme in ("cbcs", "cenc") for n in range(1, 7)]
        # a new connection per request, so both workers answer
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as s:
            first = await asyncio.gather(*(get(s, url) for url in urls * 2))
            etags = {h["ETag"].strip('"') for _, h, _ in first}
            assert len(etags) == len(urls)
            await wait_until(lambda: etags <= {p.name for p in cache_dir.iterdir()},
                             "every body on disk")
            produced = productions(server)
            again = await asyncio.gather(*(get(s, url) for url in urls * 3))
        bodies = dict(zip(urls * 2, (b for _, _, b in first), strict=True))
        assert all(status == 200 for status, _, _ in first + again)
        assert [b for _, _, b in again] == [bodies[url] for url in urls * 3]
        assert productions(server) == produced  # both workers answered from the shared files
        assert "Traceback" not in server.log_text()
    finally:
        assert server.stop() == 0


@pytest.fixture(params=["no-space", "read-only", "file-size-limit"])
def failing_cache_dir(request: pytest.FixtureRequest,
                      tmp_path: Path) -> Iterator[tuple[Path, tuple[str, ...], str]]:
    """A cache directory whose writes fail: (directory, command wrapper, errno name).

    As root: a full 300 KiB tmpfs (ENOSPC), a read-only tmpfs (EROFS); otherwise a
    directory without write permission (EACCES).  Any user: a file size limit (EFBIG)."""
    mount = tmp_path / "cachefs"
    mount.mkdir(mode=0o700)
    mounted = False
    kind = request.param
    if kind == "file-size-limit" or (kind == "no-space" and os.geteuid() != 0):
        limit = 200_000
        wrapper = (sys.executable, "-c",
                   "import os, resource, sys; "
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
                   "os.execv(sys.argv[1], sys.argv[1:])")
        yield mount, wrapper, "EFBIG"
        return
    if os.geteuid() == 0:
        options = "size=300k,mode=0700" + (",ro" if kind == "read-only" else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
        mounted = True
        expected = "ENOSPC" if kind == "no-space" else "EROFS"
    else:
        mount.chmod(0o500)
        expected = "EACCES"
    try:
        yield mount, (), expected
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)
        else:
            mount.chmod(0o700)


async def test_disk_write_errors_fall_back_to_memory(
    failing_cache_dir: tuple[Path, tuple[str, ...], str], media_copy: Path, tmp_path: Path,
) -> None:
    cache_dir, wrapper, errno_name = failing_cache_dir
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "4M",
                          "--cache-dir", str(cache_dir), *DEBUG, wrapper=wrapper)
    try:
        urls = [segment_url(server, "cbcs", f"video-720p/seg-0000{n}.m4s") for n in range(1, 7)]
        async with session() as s:
            first = [await get(s, url) for url in urls]
            assert all(status == 200 for status, _, _ in first)
            await wait_until(lambda: "disk cache write failed" in server.log_text(),
                             "the write error")
            second = [await get(s, url) for url in urls]
        assert [b for _, _, b in second] == [b for _, _, b in first]
        assert productions(server) == len(urls)  # the second round came from memory
        warnings = [ln for ln in server.log_text().splitlines()
                    if " WARNING origin.cache: " in ln]
        assert len(warnings) == 1, warnings
        assert errno_name in warnings[0] and "memory only" in warnings[0]
    finally:
        assert server.stop() == 0


# --- the parts, in-process -----------------------------------------------------------------


def is_memory_file(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:origin-segment")
    except FileNotFoundError:
        return False


def test_memory_file_closes_when_the_last_reference_goes() -> None:
    """The cache's entry and a response in flight each hold a ``MemoryFile``: eviction drops
    one reference, and the descriptor closes only with the last (never under a send)."""
    live = MemoryFile.live
    body = os.urandom(300_000)
    kept = write_memory_file([body])
    fd = kept.fd
    assert is_memory_file(fd)
    assert read_memory_file(kept) == body and len(kept) == len(body)
    assert MemoryFile.live == live + 1 and "300000 bytes" in repr(kept)
    lru = ByteLru(8 * (len(body) + 1000))
    assert lru.put("s1", StoredFile(kept, '"e"'))
    in_flight = lru.get("s1")
    assert in_flight is not None
    del kept
    lru.put("s2", Stored(bytes(8 * len(body)), '"big"'))  # refused: too large
    for n in range(8):  # evicts s1
        lru.put(f"x{n}", Stored(bytes(len(body)), f'"{n}"'))
    assert lru.get("s1") is None
    assert is_memory_file(fd)  # the response still sends from it
    del in_flight
    assert not is_memory_file(fd) and MemoryFile.live == live


def test_byte_lru_counts_bodies_and_keeps_its_budget() -> None:
    rng = random.Random(3)
    lru = ByteLru(100_000)
    model: dict[str, int] = {}
    for i in range(5000):
        key = f"k{rng.randrange(400)}"
        body = bytes(rng.choice((10, 500, 5_000, 12_000, 13_000)))
        kept = lru.put(key, Stored(body, f'"{i}"'))
        assert kept == (ByteLru.cost(Stored(body, f'"{i}"')) <= 100_000 // 8)
        if kept:
            model[key] = len(body)
        assert lru.used_bytes <= lru.budget
        assert lru.body_bytes() <= lru.used_bytes
        if rng.random() < 0.3:
            found = lru.get(key)
            assert found is None or len(found.body) == model[key]
    assert lru.evictions > 0 and lru.peak_bytes <= lru.budget
    # least recently used goes first
    small = ByteLru(8 * (ENTRY_OVERHEAD + 100))  # room for eight of these entries
    for name in "abcdefgh":
        assert small.put(name, Stored(bytes(90), '"e"'))
    assert small.evictions == 0
    small.get("a")
    small.put("i", Stored(bytes(90), '"e"'))
    assert small.evictions == 1
    assert small.get("a") is not None and small.get("b") is None


async def test_single_flight_shares_results_and_failures() -> None:
    flight: SingleFlight[int] = SingleFlight()
    started = 0
    entered, release = asyncio.Event(), asyncio.Event()

    async def produce(result: int | None) -> int:
        nonlocal started
        started += 1
        entered.set()
        await release.wait()
        if result is None:
            raise ValueError("broken source")
        return result

    # Ten callers, one production; the first caller leaving does not cancel it.
    waiters = [asyncio.create_task(flight.run("k", lambda: produce(42))) for _ in range(10)]
    await entered.wait()  # every waiter has joined by now (tasks run in order)
    waiters[0].cancel()
    release.set()
    assert await asyncio.gather(*waiters[1:]) == [42] * 9
    assert started == 1 and len(flight) == 0

    # A failure reaches every caller, and is not remembered.
    started = 0
    entered.clear()
    release.clear()
    failing = [asyncio.create_task(flight.run("k", lambda: produce(None))) for _ in range(5)]
    await entered.wait()
    release.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes) and started == 1
    assert await flight.run("k", lambda: produce(7)) == 7
    assert started == 2


def test_manifest_key_covers_every_signalling_and_query_field() -> None:
    # A new DrmContext or PlaybackQuery field must be added to the key: this fails until then.
    assert {f.name for f in fields(DrmContext)} == {
        "key", "systems", "public_base", "selection", "license_query"}
    assert {f.name for f in fields(PlaybackQuery)} == {"token_items", "key_selection", "filter"}
    key = ContentKey(bytes(range(16)), bytes(16))
    other = ContentKey(bytes(range(1, 17)), bytes(16))
    base = DrmContext(key, (KeySystem.WIDEVINE, KeySystem.CLEARKEY), "http://a")
    variants = [
        base,
        DrmContext(other, base.systems, base.public_base),
        DrmContext(key, (KeySystem.WIDEVINE,), base.public_base),
        DrmContext(key, base.systems, "http://b"),
        DrmContext(key, base.systems, base.public_base,
                   selection=parse_key_selection("clearkey")),
        DrmContext(key, base.systems, base.public_base, license_query="token=x"),
    ]
    keys = {manifest_key("hls", signalling_parts(d)) for d in variants}
    assert len(keys) == len(variants)
    queries = [{}, {"token": "a"}, {"token": "b"}, {"ks": "a"}, {"key_systems": "widevine"},
               {"tracks": "audio"}, {"max_bitrate": "600000"}, {"profile": "offline"}]
    digests = {manifest_key(query_parts(parse_playback_query(q))) for q in queries}
    assert len(digests) == len(queries)
    secret = "TOKEN-never-kept"
    assert secret not in manifest_key(query_parts(parse_playback_query({"token": secret})))


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("268435456", 256 << 20),
                                            ("256M", 256 << 20), ("256MiB", 256 << 20),
                                            ("4G", 4 << 30), ("64k", 64 << 10)])
def test_byte_sizes(text: str, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "12 parsecs", "G"])
def test_bad_byte_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_size(text)
