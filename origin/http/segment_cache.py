"""The cache of protected segments and rewritten manifests.

Rules:
- memory: one LRU bounded by bytes (``--cache-bytes``, default 256 MiB) holds
  protected segment and init bodies under their strong ETag
  (``packaging.segments.segment_etag``: scheme, key id, path, the sources'
  stamps, the init section's stamp, an init's signalling), and rewritten
  manifests under a digest of everything that shapes them (``manifest_key``);
  large segment bodies are kept in anonymous memory files that hits send by
  ``sendfile`` (``StoredFile``, ``origin.http.memory_file``);
  an entry larger than 1/8 of the budget is not kept;
- disk (``--cache-dir``, ``--cache-disk-bytes``): each segment body is written
  once, on its first production, and later hits go out from the file
  (:mod:`origin.http.disk_store`); manifests stay in memory only;
- single flight: concurrent misses for one key produce once; a failure reaches
  every waiter and nothing is cached;
- a segment's ETag comes from its sources' stamps before anything is read or
  encrypted, so a matching ``If-None-Match`` costs no work;
- metrics: ``CACHE_LOOKUPS{kind, tier, result}`` for every lookup,
  ``BYTES_ENCRYPTED{scheme}`` for every body produced;
- ``--cache-bytes 0`` turns all of it off — no memory, no disk, no single
  flight: every request produces (the benchmark's cache-miss runs);
- tokens shape manifest bodies but are kept only inside digests, never in a
  key, log line or repr;
- a repeated manifest request finds its cached body from its own words, without
  working out its cache key again (``recent_manifest``,
  :mod:`origin.http.recent_manifests`);
- one event loop owns the cache; segments are read and encrypted on its own
  production threads (``--encrypt-threads``), stat and file writes in the default
  executor; segments produced for one request alone lie in pooled buffers
  (``packaging.buffer_pool``) that go back once the body is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from origin.config import CacheSettings
from origin.crypto.key import ContentKey
from origin.errors import OriginError
from origin.http.byte_lru import ENTRY_OVERHEAD, ByteLru, Entry, Stored, StoredFile
from origin.http.disk_store import DiskStore, file_name
from origin.http.memory_file import MemoryFile, memory_file_wanted, write_memory_file
from origin.http.metrics import BYTES_ENCRYPTED, CACHE_LOOKUPS
from origin.http.playback_query import NO_QUERY, PlaybackQuery
from origin.http.recent_manifests import ManifestShape, RecentAnswer, RecentManifests
from origin.http.single_flight import SingleFlight
from origin.http.source_stamps import SourceStamps
from origin.packaging.buffer_pool import BufferPool
from origin.packaging.drm import DrmContext
from origin.packaging.key_system import KeySystem
from origin.packaging.segments import (
    ProtectedSegment,
    SegmentJob,
    produce_segment,
    segment_etag,
    stamped_files,
)

log = logging.getLogger("origin.cache")

ManifestPart = str | int | bool | None | tuple["ManifestPart", ...]
MANIFEST_KEYS_REMEMBERED = 4096
IN_FLIGHT = 8  # bodies produced for one request each, per process, on their way out
Build = Callable[[], Coroutine[Any, Any, bytes]]
# What a manifest answer is remembered under and made from: the request shape, the catalog
# generation, the content key (None: clear), the answer's Cache-Control.
Recall = tuple[ManifestShape, int, ContentKey | None, str]


@dataclass(frozen=True, slots=True)
class OnDisk:
    """A segment body kept in the disk tier."""

    path: Path
    etag: str


def body_etag(body: bytes | bytearray) -> str:
    """The strong ETag of a manifest body: a digest of the bytes themselves."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def signalling_parts(drm: DrmContext | None) -> ManifestPart:
    """What of a ``DrmContext`` shapes a manifest: the key id, the asset's key systems, the
    public base of licence URLs, the key-system selection and a digest of the caller's
    token."""
    if drm is None:
        return None
    selection = drm.selection.query_value() if drm.selection is not None else None
    return (drm.key.kid_hex, _system_names(drm.systems), drm.public_base, selection,
            _token_digest(drm.license_query))


