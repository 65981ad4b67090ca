"""No key that was handed out is ever lost: SIGKILL at random moments, backups, restores.

The kill test runs the real licence module (``origin license serve --socket``) as a
child process, started through ``tests.tools.licence_forkserver`` so that a start costs
tens of milliseconds instead of the ~0.8 s of a fresh interpreter.  Each iteration:
clients ask concurrently for the keys of new and existing assets (internal API), rotate
keys (admin API; now and then the ``keys rotate`` CLI, a second process writing), and
record every (asset, kid, key) they are given; once at least one request is in flight,
a random delay drawn from a seeded RNG picks the kill point and the process gets
SIGKILL.  After the restart, ``verify`` checks that every key handed out is still
there, unchanged, with its asset (``GET /internal/v1/keys/{kid}``), and that each
asset has exactly one active key, its newest (``GET /admin/v1/assets/{asset}/keys``).
A few iterations kill under write pressure, at the moment a WAL checkpoint starts
copying pages into the database file.

Negative controls: the same loop and checker catch a deliberately broken licence
module that hands a new key out before committing it (write-behind), and the checker
rejects a ledger entry whose key or kid it does not find.

``KEY_DURABILITY_SEED`` (environment) replays a run; the seed is in every failure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from origin.license.keystore import Keystore
from tests.conftest import ROOT

TOKEN = "durability-internal-token-0123456789"
ADMIN_TOKEN = "durability-admin-token-0123456789"
KEK_HEX = "5e" * 32
OTHER_KEK_HEX = "a7" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE = "http://licence"

ITERATIONS = 220  # kills at random points; ~45 s on 2 busy vCPUs, ~20 s on idle ones
CHECKPOINT_ITERATIONS = 3  # kills as a WAL checkpoint starts (~245 new keys fill a WAL)
PRESSURE_WORKERS = 12
PRESSURE_WARM_WRITES = 100  # new keys before watching for the checkpoint
WORKERS = 4
CLI_ROTATE_EVERY = 10  # iterations; a `keys rotate` process races the server
SAMPLE_KIDS = 8
SAMPLE_ASSETS = 2
READY_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 15.0
BROKEN_MAX_ITERATIONS = 30
CHECKPOINT_TIMEOUT_S = 60.0
CHECKPOINT_POLL_S = 0.0002
WARM_KEYS = 200  # keys the load writer has made before the backups start
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
READY_LINE = "license module listening on"


class DurabilityViolation(AssertionError):
    """A key that was handed out is gone or changed, or an asset's active key is wrong."""


# --- what was handed out --------------------------------------------------------------


@dataclass(frozen=True)
class HandedOut:
    """One key as a client saw it; ``key`` is None while only its record is known."""

    asset: str
    key: str | None


@dataclass
class Ledger:
    """Every key the licence module ever handed out, and the assets they belong to."""

    keys: dict[str, HandedOut] = field(default_factory=dict)
    assets: list[str] = field(default_factory=list)
    fresh_kids: set[str] = field(default_factory=set)
    fresh_assets: set[str] = field(default_factory=set)
    asset_set: set[str] = field(default_factory=set)

    def record(self, asset: str, kid: str, key: str | None) -> None:
        known = self.keys.get(kid)
        if known is not None:
            if known.asset != asset:
                raise DurabilityViolation(f"kid {kid} moved from {known.asset} to {asset}")
            if known.key is not None and key is not None and known.key != key:
                raise DurabilityViolation(f"kid {kid} of {asset} came back with other key bytes")
            if known.key is not None:
                return
        if asset not in self.asset_set:
            self.assets.append(asset)
            self.asset_set.add(asset)
        self.keys[kid] = HandedOut(asset, key)
        self.fresh_kids.add(kid)
        self.fresh_assets.add(asset)

    def take_fresh(self, rng: random.Random) -> tuple[list[str], list[str]]:
        """Kids and assets to check now: all new since the last check, plus a sample."""
        old_kids = [k for k in self.keys if k not in self.fresh_kids]
        old_assets = [a for a in self.assets if a not in self.fresh_assets]
        kids = sorted(self.fresh_kids) + rng.sample(old_kids, min(SAMPLE_KIDS, len(old_kids)))
        assets = sorted(self.fresh_assets) + rng.sample(
            old_assets, min(SAMPLE_ASSETS, len(old_assets)))
        self.fresh_kids.clear()
        self.fresh_assets.clear()
        return kids, assets


