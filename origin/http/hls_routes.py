"""``/hls/{asset}/{scheme}/…``: clear pass-through and on-request protection.

- ``clear``: files go out as they are (``web.FileResponse``: Range, 304, strong
  ETag; a file changed under its download is cut short, ``origin.http.intact_file``).
- encrypted schemes: playlists are rewritten with key signalling; media
  segments are read and encrypted on the segment cache's production threads
  (the cipher releases the GIL inside OpenSSL), never on the event loop; a
  segment produced for one request goes out from its pooled buffers
  (:mod:`origin.http.produced_response`).
- rewritten playlists and protected segments go through the segment cache
  (:mod:`origin.http.segment_cache`): a segment's ETag is known from its
  sources' stamps, so ``If-None-Match`` is a 304 before any work; hits come
  from memory or, with a disk tier, from a file.  ``Cache-Control`` follows
  :mod:`origin.http.cache_headers`.
"""

from __future__ import annotations

import asyncio

import aiofiles
from aiohttp import hdrs, web

from origin.errors import MalformedMedia, NotFound
from origin.http.byte_lru import Stored, StoredFile
from origin.http.cache_headers import (
    MANIFEST_CACHE_CONTROL,
    SEGMENT_CACHE_CONTROL,
    manifest_cache_control,
)
from origin.http.catalog_service import CatalogService
from origin.http.intact_file import IntactFileResponse
from origin.http.key_client import KeyClient
from origin.http.manifest_response import respond_manifest
from origin.http.memory_file import MemoryFileResponse, read_memory_file
from origin.http.playback_query import PlaybackQuery, parse_playback_query
from origin.http.produced_response import ProducedResponse
from origin.http.ranges import respond_bytes
from origin.http.recent_manifests import manifest_shape
from origin.http.segment_cache import (
    SEGMENT_CACHE,
    OnDisk,
    query_parts,
    signalling_parts,
)
from origin.http.stored_response import (
    StoredFileResponse,
    file_can_answer,
    if_none_match_hits,
    not_modified,
)
from origin.packaging.catalog import Asset, MediaFile, MediaKind
from origin.packaging.drm import DrmContext, hls_key_tags, hls_ts_key_tags
from origin.packaging.hls import (
    MAX_PLAYLIST_BYTES,
    KeyMethod,
    KeyTag,
    PlaylistKind,
    append_query_to_playlist_uris,
    classify_playlist,
    decode_playlist,
    filter_multivariant_playlist,
    resolve_segment_path,
    rewrite_media_playlist,
    rewrite_multivariant_playlist,
)
from origin.packaging.scheme import Scheme, parse_scheme
from origin.packaging.segments import (
    ENCRYPTABLE,
    ProtectedSegment,
    SegmentJob,
    rendition_iv,
    segment_iv,
)

CATALOG: web.AppKey[CatalogService] = web.AppKey("catalog", CatalogService)
KEYS: web.AppKey[KeyClient] = web.AppKey("keys", KeyClient)
PUBLIC_URL: web.AppKey[str] = web.AppKey("public_url", str)


async def serve_hls(request: web.Request) -> web.StreamResponse:
    scheme = parse_scheme(request.match_info["scheme"])
    asset, file = await request.app[CATALOG].file(
        request.match_info["asset"], request.match_info["tail"]
    )
    if file.kind is MediaKind.PLAYLIST:
        return await serve_playlist(request, asset, file, scheme)
    if not scheme.encrypted or file.kind is MediaKind.SUBTITLE:
        return serve_clear_file(file)
    if file.kind not in ENCRYPTABLE:
        raise NotFound("no such file in asset")
    drm = await drm_context(request, asset)
    return await serve_protected_segment(request, asset, file, scheme, drm)


async def drm_context(request: web.Request, asset: Asset,
                      query: PlaybackQuery | None = None) -> DrmContext:
    """The asset's key (from the licence module) and this request's signalling context."""
    config = asset.config.require_valid()
    keys = request.app[KEYS]
    key = keys.cached_key(asset.name)
    if key is None:
        key = await keys.asset_key(asset.name)
    if query is None:
        return DrmContext(key, config.key_systems, public_base(request))
    return DrmContext(key, config.key_systems, public_base(request),
                      selection=query.key_selection, license_query=query.license_query)


