"""``GET /api/assets/{asset}/playback``: the playback context of an asset.

What the Kaltura player SDK's ``getLicenseData(entry, flavorId)`` gives a
player, in one answer: per format and scheme the manifest URL; per key system
the licence URL (carrying the caller's query token), the certificate URL
(FairPlay), the key ids, the encryption schemes it can play, and whether a
persistent (offline) licence is allowed — enough for a player to configure
itself with nothing else.

- ``flavor`` (optional) pins one video rendition (its id as in the DASH
  ``Representation@id``, e.g. ``video-720p``); every manifest URL carries it.
  An unknown flavor is 400.
- Key systems are listed only where they can work: enabled for the asset
  (``asset.json``) and, for FairPlay, Widevine and PlayReady, configured in the
  licence module.
- The policy comes from the licence module (internal API); a policy change is
  visible at once (not cached).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from origin.errors import BadRequest
from origin.http.catalog_routes import DASH_SCHEMES
from origin.http.hls_routes import CATALOG, KEYS, public_base, read_playlist
from origin.http.key_client import PlaybackInfo
from origin.http.playback_query import parse_playback_query
from origin.packaging.catalog import Asset
from origin.packaging.dash import rendition_ids
from origin.packaging.hls import parse_multivariant_playlist
from origin.packaging.key_system import KeySystem
from origin.packaging.scheme import TS_SCHEMES, Scheme

# EME key system names (W3C EME registry; Apple's for FairPlay).
EME_NAMES = {
    KeySystem.CLEARKEY: "org.w3.clearkey",
    KeySystem.FAIRPLAY: "com.apple.fps",
    KeySystem.WIDEVINE: "com.widevine.alpha",
    KeySystem.PLAYREADY: "com.microsoft.playready",
}
SCHEMES_OF = {
    KeySystem.CLEARKEY: ("cenc", "cbcs"),
    KeySystem.FAIRPLAY: ("cbcs",),
    KeySystem.WIDEVINE: ("cenc", "cbcs"),
    KeySystem.PLAYREADY: ("cenc", "cbcs"),
}


async def playback_context(request: web.Request) -> web.Response:
    asset = await request.app[CATALOG].asset(request.match_info["asset"])
    query = parse_playback_query(request.query)
    flavor = request.query.get("flavor")
    if flavor is not None and flavor not in await flavors(asset):
        raise BadRequest("unknown flavor")
    info = await request.app[KEYS].playback_info(asset.name)
    base = public_base(request)
    token = query.license_query
    pin = [("flavor", flavor)] if flavor else []
    manifest_query = urlencode(pin + list(query.token_items))
    offline_query = urlencode([("profile", "offline"), *pin, *query.token_items])
    body = {
        "asset": asset.name,
        "flavor": flavor,
        "key_ids": [str(uuid.UUID(bytes=info.kid))],
        "token_required": info.restriction == "token",
        "offline": {
            "allowed": info.offline_allowed,
            "license_duration_s": info.license_duration_s,
            "rental_duration_s": info.rental_duration_s,
            # AVAssetDownloadTask (HLS, FairPlay: cbcs) and ExoPlayer downloads (DASH).
            "download_manifests": {
                "hls": _url(base, f"/hls/{asset.name}/cbcs/{asset.default_playlist}",
                            offline_query),
                "dash": _url(base, f"/dash/{asset.name}/cenc/manifest.mpd", offline_query),
            },
        },
        "manifests": _manifests(asset, base, manifest_query),
        "key_systems": _key_systems(asset, info, base, token),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def flavors(asset: Asset) -> set[str]:
    """The rendition ids of the asset's default multivariant playlist's variants."""
    rel = asset.default_playlist
    text = await read_playlist(asset.file(rel))
    info = parse_multivariant_playlist(text, rel)
    return set(rendition_ids([v.path for v in info.variants]).values())


def _url(base: str, path: str, query: str) -> str:
    return base + path + ("?" + query if query else "")


def _manifests(asset: Asset, base: str, query: str) -> dict[str, Any]:
    hls = {
        playlist: {
            s.value: _url(base, f"/hls/{asset.name}/{s.value}/{playlist}", query)
            for s in (TS_SCHEMES if playlist in asset.transport_stream else Scheme)
        }
        for playlist in asset.multivariant
    }
    dash = {s.value: _url(base, f"/dash/{asset.name}/{s.value}/manifest.mpd", query)
            for s in DASH_SCHEMES}
    return {"hls": hls, "dash": dash}


def _key_systems(asset: Asset, info: PlaybackInfo, base: str,
                 token: str) -> list[dict[str, Any]]:
    enabled = asset.config.require_valid().key_systems
    configured = {
        KeySystem.CLEARKEY: True,
        KeySystem.FAIRPLAY: info.fairplay,
        KeySystem.WIDEVINE: info.widevine,
        KeySystem.PLAYREADY: info.playready,
    }
    kid = str(uuid.UUID(bytes=info.kid))
    out: list[dict[str, Any]] = [{
        "name": "aes128",
        "key_url": _url(base, f"/license/aes128/{info.kid.hex()}", token),
        "schemes": ["aes128", "sample-aes"],
        "key_ids": [kid],
        "offline_allowed": info.offline_allowed,
    }]
    for system in enabled:
        if not configured[system]:
            continue
        entry: dict[str, Any] = {
            "name": EME_NAMES[system],
            "license_url": _url(base, f"/license/{system.value}", token),
            "schemes": list(SCHEMES_OF[system]),
            "key_ids": [kid],
            "offline_allowed": info.offline_allowed,
        }
        if system is KeySystem.FAIRPLAY:
            entry["certificate_url"] = base + "/license/fairplay/certificate"
            entry["content_id"] = info.kid.hex()
        out.append(entry)
    return out