async def verify(session: aiohttp.ClientSession, ledger: Ledger, kids: list[str],
                 assets: list[str]) -> None:
    """Raise ``DurabilityViolation`` unless every kid and asset is as the ledger says."""
    limit = asyncio.Semaphore(16)

    async def check_kid(kid: str) -> None:
        expected = ledger.keys[kid]
        async with limit, session.get(f"{BASE}/internal/v1/keys/{kid}", headers=AUTH) as resp:
            if resp.status == 404:
                raise DurabilityViolation(f"key {kid} of asset {expected.asset} was handed out"
                                          " and is now lost")
            assert resp.status == 200, (resp.status, await resp.text())
            body = await resp.json()
        if body["asset"] != expected.asset or body["kid"] != kid:
            raise DurabilityViolation(f"key {kid} now belongs to {body['asset']}")
        if expected.key is None:  # a rotation's record: learn its key, check it from now on
            ledger.keys[kid] = HandedOut(expected.asset, body["key"])
        elif body["key"] != expected.key:
            raise DurabilityViolation(f"key {kid} of {expected.asset} changed")

    async def check_asset(asset: str) -> None:
        async with limit, session.get(f"{BASE}/admin/v1/assets/{asset}/keys",
                                      headers=ADMIN_AUTH) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            records = (await resp.json())["keys"]
        active = [r["kid"] for r in records if r["active"]]
        if len(active) != 1:
            raise DurabilityViolation(f"asset {asset} has {len(active)} active keys")
        if records[-1]["kid"] != active[0]:
            raise DurabilityViolation(f"the active key of {asset} is not its newest")
        stored = {r["kid"] for r in records}
        missing = [k for k, h in ledger.keys.items() if h.asset == asset and k not in stored]
        if missing:
            raise DurabilityViolation(f"asset {asset} lost keys {missing}")

    await asyncio.gather(*(check_kid(k) for k in kids), *(check_asset(a) for a in assets))


# --- the licence module under test ----------------------------------------------------


def licence_env(kek_hex: str = KEK_HEX) -> dict[str, str]:
    return dict(os.environ, ORIGIN_LICENSE_TOKEN=TOKEN, ORIGIN_ADMIN_TOKEN=ADMIN_TOKEN,
                ORIGIN_KEK=kek_hex, PYTHONUNBUFFERED="1")