def query_parts(query: PlaybackQuery) -> ManifestPart:
    """The normalised query that shapes a manifest: a digest of its tokens, key systems,
    filter parameters."""
    if query is NO_QUERY:
        return _NO_QUERY_PARTS
    selection = query.key_selection.query_value() if query.key_selection is not None else None
    tokens = _token_digest(repr(query.token_items)) if query.token_items else ""
    return (tokens, selection, tuple(query.filter.query_items()))


@functools.lru_cache(maxsize=MANIFEST_KEYS_REMEMBERED)
def manifest_key(*parts: ManifestPart) -> str:
    """A digest of a manifest's inputs (unambiguous: ``repr`` of the tuple; every part is a
    str, int, bool, None or tuple of them, each in a place of its own type).  Remembered
    for the ``MANIFEST_KEYS_REMEMBERED`` latest inputs, which hold token digests only."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _system_names(systems: tuple[KeySystem, ...]) -> tuple[str, ...]:
    return tuple([s._value_ for s in systems])  # ``_value_``: ``.value`` without the property


def _token_digest(text: str) -> str:
    """A digest standing for the caller's token in a manifest's inputs ("" for none)."""
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


_NO_QUERY_PARTS = query_parts(PlaybackQuery())


class SegmentCache:
    def __init__(self, settings: CacheSettings, threads: int = 1) -> None:
        self.enabled = settings.enabled
        self.memory = ByteLru(settings.memory_bytes) if self.enabled else None
        self.disk = (DiskStore(settings.disk_dir, settings.disk_bytes)
                     if self.enabled and settings.disk_dir is not None else None)
        self.stamps = SourceStamps() if self.enabled else SourceStamps(revalidate=0.0)
        # The buffers segments are read and encrypted in: a production holds two at most
        # (AES-128: a piece and the output), and a body one until its bytes are sent.
        self.pool = BufferPool(keep=2 * threads + 2)
        # Segments are read and encrypted on these threads, not the default executor's:
        # fewer threads than the default's cpu+4 contend less for the GIL (the parsing
        # and box building are Python), and OpenSSL and numpy release it anyway.
        self.threads = ThreadPoolExecutor(threads, thread_name_prefix="encrypt")
        # Bodies produced for one request and not yet in the kernel (or copied out for a
        # slow reader): a bound, so memory does not grow with clients that read slowly.
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._segments: SingleFlight[Stored | StoredFile] = SingleFlight()
        self._memory_file_failed = False
        self._manifests: SingleFlight[Stored] = SingleFlight()
        self.recent = RecentManifests()
        self._lookups = {
            (kind, tier, result): CACHE_LOOKUPS.labels(kind, tier, result)
            for kind in ("segment", "manifest") for tier in ("memory", "disk")
            for result in ("hit", "miss")
        }

    def __repr__(self) -> str:
        return f"SegmentCache({self.memory!r}, {self.disk!r})"

    async def open(self) -> None:
        if self.disk is not None:
            await self.disk.open()

    async def close(self) -> None:
        await self._segments.drain()
        await self._manifests.drain()
        await asyncio.get_running_loop().run_in_executor(None, self.threads.shutdown)
        if self.disk is not None:
            await self.disk.close()
        if self.memory is not None:
            m = self.memory
            log.info("cache memory: %d entries, %d bytes (bodies %d) of %d, peak %d, "
                     "%d evictions", len(m), m.used_bytes, m.body_bytes(), m.budget,
                     m.peak_bytes, m.evictions)

    # --- segments ---------------------------------------------------------------------------

    async def segment_etag(self, job: SegmentJob) -> str:
        """The ETag ``job`` produces, from its sources' stamps (nothing read or encrypted)."""
        stamps = await self.stamps.stamps(tuple(f.real_path for f in stamped_files(job)))
        return segment_etag(job, stamps[0], stamps[1] if len(stamps) > 1 else None)

    async def segment(self, job: SegmentJob,
                      etag: str | None) -> Stored | StoredFile | OnDisk | ProtectedSegment:
        """The protected body of ``job``, whose sources give ``etag``: from memory, from
        disk, or produced (once for all concurrent callers).  Off: always produced, in
        pooled buffers the caller releases once it has sent them."""
        if self.memory is None or etag is None:
            return await self.produce(job)
        key = "s" + etag
        found = self._memory_lookup("segment", key)
        if found is not None:
            return found
        name = file_name(etag)
        if self.disk is not None and self.disk.enabled and name is not None:
            path = await self.disk.lookup(name)
            self._lookups["segment", "disk", "hit" if path else "miss"].inc()
            if path is not None:
                return OnDisk(path, etag)
            found = self.memory.get(key)  # produced while the disk was asked
            if found is not None:
                return found
        return await self._segments.run(key, lambda: self._produce_and_keep(job, etag))

    async def read_disk(self, job: SegmentJob, stored: OnDisk) -> Stored | StoredFile:
        """The bytes of a body on disk (for requests a file response cannot answer)."""
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(None, stored.path.read_bytes)
        except OSError:
            name = file_name(stored.etag)
            if self.disk is not None and name is not None:
                self.disk.forget(name)
            return await self._segments.run("s" + stored.etag,
                                            lambda: self._produce_and_keep(job, stored.etag))
        return Stored(body, stored.etag)

    async def produce(self, job: SegmentJob) -> ProtectedSegment:
        """Read and protect ``job``'s segment on the production threads (no cache
        involved); the caller sends it and releases it, which also gives back its place
        among the ``IN_FLIGHT`` bodies a process produces ahead of its clients."""
        loop = asyncio.get_running_loop()
        await self._in_flight.acquire()
        place = _Place(self._in_flight, loop)
        try:
            segment = await loop.run_in_executor(self.threads, produce_segment, job, self.pool)
        except BaseException as exc:
            place.release()
            if isinstance(exc, OriginError):
                _log_not_produced(job, exc)
            raise
        segment = segment.holding(place)
        BYTES_ENCRYPTED.labels(job.scheme.value).inc(segment.size)
        log.debug("segment produced: %s %s, %d bytes", job.scheme.value, segment.etag,
                  segment.size)
        return segment

    async def _produce_and_keep(self, job: SegmentJob, expected: str) -> Stored | StoredFile:
        loop = asyncio.get_running_loop()
        try:
            kept = await loop.run_in_executor(self.threads, self._produce_kept, job)
        except OriginError as exc:
            _log_not_produced(job, exc)
            raise
        BYTES_ENCRYPTED.labels(job.scheme.value).inc(kept.size)
        log.debug("segment produced: %s %s, %d bytes", job.scheme.value, kept.etag, kept.size)
        if kept.file_error is not None and not self._memory_file_failed:
            log.info("memory file not made (%s); keeping bodies as bytes",
                     errno.errorcode.get(kept.file_error.errno or 0,
                                         type(kept.file_error).__name__))
            self._memory_file_failed = True
        stored: Stored | StoredFile
        if kept.file is not None:
            stored = StoredFile(kept.file, kept.etag)
        else:
            assert kept.body is not None
            stored = Stored(kept.body, kept.etag)
        if kept.etag != expected:  # a source changed since it was stamped
            for file in stamped_files(job):
                self.stamps.forget(file.real_path)
        if self.memory is not None:
            self.memory.put("s" + kept.etag, stored)
        name = file_name(kept.etag)
        if self.disk is not None and name is not None and kept.body is not None:
            self.disk.store(name, kept.body)
        return stored

    def _produce_kept(self, job: SegmentJob) -> _Kept:
        """Produce ``job`` and copy it out of its pooled buffers for keeping, in one
        executor job (blocking): into a memory file when it should be one, as bytes when
        it cannot be or when the disk tier wants them too."""
        segment = produce_segment(job, self.pool)
        try:
            file: MemoryFile | None = None
            error: OSError | None = None
            entry = segment.size + len(segment.etag) + ENTRY_OVERHEAD
            if (self.memory is not None and not self._memory_file_failed
                    and memory_file_wanted(segment.size) and entry <= self.memory.max_entry):
                try:
                    file = write_memory_file(segment.parts)
                except OSError as exc:  # no memory file (a file size limit, no fds): bytes
                    error = exc
            body = segment.take_bytes() if file is None or self.disk is not None else None
        finally:
            segment.release()
        return _Kept(segment.etag, segment.size, body, file, error)

    # --- manifests --------------------------------------------------------------------------

    async def manifest(self, parts: tuple[ManifestPart, ...], build: Build, *,
                       sources: tuple[str, ...] = (), fresh_for: float | None = None,
                       recall: Recall | None = None) -> Stored:
        """A rewritten manifest: cached under ``parts`` plus the stamps of the ``sources``
        files it is made from; ``fresh_for`` seconds at most when its sources are not all
        listed (a generated MPD reads many files).  With ``recall`` (a request shape and
        what else the answer was made from), the answer is remembered for
        ``recent_manifest`` (:mod:`origin.http.recent_manifests`)."""
        if self.memory is None:
            return Stored(body := await build(), body_etag(body))
        stamps = await self.stamps.stamps(sources) if sources else ()
        key = "m" + manifest_key(*parts, stamps)
        found = self._memory_lookup("manifest", key)
        if isinstance(found, Stored):  # never a StoredFile: only segments are kept in files
            stored = found
        else:
            stored = await self._manifests.run(key, lambda: self._build_and_keep(key, build,
                                                                                  fresh_for))
        if recall is not None:
            shape, generation, content_key, cache_control = recall
            self.recent.remember(shape, RecentAnswer(generation, content_key, stamps, key,
                                                     cache_control))
        return stored

    async def recent_manifest(self, shape: ManifestShape, generation: int,
                              content_key: ContentKey | None,
                              sources: tuple[str, ...] = ()) -> tuple[Stored, str] | None:
        """The cached body last answered for ``shape`` and its ``Cache-Control``, when it
        was made in this catalog ``generation`` with this ``content_key`` from sources
        whose stamps have not changed, and is still cached and fresh; else None, and
        nothing counted (the caller's ``manifest`` counts its own lookup)."""
        if self.memory is None:
            return None
        answer = self.recent.recall(shape, generation, content_key)
        if answer is None:
            return None
        if sources and await self.stamps.stamps(sources) != answer.stamps:
            return None
        found = self.memory.get(answer.cache_key)
        if not isinstance(found, Stored) or found.fresh_until <= time.monotonic():
            return None
        self._lookups["manifest", "memory", "hit"].inc()
        return found, answer.cache_control

    async def _build_and_keep(self, key: str, build: Build, fresh_for: float | None) -> Stored:
        body = await build()
        until = time.monotonic() + fresh_for if fresh_for is not None else float("inf")
        stored = Stored(body, body_etag(body), until)
        if self.memory is not None:
            self.memory.put(key, stored)
        return stored

    def _memory_lookup(self, kind: str, key: str) -> Entry | None:
        assert self.memory is not None
        found = self.memory.get(key)
        if found is not None and found.fresh_until <= time.monotonic():
            self.memory.discard(key)
            found = None
        self._lookups[kind, "memory", "hit" if found is not None else "miss"].inc()
        return found


