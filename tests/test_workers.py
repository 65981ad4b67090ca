"""``origin serve --workers N``: N processes on one port (SO_REUSEPORT), supervised.

Each test starts the real server and uses real clients on fresh connections, so the
kernel spreads them over the workers' sockets; ``/healthz`` names the answering
process (``X-Origin-Worker: <pid>``), and the workers are the server's children whose
command line is ``origin worker``.

- both workers answer; ``--workers 1`` (the control) has no worker process and one PID;
- a worker killed with SIGKILL is replaced and service never stops meanwhile;
- SIGTERM lets a slow in-flight download of a large clear file finish byte for byte, and
  every process exits 0; SIGKILL instead cuts it (the control: the check sees a cut);
- workers that cannot start make the parent exit non-zero, at startup and on restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningOrigin, child_pids, start_origin
from tests.tools.downloads import clear_download, read_throttled
from tests.tools.processes import gone, refuses_connections, wait_until, worker_pids

DEADLINE = 30.0
BIG_FILE_BYTES = 32 << 20
BIG_URL = "/hls/demo/clear/ts-360p/big.ts"
SLOW_PREFIX = 1 << 20  # read this much slowly before signalling the server
SLOW_TAIL = 6 << 20  # and this much at the end: more than the kernel buffers between us


async def answering_pid(base: str) -> int:
    """The PID of the process that answers ``/healthz`` on a fresh connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(f"{base}/healthz") as resp:
        assert resp.status == 200
        return int(resp.headers["X-Origin-Worker"])


async def answering_pids(base: str, want: set[int], attempts: int = 400) -> set[int]:
    """PIDs seen answering fresh connections, until every one of ``want`` was seen."""
    seen: set[int] = set()
    for _ in range(attempts):
        seen.add(await answering_pid(base))
        if want <= seen:
            break
    return seen


async def get_status(url: str) -> int:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
def big_media(media_copy: Path) -> tuple[Path, str]:
    """The demo asset plus a large clear file; its SHA-256."""
    data = os.urandom(BIG_FILE_BYTES)
    (media_copy / "demo" / "ts-360p" / "big.ts").write_bytes(data)
    return media_copy, hashlib.sha256(data).hexdigest()


async def read_rest(reader: asyncio.StreamReader, digest: hashlib._Hash,
                    limit: int = BIG_FILE_BYTES) -> int:
    """Read fast to the end or ``limit`` bytes; a reset counts as the end."""
    got = 0
    with contextlib.suppress(ConnectionError):
        while got < limit and (chunk := await asyncio.wait_for(
                reader.read(min(1 << 20, limit - got)), DEADLINE)):
            digest.update(chunk)
            got += len(chunk)
    return got


def exit_code(server: RunningOrigin, within: float = DEADLINE) -> int:
    try:
        return server.proc.wait(timeout=within)
    finally:
        server.stop()