class ForkServer:
    """Client of ``tests.tools.licence_forkserver``: starts ``origin …`` children fast.

    Blocking calls, each a pipe round trip (plus the child's run for ``run``); the
    children's shared stderr is pumped by a thread into ``tail`` and, for readiness
    lines, into ``ready``.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.licence_forkserver"], cwd=ROOT,
            env=licence_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.ready: queue.Queue[str] = queue.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=80)
        self.pump = threading.Thread(target=self._read_logs)
        self.pump.start()
        self.out_dir = Path(tempfile.mkdtemp(prefix="kd-out-"))
        self.runs = 0

    def _read_logs(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.tail.append(line)
            if READY_LINE in line:
                self.ready.put(line)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise AssertionError("the fork server died:\n" + self.log_tail())
        result: dict[str, Any] = json.loads(answer)
        return result

    def spawn(self, argv: list[str], *, write_behind: bool = False) -> int:
        return int(self.ask({"op": "spawn", "argv": argv, "write_behind": write_behind})["pid"])

    def wait_ready(self, socket_path: Path) -> None:
        """Wait for the readiness line naming ``socket_path`` (older lines are skipped)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                line = self.ready.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("licence module did not start:\n"
                                     + self.log_tail()) from None
            if str(socket_path) in line:
                return

    def reap(self, pid: int) -> int:
        return int(self.ask({"op": "reap", "pid": pid})["returncode"])

    def run(self, *argv: str, kek_hex: str | None = KEK_HEX
            ) -> subprocess.CompletedProcess[str]:
        """``origin ARGV`` in a forked child, like ``subprocess.run``; ``kek_hex=None``:
        no ``ORIGIN_KEK`` in its environment."""
        self.runs += 1
        out, err = self.out_dir / f"{self.runs}.out", self.out_dir / f"{self.runs}.err"
        pid = int(self.ask({"op": "spawn", "argv": list(argv), "env": {"ORIGIN_KEK": kek_hex},
                            "stdout": str(out), "stderr": str(err)})["pid"])
        code = self.reap(pid)
        result = subprocess.CompletedProcess(list(argv), code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return result

    def log_tail(self) -> str:
        return "".join(self.tail)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the fork server kills what is left, then exits
        self.proc.wait(timeout=30)
        self.pump.join(timeout=30)
        self.proc.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        self.out_dir.rmdir()


@pytest.fixture(scope="module")
def forks() -> Iterator[ForkServer]:
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()


class Licence:
    """``origin license serve --socket`` on a state folder, (re)started by a fork server."""

    def __init__(self, forks: ForkServer, state_dir: Path, *, write_behind: bool = False
                 ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.forks = forks
        self.state_dir = state_dir
        # A short folder of its own: Unix socket paths are limited to ~100 bytes.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="kd-"))
        self.socket_path = self.sock_dir / "licence.sock"
        self.write_behind = write_behind
        self.pid: int | None = None

    def start(self) -> None:
        """Start the module; return once it says it is listening."""
        assert self.pid is None
        self.pid = self.forks.spawn(
            ["license", "serve", "--socket", str(self.socket_path),
             "--state-dir", str(self.state_dir)], write_behind=self.write_behind)
        self.forks.wait_ready(self.socket_path)

    def kill(self) -> None:
        """SIGKILL (again, if it already had one), then wait until the process is gone."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        pid, self.pid = self.pid, None
        assert self.forks.reap(pid) == -signal.SIGKILL

    def stop(self) -> int:
        """SIGTERM (a clean shutdown); the exit status."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGTERM)
        pid, self.pid = self.pid, None
        return self.forks.reap(pid)

    def close(self) -> None:
        if self.pid is not None:
            self.kill()
        self.socket_path.unlink(missing_ok=True)
        self.sock_dir.rmdir()

    def log_tail(self) -> str:
        return self.forks.log_tail()

    def session(self, on_sent: asyncio.Event | None = None) -> aiohttp.ClientSession:
        traces = []
        if on_sent is not None:
            trace = aiohttp.TraceConfig()

            async def sent(*_: object) -> None:
                on_sent.set()

            trace.on_request_headers_sent.append(sent)
            traces.append(trace)
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.socket_path)),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            trace_configs=traces)


@contextlib.contextmanager
def licence_module(forks: ForkServer, state_dir: Path, *, write_behind: bool = False
                   ) -> Iterator[Licence]:
    licence = Licence(forks, state_dir, write_behind=write_behind)
    try:
        yield licence
    finally:
        licence.close()


# --- one kill iteration ---------------------------------------------------------------


