"""cbcs/cenc playlists over HTTP: key signalling per system, per-asset config, broken media."""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from origin.container.playready import parse_playready_object
from origin.container.pssh import SystemId, parse_pssh
from origin.container.widevine import decode_widevine_pssh_data
from tests.conftest import RunningOrigin, start_origin

WIDEVINE = "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


def key_tags(text: str, tag: str = "EXT-X-KEY") -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        if line.startswith(f"#{tag}:"):
            attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line[len(tag) + 2:]))
            out.append({k: v.strip('"') for k, v in attrs.items()})
    return out


def data_payload(uri: str) -> bytes:
    assert uri.startswith("data:text/plain")
    return base64.b64decode(uri.split("base64,", 1)[1])


@pytest.mark.parametrize(("scheme", "method", "systems"), [
    ("cbcs", "SAMPLE-AES", {"com.apple.streamingkeydelivery", WIDEVINE,
                            "com.microsoft.playready", "org.w3.clearkey"}),
    ("cenc", "SAMPLE-AES-CTR", {WIDEVINE, "com.microsoft.playready", "org.w3.clearkey",
                                "identity"}),
])
async def test_media_playlist_signals_every_system_once(
    origin_server: RunningOrigin, scheme: str, method: str, systems: set[str]
) -> None:
    status, body = await get(f"{origin_server.base}/hls/demo/{scheme}/video-720p/index.m3u8")
    assert status == 200
    text = body.decode()
    tags = key_tags(text)
    assert {t["KEYFORMAT"] for t in tags} == systems
    assert len(tags) == len(systems)  # once, not per segment
    assert all(t["METHOD"] == method and "IV" not in t for t in tags)
    # The keys stand before the EXT-X-MAP they apply to.
    lines = text.splitlines()
    assert max(i for i, ln in enumerate(lines) if ln.startswith("#EXT-X-KEY")) < next(
        i for i, ln in enumerate(lines) if ln.startswith("#EXT-X-MAP"))
    version = int(next(ln for ln in lines if ln.startswith("#EXT-X-VERSION:")).split(":")[1])
    assert version >= 5

    by_format = {t["KEYFORMAT"]: t for t in tags}
    kid_hex = by_format[WIDEVINE]["KEYID"][2:].lower()
    status, key = await get(f"{origin_server.base}/license/aes128/{kid_hex}")
    assert status == 200
    # Widevine: the whole pssh box, carrying our KID and the scheme.
    pssh = parse_pssh(data_payload(by_format[WIDEVINE]["URI"]))
    assert pssh.system_id == SystemId.WIDEVINE
    wv = decode_widevine_pssh_data(pssh.data)
    assert wv.key_ids == (bytes.fromhex(kid_hex),)
    assert wv.protection_scheme == scheme
    # PlayReady: the PlayReady Object, whose header names our licence route.
    records = parse_playready_object(data_payload(by_format["com.microsoft.playready"]["URI"]))
    header = records[1].decode("utf-16-le")
    assert f"{origin_server.base}/license/playready" in header
    assert ("AESCBC" in header) == (scheme == "cbcs")
    # ClearKey: the KEY ID, never the key.
    assert data_payload(by_format["org.w3.clearkey"]["URI"]) == bytes.fromhex(kid_hex)
    if scheme == "cenc":  # Shaka Player's Clear Key route: a real key URL, never the key
        assert by_format["identity"]["URI"] == f"/license/aes128/{kid_hex}"
    if scheme == "cbcs":
        fairplay = by_format["com.apple.streamingkeydelivery"]
        assert fairplay["URI"] == f"skd://{kid_hex}"
        assert fairplay["KEYFORMATVERSIONS"] == "1"
    # No data: URI anywhere holds the key.
    for tag in tags:
        if tag["URI"].startswith("data:"):
            assert key not in data_payload(tag["URI"])
    assert key.hex() not in text.lower()


