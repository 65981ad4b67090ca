"""Reading a media source for one response: whole, or a piece at a time, and never a
mix of two versions of the file.

Rules:

- a request reads only files the catalog snapshot knows, by their resolved path; one
  that vanished since the scan is ``NotFound``;
- a source larger than ``MAX_SEGMENT_BYTES`` is ``MalformedMedia`` before a byte is read;
- the bytes read are those of the stamp (size, mtime) taken when the file was opened:
  a file whose size or mtime is not the same after the read, or that gave fewer or more
  bytes than that size, changed while being read (cut, grown, rewritten in place) and is
  ``MalformedMedia`` — never a body under another version's ETag;
- reads go straight into the caller's buffer (``readv``), no intermediate copy, on a
  bare descriptor: a cache-miss response costs open, fstat, read, fstat, close — each
  syscall gives the GIL away and waits to get it back from the event loop;
- every call blocks: callers run them on a production thread or in an executor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from stat import S_ISREG

from origin.errors import MalformedMedia, NotFound
from origin.packaging.buffer_pool import BufferPool, Lease
from origin.packaging.catalog import MediaFile

MAX_SEGMENT_BYTES = 256 << 20


class SourceFile:
    """An open source file and the stamp it had when opened (module rules)."""

    __slots__ = ("_fd", "stat")

    def __init__(self, fd: int, stat: os.stat_result) -> None:
        self._fd = fd
        self.stat = stat

    def __repr__(self) -> str:
        return f"SourceFile({self.stat.st_size} bytes)"

    @property
    def size(self) -> int:
        return self.stat.st_size

    def readinto(self, view: memoryview) -> int:
        """Bytes read into ``view`` from where the last read stopped (0 at the end)."""
        return os.readv(self._fd, (view,))

    def read_all_into(self, view: memoryview) -> int:
        """Fill ``view[:size]`` from the start; the bytes read (short only if cut)."""
        size, got = self.size, 0
        while got < size and (n := os.readv(self._fd, (view[got:size],))):
            got += n
        return got

    def check_unchanged(self, got: int) -> None:
        """``MalformedMedia`` unless exactly ``size`` bytes were read and the file still
        has the stamp it was opened with (the size check catches growth too)."""
        after = os.fstat(self._fd)
        if got != self.size or (after.st_size, after.st_mtime_ns) != (
                self.stat.st_size, self.stat.st_mtime_ns):
            raise MalformedMedia("segment changed while being read")


@contextlib.contextmanager
def open_source(file: MediaFile) -> Iterator[SourceFile]:
    """``file`` open for reading, with its stamp (module rules)."""
    try:
        # O_NONBLOCK: something other than a file swapped in (a FIFO) cannot hang
        # the thread; it is refused below.  No effect on a regular file's reads.
        fd = os.open(file.real_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound("no such file in asset") from None
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise NotFound("no such file in asset")
        if st.st_size > MAX_SEGMENT_BYTES:
            raise MalformedMedia("segment too large")
        yield SourceFile(fd, st)
    finally:
        os.close(fd)


def read_source(file: MediaFile, pool: BufferPool) -> tuple[Lease, os.stat_result]:
    """The whole of ``file`` at the start of a buffer from ``pool``, and its stamp; the
    caller releases the lease."""
    with open_source(file) as source:
        lease = pool.take(source.size)
        try:
            source.check_unchanged(source.read_all_into(lease.view))
        except BaseException:
            lease.release()
            raise
    return lease, source.stat


def read_whole(file: MediaFile) -> tuple[bytearray, os.stat_result]:
    """The whole of ``file`` in a fresh ``bytearray`` of its size (init sections,
    MPEG-TS segments), and its stamp."""
    with open_source(file) as source:
        data = bytearray(source.size)
        source.check_unchanged(source.read_all_into(memoryview(data)))
    return data, source.stat