@dataclass
class Load:
    """One iteration's clients: what they may do, and when they must stop."""

    session: aiohttp.ClientSession
    ledger: Ledger
    iteration: int
    killed: threading.Event = field(default_factory=threading.Event)  # set before the kill
    acked_writes: int = 0
    pressure_reached: asyncio.Event = field(default_factory=asyncio.Event)
    pressure_target: int | None = None

    async def key_of(self, asset: str) -> None:
        async with self.session.get(f"{BASE}/internal/v1/assets/{asset}/key",
                                    headers=AUTH) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            body = await resp.json()
        self.ledger.record(asset, body["kid"], body["key"])
        self.acked_writes += 1
        if self.pressure_target is not None and self.acked_writes >= self.pressure_target:
            self.pressure_reached.set()

    async def rotate(self, asset: str) -> None:
        async with self.session.post(f"{BASE}/admin/v1/assets/{asset}/keys/rotate",
                                     headers=ADMIN_AUTH) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            record = (await resp.json())["key"]
        self.ledger.record(asset, record["kid"], None)
        await self.lookup(record["kid"])

    async def lookup(self, kid: str) -> None:
        """Ask for a key already handed out: it must be there at once, too."""
        async with self.session.get(f"{BASE}/internal/v1/keys/{kid}", headers=AUTH) as resp:
            if resp.status == 404:
                raise DurabilityViolation(f"key {kid} was handed out and is now lost"
                                          " (asked for again before the kill)")
            assert resp.status == 200, (resp.status, await resp.text())
            body = await resp.json()
        self.ledger.record(body["asset"], kid, body["key"])

    async def client(self, rng: random.Random, name: str, *, new_only: bool) -> None:
        """Random operations until the kill; errors are fine only once the kill is sent."""
        count = 0
        try:
            while not self.killed.is_set():
                roll = 0.0 if new_only or not self.ledger.assets else rng.random()
                if roll < 0.35:
                    count += 1
                    await self.key_of(f"i{self.iteration}-{name}-{count}")
                elif roll < 0.65:
                    await self.key_of(rng.choice(self.ledger.assets))
                elif roll < 0.85:
                    await self.rotate(rng.choice(self.ledger.assets))
                else:
                    await self.lookup(rng.choice(list(self.ledger.keys)))
        except (aiohttp.ClientError, OSError, json.JSONDecodeError):
            if not self.killed.is_set():
                raise


def kill_delay(rng: random.Random) -> float:
    """The kill point after the first request is in flight: at once, soon, or later."""
    roll = rng.random()
    if roll < 0.1:
        return 0.0
    if roll < 0.4:
        return rng.uniform(0.0, 0.003)
    return rng.uniform(0.0, 0.04)


def kill_at_checkpoint(db: Path, pid: int, killed: threading.Event, deadline: float) -> bool:
    """SIGKILL ``pid`` as soon as the database file itself is written; False if it was
    not written before the deadline.

    In WAL mode only a checkpoint writes the database file, so the kill lands as one
    has started copying pages in, most likely before its fsync and before the WAL is
    reset.  The file's mtime and size are polled every ``CHECKPOINT_POLL_S`` from a
    thread, which also sends the signal: another process's writes offer nothing to wait
    on, and the event loop's latency would let the checkpoint finish.  Blocking.
    """
    first = db.stat()
    seen = (first.st_mtime_ns, first.st_size)
    while time.monotonic() < deadline:
        now = db.stat()
        if (now.st_mtime_ns, now.st_size) != seen:
            killed.set()
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(CHECKPOINT_POLL_S)
    return False


