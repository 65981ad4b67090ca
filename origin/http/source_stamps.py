"""Source files' stamps (size, mtime), looked up at most once a second per file.

A cached segment or playlist is keyed by its sources' stamps, so a cache hit
needs them.  Rules:
- stat calls run in the default executor, never on the event loop; one job
  stats every stale path a request needs;
- a stamp younger than ``REVALIDATE_SECONDS`` is reused without a syscall, so
  a hit costs no thread hop, and a source changed in place is noticed within
  that time (the DASH skeleton cache keeps the same bound);
- at most ``MAX_PATHS`` paths are remembered (least recently used dropped);
- a file gone since the catalog scan is ``NotFound``, as reading it would be;
- size and mtime are the whole validator, as for aiohttp's and nginx's static files:
  a source replaced by a file of the same size whose mtime is set back (``os.utime``;
  or rewritten within one kernel timestamp tick) keeps its stamp and so its ETag —
  a cached protected body goes on being served (until evicted), and clear files go out
  with the new bytes under the old ETag.  Replace media with a new mtime, or purge
  and restart (``tests/test_faults.py`` pins this).
One event loop owns a ``SourceStamps`` (no locks).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict

from origin.errors import NotFound
from origin.packaging.segments import SourceStamp

REVALIDATE_SECONDS = 1.0
MAX_PATHS = 65536


def stat_sources(paths: tuple[str, ...]) -> tuple[SourceStamp, ...]:
    """The stamps of ``paths`` (blocking: run in an executor)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound("no such file in asset") from None
        out.append((st.st_size, st.st_mtime_ns))
    return tuple(out)


class SourceStamps:
    def __init__(self, revalidate: float = REVALIDATE_SECONDS,
                 max_paths: int = MAX_PATHS) -> None:
        self._revalidate = revalidate
        self._max_paths = max_paths
        self._memo: OrderedDict[str, tuple[SourceStamp, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"SourceStamps({len(self._memo)} paths)"

    async def stamps(self, paths: tuple[str, ...]) -> tuple[SourceStamp, ...]:
        """The current stamps of ``paths`` (real paths from the catalog), in order."""
        now = time.monotonic()
        found: dict[str, SourceStamp] = {}
        stale: list[str] = []
        for path in paths:
            memo = self._memo.get(path)
            if memo is not None and now - memo[1] < self._revalidate:
                found[path] = memo[0]
                self._memo.move_to_end(path)
            else:
                stale.append(path)
        if stale:
            fresh = await asyncio.get_running_loop().run_in_executor(
                None, stat_sources, tuple(stale))
            for path, stamp in zip(stale, fresh, strict=True):
                found[path] = stamp
                self._memo[path] = (stamp, now)
                self._memo.move_to_end(path)
            while len(self._memo) > self._max_paths:
                self._memo.popitem(last=False)
        return tuple(found[path] for path in paths)

    def forget(self, path: str) -> None:
        """Drop a remembered stamp (a production saw the file change)."""
        self._memo.pop(path, None)