async def test_both_workers_answer(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", workers=2)
    try:
        workers = worker_pids(server)
        assert len(workers) == 2 and server.proc.pid not in workers
        for pid in workers:  # glibc's malloc arenas capped (origin.workers rules)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"MALLOC_ARENA_MAX=2" in environ
        seen = await answering_pids(server.base, workers)
        assert seen == workers
        # Every worker serves protected content too (its own app, the shared licence module).
        for _ in range(6):
            assert await get_status(
                f"{server.base}/hls/demo/aes128/video-360p/seg-00001.m4s") == 200
    finally:
        assert server.stop() == 0
    log = server.log_text()
    assert "worker 0 started" in log and "worker 1 started" in log
    assert "Traceback" not in log


async def test_one_worker_serves_in_process(media_copy: Path, tmp_path: Path) -> None:
    """The control of the test above: one process answers everything, as before."""
    server = start_origin(media_copy, tmp_path / "state", workers=1)
    try:
        assert worker_pids(server) == set()
        assert len(child_pids(server.proc.pid)) == 1  # the licence module only
        seen = {await answering_pid(server.base) for _ in range(20)}
        assert seen == {server.proc.pid}
        assert await get_status(f"{server.base}/hls/demo/aes128/video-360p/seg-00001.m4s") == 200
    finally:
        assert server.stop() == 0


async def test_killed_worker_is_replaced_and_service_continues(media_copy: Path,
                                                              tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", workers=2)
    try:
        before = worker_pids(server)
        victim, survivor = sorted(before)
        os.kill(victim, signal.SIGKILL)

        async def victim_gone() -> bool:
            return gone(victim)

        await wait_until(victim_gone, "the killed worker is gone")
        # Service continues meanwhile, on the surviving worker.
        for _ in range(10):
            assert await answering_pid(server.base) in (survivor, *worker_pids(server))
            assert await get_status(
                f"{server.base}/hls/demo/cbcs/video-360p/seg-00001.m4s") == 200

        newcomers: set[int] = set()

        async def replaced() -> bool:
            newcomers.add(await answering_pid(server.base))
            newcomers.difference_update(before)
            return bool(newcomers)

        await wait_until(replaced, "a new worker answers")
        (newcomer,) = newcomers
        assert worker_pids(server) == {survivor, newcomer}
    finally:
        assert server.stop() == 0
    log = server.log_text()
    assert f"pid {victim}) exited with -9; restarting" in log
    assert f"started (pid {newcomer})" in log


async def test_sigterm_finishes_an_in_flight_download(big_media: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    media, expected = big_media
    server = start_origin(media, tmp_path / "state", workers=2)
    try:
        async with clear_download(server.port, BIG_URL, keep_alive=False) as (reader, length):
            assert length == BIG_FILE_BYTES
            digest = hashlib.sha256()
            got = await read_throttled(reader, digest, SLOW_PREFIX)
            assert got == SLOW_PREFIX
            server.proc.send_signal(signal.SIGTERM)

            async def closed() -> bool:
                return refuses_connections(server.port)

            # The workers stop accepting while this download is still far from done.
            await wait_until(closed, "the port refuses new connections")
            # Then fast, and slowly again for the end: the last bytes the worker writes
            # wait in its buffers for this reader while it stops.
            got += await read_rest(reader, digest, limit=length - got - SLOW_TAIL)
            got += await read_throttled(reader, digest, SLOW_TAIL)
            got += await read_rest(reader, digest)
        assert got == length
        assert digest.hexdigest() == expected
        assert exit_code(server) == 0
    finally:
        server.stop()
    log = server.log_text()
    assert "worker 0 stopped" in log and "worker 1 stopped" in log
    assert "Traceback" not in log and "killing" not in log


async def test_sigkill_cuts_an_in_flight_download(big_media: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    """The control of the test above: without a graceful stop the download is cut."""
    media, _ = big_media
    server = start_origin(media, tmp_path / "state", workers=2)
    try:
        killed = worker_pids(server)
        async with clear_download(server.port, BIG_URL, keep_alive=False) as (reader, length):
            digest = hashlib.sha256()
            got = await read_throttled(reader, digest, SLOW_PREFIX)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            got += await read_rest(reader, digest)
        assert got < length

        async def back() -> bool:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                await answering_pid(server.base)
                now = worker_pids(server)
                return len(now) == 2 and not now & killed
            return False

        await wait_until(back, "new workers answer")
        assert await get_status(f"{server.base}/hls/demo/aes128/video-360p/seg-00001.m4s") == 200
    finally:
        assert server.stop() == 0


def test_workers_that_cannot_start_fail_the_parent(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"origin exited \(1\)") as failure:
        start_origin(tmp_path / "no-such-media", tmp_path / "state", workers=2)
    assert "failed" in str(failure.value) or "exited with" in str(failure.value)
    assert not any(p.name.startswith("metrics-") for p in (tmp_path / "state").iterdir())


async def test_workers_that_keep_dying_on_restart_fail_the_parent(media_copy: Path,
                                                                 tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", workers=2)
    try:
        # From now on a new worker cannot start: its media root is gone.
        shutil.move(media_copy, tmp_path / "moved-away")
        victim = min(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        code = await asyncio.to_thread(exit_code, server, 60.0)
    except subprocess.TimeoutExpired:
        pytest.fail("the parent kept restarting workers that cannot start")
    finally:
        server.stop()
    assert code == 1
    log = server.log_text()
    assert "keeps dying at startup; giving up" in log
    assert log.count("while starting") >= 5


async def test_workers_stop_when_the_parent_dies(media_copy: Path, tmp_path: Path) -> None:
    """A parent killed outright leaves no worker serving: their stdin lifeline closes."""
    server = start_origin(media_copy, tmp_path / "state", workers=2)
    workers = worker_pids(server)
    others = set(child_pids(server.proc.pid)) - workers  # the licence module
    try:
        assert len(workers) == 2
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=DEADLINE)

        async def all_gone() -> bool:
            return all(gone(pid) for pid in workers)

        await wait_until(all_gone, "the orphaned workers stop")
        assert refuses_connections(server.port)
    finally:
        # The licence module outlives a killed parent (the supervisor's matter, not the
        # workers'); it holds the server's stdout, so it goes first.
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        async def licence_gone() -> bool:
            return all(gone(pid) for pid in others)

        await wait_until(licence_gone, "the orphaned licence module is gone")
        server.stop()
    assert "parent process gone; stopping" in server.log_text()