async def kill_iteration(licence: Licence, ledger: Ledger, seed: int, iteration: int, *,
                         at_checkpoint: bool = False) -> bool:
    """Load the running module, kill it, leave it dead.

    The kill point is a random delay after the first request is in flight, or, with
    ``at_checkpoint``, the start of a WAL checkpoint under a burst of new keys (True if
    one started before the deadline).
    """
    rng = random.Random(f"{seed}:{iteration}")
    in_flight = asyncio.Event()
    hit = False
    async with licence.session(on_sent=in_flight) as session:
        load = Load(session, ledger, iteration)
        workers = PRESSURE_WORKERS if at_checkpoint else WORKERS
        if at_checkpoint:
            load.pressure_target = PRESSURE_WARM_WRITES
        tasks = [asyncio.create_task(load.client(random.Random(f"{seed}:{iteration}:{w}"),
                                                 f"w{w}", new_only=at_checkpoint))
                 for w in range(workers)]
        try:
            await asyncio.wait_for(in_flight.wait(), REQUEST_TIMEOUT_S)
            if at_checkpoint:
                await asyncio.wait_for(load.pressure_reached.wait(), CHECKPOINT_TIMEOUT_S)
                assert licence.pid is not None
                hit = await asyncio.to_thread(
                    kill_at_checkpoint, licence.state_dir / "keys.sqlite", licence.pid,
                    load.killed, time.monotonic() + CHECKPOINT_TIMEOUT_S)
            else:
                if iteration % CLI_ROTATE_EVERY == CLI_ROTATE_EVERY // 2 and ledger.assets:
                    # `keys rotate`, a second process, commits while the server serves.
                    asset = rng.choice(ledger.assets)
                    done = await asyncio.to_thread(licence.forks.run, "keys", "rotate", asset,
                                                   "--state-dir", str(licence.state_dir))
                    assert done.returncode == 0, done.stderr
                    (kid,) = UUID_RE.findall(done.stdout)
                    ledger.record(asset, uuid.UUID(kid).hex, None)
                await asyncio.sleep(kill_delay(rng))  # the kill point, drawn from the seed
        finally:
            load.killed.set()
            licence.kill()
            results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return hit


async def restart_and_check(licence: Licence, ledger: Ledger, seed: int,
                            iteration: int) -> None:
    """Start the module again and check what the last kill put at risk (and a sample)."""
    licence.start()
    kids, assets = ledger.take_fresh(random.Random(f"{seed}:{iteration}:check"))
    async with licence.session() as session:
        await verify(session, ledger, kids, assets)


# --- the kill test and its negative controls ------------------------------------------


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("KEY_DURABILITY_SEED", "20240611"))


async def test_no_handed_out_key_is_lost_when_the_licence_module_is_killed(
        tmp_path: Path, seed: int, forks: ForkServer) -> None:
    ledger = Ledger()
    state = tmp_path / "state"
    with licence_module(forks, state) as licence:
        started = time.monotonic()
        licence.start()
        done = 0
        for iteration in range(ITERATIONS):
            try:
                await kill_iteration(licence, ledger, seed, iteration)
                await restart_and_check(licence, ledger, seed, iteration)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, iteration {iteration}: {exc}\n"
                                     + licence.log_tail()) from exc
            done += 1
        kill_loop_s = time.monotonic() - started

        in_checkpoint = []
        for iteration in range(ITERATIONS, ITERATIONS + CHECKPOINT_ITERATIONS):
            in_checkpoint.append(
                await kill_iteration(licence, ledger, seed, iteration, at_checkpoint=True))
            await restart_and_check(licence, ledger, seed, iteration)

        async with licence.session() as session:
            # Every key ever handed out; assets: the file check below covers them all.
            await verify(session, ledger, list(ledger.keys), [])
            # The checker can fail: a changed key and an unknown kid are both caught.
            kid, handed = next(iter(ledger.keys.items()))
            assert handed.key is not None
            forged = Ledger(keys={kid: HandedOut(handed.asset, "00" * 16)})
            with pytest.raises(DurabilityViolation, match="changed"):
                await verify(session, forged, [kid], [])
            ghost = uuid.uuid4().hex
            with pytest.raises(DurabilityViolation, match="lost"):
                await verify(session, Ledger(keys={ghost: HandedOut("x", None)}), [ghost], [])
        assert licence.stop() == 0
        total_s = time.monotonic() - started

    print(f"\nseed {seed}: {done} kills in {kill_loop_s:.1f} s "
          f"({1000 * kill_loop_s / done:.0f} ms each), then {CHECKPOINT_ITERATIONS} as a "
          f"checkpoint started (caught: {in_checkpoint}); {len(ledger.keys)} keys of "
          f"{len(ledger.assets)} assets checked; {total_s:.1f} s in all")
    assert done == ITERATIONS
    assert all(in_checkpoint), "no WAL checkpoint started under write pressure"
    # Independently of the server: the file itself, opened directly.
    with Keystore.open(state / "keys.sqlite", bytes.fromhex(KEK_HEX)) as store:
        records = store.records()
        for kid, handed in ledger.keys.items():
            stored = store.get(bytes.fromhex(kid))
            assert stored is not None and stored.record.asset == handed.asset
            assert handed.key is not None and stored.key.key.hex() == handed.key
    active = collections.Counter(r.asset for r in records if r.active)
    assert {r.asset for r in records} == set(active) and set(active.values()) == {1}


