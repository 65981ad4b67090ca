"""``/dash/{asset}/{scheme}/…``: MPDs with key signalling, and the same segments as HLS.

- ``manifest.mpd`` (and any other ``.mpd`` of the asset): the asset's own MPD
  edited, or one generated from its HLS renditions (:mod:`origin.packaging.dash`),
  built in the default executor (it reads media), ETag + 304 via ``respond_manifest``;
  cached in the segment cache under everything that shapes it — an edited MPD
  with its source file's stamp, a generated one (made from many files) for
  ``GENERATED_MPD_SECONDS`` at most, the bound the packaging layer's own
  skeleton cache revalidates its files with; a repeated request finds its
  answer from its shape (:mod:`origin.http.recent_manifests`);
- every other path: the very bytes ``/hls/{asset}/{scheme}/…`` serves for it,
  through the same helpers (sendfile for clear, the one segment pipeline for
  ``cenc``/``cbcs``).

Schemes: ``clear``, ``cenc``, ``cbcs``; anything else is 404.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from origin.errors import NotFound
from origin.http.cache_headers import manifest_cache_control
from origin.http.hls_routes import (
    CATALOG,
    KEYS,
    drm_context,
    public_base,
    serve_clear_file,
    serve_protected_segment,
)
from origin.http.manifest_response import respond_manifest
from origin.http.playback_query import parse_playback_query
from origin.http.recent_manifests import manifest_shape
from origin.http.segment_cache import SEGMENT_CACHE, query_parts, signalling_parts
from origin.packaging.catalog import Asset, MediaFile, MediaKind
from origin.packaging.dash import (
    DEFAULT_MANIFEST,
    REVALIDATE_SECONDS,
    produce_mpd,
    source_manifest,
)
from origin.packaging.scheme import Scheme, parse_scheme

DASH_SCHEMES = frozenset({Scheme.CLEAR, Scheme.CENC, Scheme.CBCS})
MPD_CONTENT_TYPE = "application/dash+xml"
GENERATED_MPD_SECONDS = REVALIDATE_SECONDS


async def serve_dash(request: web.Request) -> web.StreamResponse:
    scheme = parse_scheme(request.match_info["scheme"])
    if scheme not in DASH_SCHEMES:
        raise NotFound("unknown protection scheme")
    name, tail = request.match_info["asset"], request.match_info["tail"]
    service = request.app[CATALOG]
    if tail == DEFAULT_MANIFEST:
        asset = await service.asset(name)
        source = service.derived(asset, ("dash-source", asset.name, DEFAULT_MANIFEST),
                                 lambda: source_manifest(asset))
    elif tail.endswith(".mpd"):
        asset, found = await service.file(name, tail)
        source = source_manifest(asset, found.rel)
    else:
        asset, file = await service.file(name, tail)
        if file.kind in (MediaKind.PLAYLIST, MediaKind.MANIFEST):
            raise NotFound("no such file in asset")
        if not scheme.encrypted or file.kind is MediaKind.SUBTITLE:
            return serve_clear_file(file)
        return await serve_protected_segment(request, asset, file, scheme,
                                             await drm_context(request, asset))
    return await serve_mpd(request, asset, source, tail, scheme)


async def serve_mpd(request: web.Request, asset: Asset, source: MediaFile | None, tail: str,
                    scheme: Scheme) -> web.Response:
    """The MPD at ``tail``: ``source`` edited, or (None) one generated from the asset's HLS
    renditions; cached, and found from the request's shape first when it repeats
    (:mod:`origin.http.recent_manifests`)."""
    cache = request.app[SEGMENT_CACHE]
    sources = (source.real_path,) if source is not None else ()
    generation = request.app[CATALOG].generation
    content_key = request.app[KEYS].cached_key(asset.name) if scheme.encrypted else None
    shape = manifest_shape("dash", asset.name, tail, scheme.value, public_base(request),
                           request.rel_url.raw_query_string)
    if content_key is not None or not scheme.encrypted:
        recent = await cache.recent_manifest(shape, generation, content_key, sources)
        if recent is not None:
            return respond_manifest(request, recent[0], content_type=MPD_CONTENT_TYPE,
                                    cache_control=recent[1])
    query = parse_playback_query(request.query)
    signalling = await drm_context(request, asset, query) if scheme.encrypted else None

    async def build() -> bytes:
        return await asyncio.get_running_loop().run_in_executor(
            None, produce_mpd, asset, source, scheme.common, signalling, query.filter)

    parts = ("dash", asset.name, source.rel if source is not None else asset.default_playlist,
             source is None, scheme.value, signalling_parts(signalling), query_parts(query))
    cache_control = manifest_cache_control(bool(query.token_items))
    recall = (shape, generation, signalling.key if signalling is not None else None,
              cache_control)
    if source is not None:
        stored = await cache.manifest(parts, build, sources=sources, recall=recall)
    else:
        stored = await cache.manifest(parts, build, fresh_for=GENERATED_MPD_SECONDS,
                                      recall=recall)
    return respond_manifest(request, stored, content_type=MPD_CONTENT_TYPE,
                            cache_control=cache_control)
