"""The disk tier of the segment cache: encrypted bodies as files, "encrypt once, serve like a
static file".

Rules:
- one file per body, named by the 32 hex digits of its strong ETag and nothing
  else (never by request text), directly in the cache directory, which is
  created mode 0700; files are mode 0600;
- writes are atomic: a temp file (``O_EXCL``) in the same directory, written,
  fsync-ed, renamed into place; a reader sees a whole body or no file;
- eviction by total size: least recently used first (the access order is kept
  in memory); a body larger than 1/8 of the budget is not stored;
- at startup the index is rebuilt from the directory (least recent access or
  modification first), temp leftovers of earlier runs are deleted, and the
  total is trimmed to the budget; files with other names are left alone;
- any error setting up, writing or deleting (ENOSPC, EROFS, EACCES, EIO, …) is
  logged once at warning and turns the tier off for the life of the process:
  the origin keeps serving from memory and by encrypting on request;
- every filesystem call blocks, so the async methods run them in the default
  executor; the index itself belongs to the event loop (no locks);
- processes may share a directory (``--workers``): names are content
  addresses and renames atomic, and a lookup stats the file, so a body
  another process wrote is found and one it evicted is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import stat
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from origin.http.byte_lru import MAX_ENTRY_FRACTION

log = logging.getLogger("origin.cache")

NAME = re.compile(r"[0-9a-f]{32}")
TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.\d{1,10}\.[0-9a-f]{8}\.tmp")
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class DiskEntry:
    name: str
    size: int
    used: float  # last access or modification (epoch seconds)


def file_name(etag: str) -> str | None:
    """The file name of a body with this strong ETag, or None if it is not one of ours."""
    name = etag.strip('"')
    return name if NAME.fullmatch(name) else None


def prepare_directory(directory: Path) -> list[DiskEntry]:
    """Create the directory (0700), delete temp leftovers, list the bodies (blocking)."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = directory.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        directory.chmod(stat.S_IMODE(st.st_mode) & DIR_MODE)
    entries = []
    with os.scandir(directory) as listing:
        for item in listing:
            if TEMP_NAME.fullmatch(item.name):
                os.unlink(item.path)
            elif NAME.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                ist = item.stat(follow_symlinks=False)
                if ist.st_size > 0:
                    entries.append(DiskEntry(item.name, ist.st_size,
                                             max(ist.st_atime, ist.st_mtime)))
    entries.sort(key=lambda e: e.used)
    return entries


def write_atomically(directory: Path, name: str, body: bytes | bytearray) -> bool:
    """Write ``body`` as ``directory/name``: temp file, fsync, rename (blocking).

    False when another process starting up swept the temp file away before the
    rename (nothing is wrong with the directory: a later miss writes it again).
    """
    temp = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(temp, directory / name)
    except FileNotFoundError:
        if directory.is_dir():
            return False
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return True


def stored_size(path: Path) -> int | None:
    """The size of a stored body, or None when there is none (blocking)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def delete_files(paths: list[Path]) -> None:
    """Unlink evicted bodies; one already gone is fine (blocking)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class DiskStore:
    def __init__(self, directory: Path, budget: int) -> None:
        self.directory = directory
        self.budget = budget
        self.max_entry = budget // MAX_ENTRY_FRACTION
        self.used_bytes = 0
        self.enabled = False
        self._failed = False
        self._index: OrderedDict[str, int] = OrderedDict()
        self._writing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return (f"DiskStore({len(self._index)} files, {self.used_bytes} of {self.budget} "
                f"bytes, {state})")

    def __len__(self) -> int:
        return len(self._index)

    async def open(self) -> None:
        """Rebuild the index from the directory; on failure the tier stays off."""
        loop = asyncio.get_running_loop()
        try:
            entries = await loop.run_in_executor(None, prepare_directory, self.directory)
        except OSError as exc:
            self._fail("cannot use the disk cache directory", exc)
            return
        for entry in entries:
            self._index[entry.name] = entry.size
            self.used_bytes += entry.size
        self.enabled = True
        await self._trim()
        log.info("disk cache: %d bodies, %d of %d bytes", len(self._index), self.used_bytes,
                 self.budget)

    def path(self, name: str) -> Path:
        return self.directory / name

    async def lookup(self, name: str) -> Path | None:
        """The stored body's path (now the most recently used), or None."""
        if not self.enabled:
            return None
        path = self.path(name)
        size = await asyncio.get_running_loop().run_in_executor(None, stored_size, path)
        if size is None:
            self._forget(name)
            return None
        if name not in self._index:  # another process wrote it: account for it here too
            self._index[name] = size
            self.used_bytes += size
            self._spawn(self._trim())
        self._index.move_to_end(name)
        return path

    def forget(self, name: str) -> None:
        """Drop a body that could not be read (it is a miss from now on)."""
        self._forget(name)

    def store(self, name: str, body: bytes | bytearray) -> None:
        """Write ``body`` in the background (first production); no-op when off or too big."""
        if (not self.enabled or len(body) > self.max_entry or not body
                or name in self._index or name in self._writing):
            return
        self._writing.add(name)
        self._spawn(self._write(name, body))

    async def close(self) -> None:
        """Wait for the writes still running."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _write(self, name: str, body: bytes | bytearray) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = await loop.run_in_executor(None, write_atomically, self.directory, name,
                                                 body)
        except OSError as exc:
            self._fail("disk cache write failed", exc)
            return
        finally:
            self._writing.discard(name)
        if not written or not self.enabled:
            return
        if name not in self._index:
            self._index[name] = len(body)
            self.used_bytes += len(body)
        self._index.move_to_end(name)
        await self._trim()
        log.debug("disk cache stored %s: %d files, %d of %d bytes", name, len(self._index),
                  self.used_bytes, self.budget)

    async def _trim(self) -> None:
        victims = []
        while self.used_bytes > self.budget and self._index:
            name, size = self._index.popitem(last=False)
            self.used_bytes -= size
            victims.append(self.path(name))
        if not victims:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, delete_files, victims)
        except OSError as exc:
            self._fail("disk cache eviction failed", exc)

    def _forget(self, name: str) -> None:
        size = self._index.pop(name, None)
        if size is not None:
            self.used_bytes -= size

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, what: str, exc: OSError) -> None:
        """Turn the tier off; the first failure is logged (once, at warning)."""
        if not self._failed:
            code = errno.errorcode.get(exc.errno or 0, "error")
            log.warning("%s (%s: %s); serving from memory only from now on", what, code,
                        exc.strerror or type(exc).__name__)
        self._failed = True
        self.enabled = False
        self._index.clear()
        self.used_bytes = 0