async def test_the_checker_catches_a_licence_module_that_answers_before_committing(
        tmp_path: Path, seed: int, forks: ForkServer) -> None:
    """Negative control: the same loop and checker against a write-behind keystore."""
    ledger = Ledger()
    caught: DurabilityViolation | None = None
    with licence_module(forks, tmp_path / "state", write_behind=True) as licence:
        licence.start()
        for iteration in range(BROKEN_MAX_ITERATIONS):
            try:
                await kill_iteration(licence, ledger, seed, iteration)
                await restart_and_check(licence, ledger, seed, iteration)
            except DurabilityViolation as exc:
                caught = exc
                break
    assert caught is not None, "a licence module that loses handed-out keys went unnoticed"
    assert "lost" in str(caught), caught


# --- backup and restore ---------------------------------------------------------------


def origin_cli(*args: str, kek_hex: str = KEK_HEX) -> subprocess.CompletedProcess[str]:
    """``python -m origin ARGS``: a fresh interpreter, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "origin", *args], capture_output=True,
                          text=True, cwd=ROOT, env=licence_env(kek_hex), timeout=60)


def folder_state(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of a folder: content hash and mode (to show that nothing changed).

    A running module's ``-shm`` (SQLite's shared-memory WAL index, no data) is left out:
    any connection attempt may update it."""
    if not folder.exists():
        return {}
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith("-shm")}


def stored_keys(db: Path, kek_hex: str = KEK_HEX) -> dict[str, tuple[str, str, bool]]:
    """kid → (asset, key, active), read straight from a keystore file."""
    with Keystore.open(db, bytes.fromhex(kek_hex)) as store:
        out = {}
        for record in store.records():
            stored = store.get(record.kid)
            assert stored is not None
            out[record.kid.hex()] = (record.asset, stored.key.key.hex(), record.active)
        return out


