"""Keeps the catalog snapshot fresh: rescans on an interval and on a miss.

Scans are blocking directory walks, so they run in the default executor.
Concurrent misses share one rescan, and misses rescan at most once per
``min_rescan`` seconds, so unknown URLs cannot make the origin walk the tree
in a loop.

Per snapshot, and started afresh with each new one:

- lookups that found a file are remembered under the request's own asset name and
  path (already checked): the next request for the same URL skips the path checks.
  Only found files are remembered, so this holds at most one entry per file;
- an asset name found in the snapshot needs no check (the scan admitted only valid
  names);
- ``derived`` keeps values computed from one asset alone (e.g. which MPD a DASH
  request edits), under keys the caller makes from checked names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from origin.errors import NotFound
from origin.packaging.catalog import (
    Asset,
    Catalog,
    MediaFile,
    check_asset_name,
    scan_catalog,
    split_request_path,
)

log = logging.getLogger("origin.catalog")

T = TypeVar("T")


class CatalogService:
    def __init__(self, root: str, *, interval: float, min_rescan: float) -> None:
        self._root = root
        self._interval = interval
        self._min_rescan = min_rescan
        self._catalog: Catalog | None = None
        self._last_scan = 0.0
        self._generation = 0
        self._scan_task: asyncio.Task[Catalog] | None = None
        self._found: dict[tuple[str, str], tuple[Asset, MediaFile]] = {}
        self._derived: dict[tuple[str, ...], tuple[Asset, Any]] = {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("catalog not scanned yet")
        return self._catalog

    @property
    def generation(self) -> int:
        """Which snapshot is current: a count of the scans so far (what is derived from
        one snapshot can be told apart from what is derived from the next)."""
        return self._generation

    async def rescan(self) -> Catalog:
        if self._scan_task is None:
            self._scan_task = asyncio.create_task(self._scan())
        task = self._scan_task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._scan_task is task:
                self._scan_task = None

    async def _scan(self) -> Catalog:
        loop = asyncio.get_running_loop()
        catalog = await loop.run_in_executor(None, scan_catalog, self._root)
        self._catalog = catalog
        self._generation += 1
        self._found = {}
        self._derived = {}
        self._last_scan = time.monotonic()
        return catalog

    async def run_periodic(self) -> None:
        """Rescan every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.rescan()
            except Exception:
                log.exception("catalog rescan failed")

    async def asset(self, name: str) -> Asset:
        found = self.catalog.assets.get(name)
        if found is not None:  # the scan admitted it: a valid name
            return found
        check_asset_name(name)
        try:
            return self.catalog.asset(name)
        except NotFound:
            if not await self._rescan_after_miss():
                raise
            return self.catalog.asset(name)

    async def file(self, asset_name: str, tail: str) -> tuple[Asset, MediaFile]:
        found = self._found.get((asset_name, tail))
        if found is not None:
            return found
        rel = split_request_path(tail)
        asset = await self.asset(asset_name)
        try:
            found = asset, asset.file(rel)
        except NotFound:
            if not await self._rescan_after_miss():
                raise
            asset = self.catalog.asset(asset_name)
            found = asset, asset.file(rel)
        if self._catalog is not None and self._catalog.assets.get(asset_name) is asset:
            self._found[asset_name, tail] = found
        return found

    def derived(self, asset: Asset, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        """``compute()``, a value made from ``asset`` alone, remembered under ``key`` (which
        names the asset and what is derived) until ``asset`` is no longer the current
        snapshot's.  Exceptions are not remembered."""
        found = self._derived.get(key)
        if found is not None and found[0] is asset:
            value: T = found[1]
            return value
        value = compute()
        if self._catalog is not None and self._catalog.assets.get(asset.name) is asset:
            self._derived[key] = (asset, value)
        return value

    async def _rescan_after_miss(self) -> bool:
        if time.monotonic() - self._last_scan < self._min_rescan:
            return False
        await self.rescan()
        return True
