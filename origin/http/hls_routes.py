"""``/hls/{asset}/{scheme}/…``: clear pass-through and on-request protection.

- ``clear``: files go out through sendfile (``web.FileResponse``: Range, 304,
  strong ETag).
- encrypted schemes: playlists are rewritten with key signalling; media
  segments are read and encrypted in the default executor (the cipher
  releases the GIL inside OpenSSL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiofiles
from aiohttp import web

from origin.crypto.key import ContentKey
from origin.errors import NotFound
from origin.http.catalog_service import CatalogService
from origin.http.key_client import KeyClient
from origin.http.ranges import respond_bytes
from origin.packaging.catalog import MediaFile, MediaKind
from origin.packaging.hls import (
    MAX_PLAYLIST_BYTES,
    KeyMethod,
    KeyTag,
    PlaylistKind,
    classify_playlist,
    decode_playlist,
    rewrite_media_playlist,
    rewrite_multivariant_playlist,
)
from origin.packaging.scheme import Scheme, parse_scheme
from origin.packaging.segments import ENCRYPTABLE, produce_segment, segment_iv

CATALOG: web.AppKey[CatalogService] = web.AppKey("catalog", CatalogService)
KEYS: web.AppKey[KeyClient] = web.AppKey("keys", KeyClient)

SEGMENT_CACHE_CONTROL = "public, max-age=86400"
PLAYLIST_CACHE_CONTROL = "no-cache"


def key_uri(key: ContentKey) -> str:
    return f"/license/aes128/{key.kid_hex}"


async def serve_hls(request: web.Request) -> web.StreamResponse:
    scheme = parse_scheme(request.match_info["scheme"])
    asset, file = await request.app[CATALOG].file(
        request.match_info["asset"], request.match_info["tail"]
    )
    if not scheme.encrypted or file.kind is MediaKind.SUBTITLE:
        return serve_clear_file(file)
    if file.kind is MediaKind.PLAYLIST:
        key = await request.app[KEYS].asset_key(asset.name)
        text = await read_playlist(file)
        body = protect_playlist(text, file.rel, scheme, key).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return respond_bytes(request, body, content_type=file.content_type, etag=etag,
                             cache_control=PLAYLIST_CACHE_CONTROL)
    if file.kind in ENCRYPTABLE:
        key = await request.app[KEYS].asset_key(asset.name)
        loop = asyncio.get_running_loop()
        segment = await loop.run_in_executor(None, produce_segment, file, scheme, key)
        return respond_bytes(request, segment.body, content_type=file.content_type,
                             etag=segment.etag, cache_control=SEGMENT_CACHE_CONTROL)
    raise NotFound("no such file in asset")


def serve_clear_file(file: MediaFile) -> web.FileResponse:
    cache = PLAYLIST_CACHE_CONTROL if file.kind is MediaKind.PLAYLIST else SEGMENT_CACHE_CONTROL
    return web.FileResponse(
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


def protect_playlist(text: str, rel: str, scheme: Scheme, key: ContentKey) -> str:
    if scheme is not Scheme.AES128:
        raise NotFound("unknown protection scheme")
    tag = KeyTag(KeyMethod.AES_128, key_uri(key))
    if classify_playlist(text) is PlaylistKind.MULTIVARIANT:
        return rewrite_multivariant_playlist(text, [tag])
    return rewrite_media_playlist(
        text, playlist_path=rel, keys=[tag],
        iv_for=lambda path: segment_iv(scheme, key, path),
    )