class _Place:
    """One of the ``IN_FLIGHT`` places, held by a produced body until it is released
    (once); a body dropped unreleased (its connection gone before it was written) gives
    its place back when it is collected, through the loop."""

    __slots__ = ("_loop", "_semaphore")

    def __init__(self, semaphore: asyncio.Semaphore, loop: asyncio.AbstractEventLoop) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore
        self._loop = loop

    def release(self) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()

    def __del__(self) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(semaphore.release)


@dataclass(frozen=True, slots=True)
class _Kept:
    """A produced body copied out of its pooled buffers, as ``_produce_kept`` made it."""

    etag: str
    size: int
    body: bytes | None = field(repr=False)
    file: MemoryFile | None
    file_error: OSError | None


def _log_not_produced(job: SegmentJob, exc: OriginError) -> None:
    log.debug("segment not produced: %s %s: %s", job.scheme.value, job.file.rel,
              type(exc).__name__)


SEGMENT_CACHE: web.AppKey[SegmentCache] = web.AppKey("segment_cache", SegmentCache)


def segment_cache_ctx(
    settings: CacheSettings, threads: int = 1,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``cleanup_ctx`` that opens the cache (disk index, ``threads`` production
    threads) and closes it (pending writes, the threads)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.enabled and settings.disk_dir is not None:
            log.warning("--cache-bytes 0 turns the whole cache off: --cache-dir is not used")
        cache = SegmentCache(settings, threads)
        await cache.open()
        app[SEGMENT_CACHE] = cache
        yield
        await cache.close()

    return ctx
