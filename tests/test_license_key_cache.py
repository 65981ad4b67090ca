"""The licence module's key and policy cache (``origin.license.key_cache``).

A policy changed by another process (``origin policy set``, as the CLI does it: its own
SQLite connection), by the admin API (the module's own connection) or by ``origin keys``
is in force for the very next request, through the real licence app and through the real
``origin serve``.  Each has a control with the cache's freshness check frozen, which must
then serve the stale policy: the cache does hold what it read.  Unit tests pin the race
rule (a value read while the keystore changed is not held) and the busy rule.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from origin.crypto.key import ContentKey
from origin.license.key_cache import DataVersion, KeyCache
from origin.license.keystore import KeyRecord, Keystore, StoredKey
from origin.license.policy import ContentKeyPolicy, PolicyDecisionPoint, Restriction
from origin.license.settings import LicenseSettings
from tests.conftest import ROOT, start_origin
from tests.tools.licence import TOKEN, fetch_asset_key, running_licence_app

ADMIN_TOKEN = "admin-token-" + os.urandom(12).hex()
TOKEN_POLICY = ContentKeyPolicy(Restriction.TOKEN)


@pytest.fixture
def frozen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """``True`` for the control: the cache's version check always says "unchanged"."""
    if request.param:
        monkeypatch.setattr(DataVersion, "read", lambda self: 1)
    return bool(request.param)


FRESH_AND_CONTROL = pytest.mark.parametrize("frozen", [False, True], indirect=True,
                                            ids=["fresh", "control-frozen-version"])


@dataclass
class App:
    url: str
    session: aiohttp.ClientSession
    settings: LicenseSettings

    async def key_status(self, kid: str) -> int:
        async with self.session.get(f"{self.url}/license/aes128/{kid}") as resp:
            await resp.read()
            return resp.status


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    settings = LicenseSettings(db_path=tmp_path / "keys.sqlite", kek=os.urandom(32),
                               internal_token=TOKEN, admin_token=ADMIN_TOKEN)
    async with running_licence_app(settings, PolicyDecisionPoint()) as url, \
            aiohttp.ClientSession() as session:
        yield App(url, session, settings)


@FRESH_AND_CONTROL
async def test_policy_set_by_another_connection_applies_at_once(app: App, frozen: bool) -> None:
    kid = (await fetch_asset_key(app.session, app.url, "movie")).kid_hex
    assert await app.key_status(kid) == 200  # held now: key and open policy
    assert await app.key_status(kid) == 200
    with Keystore.open(app.settings.db_path, app.settings.kek) as other:  # as the CLI does
        other.set_policy("movie", TOKEN_POLICY)
    assert await app.key_status(kid) == (200 if frozen else 401)
    with Keystore.open(app.settings.db_path, app.settings.kek) as other:
        other.delete_policy("movie")
    assert await app.key_status(kid) == 200


@FRESH_AND_CONTROL
async def test_policy_set_through_the_admin_api_applies_at_once(app: App, frozen: bool) -> None:
    kid = (await fetch_asset_key(app.session, app.url, "movie")).kid_hex
    assert await app.key_status(kid) == 200
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with app.session.put(f"{app.url}/admin/v1/policies/movie", headers=admin,
                               data=b'{"restriction": "token"}') as resp:
        assert resp.status == 200
    assert await app.key_status(kid) == (200 if frozen else 401)


async def test_unknown_key_imported_later_is_served(app: App) -> None:
    kid = os.urandom(16)
    assert await app.key_status(kid.hex()) == 404
    with Keystore.open(app.settings.db_path, app.settings.kek) as other:
        other.import_key(ContentKey(kid, os.urandom(16)), "movie", active=False)
    assert await app.key_status(kid.hex()) == 200


# --- the real `origin serve` and `origin policy set` ---------------------------------------------


def origin_cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "origin", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


async def test_policy_cli_against_a_running_origin(media_copy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start_origin(media_copy, state, "--license-rate", "0")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base}/hls/demo/aes128/video-360p/index.m3u8") as r:
                found = re.search(r"/license/aes128/([0-9a-f]{32})", await r.text())
            assert found is not None
            url = f"{server.base}/license/aes128/{found.group(1)}"

            async def status() -> int:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status

            assert [await status() for _ in range(3)] == [200, 200, 200]
            done = origin_cli("policy", "set", "demo", "--restriction", "token", state=state)
            assert done.returncode == 0, done.stderr
            assert await status() == 401  # the very next request
            done = origin_cli("policy", "delete", "demo", state=state)
            assert done.returncode == 0, done.stderr
            assert await status() == 200
    finally:
        assert server.stop() == 0


# --- the rules, on a keystore stand-in ------------------------------------------------------------


