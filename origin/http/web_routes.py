"""``/`` and ``/web/…``: the test player page and the few files it needs.

Only an allow-list of files is served, by name; nothing under the web folder
is reachable by path.  Shaka Player comes from the npm package installed in
``<web-dir>/node_modules`` (``make web``); without it the page still lists the
catalog and says how to install the player.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from origin.errors import NotFound

WEB_DIR: web.AppKey[Path] = web.AppKey("web_dir", Path)

PAGE = "index.html"
FILES = {
    "player.js": ("player.js", "text/javascript"),
    "player.css": ("player.css", "text/css"),
    "shaka-player.compiled.js": (
        "node_modules/shaka-player/dist/shaka-player.compiled.js", "text/javascript",
    ),
}


def _file(request: web.Request, rel: str, content_type: str) -> web.FileResponse:
    path = request.app[WEB_DIR] / rel
    if not path.is_file():
        raise NotFound("not installed: run make web")
    return web.FileResponse(path, headers={"Content-Type": content_type,
                                           "Cache-Control": "no-cache"})


async def player_page(request: web.Request) -> web.FileResponse:
    return _file(request, PAGE, "text/html; charset=utf-8")


async def web_file(request: web.Request) -> web.FileResponse:
    found = FILES.get(request.match_info["name"])
    if found is None:
        raise NotFound("no such file")
    return _file(request, *found)
