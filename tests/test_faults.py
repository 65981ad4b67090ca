"""Faults the origin survives (issue 8 §3), each against a real ``origin serve`` on loopback.

1. The co-hosted licence module SIGKILLed under ``--workers 2``: the supervisor restarts
   it; meanwhile clear segments, cached encrypted segments and — thanks to the key cache
   (``--key-cache-ttl``) — newly encrypted segments of a warm asset keep flowing, key and
   licence requests answer 503 fast, and everything recovers by itself.  The control:
   with ``--key-cache-ttl 0`` encryption stops with the licence module.
   (``test_supervisor_and_keys.py`` covers the restart under one process.)
2. Widevine/PlayReady upstreams and the FairPlay KSM that hang (a TCP peer on loopback
   that reads and never answers): many concurrent licence requests through the origin all
   end in the licence module's own 504/503 within its time-out, segments keep flowing, and
   connections to the hanging peer stay bounded and are closed after each wave.  With the
   default time-outs the player sees the licence module's answer, not the origin's generic
   503: the origin's proxy waits longer than any upstream time-out the licence module
   accepts (``OriginSettings.license_timeout``).
3. Media replaced or truncated while served: a replaced file is served new with a new
   ETag — at once for clear files, within the source-stamp window
   (``origin.http.source_stamps.REVALIDATE_SECONDS``) for encrypted ones, from memory, disk
   or no cache — or 502 when the new file is broken; a clear download whose file is cut or
   rewritten in place under it ends short (the connection closes before Content-Length),
   never as a complete-looking 200 mixing old and new, while a file replaced by rename
   finishes with the old bytes; an encrypted segment whose source is cut or rewritten
   while it is read (the read is held back under ``strace`` fault injection) is a 502.
   Documented, and pinned here: a replacement with the same size and a forged mtime
   (``os.utime``) keeps its ETag (module docstring of ``origin.http.source_stamps``).
4. A full disk for the disk cache: ``test_cache.py::test_disk_write_errors_fall_back_to_memory``
   covers one process (ENOSPC, EROFS/EACCES, EFBIG); here the same through two workers.
5. SIGTERM: an in-flight download finishes byte for byte, new connections are refused,
   exit status 0, the licence module is gone, and no socket or directory is left behind —
   in the state directory or in the private directory a long socket path gets.
   (``test_workers.py`` covers the in-flight download under ``--workers 2`` with its
   SIGKILL control.)

Nothing sleeps to synchronise: waits poll a real condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from origin.config import LicenseEndpoint, OriginSettings
from origin.http.source_stamps import REVALIDATE_SECONDS
from origin.license.fairplay_routes import MAX_KSM_TIMEOUT_S
from origin.license.upstream import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S
from tests.conftest import RunningOrigin, child_pids, start_origin
from tests.tools.challenges import playready_challenge, widevine_pssh_request, wrmheader
from tests.tools.downloads import clear_download, read_throttled
from tests.tools.fairplay import make_credentials
from tests.tools.processes import (
    cmdline,
    gone,
    licence_pids,
    refuses_connections,
    wait_until,
)

DEADLINE = 30.0
FAIL_FAST = 1.0  # seconds a key or licence request may take while the licence module is down
SLACK = 0.5  # scheduling slack on top of a time-out or the stamp window, on a loaded machine
UPSTREAM_TIMEOUT = 1.0  # [widevine]/[playready] timeout_s and ksm_timeout_s in the hang tests
UPSTREAM_CONNECTIONS = 100  # the licence module's pool per upstream session (upstream.py)
OUTAGE_ATTEMPTS = 4

Check = Callable[[], Awaitable[None]]


# --- small tools ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    etag: str | None
    body: bytes = field(repr=False)
    elapsed: float = 0.0


async def fetch(session: aiohttp.ClientSession, url: str, method: str = "GET",
                data: bytes | None = None, **headers: str) -> Answer:
    started = time.monotonic()
    async with session.request(method, url, data=data, headers=headers) as resp:
        body = await resp.read()
        return Answer(resp.status, resp.headers.get("ETag"), body, time.monotonic() - started)


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` the way deployment tools do: a new file renamed over it."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(data)
    os.replace(temp, path)


def bump_mtime(path: Path, seconds: int = 5) -> None:
    """Move ``path``'s mtime on, as a later write would (two writes within one kernel clock
    tick share an mtime)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def error_of(answer: Answer) -> str:
    doc = json.loads(answer.body)
    assert isinstance(doc, dict) and list(doc) == ["error"]
    return str(doc["error"])


