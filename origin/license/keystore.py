"""The content-key store: one SQLite file holding content keys wrapped under the KEK.

Synchronous and blocking (stdlib ``sqlite3``): async callers run every method in
an executor.  One connection per ``Keystore``, guarded by a lock, so a keystore
may be shared by threads; several processes (the server and the ``keys`` CLI)
may open the same file, and write transactions (``BEGIN IMMEDIATE``) serialise
them.  Every key is committed with ``synchronous=FULL`` before a method returns
it, so a key that has been handed out (and used to encrypt content) survives a
crash.

Only wrapped keys are stored.  The ``meta`` table holds the schema version and a
KEK check value, so opening the file with the wrong KEK fails at once.

Backups (``Keystore.backup_to``) are online and consistent: SQLite's backup API copies
one committed state while other connections keep writing.  A backup is one
self-contained file (rollback journal, no ``-wal``), mode 0600, checked before it
replaces anything: ``PRAGMA integrity_check``, a keystore's ``meta`` table, the KEK,
every key unwrapping (``verify_keystore_copy``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from origin.crypto.key import KEY_SIZE, KID_SIZE, ContentKey
from origin.crypto.keywrap import KEK_SIZES, KeyUnwrapError, unwrap_key, wrap_key
from origin.errors import BadRequest
from origin.license.policy import DEFAULT_POLICY, ContentKeyPolicy, parse_policy

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# Version 1 had no policies or token_uses tables; CREATE IF NOT EXISTS adds them.
_UPGRADABLE_VERSIONS = frozenset({"1"})
BUSY_TIMEOUT_S = 10.0
# A fixed block wrapped under the KEK when the store is created; unwrapping it on
# open proves the configured KEK is the one the keys were wrapped with.
_KEK_CHECK_BLOCK = b"origin-kek-check"
_ASSET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS content_keys (
        kid BLOB PRIMARY KEY,
        asset TEXT NOT NULL,
        wrapped_key BLOB NOT NULL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS content_keys_asset ON content_keys(asset)",
    # One content key policy per asset, as the JSON of ``ContentKeyPolicy.to_json``.
    """
    CREATE TABLE IF NOT EXISTS policies (
        asset TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    # Replay counter of tokens with a use limit: SHA-256 of the token id, never the token.
    """
    CREATE TABLE IF NOT EXISTS token_uses (
        token_hash BLOB PRIMARY KEY,
        uses INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    )
    """,
    # At most one active key per asset, whatever a caller does.
    """
    CREATE UNIQUE INDEX IF NOT EXISTS content_keys_one_active
        ON content_keys(asset) WHERE active = 1
    """,
)


class KeystoreError(Exception):
    """The keystore cannot be used: wrong KEK, unknown schema, corrupt file or row."""


class KeystoreInUse(KeystoreError):
    """Another connection (a running licence module) has the keystore file open."""


@dataclass(frozen=True)
class KeystoreSummary:
    """What a keystore file holds, counted without touching key bytes."""

    keys: int
    assets: int


@dataclass(frozen=True)
class KeyRecord:
    """What is known about a stored key, without the key itself."""

    kid: bytes
    asset: str
    created_at: datetime
    active: bool

    @property
    def kid_hex(self) -> str:
        return self.kid.hex()

    @property
    def kid_uuid(self) -> str:
        return str(uuid.UUID(bytes=self.kid))


@dataclass(frozen=True)
class StoredKey:
    """A stored key: its record and the unwrapped key (``ContentKey`` hides it in reprs)."""

    record: KeyRecord
    key: ContentKey


def validate_asset(asset: str) -> str:
    """Return ``asset`` if it is a valid asset name, else raise ``BadRequest``."""
    if not isinstance(asset, str) or _ASSET_RE.fullmatch(asset) is None:
        raise BadRequest("invalid asset name")
    return asset