async def serve_playlist(request: web.Request, asset: Asset, file: MediaFile,
                         scheme: Scheme) -> web.StreamResponse:
    """A playlist: as it is when clear and unfiltered, else rewritten and cached under its
    source's stamp and everything else that shapes it (asset, path, scheme, whether it
    leads to MPEG-TS, signalling, the normalised query).  A repeated request finds its
    cached answer from its shape first (:mod:`origin.http.recent_manifests`)."""
    cache = request.app[SEGMENT_CACHE]
    sources = (file.real_path,)
    generation = request.app[CATALOG].generation
    content_key = request.app[KEYS].cached_key(asset.name) if scheme.encrypted else None
    shape = manifest_shape("hls", asset.name, file.rel, scheme.value, public_base(request),
                           request.rel_url.raw_query_string)
    if content_key is not None or not scheme.encrypted:
        recent = await cache.recent_manifest(shape, generation, content_key, sources)
        if recent is not None:
            return respond_manifest(request, recent[0], content_type=file.content_type,
                                    cache_control=recent[1])
    query = parse_playback_query(request.query)
    if not scheme.encrypted and not query.filter.active:
        return serve_clear_file(file)
    drm = await drm_context(request, asset, query) if scheme.encrypted else None

    async def build() -> bytes:
        text = edit_playlist(await read_playlist(file), file.rel, scheme, drm, asset, query)
        return text.encode()

    parts = ("hls", asset.name, file.rel, scheme.value, file.rel in asset.transport_stream,
             signalling_parts(drm), query_parts(query))
    cache_control = manifest_cache_control(bool(query.token_items))
    stored = await cache.manifest(parts, build, sources=sources, recall=(
        shape, generation, drm.key if drm is not None else None, cache_control))
    return respond_manifest(request, stored, content_type=file.content_type,
                            cache_control=cache_control)


def edit_playlist(text: str, rel: str, scheme: Scheme, drm: DrmContext | None, asset: Asset,
                  query: PlaybackQuery) -> str:
    """Filter (multivariant only), add key signalling, pass the query on to media playlists."""
    multivariant = classify_playlist(text) is PlaylistKind.MULTIVARIANT
    if multivariant and query.filter.active:
        text = filter_multivariant_playlist(text, rel, query.filter)
    if drm is not None:
        text = protect_playlist(text, rel, scheme, drm, asset)
    if multivariant:
        text = append_query_to_playlist_uris(text, query.media_playlist_query)
    return text


async def serve_protected_segment(request: web.Request, asset: Asset, file: MediaFile,
                                  scheme: Scheme, drm: DrmContext) -> web.StreamResponse:
    """A media segment or init under an encrypting scheme (HLS and DASH share this).

    The ETag first (from the sources' stamps: with the cache off, only when the request
    is conditional), a 304 if it matches, then the body from memory, disk or the cipher.
    """
    if file.kind not in ENCRYPTABLE:
        raise NotFound("not a media segment")
    init = asset.files.get(file.init) if file.init is not None else None
    job = SegmentJob(file, scheme, drm, init)
    cache = request.app[SEGMENT_CACHE]
    etag = None
    if cache.enabled or "If-None-Match" in request.headers:
        etag = await cache.segment_etag(job)
        if if_none_match_hits(request, etag):
            return not_modified(etag, SEGMENT_CACHE_CONTROL)
    found = await cache.segment(job, etag)
    if isinstance(found, ProtectedSegment):  # produced for this request alone
        if hdrs.RANGE not in request.headers:
            return ProducedResponse(found, content_type=file.content_type, headers={
                hdrs.ETAG: found.etag, hdrs.CACHE_CONTROL: SEGMENT_CACHE_CONTROL,
                hdrs.ACCEPT_RANGES: "bytes"})
        return respond_bytes(request, found.take_bytes(), content_type=file.content_type,
                             etag=found.etag, cache_control=SEGMENT_CACHE_CONTROL)
    if isinstance(found, OnDisk):
        if file_can_answer(request):
            return StoredFileResponse(found.path, found.etag, {
                "Content-Type": file.content_type, "Cache-Control": SEGMENT_CACHE_CONTROL})
        found = await cache.read_disk(job, found)
    if isinstance(found, StoredFile):
        if hdrs.RANGE not in request.headers:  # Range and If-Range: from the bytes, below
            return MemoryFileResponse(found.body, content_type=file.content_type, headers={
                hdrs.ETAG: found.etag, hdrs.CACHE_CONTROL: SEGMENT_CACHE_CONTROL,
                hdrs.ACCEPT_RANGES: "bytes"})
        loop = asyncio.get_running_loop()
        found = Stored(await loop.run_in_executor(None, read_memory_file, found.body),
                       found.etag)
    return respond_bytes(request, found.body, content_type=file.content_type, etag=found.etag,
                         cache_control=SEGMENT_CACHE_CONTROL)