@dataclass
class KeyWriter:
    """A thread creating and rotating keys as fast as it can, in commit order."""

    db: Path
    created: list[tuple[str, str, str]] = field(default_factory=list)  # kid, asset, key
    stop: threading.Event = field(default_factory=threading.Event)
    warm: threading.Event = field(default_factory=threading.Event)  # WARM_KEYS are in
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with Keystore.open(self.db, bytes.fromhex(KEK_HEX)) as store:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    asset = f"load-{n}"
                    if n % 4 == 0:
                        asset = self.created[n // 2][1]
                        kid = store.rotate(asset).kid
                        stored = store.get(kid)
                        assert stored is not None
                        key = stored.key
                    else:
                        key = store.active_key(asset)
                    self.created.append((key.kid.hex(), asset, key.key.hex()))
                    if len(self.created) >= WARM_KEYS:
                        self.warm.set()
        except BaseException as exc:
            self.error = exc
            self.warm.set()


def test_backup_under_load_restores_every_key_handed_out(tmp_path: Path,
                                                        forks: ForkServer) -> None:
    state, fresh = tmp_path / "state", tmp_path / "fresh"
    writer = KeyWriter(state / "keys.sqlite")
    thread = threading.Thread(target=writer.run)
    try:
        with licence_module(forks, state) as licence:
            licence.start()  # the licence module holds the keystore open throughout
            thread.start()
            assert writer.warm.wait(timeout=60) and writer.error is None, writer.error
            before = list(writer.created)
            backups = []
            for n in range(2):  # online backups while the writer and the server run
                argv = ("keys", "backup", str(tmp_path / f"b{n}.sqlite"), "--state-dir",
                        str(state))
                # The first from a fresh interpreter, as an operator runs it.
                result = origin_cli(*argv) if n == 0 else forks.run(*argv)
                assert result.returncode == 0, result.stderr
                backups.append(result.stdout)
            writer.stop.set()
            thread.join(timeout=30)
            assert writer.error is None, writer.error
            assert licence.stop() == 0
    finally:
        writer.stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
    assert len(writer.created) > len(before), "the backups did not run under load"
    order = [kid for kid, _, _ in writer.created]
    for n, stdout in enumerate(backups):
        backup = tmp_path / f"b{n}.sqlite"
        assert backup.stat().st_mode & 0o777 == 0o600
        assert not Path(f"{backup}-wal").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        # One committed state: exactly the writer's first m keys, m ≥ those before it ran.
        copy = tmp_path / f"copy{n}.sqlite"
        copy.write_bytes(backup.read_bytes())
        in_backup = stored_keys(copy)
        assert set(in_backup) == set(order[:len(in_backup)])
        assert len(in_backup) >= len(before)
        assets = {a for a, _, _ in in_backup.values()}
        assert f"backed up {len(in_backup)} keys of {len(assets)} assets" in stdout
        for _, _, key in writer.created:
            assert key not in stdout

    result = forks.run("keys", "restore", str(tmp_path / "b1.sqlite"), "--state-dir", str(fresh))
    assert result.returncode == 0, result.stderr
    restored = stored_keys(fresh / "keys.sqlite")
    for kid, asset, key in before:
        assert restored[kid][:2] == (asset, key)
    active = collections.Counter(a for a, _, is_active in restored.values() if is_active)
    assert set(active.values()) == {1} and set(active) == {a for a, _, _ in restored.values()}
    assert (fresh / "keys.sqlite").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def backup(tmp_path: Path, forks: ForkServer) -> SimpleNamespace:
    """A keystore with three assets, its backup, and a second keystore to restore over."""
    source, target = tmp_path / "source", tmp_path / "target"
    kek = bytes.fromhex(KEK_HEX)
    source.mkdir()
    target.mkdir()
    with Keystore.open(source / "keys.sqlite", kek) as store:
        for asset in ("a", "b", "c"):
            store.active_key(asset)
        store.rotate("a")
    with Keystore.open(target / "keys.sqlite", kek) as store:
        store.active_key("old")
    result = forks.run("keys", "backup", str(tmp_path / "keys.backup"),
                       "--state-dir", str(source))
    assert result.returncode == 0, result.stderr
    assert "backed up 4 keys of 3 assets" in result.stdout
    return SimpleNamespace(file=tmp_path / "keys.backup", source=source, target=target,
                           keys=stored_keys(source / "keys.sqlite"))


def test_restore_refuses_to_overwrite_without_force(backup: SimpleNamespace,
                                                    forks: ForkServer) -> None:
    before = folder_state(backup.target)
    result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(backup.target))
    assert result.returncode == 1
    assert "--force" in result.stderr and "nothing was changed" in result.stderr
    assert folder_state(backup.target) == before

    old = stored_keys(backup.target / "keys.sqlite")
    result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(backup.target),
                       "--force")
    assert result.returncode == 0, result.stderr
    assert stored_keys(backup.target / "keys.sqlite") == backup.keys
    (kept,) = backup.target.glob("keys.sqlite.bak-*")
    assert re.fullmatch(r"keys\.sqlite\.bak-\d{8}T\d{6}Z", kept.name)
    assert str(kept) in result.stdout
    assert stored_keys(kept) == old
    assert {p.name for p in backup.target.iterdir()} == {"keys.sqlite", kept.name}