@dataclass
class Versions:
    """A ``DataVersion`` stand-in: ``value`` is what the next read returns."""

    value: int | None = 1

    def read(self) -> int | None:
        return self.value


@dataclass
class CountingKeystore:
    """``get`` and ``policy`` of a keystore, counted; ``gate`` holds reads until set."""

    reads: int = 0
    gate: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    keys: dict[bytes, StoredKey] = field(default_factory=dict)

    def get(self, kid: bytes) -> StoredKey | None:
        self.reads += 1
        found = self.keys.get(kid)  # read now, handed back when the gate opens
        if self.gate is not None and self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.gate.wait(), self.loop).result(5)
        return found



def stored(kid: bytes) -> StoredKey:
    record = KeyRecord(kid=kid, asset="movie", created_at=datetime.now(UTC), active=True)
    return StoredKey(record=record, key=ContentKey(kid, os.urandom(16)))


def cache_of(keystore: CountingKeystore, versions: Versions) -> KeyCache:
    return KeyCache(keystore, versions)  # type: ignore[arg-type]


async def test_held_until_the_version_changes() -> None:
    kid = os.urandom(16)
    keystore, versions = CountingKeystore(keys={kid: stored(kid)}), Versions()
    cache = cache_of(keystore, versions)
    first = await cache.get(kid)
    assert await cache.get(kid) is first and keystore.reads == 1
    assert cache.held_policies(["movie"]) is None
    cache.keep_policies({"movie": TOKEN_POLICY}, cache.epoch)
    assert cache.held_policies(["movie"]) == {"movie": TOKEN_POLICY}
    assert cache.held_policies(["movie", "other"]) is None
    versions.value = 2
    assert cache.held_policies(["movie"]) is None
    assert await cache.get(kid) == first and keystore.reads == 2


async def test_policies_read_across_a_change_are_not_held() -> None:
    versions = Versions()
    cache = cache_of(CountingKeystore(), versions)
    assert cache.held_policies(["movie"]) is None
    epoch = cache.epoch  # then the executor reads them, and meanwhile the keystore changes:
    versions.value = 2
    assert cache.held_policies(["other"]) is None
    cache.keep_policies({"movie": TOKEN_POLICY}, epoch)
    assert cache.held_policies(["movie"]) is None
    cache.keep_policies({"movie": TOKEN_POLICY}, cache.epoch)  # control: no change between
    assert cache.held_policies(["movie"]) == {"movie": TOKEN_POLICY}


async def test_unknown_kids_are_not_held() -> None:
    keystore = CountingKeystore()
    cache = cache_of(keystore, Versions())
    assert await cache.get(b"\x01" * 16) is None
    assert await cache.get(b"\x01" * 16) is None
    assert keystore.reads == 2


async def test_busy_keystore_holds_nothing() -> None:
    kid = os.urandom(16)
    keystore = CountingKeystore(keys={kid: stored(kid)})
    cache = cache_of(keystore, Versions(None))  # PRAGMA data_version failed (busy, error)
    for _ in range(3):
        assert await cache.get(kid) is not None
    assert keystore.reads == 3


@pytest.mark.parametrize("changed", [True, False], ids=["changed-meanwhile", "control"])
async def test_a_read_overtaken_by_a_change_is_not_held(changed: bool) -> None:
    kid = os.urandom(16)
    old, new = stored(kid), stored(kid)
    gate = asyncio.Event()
    keystore = CountingKeystore(keys={kid: old}, gate=gate, loop=asyncio.get_running_loop())
    versions = Versions()
    cache = cache_of(keystore, versions)
    slow = asyncio.create_task(cache.get(kid))  # reads `old` at version 1, held at the gate
    while keystore.reads == 0:
        await asyncio.sleep(0.001)
    if changed:  # the keystore changes while that read is out
        keystore.keys[kid], keystore.gate, versions.value = new, None, 2
        assert await cache.get(kid) is new  # the change is seen: dropped, read again
    gate.set()
    assert await slow is old
    reads = keystore.reads
    # From memory now: the fresh read when the keystore changed, else the slow one.
    assert await cache.get(kid) is (new if changed else old)
    assert keystore.reads == reads


async def test_repr_shows_no_key(tmp_path: Path) -> None:
    kid = os.urandom(16)
    keystore = CountingKeystore(keys={kid: stored(kid)})
    cache = cache_of(keystore, Versions())
    held = await cache.get(kid)
    assert held is not None
    assert held.key.key.hex() not in repr(cache) and repr(cache) == "KeyCache(1 keys, 0 policies)"
    versions = DataVersion.open(tmp_path / "k.sqlite")
    try:
        assert isinstance(versions.read(), int)
    finally:
        versions.close()
    assert versions.read() is None