class Keystore:
    """A SQLite file of wrapped content keys.  Blocking; thread-safe."""

    __slots__ = ("_conn", "_kek", "_lock", "_path")

    def __init__(self, path: Path, kek: bytes, conn: sqlite3.Connection) -> None:
        """Use ``Keystore.open``; this wraps an already checked connection."""
        self._path = path
        self._kek = kek
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Keystore(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def open(cls, path: Path, kek: bytes) -> Keystore:
        """Open (creating if missing) the keystore at ``path`` and check ``kek`` against it.

        The file is created with mode 0600.  Raises ``KeystoreError`` if the KEK is not
        the one the store was created with, the schema version is unknown, or the file
        is not a keystore.  Blocking.
        """
        if len(kek) not in KEK_SIZES:
            raise KeystoreError("key-encryption key must be 16, 24 or 32 bytes")
        try:
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise KeystoreError(f"cannot open keystore {path}: {exc}") from None
        try:
            _prepare(conn, kek)
        except KeystoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise KeystoreError(f"cannot open keystore {path}: {exc}") from None
        return cls(path, kek, conn)

    def close(self) -> None:
        """Close the connection; idempotent.  Later calls raise ``KeystoreError``."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def active_key(self, asset: str) -> ContentKey:
        """Return the asset's active key, creating (and committing) it on first use.

        Concurrent first calls, from threads or processes, return the same key: the
        check-and-insert runs in one ``BEGIN IMMEDIATE`` transaction.  Blocking.
        """
        validate_asset(asset)
        with self._connection() as conn:
            row = _active_row(conn, asset)
            if row is None:
                with _write_transaction(conn):
                    row = _active_row(conn, asset)
                    if row is None:
                        row = _insert_key(conn, self._kek, asset)
            return self._unwrap(row[0], row[1])

    def get(self, kid: bytes) -> StoredKey | None:
        """Return the key with this id and its record, or ``None`` if unknown.  Blocking."""
        if len(kid) != KID_SIZE:
            return None
        with self._connection() as conn:
            row = conn.execute(
                "SELECT kid, asset, created_at, active, wrapped_key FROM content_keys"
                " WHERE kid = ?",
                (kid,),
            ).fetchone()
        if row is None:
            return None
        record = _record(row)
        return StoredKey(record=record, key=self._unwrap(record.kid, row[4]))

    def records(self, asset: str | None = None) -> list[KeyRecord]:
        """Return key records (no key bytes), oldest first, for one asset or all.  Blocking."""
        query = "SELECT kid, asset, created_at, active FROM content_keys"
        params: tuple[str, ...] = ()
        if asset is not None:
            validate_asset(asset)
            query += " WHERE asset = ?"
            params = (asset,)
        query += " ORDER BY asset, rowid"
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [_record(row) for row in rows]

    def rotate(self, asset: str) -> KeyRecord:
        """Make a new active key for the asset and return its record.

        Older keys stay, inactive, so content already encrypted with them still
        plays.  Committed before returning.  Blocking.
        """
        validate_asset(asset)
        with self._connection() as conn, _write_transaction(conn):
            conn.execute(
                "UPDATE content_keys SET active = 0 WHERE asset = ? AND active = 1", (asset,)
            )
            kid, _ = _insert_key(conn, self._kek, asset)
            row = conn.execute(
                "SELECT kid, asset, created_at, active FROM content_keys WHERE kid = ?",
                (kid,),
            ).fetchone()
        log.info("rotated key for asset %s: new kid %s", asset, kid.hex())
        return _record(row)

    def import_key(self, key: ContentKey, asset: str, *, active: bool) -> KeyRecord:
        """Store one key made elsewhere; see ``import_keys``."""
        return self.import_keys([key], asset, active_kid=key.kid if active else None)[0]

    def import_keys(
        self, keys: Sequence[ContentKey], asset: str, *, active_kid: bytes | None = None
    ) -> list[KeyRecord]:
        """Store keys made elsewhere (CPIX import) for ``asset``: all in one transaction.

        ``active_kid`` (one of ``keys``) becomes the asset's active key (the previous one
        becomes inactive).  A kid already stored with the same key and asset is left as it
        is; the same kid with another key or asset is ``KeystoreError`` and nothing at all
        is written.  Committed before returning.  Blocking.
        """
        validate_asset(asset)
        if active_kid is not None and active_kid not in {k.kid for k in keys}:
            raise KeystoreError("the key to activate is not among the imported keys")
        with self._connection() as conn, _write_transaction(conn):
            for key in keys:
                row = conn.execute(
                    "SELECT asset, wrapped_key FROM content_keys WHERE kid = ?", (key.kid,)
                ).fetchone()
                if row is not None:
                    if row[0] != asset or self._unwrap(key.kid, row[1]).key != key.key:
                        raise KeystoreError(
                            f"key {key.kid.hex()} is already stored, differently"
                        )
                    continue
                conn.execute(
                    "INSERT INTO content_keys(kid, asset, wrapped_key, created_at, active)"
                    " VALUES (?, ?, ?, ?, 0)",
                    (key.kid, asset, wrap_key(self._kek, key.key), _now()),
                )
            if active_kid is not None:
                conn.execute(
                    "UPDATE content_keys SET active = 0 WHERE asset = ? AND active = 1", (asset,)
                )
                conn.execute("UPDATE content_keys SET active = 1 WHERE kid = ?", (active_kid,))
            rows = [
                conn.execute(
                    "SELECT kid, asset, created_at, active FROM content_keys WHERE kid = ?",
                    (key.kid,),
                ).fetchone()
                for key in keys
            ]
        return [_record(row) for row in rows]

    def policy(self, asset: str) -> ContentKeyPolicy:
        """The asset's content key policy (``DEFAULT_POLICY`` if none is stored).  Blocking."""
        validate_asset(asset)
        with self._connection() as conn:
            row = conn.execute("SELECT policy FROM policies WHERE asset = ?", (asset,)).fetchone()
        if row is None:
            return DEFAULT_POLICY
        try:
            return parse_policy(json.loads(row[0]))
        except (ValueError, BadRequest):
            raise KeystoreError(f"stored policy of asset {asset} is corrupt") from None

    def policies(self) -> dict[str, ContentKeyPolicy]:
        """Every stored policy by asset.  Blocking."""
        with self._connection() as conn:
            rows = conn.execute("SELECT asset FROM policies ORDER BY asset").fetchall()
        return {row[0]: self.policy(row[0]) for row in rows}

    def set_policy(self, asset: str, policy: ContentKeyPolicy) -> None:
        """Store (replace) the asset's policy; committed before returning.  Blocking."""
        validate_asset(asset)
        with self._connection() as conn, _write_transaction(conn):
            conn.execute(
                "INSERT INTO policies(asset, policy, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(asset) DO UPDATE SET policy = excluded.policy,"
                " updated_at = excluded.updated_at",
                (asset, json.dumps(policy.to_json(), sort_keys=True), _now()),
            )

    def delete_policy(self, asset: str) -> bool:
        """Drop the asset's policy (it falls back to the default); True if one existed."""
        validate_asset(asset)
        with self._connection() as conn, _write_transaction(conn):
            cursor = conn.execute("DELETE FROM policies WHERE asset = ?", (asset,))
        return cursor.rowcount > 0

    def count_token_use(self, token_id: str, expires_at: int, now: int) -> int:
        """Count one more use of the token ``token_id`` and return its uses so far.

        Only a hash of the id is stored.  Rows of tokens expired before ``now`` are
        purged in the same transaction.  Committed before returning.  Blocking.
        """
        digest = hashlib.sha256(token_id.encode("utf-8", "surrogateescape")).digest()
        with self._connection() as conn, _write_transaction(conn):
            conn.execute("DELETE FROM token_uses WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO token_uses(token_hash, uses, expires_at) VALUES (?, 1, ?)"
                " ON CONFLICT(token_hash) DO UPDATE SET uses = uses + 1",
                (digest, expires_at),
            )
            row = conn.execute(
                "SELECT uses FROM token_uses WHERE token_hash = ?", (digest,)
            ).fetchone()
        return int(row[0])

    def backup_to(self, path: Path) -> KeystoreSummary:
        """Write a consistent copy of this keystore to ``path``; the store stays in use.

        SQLite's backup API copies every page in one step inside a read transaction, so
        the copy is one committed state; other connections and processes (a running
        licence module) keep reading and writing meanwhile (WAL).  The copy is written
        to a temporary file (mode 0600) in ``path``'s folder, checked by
        ``verify_keystore_copy`` under this store's KEK, flushed to disk and renamed
        over ``path``; then the folder is flushed.  On any failure ``path`` is left as
        it was and ``KeystoreError`` is raised.  Returns what the copy holds.  Blocking.
        """
        target = Path(path)
        if _same_file(target, self._path):
            raise KeystoreError("the backup file cannot be the keystore itself")
        try:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
            )
            os.close(fd)
        except OSError as exc:
            raise KeystoreError(
                f"cannot write a backup in {target.parent}: {exc.strerror}"
            ) from None
        tmp = Path(tmp_name)
        try:
            try:
                copy = sqlite3.connect(tmp, isolation_level=None)
                try:
                    with self._connection() as conn:
                        conn.backup(copy)
                finally:
                    copy.close()
            except sqlite3.Error as exc:
                raise KeystoreError(f"backup of {self._path} failed: {exc}") from None
            try:
                summary = verify_keystore_copy(tmp, self._kek)
            except KeystoreError as exc:
                raise KeystoreError(f"the copy of {self._path} fails its check: {exc}") from None
            fsync_path(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            remove_database_files(tmp)
            raise KeystoreError(f"cannot write backup {target}: {exc.strerror}") from None
        except BaseException:
            remove_database_files(tmp)
            raise
        fsync_path(target.parent)
        log.info("keystore backed up to %s: %d keys", target, summary.keys)
        return summary

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise KeystoreError("keystore is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore {self._path}: {exc}") from None

    def _unwrap(self, kid: bytes, wrapped: bytes) -> ContentKey:
        try:
            key = unwrap_key(self._kek, wrapped)
        except KeyUnwrapError:
            raise KeystoreError(f"stored key {kid.hex()} does not unwrap under the KEK") from None
        if len(key) != KEY_SIZE:
            raise KeystoreError(f"stored key {kid.hex()} has the wrong size")
        return ContentKey(kid=kid, key=key)


def verify_keystore_copy(path: Path, kek: bytes) -> KeystoreSummary:
    """Check that the SQLite file at ``path`` is a sound keystore under ``kek``.

    In order: the file becomes one self-contained file (``seal_keystore_file``);
    ``PRAGMA integrity_check`` is ``ok``; it has a keystore's ``meta`` table with a KEK
    check value (so an unrelated or empty SQLite file is not taken for an empty
    keystore); ``Keystore.open`` accepts it under ``kek`` (schema version, KEK check);
    every stored key unwraps.  Finally the file is sealed again.  ``KeystoreError``
    says what failed, never with key bytes.  It writes to the file (journal mode,
    schema upgrades): run it on a copy, never on a backup or a live keystore.  Blocking.
    """
    seal_keystore_file(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if verdict != ["ok"]:
                raise KeystoreError(f"fails the SQLite integrity check: {verdict[0]}")
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            check = None if has_meta is None else conn.execute(
                "SELECT value FROM meta WHERE name = 'kek_check'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise KeystoreError(f"not a keystore: {exc}") from None
    if check is None:
        raise KeystoreError("not a keystore (no KEK check value)")
    with Keystore.open(path, kek) as store:
        records = store.records()
        for record in records:
            store.get(record.kid)  # unwraps: KeystoreError if a row is damaged
    seal_keystore_file(path)
    return KeystoreSummary(keys=len(records), assets=len({r.asset for r in records}))


def seal_keystore_file(path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Make the SQLite file at ``path`` hold every commit by itself.

    Switching to the rollback journal (``journal_mode=DELETE``) folds the WAL into the
    file and removes it; SQLite allows that only when no other connection has the file
    open, so a running licence module makes this raise ``KeystoreInUse`` (after
    ``busy_timeout_s``).  The next ``Keystore.open`` switches back to WAL.  Blocking.
    """
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise KeystoreInUse(f"{path} is open in another process") from None
        raise KeystoreError(f"not a keystore: {exc}") from None
    except sqlite3.Error as exc:
        raise KeystoreError(f"not a keystore: {exc}") from None
    if str(mode).lower() != "delete":
        raise KeystoreInUse(f"{path} is open in another process")


def remove_database_files(path: Path) -> None:
    """Delete an SQLite file and its ``-wal``, ``-shm`` and ``-journal`` siblings, if any."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        (path.parent / name).unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to disk.  Blocking."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _prepare(conn: sqlite3.Connection, kek: bytes) -> None:
    """Set pragmas, create the schema if missing, check version and KEK."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise KeystoreError(f"keystore cannot use WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    with _write_transaction(conn):
        for statement in _SCHEMA:
            conn.execute(statement)
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            conn.executemany(
                "INSERT INTO meta(name, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("kek_check", wrap_key(kek, _KEK_CHECK_BLOCK)),
                ],
            )
            return
    version = meta.get("schema_version")
    if version in _UPGRADABLE_VERSIONS:
        with _write_transaction(conn):
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        version = str(SCHEMA_VERSION)
    if version != str(SCHEMA_VERSION):
        raise KeystoreError(
            f"keystore schema version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    check = meta.get("kek_check")
    if not isinstance(check, bytes):
        raise KeystoreError("keystore has no KEK check value")
    try:
        ok = unwrap_key(kek, check) == _KEK_CHECK_BLOCK
    except KeyUnwrapError:
        ok = False
    if not ok:
        raise KeystoreError("the configured KEK is not the one this keystore was created with")


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _active_row(conn: sqlite3.Connection, asset: str) -> tuple[bytes, bytes] | None:
    row = conn.execute(
        "SELECT kid, wrapped_key FROM content_keys WHERE asset = ? AND active = 1", (asset,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _insert_key(conn: sqlite3.Connection, kek: bytes, asset: str) -> tuple[bytes, bytes]:
    """Insert a fresh active key (inside the caller's transaction); return (kid, wrapped)."""
    kid = uuid.uuid4().bytes
    wrapped = wrap_key(kek, os.urandom(KEY_SIZE))
    created = _now()
    conn.execute(
        "INSERT INTO content_keys(kid, asset, wrapped_key, created_at, active)"
        " VALUES (?, ?, ?, ?, 1)",
        (kid, asset, wrapped, created),
    )
    return kid, wrapped


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _record(row: tuple[bytes, str, str, int] | sqlite3.Row) -> KeyRecord:
    try:
        created = datetime.fromisoformat(row[2])
    except ValueError:
        raise KeystoreError(f"stored key {bytes(row[0]).hex()} has a bad timestamp") from None
    return KeyRecord(kid=bytes(row[0]), asset=row[1], created_at=created, active=bool(row[3]))
