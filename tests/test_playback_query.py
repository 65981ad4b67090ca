"""Manifest query parameters over HTTP: token propagation, key_systems, the playback context."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.conftest import RunningOrigin

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def key_uris(text: str) -> list[str]:
    return re.findall(r'#EXT-X-(?:SESSION-)?KEY:.*?URI="([^"]*)"', text)


def uri_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def query_of(uri: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(uri).query)


@pytest.mark.parametrize("scheme", ["aes128", "cbcs", "cenc"])
async def test_token_reaches_every_licence_uri_through_the_multivariant_playlist(
    origin_server: RunningOrigin, scheme: str
) -> None:
    base = origin_server.base
    status, master = await get(f"{base}/hls/demo/{scheme}/master.m3u8?token={TOKEN}")
    assert status == 200
    variants = uri_lines(master) + re.findall(r'#EXT-X-MEDIA:.*URI="([^"]*)"', master)
    assert len(variants) == 3
    for uri in variants:
        assert query_of(uri) == {"token": [TOKEN]}, uri
    for uri in key_uris(master):  # EXT-X-SESSION-KEY
        if not uri.startswith("data:"):
            assert query_of(uri)["token"] == [TOKEN], uri
    # Follow the variant URI as a player would: the media playlist's key URIs carry the token.
    status, media = await get(f"{base}/hls/demo/{scheme}/{variants[0]}")
    assert status == 200
    licence_uris = [u for u in key_uris(media) if not u.startswith("data:")]
    assert licence_uris
    for uri in licence_uris:
        assert query_of(uri) == {"token": [TOKEN]}, uri
        assert uri.startswith(("/license/aes128/", "skd://"))
    # Segment URIs are left alone: segments need no token.
    assert all("token" not in uri for uri in uri_lines(media))


async def test_no_token_no_query(origin_server: RunningOrigin) -> None:
    _, master = await get(f"{origin_server.base}/hls/demo/cbcs/master.m3u8")
    assert all("?" not in uri for uri in uri_lines(master))
    _, media = await get(f"{origin_server.base}/hls/demo/cbcs/video-360p/index.m3u8")
    assert all("?" not in uri for uri in key_uris(media))


async def test_kaltura_ks_travels_too_and_header_tokens_never_do(
    origin_server: RunningOrigin
) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        f"{origin_server.base}/hls/demo/aes128/video-360p/index.m3u8",
        params={"ks": "djJ8MTk4fHFN"}, headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        text = await resp.text()
    uris = key_uris(text)
    assert uris and all(query_of(u) == {"ks": ["djJ8MTk4fHFN"]} for u in uris)
    assert TOKEN not in text


async def test_token_cannot_break_the_playlist(origin_server: RunningOrigin) -> None:
    hostile = 'x",URI="https://evil.example/k"\n#EXT-X-ENDLIST\n'
    async with aiohttp.ClientSession() as session, session.get(
        f"{origin_server.base}/hls/demo/aes128/video-360p/index.m3u8", params={"token": hostile}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "evil.example/k\"" not in text
    assert text.count("#EXT-X-ENDLIST") == 1
    for uri in key_uris(text):
        assert query_of(uri) == {"token": [hostile]}


async def test_dash_laurl_carries_the_token(origin_server: RunningOrigin) -> None:
    status, mpd = await get(f"{origin_server.base}/dash/demo/cenc/manifest.mpd?token={TOKEN}")
    assert status == 200
    laurls = re.findall(r"<(?:\w+:)?Laurl[^>]*>([^<]*)<", mpd)
    assert laurls
    for url in laurls:
        assert url.startswith(origin_server.base + "/license/clearkey?")
        assert query_of(url.replace("&amp;", "&")) == {"token": [TOKEN]}


@pytest.mark.parametrize(("query", "expected"), [
    ("", {"com.apple.streamingkeydelivery", "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
          "com.microsoft.playready", "org.w3.clearkey"}),
    ("?key_systems=identity", {"identity"}),
    ("?key_systems=clearkey,identity", {"org.w3.clearkey", "identity"}),
    ("?key_systems=fairplay", {"com.apple.streamingkeydelivery"}),
])
async def test_key_systems_selects_the_signalling(
    origin_server: RunningOrigin, query: str, expected: set[str]
) -> None:
    base = origin_server.base
    _, master = await get(f"{base}/hls/demo/cbcs/master.m3u8{query}")
    session_formats = set(re.findall(r'#EXT-X-SESSION-KEY:.*KEYFORMAT="([^"]*)"', master))
    assert session_formats == expected
    variant = uri_lines(master)[0]
    _, media = await get(f"{base}/hls/demo/cbcs/{variant}")
    assert set(re.findall(r'#EXT-X-KEY:.*KEYFORMAT="([^"]*)"', media)) == expected
    if "identity" in expected:
        identity = next(ln for ln in media.splitlines() if 'KEYFORMAT="identity"' in ln)
        assert "METHOD=SAMPLE-AES," in identity
        assert re.search(r'URI="/license/aes128/[0-9a-f]{32}"', identity)


async def test_key_systems_narrows_dash_content_protection(origin_server: RunningOrigin) -> None:
    base = origin_server.base
    _, full = await get(f"{base}/dash/demo/cenc/manifest.mpd")
    _, narrow = await get(f"{base}/dash/demo/cenc/manifest.mpd?key_systems=clearkey")
    assert "edef8ba9" in full and "9a04f079" in full
    assert "edef8ba9" not in narrow and "9a04f079" not in narrow
    assert "e2719d58-a985-b3c9-781a-b030af78d30e" in narrow  # DASH-IF Clear Key


@pytest.mark.parametrize("query", ["key_systems=bogus", "key_systems=", "token=" + "a" * 5000,
                                   "flavor=video-9999p", "min_bitrate=x"])
async def test_bad_query_is_400_with_a_reason(origin_server: RunningOrigin, query: str) -> None:
    status, body = await get(f"{origin_server.base}/hls/demo/cbcs/master.m3u8?{query}")
    assert status == 400, body
    assert '"error"' in body and "a" * 100 not in body


async def test_overlong_request_line_stays_out_of_the_log(origin_server: RunningOrigin) -> None:
    secret = "overlong-token-" + "b" * 9000
    status, _ = await get(f"{origin_server.base}/hls/demo/cbcs/master.m3u8?token={secret}")
    assert status == 400  # aiohttp's own parser limit
    assert "bbbbbbbbbb" not in origin_server.log_text()


async def test_playback_context(origin_server: RunningOrigin) -> None:
    base = origin_server.base
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/assets/demo/playback",
                               params={"flavor": "video-720p", "token": TOKEN}) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            ctx = await resp.json()
        async with session.get(f"{base}/internal/v1/assets/demo/key") as resp:
            assert resp.status == 404  # the internal API is not reachable through the origin
    assert ctx["asset"] == "demo" and ctx["flavor"] == "video-720p"
    kid = uuid.UUID(ctx["key_ids"][0])
    assert ctx["token_required"] is False
    assert ctx["offline"]["allowed"] is False
    cbcs = ctx["manifests"]["hls"]["master.m3u8"]["cbcs"]
    assert cbcs == f"{base}/hls/demo/cbcs/master.m3u8?flavor=video-720p&token={TOKEN}"
    assert ctx["manifests"]["dash"]["cenc"].startswith(f"{base}/dash/demo/cenc/manifest.mpd?")
    systems = {s["name"]: s for s in ctx["key_systems"]}
    # No FairPlay/Widevine/PlayReady service is configured in this origin: only what works.
    assert set(systems) == {"aes128", "org.w3.clearkey"}
    clearkey = systems["org.w3.clearkey"]
    assert clearkey["license_url"] == f"{base}/license/clearkey?token={TOKEN}"
    assert clearkey["key_ids"] == [str(kid)]
    assert systems["aes128"]["key_url"] == f"{base}/license/aes128/{kid.hex}?token={TOKEN}"
    # The manifest URL it gives pins the flavor: one variant, the 720p one.
    status, master = await get(cbcs)
    assert status == 200
    assert uri_lines(master) == [f"video-720p/index.m3u8?token={TOKEN}"]
    # And the key URL it gives answers the asset's key.
    async with aiohttp.ClientSession() as session, session.get(
        systems["aes128"]["key_url"]
    ) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == 16


@pytest.mark.parametrize(("path", "status"), [
    ("/api/assets/demo/playback?flavor=video-9999p", 400),
    ("/api/assets/nope/playback", 404),
])
async def test_playback_context_errors(origin_server: RunningOrigin, path: str,
                                       status: int) -> None:
    got, body = await get(origin_server.base + path)
    assert got == status, body
