"""Parsed media structure kept by source stamp (``origin.packaging.media_index``).

In-process: the index's budget and order.  On a real origin with the cache off: a
segment file replaced by other bytes is planned afresh (its old plan is never applied
to new bytes).  The control is the byte comparison itself: cbcs bodies do not depend on
the path (one constant IV per key), so the replaced segment must come out exactly as
the segment it was copied from; a stale plan would encrypt the wrong ranges.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from origin.packaging.media_index import MediaIndex
from tests.conftest import start_origin

ASSET = "demo"


def test_the_index_keeps_its_budget_least_recent_first() -> None:
    index: MediaIndex[str, str] = MediaIndex(10)
    index.put("a", "A", 4)
    index.put("b", "B", 4)
    assert index.get("a") == "A"  # now the most recent
    index.put("c", "C", 4)  # over budget: "b" goes
    assert (index.get("a"), index.get("b"), index.get("c")) == ("A", None, "C")
    assert index.weight == 8
    index.put("a", "A2", 2)  # replaced, weight recounted
    assert index.get("a") == "A2" and index.weight == 6
    index.put("huge", "H", 11)  # heavier than the whole budget: not kept
    assert index.get("huge") is None and len(index) == 2


def test_a_bad_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        MediaIndex(0)


async def test_a_replaced_segment_is_planned_afresh(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state", "--cache-bytes", "0",
                          "--encrypt-threads", "2")
    folder = media_copy / ASSET / "video-720p"
    base = f"{server.base}/hls/{ASSET}/cbcs/video-720p"
    try:
        async with aiohttp.ClientSession() as s:
            async def get(name: str) -> bytes:
                async with s.get(f"{base}/{name}") as resp:
                    assert resp.status == 200
                    return await resp.read()

            first, second = await get("seg-00001.m4s"), await get("seg-00002.m4s")
            assert first != second
            assert await get("seg-00001.m4s") == first  # planned once, then from the index
            shutil.copyfile(folder / "seg-00002.m4s", folder / "seg-00001.m4s")
            stat = os.stat(folder / "seg-00002.m4s")
            os.utime(folder / "seg-00001.m4s", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            assert await get("seg-00001.m4s") == second
    finally:
        assert server.stop() == 0
