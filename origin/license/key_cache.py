"""Content keys and policies held in memory, dropped as soon as the keystore changes.

Rules:

- Held: a key id's ``StoredKey`` (its record and unwrapped key, as ``Keystore.get``
  returns it) and an asset's ``ContentKeyPolicy`` (``Keystore.policy``), at most
  ``max_keys`` and ``max_policies`` of them, the least recently used dropped first.
  Unknown key ids are not held: each is looked up again, and no stream of made-up key
  ids can push real ones out.
- Fresh, not timed: before anything held is used, ``PRAGMA data_version`` is read on
  the cache's own connection.  It changes whenever another connection has committed to
  the file since the last read (SQLite, "PRAGMA data_version") — this process's
  keystore connection (admin API, key creation, token use counters), the ``origin
  policy`` and ``origin keys`` commands, any other process — and then everything held is
  dropped.  A change committed before a request starts is seen by that request, as
  when every request read SQLite.
- The check runs on the event loop.  In WAL mode it reads the WAL index header in
  shared memory and takes a reader's slot: no disk read and no lock a writer holds.  The
  connection's busy time-out is 0; a busy keystore (WAL recovery) or any SQLite error
  counts as a change: nothing held is used and the executor reads.
- A miss is read in the executor (``run_blocking``; policies by the caller, in the job
  that decides with them) and held only if nothing was dropped while it was read
  (``epoch``): a value read before a change never outlives that change's check.  The
  version is read before the miss is, so what is held is never older than the version
  it is held under.
- Loop only: every method runs on the event loop's thread; the executor only runs
  ``Keystore`` reads and never touches the cache.
- The key bytes held are those ``Keystore.get`` unwrapped; reprs count entries only.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from origin.license.blocking import run_blocking
from origin.license.keystore import Keystore, KeystoreError, StoredKey
from origin.license.policy import ContentKeyPolicy

MAX_KEYS = 8192
MAX_POLICIES = 8192

K = TypeVar("K")
V = TypeVar("V")


class DataVersion:
    """``PRAGMA data_version`` of the keystore file on a connection of its own, which
    never writes (so every commit to the file changes what it reads)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn

    def __repr__(self) -> str:
        return "DataVersion()"

    @classmethod
    def open(cls, path: Path) -> DataVersion:
        """Open the connection (blocking: run it in the executor; use it from one thread)."""
        try:
            conn = sqlite3.connect(path, timeout=0, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise KeystoreError(f"cannot open keystore {path}: {exc}") from None
        return cls(conn)

    def read(self) -> int | None:
        """The version now; ``None`` when SQLite cannot say (busy, closed, an error)."""
        if self._conn is None:
            return None
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0]) if row is not None else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class KeyCache:
    """Keys by id and policies by asset, read through from a ``Keystore`` (module rules)."""

    __slots__ = ("_epoch", "_keys", "_keystore", "_max_keys", "_max_policies", "_policies",
                 "_version", "_versions")

    def __init__(self, keystore: Keystore, versions: DataVersion, *,
                 max_keys: int = MAX_KEYS, max_policies: int = MAX_POLICIES) -> None:
        self._keystore = keystore
        self._versions = versions
        self._max_keys = max_keys
        self._max_policies = max_policies
        self._keys: OrderedDict[bytes, StoredKey] = OrderedDict()
        self._policies: OrderedDict[str, ContentKeyPolicy] = OrderedDict()
        self._version: int | None = None
        self._epoch = 0

    def __repr__(self) -> str:
        return f"KeyCache({len(self._keys)} keys, {len(self._policies)} policies)"

    def _fresh(self) -> bool:
        """Whether what is held may be used; drops it all when the keystore changed."""
        version = self._versions.read()
        if version is not None and version == self._version:
            return True
        self._version = version
        if self._keys or self._policies:
            self._keys.clear()
            self._policies.clear()
        self._epoch += 1
        return False

    async def get(self, kid: bytes) -> StoredKey | None:
        """``Keystore.get(kid)``, from memory when nothing changed since it was read."""
        if self._fresh():
            held = self._keys.get(kid)
            if held is not None:
                self._keys.move_to_end(kid)
                return held
        epoch = self._epoch
        stored = await run_blocking(self._keystore.get, kid)
        if stored is not None and epoch == self._epoch:
            _hold(self._keys, kid, stored, self._max_keys)
        return stored

    async def get_many(self, kids: Iterable[bytes]) -> list[StoredKey | None]:
        """``get`` of every kid, in order; the ones not held are read in one executor job."""
        wanted = list(kids)
        found: dict[bytes, StoredKey | None] = {}
        if self._fresh():
            for kid in wanted:
                held = self._keys.get(kid)
                if held is not None:
                    self._keys.move_to_end(kid)
                    found[kid] = held
        missing = [kid for kid in dict.fromkeys(wanted) if kid not in found]
        if missing:
            epoch = self._epoch
            read = await run_blocking(_read_keys, self._keystore, missing)
            for kid, stored in zip(missing, read, strict=True):
                found[kid] = stored
                if stored is not None and epoch == self._epoch:
                    _hold(self._keys, kid, stored, self._max_keys)
        return [found[kid] for kid in wanted]

    @property
    def epoch(self) -> int:
        """Bumped whenever what is held is dropped (module rules: fills made across a
        change are not kept)."""
        return self._epoch

    def held_policies(self, assets: Iterable[str]) -> dict[str, ContentKeyPolicy] | None:
        """The policy of every asset if all are held and the keystore is unchanged, else
        ``None`` (no I/O but the version check).  On ``None``, read them in the executor
        and ``keep_policies`` them with the ``epoch`` read just after this call."""
        if not self._fresh():
            return None
        found: dict[str, ContentKeyPolicy] = {}
        for asset in assets:
            held = self._policies.get(asset)
            if held is None:
                return None
            self._policies.move_to_end(asset)
            found[asset] = held
        return found

    def keep_policies(self, policies: Mapping[str, ContentKeyPolicy], epoch: int) -> None:
        """Hold policies read in the executor, unless the keystore changed since ``epoch``."""
        if epoch == self._epoch:
            for asset, policy in policies.items():
                _hold(self._policies, asset, policy, self._max_policies)


def _hold(held: OrderedDict[K, V], name: K, value: V, limit: int) -> None:
    held[name] = value
    held.move_to_end(name)
    while len(held) > limit:
        held.popitem(last=False)


def _read_keys(keystore: Keystore, kids: list[bytes]) -> list[StoredKey | None]:
    return [keystore.get(kid) for kid in kids]
