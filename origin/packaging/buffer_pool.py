"""Reusable buffers for segment production: leased per segment, given back once sent.

A 2.5 MB segment read into a fresh ``bytearray`` costs more than its copy: the
allocation is zero-filled, and under several executor threads glibc serves it from
per-thread arenas that keep the freed memory (a worker grew past 500 MB with the
cache off).  Production takes its buffers from a pool instead.

Rules:

- a buffer is an anonymous private mapping (``mmap``), never malloc heap: dropping
  one returns its pages to the kernel at once;
- its capacity is the size asked, rounded up to ``GRANULE``; ``take`` hands out the
  smallest free buffer that fits (its pages already faulted in: no fault, no zeroing),
  else maps a fresh one;
- a taken buffer holds whatever bytes were in it: callers write before they read;
- the pool keeps at most ``keep`` free buffers of at most ``max_kept`` bytes each;
  anything else given back is dropped (unmapped when its last view goes);
- ``Lease.release`` gives a buffer back; it is idempotent, and after it the lease's
  view must not be used (the bytes may be overwritten by the next segment).  A lease
  never released is unmapped by the garbage collector: nothing leaks, the pool just
  does not get it back;
- thread-safe: buffers are taken in executor threads and given back on the loop.
"""

from __future__ import annotations

import mmap
import threading

GRANULE = 1 << 20
DEFAULT_KEEP = 8
DEFAULT_MAX_KEPT = 16 << 20
_RELEASED = memoryview(b"")


class Lease:
    """One buffer out of a pool: ``view`` spans its whole capacity."""

    __slots__ = ("_map", "_pool", "view")

    def __init__(self, pool: BufferPool | None, buffer: mmap.mmap) -> None:
        self._pool = pool
        self._map: mmap.mmap | None = buffer
        self.view = memoryview(buffer)

    def __repr__(self) -> str:
        state = "released" if self._map is None else f"{len(self.view)} bytes"
        return f"Lease({state})"

    @property
    def capacity(self) -> int:
        return len(self.view)

    def release(self) -> None:
        """Give the buffer back (once; later calls do nothing)."""
        buffer, self._map = self._map, None
        if buffer is None:
            return
        self.view = _RELEASED  # a late use finds nothing instead of another segment's bytes
        if self._pool is not None:
            self._pool.give_back(buffer)


class BufferPool:
    """Free buffers kept for reuse (module rules)."""

    def __init__(self, keep: int = DEFAULT_KEEP, max_kept: int = DEFAULT_MAX_KEPT) -> None:
        if keep < 0 or max_kept < 0:
            raise ValueError("keep and max_kept must not be negative")
        self.keep = keep
        self.max_kept = max_kept
        self.mapped = 0  # buffers mapped fresh over the pool's life
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BufferPool({len(self._free)} free of {self.keep}, {self.mapped} mapped)"

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, size: int) -> Lease:
        """A buffer of at least ``size`` bytes (its contents are undefined)."""
        if size < 0:
            raise ValueError("negative buffer size")
        with self._lock:
            fits = [b for b in self._free if len(b) >= size]
            if fits:
                best = min(fits, key=len)
                self._free.remove(best)
                return Lease(self, best)
            self.mapped += 1
        capacity = max(GRANULE, -(-size // GRANULE) * GRANULE)
        return Lease(self, mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))

    def give_back(self, buffer: mmap.mmap) -> None:
        """Keep ``buffer`` for reuse if there is room for it (``Lease.release`` calls this)."""
        if len(buffer) > self.max_kept:
            return
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)
                return
            smallest = min(self._free, key=len, default=None)
            if smallest is not None and len(smallest) < len(buffer):
                self._free.remove(smallest)  # keep the larger: it fits more segments
                self._free.append(buffer)
