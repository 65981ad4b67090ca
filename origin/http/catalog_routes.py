"""``/``, ``/api/assets`` and ``/healthz``: what the origin serves and that it is alive."""

from __future__ import annotations

import html

from aiohttp import web

from origin.http.hls_routes import CATALOG
from origin.packaging.catalog import Asset
from origin.packaging.scheme import Scheme


def asset_urls(asset: Asset) -> dict[str, dict[str, str]]:
    """Playlist URLs per multivariant playlist and scheme."""
    return {
        playlist: {s.value: f"/hls/{asset.name}/{s.value}/{playlist}" for s in Scheme}
        for playlist in asset.multivariant
    }


async def list_assets(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG].catalog
    return web.json_response({
        "assets": [
            {"name": a.name, "default": a.default_playlist, "hls": asset_urls(a)}
            for a in catalog.assets.values()
        ]
    })


async def index_page(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG].catalog
    rows = []
    for asset in catalog.assets.values():
        for playlist, urls in asset_urls(asset).items():
            links = " · ".join(
                f'<a href="{html.escape(u)}">{html.escape(s)}</a>' for s, u in urls.items()
            )
            rows.append(f"<tr><td>{html.escape(asset.name)}</td>"
                        f"<td>{html.escape(playlist)}</td><td>{links}</td></tr>")
    page = (
        "<!doctype html><meta charset=utf-8><title>origin</title>"
        "<h1>origin</h1><table><tr><th>asset</th><th>playlist</th><th>HLS</th></tr>"
        + "".join(rows) + "</table>"
    )
    return web.Response(text=page, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