def test_restore_refuses_a_backup_under_another_kek(backup: SimpleNamespace, tmp_path: Path,
                                                   forks: ForkServer) -> None:
    before = folder_state(backup.target)
    new_state = tmp_path / "new-state"
    for target in (backup.target, new_state):
        result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(target),
                           "--force", kek_hex=OTHER_KEK_HEX)
        assert result.returncode == 1
        assert "KEK" in result.stderr and "nothing was changed" in result.stderr
    assert folder_state(backup.target) == before
    assert not new_state.exists()
    # Without any KEK configured, restore does not make one up.
    result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(new_state),
                       kek_hex=None)
    assert result.returncode == 1 and "no KEK configured" in result.stderr
    assert not new_state.exists()
    # The same command under the right KEK works: the refusals above were the KEK's.
    result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(new_state))
    assert result.returncode == 0, result.stderr
    assert stored_keys(new_state / "keys.sqlite") == backup.keys


def corrupt_backups(good: bytes, folder: Path) -> dict[str, Path]:
    """Broken copies of a good backup, each failing a different check."""
    out = {"random bytes": os.urandom(len(good)), "truncated": good[:len(good) // 2]}
    probe = folder / "probe.sqlite"
    conn = sqlite3.connect(probe)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    out["not a keystore"] = probe.read_bytes()
    # One bit flipped inside a wrapped key: the SQLite file stays sound, the key does not.
    probe.write_bytes(good)
    conn = sqlite3.connect(probe)
    (wrapped,) = conn.execute("SELECT wrapped_key FROM content_keys LIMIT 1").fetchone()
    conn.close()
    assert good.count(wrapped) == 1
    at = good.index(wrapped) + 5
    out["flipped key bit"] = good[:at] + bytes([good[at] ^ 1]) + good[at + 1:]
    paths = {}
    for n, (name, data) in enumerate(out.items()):
        paths[name] = folder / f"corrupt-{n}.backup"
        paths[name].write_bytes(data)
    return paths


def test_restore_refuses_a_corrupt_backup(backup: SimpleNamespace, tmp_path: Path,
                                          forks: ForkServer) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    before = folder_state(backup.target)
    messages = {}
    for name, path in corrupt_backups(backup.file.read_bytes(), corrupt).items():
        result = forks.run("keys", "restore", str(path), "--state-dir", str(backup.target),
                           "--force")
        assert result.returncode == 1, name
        assert "cannot be restored" in result.stderr, (name, result.stderr)
        messages[name] = result.stderr
        assert folder_state(backup.target) == before, name
    assert "not a keystore" in messages["not a keystore"]
    assert "unwrap" in messages["flipped key bit"]
    # The uncorrupted backup goes through the same command.
    result = forks.run("keys", "restore", str(backup.file), "--state-dir", str(backup.target),
                       "--force")
    assert result.returncode == 0, result.stderr


def test_backup_runs_and_restore_refuses_while_the_licence_module_runs(
        backup: SimpleNamespace, tmp_path: Path, forks: ForkServer) -> None:
    with licence_module(forks, backup.target) as licence:
        licence.start()
        online = forks.run("keys", "backup", str(tmp_path / "online.backup"),
                           "--state-dir", str(backup.target))
        assert online.returncode == 0, online.stderr
        before = folder_state(backup.target)
        result = forks.run("keys", "restore", str(backup.file), "--state-dir",
                           str(backup.target), "--force")
        assert result.returncode == 1
        assert "stop the licence module" in result.stderr, result.stderr
        assert folder_state(backup.target) == before
        assert licence.stop() == 0
    assert "old" in {a for a, _, _ in stored_keys(tmp_path / "online.backup").values()}
    result = forks.run("keys", "restore", str(backup.file), "--state-dir",
                       str(backup.target), "--force")
    assert result.returncode == 0, result.stderr  # stopped: the same restore goes through
    assert stored_keys(backup.target / "keys.sqlite") == backup.keys