def public_base(request: web.Request) -> str:
    """Base URL for absolute licence URLs: ``--public-url``, else the request's own host."""
    configured = request.app[PUBLIC_URL]
    return configured or f"{request.scheme}://{request.host}"


def serve_clear_file(file: MediaFile) -> web.FileResponse:
    """A file as it is, through ``FileResponse`` (clear playlists carry no token; Range
    as ``origin.http.file_ranges`` says; whole or cut short, as ``origin.http.intact_file``
    says)."""
    cache = MANIFEST_CACHE_CONTROL if file.kind is MediaKind.PLAYLIST else SEGMENT_CACHE_CONTROL
    return IntactFileResponse(
        file.real_path,
        headers={"Content-Type": file.content_type, "Cache-Control": cache},
    )


async def read_playlist(file: MediaFile) -> str:
    try:
        async with aiofiles.open(file.real_path, "rb") as fh:
            raw = await fh.read(MAX_PLAYLIST_BYTES + 1)
    except FileNotFoundError:
        raise NotFound("no such file in asset") from None
    return decode_playlist(raw)


def protect_playlist(text: str, rel: str, scheme: Scheme, drm: DrmContext,
                     asset: Asset) -> str:
    key = drm.key
    common = scheme.common
    kind = classify_playlist(text)
    if scheme is Scheme.SAMPLE_AES and (ts_folder := transport_stream_folder(text, rel, kind,
                                                                             asset)) is not None:
        iv = rendition_iv(key, ts_folder) if kind is PlaylistKind.MEDIA else None
        tags = hls_ts_key_tags(drm, iv)
        iv_for = None
    elif common is not None:
        tags = hls_key_tags(drm, common)
        iv_for = None
    elif scheme is Scheme.AES128:
        tags = [KeyTag(KeyMethod.AES_128, drm.key_route)]

        def iv_for(path: str) -> bytes:
            return segment_iv(scheme, key, path)
    else:
        raise NotFound("unknown protection scheme")
    if kind is PlaylistKind.MULTIVARIANT:
        return rewrite_multivariant_playlist(text, tags)
    return rewrite_media_playlist(text, playlist_path=rel, keys=tags, iv_for=iv_for)


def transport_stream_folder(text: str, rel: str, kind: PlaylistKind, asset: Asset) -> str | None:
    """The folder of the MPEG-TS segments a playlist leads to, or None for fMP4.

    A media playlist's segments must share one folder (one SAMPLE-AES IV per
    rendition); a multivariant playlist is judged by its first variant.
    """
    uris = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not uris:
        return None
    if kind is PlaylistKind.MULTIVARIANT:
        variant = asset.files.get(resolve_segment_path(rel, uris[0]))
        if variant is None:
            return None
        folder = variant.rel.rsplit("/", 1)[0] if "/" in variant.rel else ""
        prefix = folder + "/" if folder else ""
        ts = any(f.kind is MediaKind.TS_SEGMENT for r, f in asset.files.items()
                 if r.startswith(prefix) and "/" not in r[len(prefix):])
        return folder if ts else None
    paths = [resolve_segment_path(rel, uri) for uri in uris]
    if not all(p.endswith(".ts") for p in paths):
        return None
    folders = {p.rsplit("/", 1)[0] if "/" in p else "" for p in paths}
    if len(folders) != 1:
        raise MalformedMedia("SAMPLE-AES needs a rendition's segments in one folder")
    return folders.pop()

