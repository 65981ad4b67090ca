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
  the most recently given back of equals first, else maps a fresh one;
- a taken buffer holds whatever bytes were in it: callers write before they read;
- the pool keeps at most ``keep`` free buffers of at most ``max_kept`` bytes each;
  anything else given back is dropped (unmapped when its last view goes);
- a free buffer not taken again within ``idle_after`` seconds is dropped at the pool's
  next take or give-back: a burst that needed more buffers at once than steady traffic
  does not leave their pages resident (reusing the most recent first is what lets the
  extra ones go idle);
- ``Lease.release`` gives a buffer back; it is idempotent, and after it the lease's
  view must not be used (the bytes may be overwritten by the next segment).  A lease
  never released is unmapped by the garbage collector: nothing leaks, the pool just
  does not get it back;
- thread-safe: buffers are taken in executor threads and given back on the loop.
"""

from __future__ import annotations

import mmap
import threading
import time
from collections.abc import Callable

GRANULE = 1 << 20
DEFAULT_KEEP = 8
DEFAULT_MAX_KEPT = 16 << 20
DEFAULT_IDLE_AFTER = 30.0  # seconds
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

    def __init__(self, keep: int = DEFAULT_KEEP, max_kept: int = DEFAULT_MAX_KEPT, *,
                 idle_after: float = DEFAULT_IDLE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if keep < 0 or max_kept < 0 or idle_after < 0:
            raise ValueError("keep, max_kept and idle_after must not be negative")
        self.keep = keep
        self.max_kept = max_kept
        self.idle_after = idle_after
        self.mapped = 0  # buffers mapped fresh over the pool's life
        self.dropped_idle = 0  # free buffers dropped for being idle
        self._clock = clock
        self._free: list[tuple[mmap.mmap, float]] = []  # (buffer, when given back), oldest first
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
            idle = self._drop_idle()
            best = -1
            for at in range(len(self._free) - 1, -1, -1):  # the most recent first
                length = len(self._free[at][0])
                if length >= size and (best < 0 or length < len(self._free[best][0])):
                    best = at
            if best >= 0:
                return Lease(self, self._free.pop(best)[0])
            self.mapped += 1
        del idle  # unmapped here, outside the lock
        capacity = max(GRANULE, -(-size // GRANULE) * GRANULE)
        return Lease(self, mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))

    def give_back(self, buffer: mmap.mmap) -> None:
        """Keep ``buffer`` for reuse if there is room for it (``Lease.release`` calls this)."""
        if len(buffer) > self.max_kept:
            return
        with self._lock:
            idle = self._drop_idle()
            if len(self._free) < self.keep:
                self._free.append((buffer, self._clock()))
                return
            smallest = min(range(len(self._free)), key=lambda at: len(self._free[at][0]),
                           default=None)
            if smallest is not None and len(self._free[smallest][0]) < len(buffer):
                del self._free[smallest]  # keep the larger: it fits more segments
                self._free.append((buffer, self._clock()))
        del idle

    def _drop_idle(self) -> list[tuple[mmap.mmap, float]]:
        """Take the free buffers idle for over ``idle_after`` out of the pool (the lock is
        held); the caller lets them go once it has released the lock."""
        if not self._free:
            return []
        cutoff = self._clock() - self.idle_after
        idle = [entry for entry in self._free if entry[1] < cutoff]
        if idle:
            self._free = [entry for entry in self._free if entry[1] >= cutoff]
            self.dropped_idle += len(idle)
        return idle
