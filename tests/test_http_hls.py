"""The HLS routes against a real origin on loopback: clear pass-through and AES-128."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import m3u8
import pytest
from multidict import CIMultiDict

from origin.crypto.aes128 import decrypt_segment
from tests.conftest import DEMO, RunningOrigin

ASSET = "demo"
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9A-F]{32})$')


async def fetch(url: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def media_playlists() -> list[str]:
    out = []
    for name in ("master.m3u8", "master-ts.m3u8"):
        master = m3u8.load(str(DEMO / name))
        out += [p.uri for p in master.playlists]
        out += [m.uri for m in master.media if m.uri]
    return out


async def test_clear_playlist_passes_through(origin_server: RunningOrigin) -> None:
    status, headers, body = await fetch(f"{origin_server.base}/hls/{ASSET}/clear/master.m3u8")
    assert status == 200
    assert body == (DEMO / "master.m3u8").read_bytes()
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["ETag"].startswith('"')  # strong, not W/


@pytest.mark.parametrize(("path", "ctype"), [
    ("video-360p/init.mp4", "video/mp4"),
    ("video-360p/seg-00001.m4s", "video/mp4"),
    ("audio-en/seg-00001.m4s", "audio/mp4"),
    ("ts-360p/seg-00001.ts", "video/mp2t"),
])
async def test_clear_segments_content_type_range_and_304(
    origin_server: RunningOrigin, path: str, ctype: str
) -> None:
    url = f"{origin_server.base}/hls/{ASSET}/clear/{path}"
    data = (DEMO / path).read_bytes()
    status, headers, body = await fetch(url)
    assert (status, body) == (200, data)
    assert headers["Content-Type"] == ctype
    etag = headers["ETag"]
    status, _, body = await fetch(url, **{"If-None-Match": etag})
    assert (status, body) == (304, b"")
    status, headers, body = await fetch(url, Range="bytes=10-109")
    assert status == 206
    assert body == data[10:110]
    assert headers["Content-Range"] == f"bytes 10-109/{len(data)}"
    status, headers, _ = await fetch(url, Range=f"bytes={len(data) + 10}-")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(data)}"


async def test_aes128_multivariant_has_session_key(origin_server: RunningOrigin) -> None:
    status, headers, body = await fetch(f"{origin_server.base}/hls/{ASSET}/aes128/master.m3u8")
    assert status == 200
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    text = body.decode()
    session = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-SESSION-KEY:")]
    assert len(session) == 1
    assert re.fullmatch(r'#EXT-X-SESSION-KEY:METHOD=AES-128,URI="/license/aes128/[0-9a-f]{32}"',
                        session[0])
    source = (DEMO / "master.m3u8").read_text().splitlines()
    assert [ln for ln in text.splitlines() if ln not in session] == source


@pytest.mark.parametrize("playlist", media_playlists())
async def test_aes128_segments_decrypt_to_the_clear_files(
    origin_server: RunningOrigin, playlist: str
) -> None:
    base = f"{origin_server.base}/hls/{ASSET}/aes128/{playlist}"
    status, _, body = await fetch(base)
    assert status == 200
    lines = body.decode().splitlines()
    folder = playlist.rsplit("/", 1)[0]
    checked = 0
    key_cache: dict[str, bytes] = {}
    for i, line in enumerate(lines):
        target = None
        if line.startswith("#EXT-X-MAP:"):
            target = re.search(r'URI="([^"]+)"', line).group(1)  # type: ignore[union-attr]
        elif line and not line.startswith("#"):
            target = line
        if target is None:
            continue
        match = KEY_LINE.match(lines[i - 1])
        assert match, f"no key before {target}"
        uri, iv_hex = match.groups()
        if uri not in key_cache:
            status, headers, key = await fetch(origin_server.base + uri)
            assert status == 200
            assert headers["Cache-Control"] == "no-store"
            assert len(key) == 16
            key_cache[uri] = key
        status, headers, enc = await fetch(f"{origin_server.base}/hls/{ASSET}/aes128/"
                                           f"{folder}/{target}")
        assert status == 200
        clear = (DEMO / folder / target).read_bytes()
        assert enc != clear
        assert len(enc) == (len(clear) // 16 + 1) * 16
        assert decrypt_segment(key_cache[uri], bytes.fromhex(iv_hex), enc) == clear
        checked += 1
    assert checked >= 6
    assert len(key_cache) == 1
    # The origin's and the licence module's logs (one file) never carry key bytes.
    log = origin_server.log_text().lower()
    assert all(key.hex() not in log for key in key_cache.values())


async def test_encrypted_segment_is_deterministic_with_range_and_304(
    origin_server: RunningOrigin,
) -> None:
    url = f"{origin_server.base}/hls/{ASSET}/aes128/video-720p/seg-00002.m4s"
    s1, h1, b1 = await fetch(url)
    s2, h2, b2 = await fetch(url)
    assert s1 == s2 == 200
    assert b1 == b2
    assert h1["ETag"] == h2["ETag"]
    assert not h1["ETag"].startswith("W/")
    status, _, body = await fetch(url, **{"If-None-Match": h1["ETag"]})
    assert (status, body) == (304, b"")
    status, headers, body = await fetch(url, Range="bytes=-100")
    assert status == 206
    assert body == b1[-100:]
    assert headers["Content-Range"] == f"bytes {len(b1) - 100}-{len(b1) - 1}/{len(b1)}"


async def test_key_route_errors(origin_server: RunningOrigin) -> None:
    status, headers, body = await fetch(f"{origin_server.base}/license/aes128/not-a-kid")
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    status, _, body = await fetch(f"{origin_server.base}/license/aes128/{'ab' * 16}")
    assert status == 404
    assert b"error" in body


@pytest.mark.parametrize("url", [
    "/hls/nosuchasset/clear/master.m3u8",
    "/hls/demo/clear/nosuchfile.m3u8",
    "/hls/demo/rot13/master.m3u8",
    "/hls/demo/aes128/nosuch/seg-00001.m4s",
    "/nothing-here",
])
async def test_unknown_things_are_404_json(origin_server: RunningOrigin, url: str) -> None:
    status, headers, body = await fetch(origin_server.base + url)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert b"Traceback" not in body


async def test_cors_preflight_for_licence_post(origin_server: RunningOrigin) -> None:
    async with aiohttp.ClientSession() as session, session.options(
        f"{origin_server.base}/license/aes128/{'ab' * 16}",
        headers={"Origin": "http://player.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"},
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type,authorization"


async def test_catalog_api_lists_demo(origin_server: RunningOrigin) -> None:
    status, _, body = await fetch(f"{origin_server.base}/api/assets")
    assert status == 200
    import json

    doc = json.loads(body)
    demo = next(a for a in doc["assets"] if a["name"] == "demo")
    assert demo["hls"]["master.m3u8"]["aes128"] == "/hls/demo/aes128/master.m3u8"
    assert "master-ts.m3u8" in demo["hls"]


def test_demo_media_is_present() -> None:
    assert (DEMO / "master.m3u8").is_file()
    assert Path(DEMO / "master-ts.m3u8").is_file()


async def test_player_page_and_its_files(origin_server: RunningOrigin) -> None:
    status, headers, body = await fetch(f"{origin_server.base}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/web/shaka-player.compiled.js" in body and b"/web/player.js" in body
    status, headers, body = await fetch(f"{origin_server.base}/web/shaka-player.compiled.js")
    assert status == 200 and len(body) > 100_000
    assert headers["Content-Type"].startswith("text/javascript")
    status, _, body = await fetch(f"{origin_server.base}/web/player.js")
    assert status == 200 and b"/license/clearkey" in body
    for name in ("package.json", "..%2Fpyproject.toml", "node_modules", "index.html.bak"):
        status, _, _ = await fetch(f"{origin_server.base}/web/{name}")
        assert status == 404, name


async def test_catalog_offers_only_the_schemes_each_playlist_can_take(
    origin_server: RunningOrigin,
) -> None:
    import json

    _, _, body = await fetch(f"{origin_server.base}/api/assets")
    demo = next(a for a in json.loads(body)["assets"] if a["name"] == "demo")
    assert sorted(demo["hls"]["master-ts.m3u8"]) == ["aes128", "clear", "sample-aes"]
    assert sorted(demo["hls"]["master.m3u8"]) == ["aes128", "cbcs", "cenc", "clear",
                                                  "sample-aes"]
    for playlist, urls in demo["hls"].items():
        for url in urls.values():
            status, _, _ = await fetch(origin_server.base + url)
            assert status == 200, (playlist, url)
