"""The licence module's keystore, settings and policy value types (no server)."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from origin.crypto.key import ContentKey
from origin.errors import BadRequest
from origin.license.keystore import Keystore, KeystoreError, StoredKey
from origin.license.policy import Decision, KeyRequest, KeySystem, PolicyDecisionPoint
from origin.license.settings import LicenseSettings, load_internal_token, load_kek

TOKEN = "internal-token-0123456789abcdef"


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.sqlite"


@pytest.fixture
def store(db_path: Path, kek: bytes) -> Iterator[Keystore]:
    keystore = Keystore.open(db_path, kek)
    yield keystore
    keystore.close()


# --- create / get / rotate / records -------------------------------------------------


def test_active_key_is_created_once_and_reused(store: Keystore) -> None:
    first = store.active_key("movie")
    again = store.active_key("movie")
    assert isinstance(first, ContentKey)
    assert len(first.kid) == 16 and len(first.key) == 16
    assert again == first
    assert first.kid[6] >> 4 == 4  # a version-4 UUID
    records = store.records("movie")
    assert [(r.kid, r.asset, r.active) for r in records] == [(first.kid, "movie", True)]
    assert records[0].created_at.tzinfo is not None


def test_assets_get_distinct_keys(store: Keystore) -> None:
    a = store.active_key("a")
    b = store.active_key("b")
    assert a.kid != b.kid and a.key != b.key
    assert [r.asset for r in store.records()] == ["a", "b"]
    assert [r.kid for r in store.records("b")] == [b.kid]
    assert store.records("never-used") == []


def test_get_returns_record_and_key(store: Keystore) -> None:
    key = store.active_key("movie")
    stored = store.get(key.kid)
    assert isinstance(stored, StoredKey)
    assert stored.key == key
    assert stored.record.kid == key.kid
    assert stored.record.asset == "movie"
    assert stored.record.active is True
    assert stored.record.kid_hex == key.kid_hex
    assert stored.record.kid_uuid == key.kid_uuid


def test_get_unknown_kid_is_none(store: Keystore) -> None:
    store.active_key("movie")
    assert store.get(os.urandom(16)) is None
    assert store.get(b"short") is None


def test_rotate_keeps_old_keys_playable(store: Keystore) -> None:
    old = store.active_key("movie")
    record = store.rotate("movie")
    assert record.active is True and record.asset == "movie"
    assert record.kid != old.kid
    new = store.active_key("movie")
    assert new.kid == record.kid and new.key != old.key

    old_stored = store.get(old.kid)
    assert old_stored is not None
    assert old_stored.key == old  # still unwraps to the same key
    assert old_stored.record.active is False

    records = store.records("movie")
    assert [r.kid for r in records] == [old.kid, new.kid]
    assert [r.active for r in records] == [False, True]


def test_rotate_without_existing_key_creates_one(store: Keystore) -> None:
    record = store.rotate("fresh")
    assert store.active_key("fresh").kid == record.kid
    assert len(store.records("fresh")) == 1


# --- durability and the KEK check -------------------------------------------------------


def test_key_survives_close_and_reopen(db_path: Path, kek: bytes) -> None:
    with Keystore.open(db_path, kek) as store:
        key = store.active_key("movie")
        rotated = store.rotate("other")
    with Keystore.open(db_path, kek) as store:
        assert store.active_key("movie") == key
        assert [r.kid for r in store.records("other")] == [rotated.kid]


def test_key_is_committed_before_it_is_returned(db_path: Path, store: Keystore) -> None:
    key = store.active_key("movie")
    # A separate connection (as another process would) sees the row at once.
    other = sqlite3.connect(db_path)
    try:
        rows = other.execute("SELECT kid, asset, active FROM content_keys").fetchall()
        mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        other.close()
    assert rows == [(key.kid, "movie", 1)]
    assert mode == "wal"


def test_commits_are_synced(store: Keystore) -> None:
    # synchronous=FULL (2) with WAL: a commit is on disk before the call returns.
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_database_holds_only_wrapped_keys(db_path: Path, store: Keystore) -> None:
    key = store.active_key("movie")
    assert key.key not in db_path.read_bytes()
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        assert key.key not in wal.read_bytes()


def test_database_file_is_private(db_path: Path, store: Keystore) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_wrong_kek_fails_at_open(db_path: Path, kek: bytes) -> None:
    with Keystore.open(db_path, kek) as store:
        store.active_key("movie")
    wrong = os.urandom(32)
    with pytest.raises(KeystoreError, match="KEK") as info:
        Keystore.open(db_path, wrong)
    assert wrong.hex() not in str(info.value)
    assert kek.hex() not in str(info.value)


def test_wrong_kek_fails_even_for_an_empty_store(db_path: Path, kek: bytes) -> None:
    Keystore.open(db_path, kek).close()
    with pytest.raises(KeystoreError):
        Keystore.open(db_path, os.urandom(16))


def test_unknown_schema_version_fails(db_path: Path, kek: bytes) -> None:
    Keystore.open(db_path, kek).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.close()
    with pytest.raises(KeystoreError, match="schema version"):
        Keystore.open(db_path, kek)


def test_not_a_database_fails(db_path: Path, kek: bytes) -> None:
    db_path.write_bytes(b"this is not a sqlite file at all" * 100)
    with pytest.raises(KeystoreError):
        Keystore.open(db_path, kek)


def test_bad_kek_size_fails(db_path: Path) -> None:
    with pytest.raises(KeystoreError):
        Keystore.open(db_path, b"\x00" * 20)


def test_closed_store_raises(store: Keystore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(KeystoreError, match="closed"):
        store.active_key("movie")


# --- concurrency ------------------------------------------------------------------------


def test_concurrent_first_use_from_threads_yields_one_key(store: Keystore) -> None:
    barrier = threading.Barrier(8)

    def first_use(_: int) -> ContentKey:
        barrier.wait()
        return store.active_key("movie")

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(first_use, range(8)))
    assert len(set(keys)) == 1
    assert len(store.records("movie")) == 1


def test_concurrent_first_use_from_separate_connections_yields_one_key(
    db_path: Path, kek: bytes
) -> None:
    # Eight connections behave like eight processes: only BEGIN IMMEDIATE serialises them.
    Keystore.open(db_path, kek).close()
    stores = [Keystore.open(db_path, kek) for _ in range(8)]
    barrier = threading.Barrier(8)

    def first_use(i: int) -> ContentKey:
        barrier.wait()
        return stores[i].active_key("movie")

    try:
        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(first_use, range(8)))
    finally:
        for s in stores:
            s.close()
    assert len(set(keys)) == 1
    with Keystore.open(db_path, kek) as store:
        assert len(store.records("movie")) == 1


def test_concurrent_rotations_leave_one_active_key(store: Keystore) -> None:
    store.active_key("movie")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.rotate("movie"), range(8)))
    records = store.records("movie")
    assert len(records) == 9
    assert sum(r.active for r in records) == 1


# --- asset names --------------------------------------------------------------------------

BAD_ASSETS = [
    "",
    "-movie",
    ".movie",
    "_movie",
    "a/b",
    "../etc",
    "a b",
    "movie\n",
    "mo\x00vie",
    "filmé",
    "a" * 129,
]
GOOD_ASSETS = ["a", "Z", "0", "movie.v2_final-cut", "a" * 128]


@pytest.mark.parametrize("asset", BAD_ASSETS)
def test_bad_asset_names_are_rejected(store: Keystore, asset: str) -> None:
    with pytest.raises(BadRequest) as info:
        store.active_key(asset)
    assert info.value.status == 400
    with pytest.raises(BadRequest):
        store.rotate(asset)
    with pytest.raises(BadRequest):
        store.records(asset)
    assert store.records() == []


@pytest.mark.parametrize("asset", GOOD_ASSETS)
def test_good_asset_names_are_accepted(store: Keystore, asset: str) -> None:
    key = store.active_key(asset)
    assert [r.kid for r in store.records(asset)] == [key.kid]


# --- reprs hide secrets ---------------------------------------------------------------------


def test_reprs_hide_key_material(store: Keystore, kek: bytes, db_path: Path) -> None:
    key = store.active_key("movie")
    stored = store.get(key.kid)
    settings = LicenseSettings(db_path=db_path, kek=kek, internal_token=TOKEN)
    request = KeyRequest(key.kid, "movie", KeySystem.AES128, token=TOKEN)
    texts = [
        repr(key),
        str(key),
        repr(stored),
        str(stored),
        repr(settings),
        str(settings),
        repr(store),
        repr(request),
    ]
    for text in texts:
        assert key.key.hex() not in text
        assert key.key.hex().upper() not in text
        assert repr(key.key) not in text
        assert kek.hex() not in text
        assert repr(kek) not in text
        assert TOKEN not in text
    assert repr(key.kid) in repr(key)  # the key id is not secret and identifies the key
    assert repr(db_path) in repr(settings) or str(db_path) in repr(settings)


# --- settings -------------------------------------------------------------------------------


def test_kek_from_env_hex_and_base64(tmp_path: Path) -> None:
    for size in (16, 24, 32):
        raw = os.urandom(size)
        for text in (raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()):
            assert load_kek(env={"ORIGIN_KEK": text}, kek_file=None, state_dir=tmp_path) == raw
    assert not (tmp_path / "kek").exists()


def test_kek_env_wins_over_file(tmp_path: Path) -> None:
    env_kek, file_kek = os.urandom(32), os.urandom(32)
    kek_file = tmp_path / "kek.txt"
    kek_file.write_text(file_kek.hex())
    got = load_kek(env={"ORIGIN_KEK": env_kek.hex()}, kek_file=kek_file, state_dir=tmp_path)
    assert got == env_kek


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "zz" * 15,
        "00" * 15,
        "00" * 20,
        "00" * 33,
        "not base64!",
        base64.b64encode(b"x" * 20).decode(),
    ],
)
def test_bad_kek_in_env_is_a_clear_error_without_the_value(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="ORIGIN_KEK must be hex or base64") as info:
        load_kek(env={"ORIGIN_KEK": bad}, kek_file=None, state_dir=tmp_path)
    if bad:
        assert bad not in str(info.value)


def test_kek_file_hex_base64_raw(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "kek-file"
    for content in (raw.hex().encode() + b"\n", base64.b64encode(raw) + b"\n", raw):
        path.write_bytes(content)
        assert load_kek(env={}, kek_file=path, state_dir=tmp_path) == raw
    short = os.urandom(24)
    path.write_bytes(short.hex().encode())
    assert load_kek(env={}, kek_file=path, state_dir=tmp_path) == short


def test_bad_kek_file_is_a_clear_error_without_the_value(tmp_path: Path) -> None:
    path = tmp_path / "kek-file"
    content = os.urandom(31)
    path.write_bytes(content)
    with pytest.raises(ValueError, match="KEK file") as info:
        load_kek(env={}, kek_file=path, state_dir=tmp_path)
    assert content.hex() not in str(info.value)
    with pytest.raises(ValueError, match="cannot read KEK file"):
        load_kek(env={}, kek_file=tmp_path / "missing", state_dir=tmp_path)


def test_default_kek_is_created_private_and_reused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = load_kek(env={}, kek_file=None, state_dir=state_dir)
    path = state_dir / "kek"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes.fromhex(path.read_text().strip()) == first
    assert load_kek(env={}, kek_file=None, state_dir=state_dir) == first
    assert [p.name for p in state_dir.iterdir()] == ["kek"]  # no temp files left


def test_internal_token(tmp_path: Path) -> None:
    assert load_internal_token({"ORIGIN_LICENSE_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(ValueError, match="ORIGIN_LICENSE_TOKEN must be set"):
        load_internal_token({})
    with pytest.raises(ValueError, match="at least 16") as info:
        load_internal_token({"ORIGIN_LICENSE_TOKEN": "short-secret"})
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValueError, match="whitespace"):
        load_internal_token({"ORIGIN_LICENSE_TOKEN": TOKEN + " "})


# --- policy ---------------------------------------------------------------------------------


def test_open_policy_allows_every_key_system() -> None:
    pdp = PolicyDecisionPoint()
    for system in KeySystem:
        decision = pdp.decide(KeyRequest(os.urandom(16), "movie", system))
        assert decision == Decision(allowed=True, reason="open policy")
    assert KeySystem("aes128") is KeySystem.AES128


def test_import_keys_is_all_or_nothing(store: Keystore) -> None:
    existing = store.active_key("movie")
    fresh = [ContentKey(os.urandom(16), os.urandom(16)) for _ in range(2)]
    clash = ContentKey(existing.kid, os.urandom(16))  # a stored kid with another key
    with pytest.raises(KeystoreError):
        store.import_keys([*fresh, clash], "movie", active_kid=fresh[0].kid)
    assert all(store.get(k.kid) is None for k in fresh)
    assert store.active_key("movie") == existing
    records = store.import_keys([*fresh, existing], "movie", active_kid=fresh[1].kid)
    assert [r.kid for r in records] == [fresh[0].kid, fresh[1].kid, existing.kid]
    assert [r.active for r in records] == [False, True, False]
    assert store.active_key("movie") == fresh[1]
    # Re-importing the same keys is a no-op.
    assert store.import_keys(fresh, "movie") == store.import_keys(fresh, "movie")


def test_policies_round_trip_and_default(store: Keystore) -> None:
    from origin.license.policy import DEFAULT_POLICY, ContentKeyPolicy, Restriction

    assert store.policy("movie") == DEFAULT_POLICY
    policy = ContentKeyPolicy(Restriction.TOKEN, True, 3600, 86400)
    store.set_policy("movie", policy)
    assert store.policy("movie") == policy
    assert store.policies() == {"movie": policy}
    assert store.delete_policy("movie") is True
    assert store.delete_policy("movie") is False
    assert store.policy("movie") == DEFAULT_POLICY


def test_token_uses_count_up_and_expired_rows_go(store: Keystore) -> None:
    assert [store.count_token_use("jti-1", 2000, 1000) for _ in range(3)] == [1, 2, 3]
    assert store.count_token_use("jti-2", 2000, 1000) == 1
    # Once expired, a row is purged: the counter starts again (the token is refused anyway).
    assert store.count_token_use("jti-1", 4000, 3000) == 1
