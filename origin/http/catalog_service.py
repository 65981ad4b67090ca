"""Keeps the catalog snapshot fresh: rescans on an interval and on a miss.

Scans are blocking directory walks, so they run in the default executor.
Concurrent misses share one rescan, and misses rescan at most once per
``min_rescan`` seconds, so unknown URLs cannot make the origin walk the tree
in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time

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


class CatalogService:
    def __init__(self, root: str, *, interval: float, min_rescan: float) -> None:
        self._root = root
        self._interval = interval
        self._min_rescan = min_rescan
        self._catalog: Catalog | None = None
        self._last_scan = 0.0
        self._scan_task: asyncio.Task[Catalog] | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("catalog not scanned yet")
        return self._catalog

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
        check_asset_name(name)
        try:
            return self.catalog.asset(name)
        except NotFound:
            if not await self._rescan_after_miss():
                raise
            return self.catalog.asset(name)

    async def file(self, asset_name: str, tail: str) -> tuple[Asset, MediaFile]:
        rel = split_request_path(tail)
        asset = await self.asset(asset_name)
        try:
            return asset, asset.file(rel)
        except NotFound:
            if not await self._rescan_after_miss():
                raise
            asset = self.catalog.asset(asset_name)
            return asset, asset.file(rel)

    async def _rescan_after_miss(self) -> bool:
        if time.monotonic() - self._last_scan < self._min_rescan:
            return False
        await self.rescan()
        return True
