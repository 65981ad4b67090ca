"""``/api/assets`` and ``/healthz``: what the origin serves and that it is alive."""

from __future__ import annotations

from aiohttp import web

from origin.http.hls_routes import CATALOG
from origin.packaging.catalog import Asset
from origin.packaging.scheme import TS_SCHEMES, Scheme

DASH_SCHEMES = (Scheme.CLEAR, Scheme.CENC, Scheme.CBCS)


def asset_urls(asset: Asset) -> dict[str, dict[str, str]]:
    """Playlist URLs per multivariant playlist and the schemes its media can take."""
    return {
        playlist: {s.value: f"/hls/{asset.name}/{s.value}/{playlist}"
                   for s in (TS_SCHEMES if playlist in asset.transport_stream else Scheme)}
        for playlist in asset.multivariant
    }


async def list_assets(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG].catalog
    return web.json_response({
        "assets": [
            {"name": a.name, "default": a.default_playlist, "hls": asset_urls(a),
             "dash": {s.value: f"/dash/{a.name}/{s.value}/manifest.mpd" for s in DASH_SCHEMES}}
            for a in catalog.assets.values()
        ]
    })


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