async def asset_kid(session: aiohttp.ClientSession, base: str) -> str:
    answer = await fetch(session, f"{base}/hls/demo/aes128/video-360p/index.m3u8")
    assert answer.status == 200
    match = re.search(rb"/license/aes128/([0-9a-f]{32})", answer.body)
    assert match is not None
    return match.group(1).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- 1. the licence module killed -----------------------------------------------------------


async def sessions_per_worker(base: str, count: int) -> dict[int, aiohttp.ClientSession]:
    """One single-connection keep-alive session per worker, keyed by the worker's PID."""
    found: dict[int, aiohttp.ClientSession] = {}
    for _ in range(400):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(f"{base}/healthz") as resp:
            pid = int(resp.headers["X-Origin-Worker"])
            await resp.read()
        if pid in found:
            await session.close()
        else:
            found[pid] = session
        if len(found) == count:
            return found
    for session in found.values():
        await session.close()
    raise AssertionError(f"only {len(found)} of {count} workers answered")


async def pinned_pid(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/healthz") as resp:
        await resp.read()
        return int(resp.headers["X-Origin-Worker"])


async def licence_down(session: aiohttp.ClientSession, key_url: str) -> bool:
    """Whether a key request fails as it must while the licence module is down: a fast 503."""
    answer = await fetch(session, key_url)
    if answer.status == 200:
        return False
    assert answer.status == 503, answer
    assert error_of(answer) == "licence module unavailable"
    assert answer.elapsed < FAIL_FAST, f"key request took {answer.elapsed:.2f}s"
    return True


async def during_outage(server: RunningOrigin, session: aiohttp.ClientSession, key_url: str,
                        checks: Check) -> None:
    """SIGKILL the licence module and run ``checks`` while it is down — bracketed by two key
    requests that both fail fast — killing the restarted one again if it came back too soon
    to bracket them (its restart back-off doubles each time)."""
    for _ in range(OUTAGE_ATTEMPTS):
        (licence,) = licence_pids(server)
        os.kill(licence, signal.SIGKILL)
        await wait_until(functools.partial(gone, licence), "the killed licence module is gone")
        if not await licence_down(session, key_url):
            await wait_until(lambda: len(licence_pids(server)) == 1, "a licence module")
            continue
        await checks()
        if await licence_down(session, key_url):
            return
        await wait_until(lambda: len(licence_pids(server)) == 1, "a licence module")
    raise AssertionError("the licence module always came back before the checks ended")


async def recover(session: aiohttp.ClientSession, key_url: str) -> bytes:
    """Poll the key route until the restarted licence module answers; the key."""
    end = time.monotonic() + DEADLINE
    while True:
        answer = await fetch(session, key_url)
        if answer.status == 200:
            return answer.body
        assert answer.status == 503 and answer.elapsed < FAIL_FAST, answer
        assert time.monotonic() < end, "the licence module did not come back"
        await asyncio.sleep(0.05)


async def test_killed_licence_module_under_workers(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", workers=2)
    pinned: dict[int, aiohttp.ClientSession] = {}
    try:
        pinned = await sessions_per_worker(server.base, 2)
        first = next(iter(pinned.values()))
        kid = await asset_kid(first, server.base)
        key_url = f"{server.base}/license/aes128/{kid}"
        seg = f"{server.base}/hls/demo/aes128/video-360p/seg-0000{{}}.m4s"
        clear = f"{server.base}/hls/demo/clear/video-360p/seg-00001.m4s"
        clearkey = json.dumps({"kids": [b64url(bytes.fromhex(kid))],
                               "type": "temporary"}).encode()
        cached: dict[int, bytes] = {}
        for pid, session in pinned.items():  # each worker: its key cache and one cached body
            key = await fetch(session, key_url)
            assert key.status == 200 and len(key.body) == 16
            warm = await fetch(session, seg.format(1))
            assert warm.status == 200
            cached[pid] = warm.body
        key_before = key.body
        fresh: dict[int, bytes] = {}

        async def checks() -> None:
            for n, (pid, session) in enumerate(pinned.items(), start=3):
                assert await pinned_pid(session, server.base) == pid
                assert (await fetch(session, clear)).status == 200
                again = await fetch(session, seg.format(1))  # from the segment cache
                assert (again.status, again.body) == (200, cached[pid])
                new = await fetch(session, seg.format(n))  # encrypted now, with the cached key
                assert new.status == 200, new
                fresh[n] = new.body
                licence = await fetch(session, f"{server.base}/license/clearkey", "POST",
                                      clearkey, **{"Content-Type": "application/json"})
                assert licence.status == 503 and licence.elapsed < FAIL_FAST, licence
                assert await licence_down(session, key_url)

        await during_outage(server, first, key_url, checks)
        assert await recover(first, key_url) == key_before  # the same key after the restart
        for n, body in fresh.items():  # what was encrypted meanwhile is what it is now
            assert (await fetch(first, seg.format(n))).body == body
        assert len(licence_pids(server)) == 1
    finally:
        for session in pinned.values():
            await session.close()
        assert server.stop() == 0
    log = server.log_text()
    assert "licence module exited with -9; restarting" in log
    assert key_before.hex() not in log and "Traceback" not in log


async def test_without_the_key_cache_encryption_stops_with_the_licence_module(
        media_copy: Path, tmp_path: Path) -> None:
    """The control of the test above: ``--key-cache-ttl 0`` asks the licence module for
    every encrypted request, so nothing encrypted — not even a cached body, whose ETag
    names the key — flows while it is down; clear delivery still does."""
    server = start_origin(media_copy, tmp_path / "state", "--key-cache-ttl", "0")
    try:
        async with aiohttp.ClientSession() as session:
            kid = await asset_kid(session, server.base)
            key_url = f"{server.base}/license/aes128/{kid}"
            seg = f"{server.base}/hls/demo/aes128/video-360p/seg-0000{{}}.m4s"
            assert (await fetch(session, seg.format(1))).status == 200

            async def checks() -> None:
                for n in (1, 3):
                    answer = await fetch(session, seg.format(n))
                    assert answer.status == 503 and answer.elapsed < FAIL_FAST, answer
                clear = f"{server.base}/hls/demo/clear/video-360p/seg-00001.m4s"
                assert (await fetch(session, clear)).status == 200

            await during_outage(server, session, key_url, checks)
            await recover(session, key_url)
            assert (await fetch(session, seg.format(3))).status == 200
    finally:
        assert server.stop() == 0


# --- 2. hanging upstream licence servers and KSM --------------------------------------------


class HangingPeer:
    """A TCP server on loopback that reads whatever comes and never answers.  It counts the
    connections open now, at most and in all, and closes the rest when it stops."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        self.peak = max(self.peak, self.open)
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HangingPeer]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()


def write_licence_config(folder: Path, upstream: HangingPeer, ksm: HangingPeer,
                         timeout_s: float | None, ksm_timeout_s: float) -> Path:
    creds = make_credentials()
    (folder / "fps.cer").write_bytes(creds.cert_der)
    timeout = f"timeout_s = {timeout_s}\n" if timeout_s is not None else ""
    config = folder / "licence.toml"
    config.write_text(
        f'[widevine]\nurl = "{upstream.url}/widevine"\n{timeout}'
        f'[playready]\nurl = "{upstream.url}/playready"\n{timeout}'
        f'[fairplay]\ncertificate_file = "fps.cer"\nksm = "external"\n'
        f'ksm_url = "{ksm.url}/fps"\nksm_timeout_s = {ksm_timeout_s}\n')
    return config


SPC = b"\x00\x00\x00\x01" + bytes(range(256)) * 8  # shaped like a real SPC


@dataclass(frozen=True)
class LicenceCall:
    path: str
    body: bytes
    content_type: str
    status: int
    error: str


def licence_calls(kid_hex: str) -> dict[str, LicenceCall]:
    kid = bytes.fromhex(kid_hex)
    return {
        "widevine": LicenceCall("/license/widevine", widevine_pssh_request(kid),
                                "application/octet-stream", 504,
                                "widevine licence server timed out"),
        "playready": LicenceCall("/license/playready",
                                 playready_challenge(wrmheader(kid, "4.0")),
                                 "text/xml; charset=utf-8", 504,
                                 "playready licence server timed out"),
        "fairplay": LicenceCall(f"/license/fairplay/{kid_hex}", SPC,
                                "application/octet-stream", 503, "FairPlay KSM timed out"),
    }


async def call(session: aiohttp.ClientSession, base: str, item: LicenceCall) -> Answer:
    return await fetch(session, base + item.path, "POST", item.body,
                       **{"Content-Type": item.content_type})


@contextlib.asynccontextmanager
async def hanging_licence_servers(
        folder: Path, timeout_s: float | None, ksm_timeout_s: float,
) -> AsyncIterator[tuple[RunningOrigin, HangingPeer, HangingPeer]]:
    async with HangingPeer().running() as upstream, HangingPeer().running() as ksm:
        config = write_licence_config(folder, upstream, ksm, timeout_s, ksm_timeout_s)
        server = start_origin(folder / "media", folder / "state", "--license-config", str(config),
                              "--license-rate", "0")  # many requests from one client at once
        try:
            yield server, upstream, ksm
        finally:
            assert server.stop() == 0


@pytest.fixture
def licence_folder(media_copy: Path) -> Path:
    return media_copy.parent


async def test_hanging_upstreams_time_out_without_pile_up(licence_folder: Path) -> None:
    wave = {"widevine": 110, "playready": 20, "fairplay": 110}  # over the pools' limit
    async with hanging_licence_servers(licence_folder, UPSTREAM_TIMEOUT, UPSTREAM_TIMEOUT) \
            as (server, upstream, ksm), \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        calls = licence_calls(await asset_kid(session, server.base))
        segments = [f"{server.base}/hls/demo/{s}/video-360p/seg-0000{n}.m4s"
                    for s in ("clear", "cbcs") for n in (1, 2)]
        for round_no in range(2):
            started = time.monotonic()
            pending = [asyncio.create_task(call(session, server.base, calls[name]))
                       for name, count in wave.items() for _ in range(count)]
            await wait_until(lambda: upstream.open > 0 and ksm.open > 0, "requests hang")
            # The origin keeps serving segments while every licence request hangs.
            for url in segments:
                answer = await fetch(session, url)
                assert answer.status == 200 and answer.elapsed < UPSTREAM_TIMEOUT, answer
            early = [t.result() for t in pending if t.done()]
            assert not early, early[:3]  # they did hang meanwhile
            answers = await asyncio.gather(*pending)
            elapsed = time.monotonic() - started
            assert elapsed < UPSTREAM_TIMEOUT + 3 * SLACK + 1.0, f"wave took {elapsed:.2f}s"
            names = [name for name, count in wave.items() for _ in range(count)]
            for name, answer in zip(names, answers, strict=True):
                assert (answer.status, error_of(answer)) == (calls[name].status,
                                                              calls[name].error), name
            # Connections to the hanging peers stay within the pools and are all closed.
            assert 0 < upstream.peak <= UPSTREAM_CONNECTIONS
            assert 0 < ksm.peak <= UPSTREAM_CONNECTIONS
            await wait_until(lambda: upstream.open == 0 and ksm.open == 0,
                             f"round {round_no}: connections to the hanging peers close")
        assert upstream.accepted <= 2 * (wave["widevine"] + wave["playready"])
    assert "Traceback" not in server.log_text()


async def test_default_timeouts_let_the_licence_module_answer(licence_folder: Path) -> None:
    """Defaults: a hanging Widevine upstream is the licence module's 504 after its own
    ``timeout_s`` (10 s), and a KSM with a time-out above the origin's former proxy
    time-out its 503 — never the origin's "licence module unavailable"."""
    ksm_timeout_s = DEFAULT_TIMEOUT_S + 2.0
    async with hanging_licence_servers(licence_folder, None, ksm_timeout_s) as (server, _, _), \
            aiohttp.ClientSession() as session:
        calls = licence_calls(await asset_kid(session, server.base))
        widevine, fairplay = await asyncio.gather(call(session, server.base, calls["widevine"]),
                                                  call(session, server.base, calls["fairplay"]))
    assert (widevine.status, error_of(widevine)) == (504, "widevine licence server timed out")
    assert DEFAULT_TIMEOUT_S <= widevine.elapsed < DEFAULT_TIMEOUT_S + 2 * SLACK + 1.0
    assert (fairplay.status, error_of(fairplay)) == (503, "FairPlay KSM timed out")
    assert ksm_timeout_s <= fairplay.elapsed < ksm_timeout_s + 2 * SLACK + 1.0
    # The rule that gives this for any configuration the licence module accepts.
    defaults = OriginSettings(media_root=Path("m"), license=LicenseEndpoint("http://l", "t"))
    assert defaults.license_timeout > max(MAX_TIMEOUT_S, MAX_KSM_TIMEOUT_S) + 1.0


# --- 3. media replaced or truncated while served --------------------------------------------


def media_file(media: Path, rel: str) -> Path:
    return media / "demo" / rel


async def test_clear_file_replaced_between_requests(media_copy: Path, tmp_path: Path) -> None:
    """Clear files are stat-ed on every request: a replacement is served at once, with a new
    ETag, and the old ETag no longer gets a 304."""
    server = start_origin(media_copy, tmp_path / "state")
    path = media_file(media_copy, "video-360p/seg-00001.m4s")
    url = f"{server.base}/hls/demo/clear/video-360p/seg-00001.m4s"
    try:
        async with aiohttp.ClientSession() as session:
            old = await fetch(session, url)
            assert (old.status, old.body) == (200, path.read_bytes())
            assert (await fetch(session, url, **{"If-None-Match": str(old.etag)})).status == 304

            other = media_file(media_copy, "video-360p/seg-00002.m4s").read_bytes()
            replace_file(path, other)  # another size, renamed into place
            new = await fetch(session, url)
            assert (new.status, new.body) == (200, other) and new.etag != old.etag
            stale = await fetch(session, url, **{"If-None-Match": str(old.etag)})
            assert (stale.status, stale.body) == (200, other)

            same_size = bytes(reversed(other))
            path.write_bytes(same_size)  # the same size, rewritten in place, a later mtime
            bump_mtime(path)
            again = await fetch(session, url)
            assert (again.status, again.body) == (200, same_size)
            assert again.etag not in (old.etag, new.etag)
    finally:
        assert server.stop() == 0


TIER_ARGS = {
    "memory": (),
    # 1 MiB of memory keeps nothing over 128 KiB: the 720p segments live on disk only.
    "disk": ("--cache-bytes", "1M", "--cache-dir", "{cache}"),
    "off": ("--cache-bytes", "0"),
}


async def metric_value(session: aiohttp.ClientSession, base: str, sample: str) -> float:
    answer = await fetch(session, f"{base}/metrics")
    for line in answer.body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


DISK_HITS = 'origin_cache_lookups_total{kind="segment",result="hit",tier="disk"}'


class Versions:
    """What a URL answered before each replacement of its source, and until when each may
    still come back: the stamp window after the replacement that superseded it."""

    def __init__(self, first: Answer) -> None:
        self.current = first
        self._earlier: list[tuple[Answer, float]] = []

    def replaced(self) -> None:
        """Call right after the source was replaced."""
        self._earlier.append((self.current, time.monotonic() + REVALIDATE_SECONDS + SLACK))

    async def settle(self, session: aiohttp.ClientSession, url: str,
                     accept: Callable[[Answer], bool]) -> Answer:
        """Request ``url`` until it answers something new, which must be ``accept``-ed;
        meanwhile only earlier answers — whole, each within its window — may come."""
        while True:
            answer = await fetch(session, url)
            earlier = [(old, until) for old, until in self._earlier
                       if (old.status, old.etag) == (answer.status, answer.etag)]
            if not earlier:
                assert accept(answer), answer
                self.current = answer
                return answer
            old, until = earlier[-1]
            assert answer.body == old.body, "an earlier ETag with other bytes"
            assert time.monotonic() < until, "an earlier answer after its stamp window"


@pytest.mark.parametrize("tier", list(TIER_ARGS))
async def test_encrypted_segment_replaced_between_requests(media_copy: Path, tmp_path: Path,
                                                           tier: str) -> None:
    cache = tmp_path / "cache"
    args = [a.format(cache=cache) for a in TIER_ARGS[tier]]
    server = start_origin(media_copy, tmp_path / "state", *args)
    path = media_file(media_copy, "video-720p/seg-00001.m4s")
    url = f"{server.base}/hls/demo/cbcs/video-720p/seg-00001.m4s"
    try:
        async with aiohttp.ClientSession() as session:
            old = await fetch(session, url)
            assert old.status == 200 and old.etag is not None
            if tier == "disk":
                stored = cache / old.etag.strip('"')
                await wait_until(stored.exists, "the body on disk")
                assert (await fetch(session, url)).body == old.body
                assert await metric_value(session, server.base, DISK_HITS) == 1  # from disk
            # cbcs bodies do not depend on the path: seg-00002's bytes protect alike anywhere.
            other = media_file(media_copy, "video-720p/seg-00002.m4s").read_bytes()
            expected = (await fetch(session, url.replace("00001", "00002"))).body

            versions = Versions(old)
            replace_file(path, other)
            versions.replaced()
            new = await versions.settle(session, url,
                                        lambda a: (a.status, a.body) == (200, expected))
            assert new.etag not in (old.etag, None)
            if tier == "off":  # no stamp is remembered: the very first answer was new
                assert (await fetch(session, url)).etag == new.etag

            replace_file(path, b"\0\0\0\x10moof" + os.urandom(4096))  # broken media
            versions.replaced()
            broken = await versions.settle(session, url, lambda a: a.status == 502)
            assert 0 < len(error_of(broken)) < 80  # a short reason, from the middleware

            replace_file(path, media_file(media_copy, "video-720p/seg-00003.m4s").read_bytes())
            versions.replaced()
            back = await versions.settle(session, url, lambda a: a.status == 200)
            assert back.etag not in (old.etag, new.etag)
            assert back.body == (await fetch(session, url.replace("00001", "00003"))).body
    finally:
        assert server.stop() == 0


async def test_replacement_with_the_same_size_and_a_forged_mtime(media_copy: Path,
                                                                tmp_path: Path) -> None:
    """Documented (``origin.http.source_stamps``): size and mtime are the validator, as
    for aiohttp's and nginx's static files, so a file replaced by one of the same size
    whose mtime is set back with ``os.utime`` keeps its ETag — a clear file goes out with
    the new bytes under the old ETag, and an encrypted segment the cache holds stays the
    old body (until evicted or restarted).  Replace media with a new mtime, or purge."""
    server = start_origin(media_copy, tmp_path / "state")
    path = media_file(media_copy, "video-360p/seg-00004.m4s")
    clear_url = f"{server.base}/hls/demo/clear/video-360p/seg-00004.m4s"
    encrypted_url = f"{server.base}/hls/demo/aes128/video-360p/seg-00004.m4s"
    try:
        async with aiohttp.ClientSession() as session:
            clear, encrypted = await fetch(session, clear_url), await fetch(session, encrypted_url)
            assert clear.status == encrypted.status == 200
            before = path.stat()
            forged = bytes(b ^ 0xFF for b in clear.body)
            path.write_bytes(forged)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size,
                                                                    before.st_mtime_ns)
            forged_at = time.monotonic()
            while time.monotonic() - forged_at < REVALIDATE_SECONDS + SLACK:  # the window
                now_clear = await fetch(session, clear_url)
                assert (now_clear.etag, now_clear.body) == (clear.etag, forged)
                now_encrypted = await fetch(session, encrypted_url)
                assert (now_encrypted.etag, now_encrypted.body) == (encrypted.etag,
                                                                    encrypted.body)
            # The control: the same bytes under a later mtime are a new representation.
            versions = Versions(encrypted)
            bump_mtime(path)
            versions.replaced()
            changed = await versions.settle(session, encrypted_url, lambda a: a.status == 200)
            assert changed.body != encrypted.body
    finally:
        assert server.stop() == 0


BIG_BYTES = 32 << 20
BIG_REL = "ts-360p/big.ts"
BIG_URL = f"/hls/demo/clear/{BIG_REL}"
SLOW_PREFIX = 1 << 20
READ_TIMEOUT = 10.0  # a read that waits this long means the server left the connection hanging


@pytest.fixture
def big_media(media_copy: Path) -> tuple[Path, bytes]:
    """The demo asset plus a large clear file; its bytes."""
    data = os.urandom(BIG_BYTES)
    media_file(media_copy, BIG_REL).write_bytes(data)
    return media_copy, data


async def read_to_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Read up to ``limit`` bytes or to the end of the connection; a read that hangs (the
    server neither sends nor closes) fails the test."""
    parts: list[bytes] = []
    got = 0
    with contextlib.suppress(ConnectionError):
        while got < limit:
            chunk = await asyncio.wait_for(reader.read(min(1 << 20, limit - got)), READ_TIMEOUT)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    return b"".join(parts)


def truncate(path: Path, new: bytes) -> None:
    os.truncate(path, len(new))


def rewrite_in_place(path: Path, new: bytes) -> None:
    with path.open("r+b") as fh:  # the same inode: truncated, then new bytes written
        fh.truncate(0)
        fh.write(new)


@pytest.mark.parametrize("change", ["truncate", "rewrite-in-place", "replace-by-rename"])
async def test_clear_file_changed_during_a_download(big_media: tuple[Path, bytes],
                                                    tmp_path: Path, change: str) -> None:
    """A file cut or rewritten in place under a download: the download ends short and the
    connection closes — never a hang, never a complete-looking body mixing old and new.
    The control: a file replaced by rename keeps its old inode open, and the download
    completes with the old bytes."""
    media, data = big_media
    path = media_file(media, BIG_REL)
    server = start_origin(media, tmp_path / "state")
    try:
        async with clear_download(server.port, BIG_URL, keep_alive=True) as (reader, length):
            assert length == BIG_BYTES
            digest = hashlib.sha256()
            got = await read_throttled(reader, digest, SLOW_PREFIX)
            new = os.urandom(BIG_BYTES)
            if change == "truncate":
                truncate(path, new[:SLOW_PREFIX])
            elif change == "rewrite-in-place":
                rewrite_in_place(path, new)
            else:
                replace_file(path, new)
            rest = await read_to_close(reader, length - got)
        body_length = got + len(rest)
        if change == "replace-by-rename":
            assert body_length == length
            digest.update(rest)
            assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        else:
            assert body_length < length, "a complete-looking body from a changed file"
        assert rest[:1 << 20] == data[got:got + len(rest[:1 << 20])]  # what came was the old
    finally:
        assert server.stop() == 0
    log = server.log_text()
    assert ("changed while being sent" in log) is (change != "replace-by-rename")
    assert "Traceback" not in log


READ_DELAY_US = 1_000_000  # strace holds every read(2) of the source file back this long


def serving_pid(tracer: int) -> int:
    """The ``origin serve`` process under ``strace`` (its traced child)."""
    (pid,) = [p for p in child_pids(tracer) if b"serve" in cmdline(p)]
    return pid


def has_open(pid: int, path: Path) -> bool:
    """Whether ``pid`` holds ``path`` open (from /proc)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if os.readlink(fd) == str(path):
                    return True
    return False


@pytest.mark.parametrize("change", ["truncate", "rewrite-in-place", "grow", "none"])
async def test_encrypted_source_changed_while_read(media_copy: Path, tmp_path: Path,
                                                   change: str) -> None:
    """Every read of one source file is held back (``strace`` fault injection), and the
    file is changed while the origin has it open for encryption: a 502, never a 200 whose
    bytes or ETag come from a mix of versions.  The control (``none``): 200."""
    path = media_file(media_copy, "video-360p/seg-00003.m4s").resolve()
    data = path.read_bytes()
    wrapper = ("strace", "-f", "-qq", "-o", os.devnull, "--seccomp-bpf", "-e",
               "trace=read,readv", "-P", str(path), "-e",
               f"inject=read,readv:delay_enter={READ_DELAY_US}")
    server = start_origin(media_copy, tmp_path / "state", wrapper=wrapper)
    url = f"{server.base}/hls/demo/aes128/video-360p/seg-00003.m4s"
    origin = 0
    try:
        origin = serving_pid(server.proc.pid)
        async with aiohttp.ClientSession() as session:
            pending = asyncio.create_task(fetch(session, url))
            await wait_until(lambda: has_open(origin, path), "the origin reads the source")
            new = bytes(b ^ 0x5A for b in data)
            if change == "truncate":
                truncate(path, data[:len(data) // 2])
            elif change == "rewrite-in-place":
                rewrite_in_place(path, new)  # the same size: only the stamp tells
            elif change == "grow":  # appended to: more bytes than the stamp's size
                with path.open("ab") as fh:
                    fh.write(new)
            answer = await pending
            if change == "none":
                assert answer.status == 200
            else:
                assert answer.status == 502, answer
                assert error_of(answer) == "segment changed while being read"
    finally:
        if origin:  # SIGTERM to strace itself would detach it and leave the origin cut off
            os.kill(origin, signal.SIGTERM)
        assert server.stop() == 0


@pytest.mark.parametrize("swap", ["fifo", "directory"])
async def test_source_swapped_for_something_not_a_file(media_copy: Path, tmp_path: Path,
                                                       swap: str) -> None:
    """A segment the catalog knows, replaced by a FIFO (whose open would wait for a
    writer forever) or a directory: a 404 at once for every scheme, and the server
    goes on serving the rest."""
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "0")
    path = media_file(media_copy, "video-360p/seg-00002.m4s").resolve()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            path.unlink()
            if swap == "fifo":
                os.mkfifo(path)
            else:
                path.mkdir()
            for scheme in ("aes128", "cbcs", "cenc"):
                answer = await fetch(
                    session, f"{server.base}/hls/demo/{scheme}/video-360p/seg-00002.m4s")
                assert answer.status == 404, (scheme, answer)
                assert error_of(answer) == "no such file in asset"
            other = await fetch(session, f"{server.base}/hls/demo/cenc/video-360p/seg-00003.m4s")
            assert other.status == 200
    finally:
        assert server.stop() == 0


# --- 4. a full disk for the disk cache, through workers -------------------------------------


@pytest.fixture
def full_cache_dir(tmp_path: Path) -> Iterator[tuple[Path, tuple[str, ...], str]]:
    """A cache directory that fills up: (directory, command wrapper, errno name).  As root a
    300 KiB tmpfs (ENOSPC); otherwise a file size limit for the server's processes (EFBIG)."""
    mount = tmp_path / "cachefs"
    mount.mkdir(mode=0o700)
    if os.geteuid() != 0:
        limit = 200_000
        wrapper = (sys.executable, "-c",
                   "import os, resource, sys; "
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
                   "os.execv(sys.argv[1], sys.argv[1:])")
        yield mount, wrapper, "EFBIG"
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k,mode=0700", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount, (), "ENOSPC"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_full_disk_cache_through_workers(
        full_cache_dir: tuple[Path, tuple[str, ...], str], media_copy: Path,
        tmp_path: Path) -> None:
    """Each worker that meets the full disk warns once and goes on from memory; every
    request is answered, with the same bytes, before and after."""
    cache_dir, wrapper, errno_name = full_cache_dir
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "4M",
                          "--cache-dir", str(cache_dir), "--log-level", "debug",
                          wrapper=wrapper, workers=2)
    try:
        urls = [f"{server.base}/hls/demo/{scheme}/video-720p/seg-0000{n}.m4s"
                for scheme in ("cbcs", "cenc") for n in range(1, 7)]
        # a new connection per request, so both workers answer
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            first = await asyncio.gather(*(fetch(session, url) for url in urls))
            assert all(a.status == 200 for a in first)
            await wait_until(lambda: "disk cache write failed" in server.log_text(),
                             "a write error")
            again = await asyncio.gather(*(fetch(session, url) for url in urls * 3))
        assert all(a.status == 200 for a in again)
        assert [a.body for a in again] == [a.body for a in first] * 3
        assert len(list(cache_dir.iterdir())) < len(urls)  # the disk really was full
    finally:
        assert server.stop() == 0
    warnings = [ln for ln in server.log_text().splitlines() if " WARNING origin.cache: " in ln]
    assert 1 <= len(warnings) <= 2, warnings  # at most once per worker
    assert all(errno_name in ln and "memory only" in ln for ln in warnings)
    assert "Traceback" not in server.log_text()