@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
async def test_multivariant_mirrors_the_keys(origin_server: RunningOrigin, scheme: str) -> None:
    _, master = await get(f"{origin_server.base}/hls/demo/{scheme}/master.m3u8")
    _, media = await get(f"{origin_server.base}/hls/demo/{scheme}/audio-en/index.m3u8")
    session = key_tags(master.decode(), "EXT-X-SESSION-KEY")
    assert session == key_tags(media.decode())
    assert session


@pytest.fixture
def configured_origin(tmp_path: Path, media_copy: Path) -> Iterator[RunningOrigin]:
    (media_copy / "demo" / "asset.json").write_text(json.dumps({"key_systems": ["fairplay"]}))
    bad = media_copy / "bad"
    bad.mkdir()
    for name in ("master.m3u8", "video-360p"):
        src = media_copy / "demo" / name
        (bad / name).symlink_to(src)
    (bad / "asset.json").write_text('{"key_systems": ["fairplay", "nonsense"]}')
    server = start_origin(media_copy, tmp_path / "state")
    yield server
    server.stop()


async def test_asset_config_selects_key_systems(configured_origin: RunningOrigin) -> None:
    base = configured_origin.base
    status, body = await get(f"{base}/hls/demo/cbcs/video-360p/index.m3u8")
    assert status == 200
    assert [t["KEYFORMAT"] for t in key_tags(body.decode())] == [
        "com.apple.streamingkeydelivery"]
    # asset.json is configuration, never content.
    status, _ = await get(f"{base}/hls/demo/clear/asset.json")
    assert status == 404
    # Without Widevine/PlayReady, the init carries only the Common PSSH.
    status, init = await get(f"{base}/hls/demo/cbcs/video-360p/init.mp4")
    assert status == 200
    assert init.count(b"pssh") == 1 and SystemId.COMMON.value in init
    # A broken asset.json is reported on protected requests, not ignored.
    status, body = await get(f"{base}/hls/bad/cbcs/video-360p/index.m3u8")
    assert status == 502 and b"asset.json" in body
    status, _ = await get(f"{base}/hls/bad/clear/video-360p/index.m3u8")
    assert status == 200


@pytest.fixture
def broken_cmaf_origin(tmp_path: Path, media_copy: Path) -> Iterator[RunningOrigin]:
    folder = media_copy / "demo" / "video-360p"
    seg = (folder / "seg-00002.m4s").read_bytes()
    (folder / "seg-00002.m4s").write_bytes(seg[: len(seg) // 2])  # truncated
    seg3 = bytearray((folder / "seg-00003.m4s").read_bytes())
    at = seg3.index(b"trun")
    struct.pack_into(">I", seg3, at + 8, 0xFFFFFFF)  # absurd sample count
    (folder / "seg-00003.m4s").write_bytes(bytes(seg3))
    init = (folder / "init.mp4").read_bytes()
    audio = media_copy / "demo" / "audio-en"
    (audio / "init.mp4").write_bytes(init.replace(b"avc1", b"vp09"))  # unknown codec
    server = start_origin(media_copy, tmp_path / "state")
    yield server
    server.stop()


@pytest.mark.parametrize("path", [
    "video-360p/seg-00002.m4s", "video-360p/seg-00003.m4s", "audio-en/init.mp4",
])
@pytest.mark.parametrize("scheme", ["cbcs", "cenc"])
async def test_broken_cmaf_is_502_with_a_reason(broken_cmaf_origin: RunningOrigin, path: str,
                                                scheme: str) -> None:
    status, body = await get(f"{broken_cmaf_origin.base}/hls/demo/{scheme}/{path}")
    assert status == 502, body
    reason = json.loads(body)["error"]
    assert reason and "Traceback" not in reason
    # The server stays up and the intact segments still encrypt.
    status, _ = await get(f"{broken_cmaf_origin.base}/hls/demo/{scheme}/video-360p/seg-00001.m4s")
    assert status == 200


async def test_cbcs_on_transport_stream_is_404(origin_server: RunningOrigin) -> None:
    status, body = await get(f"{origin_server.base}/hls/demo/cbcs/ts-360p/seg-00001.ts")
    assert status == 404
    assert b"fMP4" in body
