"""Restoring the keystore from a backup file (``origin keys restore``).

Rules:

- The backup is never opened in place: its bytes are copied to a temporary file
  (mode 0600) next to the keystore, and only that copy is checked, by
  ``verify_keystore_copy``: SQLite integrity, a keystore's ``meta`` table, the
  configured KEK, every key unwrapping.  A backup is one file, as ``Keystore.backup_to``
  writes it; ``-wal`` files beside it are not read.
- An existing keystore is replaced only with ``force``, and only when no process has
  it open: its WAL is first folded into it (``seal_keystore_file``), which SQLite
  refuses while a licence module holds the file, giving ``KeystoreInUse``.  The old file
  is kept as ``keys.sqlite.bak-<UTC time>`` through a hard link made before the swap,
  so at every moment ``keys.sqlite`` is the old file or the new one, never missing.
- The checked copy is renamed over the keystore (atomic) and the folder is flushed.
- Any failure before that rename leaves the state folder as it was: no keystore is
  created or replaced, no temporary file is left, a folder created for the restore is
  removed again.  (With ``force``, the old keystore's WAL may already have been folded
  into it: the same keys, in one file.)
- Stop the licence module (``origin serve`` or ``origin license serve``) before
  restoring: one started during a restore may keep the old file open.

Blocking throughout: a command-line operation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from origin.license.keystore import (
    KeystoreError,
    KeystoreInUse,
    KeystoreSummary,
    fsync_path,
    remove_database_files,
    seal_keystore_file,
    verify_keystore_copy,
)

BACKUP_SUFFIX = ".bak-"


class KeystoreExists(KeystoreError):
    """A keystore is already there and the restore was not forced."""


class RestoreNotFlushed(KeystoreError):
    """The backup is in place, but its folder could not be flushed to disk."""


@dataclass(frozen=True)
class RestoreResult:
    """What a restore put in place, and where the keystore it replaced was kept."""

    summary: KeystoreSummary
    previous: Path | None


def restore_keystore(backup: Path, db_path: Path, kek: bytes, *, force: bool) -> RestoreResult:
    """Replace (or create) the keystore at ``db_path`` with the backup file ``backup``.

    ``KeystoreExists`` if a keystore is there and ``force`` is false; ``KeystoreInUse``
    if a process has it open; ``KeystoreError`` if the backup is not a sound keystore
    under ``kek``.  In these cases nothing was changed; ``RestoreNotFlushed`` says the
    backup is in place but may not survive a power loss yet.  Blocking.
    """
    if not backup.is_file():
        raise KeystoreError(f"no backup file at {backup}")
    wal = db_path.with_name(f"{db_path.name}-wal")
    if db_path.exists() and not force:
        raise KeystoreExists(
            f"a keystore exists at {db_path}; use --force to replace it"
            f" (it is then kept as {db_path.name}{BACKUP_SUFFIX}<time>)"
        )
    if wal.exists() and not db_path.exists():
        raise KeystoreError(f"{wal} exists without its keystore; move it away first")
    state_dir = db_path.parent
    created_dir = not state_dir.exists()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp: Path | None = None
    previous: Path | None = None
    try:
        tmp, summary = _checked_copy(backup, state_dir, kek)
        if db_path.exists():
            previous = _keep_previous(db_path)
        os.replace(tmp, db_path)
    except BaseException:
        if tmp is not None:
            remove_database_files(tmp)
        if previous is not None:
            previous.unlink(missing_ok=True)  # a second name of the untouched keystore
        if created_dir:
            _remove_empty_dir(state_dir)
        raise
    try:
        fsync_path(state_dir)
    except OSError as exc:
        raise RestoreNotFlushed(
            f"{db_path} was replaced, but its folder could not be flushed to disk:"
            f" {exc.strerror}"
        ) from None
    return RestoreResult(summary=summary, previous=previous)


def _checked_copy(backup: Path, folder: Path, kek: bytes) -> tuple[Path, KeystoreSummary]:
    """Copy ``backup`` to a 0600 temporary file in ``folder`` and check the copy."""
    fd, name = tempfile.mkstemp(prefix=".restore.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        shutil.copyfile(backup, tmp)
        try:
            summary = verify_keystore_copy(tmp, kek)
        except KeystoreError as exc:
            raise KeystoreError(f"backup {backup} cannot be restored: {exc}") from None
        fsync_path(tmp)
    except BaseException:
        remove_database_files(tmp)
        raise
    return tmp, summary


def _keep_previous(db_path: Path) -> Path:
    """Fold the live keystore's WAL into it (refused if in use), then hard-link it aside."""
    try:
        seal_keystore_file(db_path, busy_timeout_s=0.0)
    except KeystoreInUse:
        raise KeystoreInUse(
            f"{db_path} is open in another process: stop the licence module"
            " (origin serve / origin license serve) first"
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        suffix = "" if attempt == 0 else f"-{attempt}"
        kept = db_path.with_name(f"{db_path.name}{BACKUP_SUFFIX}{stamp}{suffix}")
        try:
            os.link(db_path, kept)
        except FileExistsError:
            continue
        return kept
    raise KeystoreError(f"cannot find a free name for the old keystore next to {db_path}")


def _remove_empty_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