# --- 5. SIGTERM -----------------------------------------------------------------------------


def socket_of(licence: int) -> Path:
    """The Unix socket the licence module serves on, from its command line."""
    args = cmdline(licence)
    return Path(args[args.index(b"--socket") + 1].decode())


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_finishes_downloads_and_leaves_nothing_behind(
        big_media: tuple[Path, bytes], tmp_path: Path, workers: int) -> None:
    media, data = big_media
    # One process: a state path too long for a Unix socket address, so the licence socket
    # goes into a private temporary directory; two workers: the socket in the state dir.
    state = tmp_path / ("s" * 100 if workers == 1 else "s") / "state"
    server = start_origin(media, state, workers=workers)
    try:
        (licence,) = licence_pids(server)
        processes = {server.proc.pid, *child_pids(server.proc.pid)}
        assert len(processes) == 2 + (workers if workers > 1 else 0)
        sock = socket_of(licence)
        assert stat.S_ISSOCK(sock.stat().st_mode)  # what must go is there now
        assert (sock.parent == state) is (workers > 1)
        assert bool(list(state.glob("metrics-*"))) is (workers > 1)
        async with clear_download(server.port, BIG_URL, keep_alive=True) as (reader, length):
            digest = hashlib.sha256()
            got = await read_throttled(reader, digest, SLOW_PREFIX)
            server.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: refuses_connections(server.port),
                             "the port refuses new connections")
            rest = await read_to_close(reader, length - got)
        digest.update(rest)
        assert got + len(rest) == length == BIG_BYTES
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert server.proc.wait(timeout=DEADLINE) == 0
        await wait_until(lambda: all(gone(pid) for pid in processes), "every process exits")
    finally:
        server.stop()
    assert not sock.exists()
    assert sock.parent == state or not sock.parent.exists()
    leftovers = [p.name for p in state.iterdir()
                 if p.is_dir() or stat.S_ISSOCK(p.lstat().st_mode)]
    assert leftovers == []
    log = server.log_text()
    assert "Traceback" not in log and "killing" not in log
