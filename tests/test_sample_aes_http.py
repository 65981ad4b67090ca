"""``/hls/{asset}/sample-aes/…`` over HTTP: signalling, ffmpeg frame-exact, cbcs for fMP4, bad TS.

ffmpeg 5.1 decrypts a SAMPLE-AES segment's last access unit only once the
next segment arrives (helper finding, see test_sample_aes_ffmpeg.py), so the
ffmpeg check plays the origin's own media playlist with one more segment
appended after a discontinuity and compares every frame of the real ones.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningOrigin, start_origin

KEY_RE = re.compile(r'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="([^"]+)",IV=0x([0-9A-F]{32}),'
                    r'KEYFORMAT="identity",KEYFORMATVERSIONS="1"')


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


def framemd5(source: str) -> dict[str, list[str]]:
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
         "-protocol_whitelist", "file,http,tcp,crypto,data", "-allowed_extensions", "ALL",
         "-i", source, "-map", "0", "-f", "framemd5", "-"],
        capture_output=True, text=True, timeout=180)
    streams: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        if line and not line.startswith("#"):
            streams.setdefault(line.split(",")[0].strip(), []).append(line)
    return streams


async def test_ts_playlist_signals_fairplay_and_identity(origin_server: RunningOrigin) -> None:
    base = origin_server.base
    status, body = await get(f"{base}/hls/demo/sample-aes/ts-360p/index.m3u8")
    assert status == 200
    text = body.decode()
    keys = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-KEY")]
    assert len(keys) == 2  # once, before the first segment: one IV for the rendition
    assert keys[0].startswith('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://')
    assert 'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"' in keys[0]
    assert "IV=" not in keys[0]  # FairPlay: the IV travels with the key
    match = KEY_RE.fullmatch(keys[1])
    assert match, keys[1]  # identity last: ffmpeg ignores KEYFORMAT, uses the last tag
    status, master = await get(f"{base}/hls/demo/sample-aes/master-ts.m3u8")
    assert status == 200
    session = [ln for ln in master.decode().splitlines() if ln.startswith("#EXT-X-SESSION-KEY")]
    assert len(session) == 2 and all("IV=" not in ln for ln in session)


async def test_fmp4_renditions_get_cbcs(origin_server: RunningOrigin) -> None:
    """For fMP4 the same URL serves cbcs, as Apple specifies: identical bytes."""
    base = origin_server.base
    for path in ("video-360p/init.mp4", "video-360p/seg-00002.m4s", "audio-en/seg-00001.m4s"):
        a = await get(f"{base}/hls/demo/sample-aes/{path}")
        b = await get(f"{base}/hls/demo/cbcs/{path}")
        assert a[0] == b[0] == 200 and a[1] == b[1], path
    _, body = await get(f"{base}/hls/demo/sample-aes/video-360p/index.m3u8")
    assert b'KEYFORMAT="com.apple.streamingkeydelivery"' in body
    assert b'KEYFORMAT="identity"' not in body  # would break hls.js on fMP4


async def local_playlist(base: str, tmp: Path, key_uri: str | None = None) -> tuple[Path, int]:
    """The origin's SAMPLE-AES media playlist with absolute URIs and a terminator segment."""
    _, body = await get(f"{base}/hls/demo/sample-aes/ts-360p/index.m3u8")
    rendition = f"{base}/hls/demo/sample-aes/ts-360p/"
    lines = []
    for line in body.decode().splitlines():
        if line.startswith("#EXT-X-KEY") and 'KEYFORMAT="identity"' in line:
            uri = key_uri or base + re.search(r'URI="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            line = re.sub(r'URI="[^"]+"', f'URI="{uri}"', line)
        elif line.startswith("#EXT-X-KEY"):
            continue  # FairPlay: not for ffmpeg
        elif line and not line.startswith("#"):
            line = rendition + line
        if line == "#EXT-X-ENDLIST":
            lines += ["#EXT-X-DISCONTINUITY", "#EXTINF:2.0,", rendition + "seg-00001.ts"]
        lines.append(line)
    path = tmp / "index.m3u8"
    path.write_text("\n".join(lines) + "\n")
    return path, sum(1 for ln in lines if ln.startswith(rendition))


async def test_ffmpeg_decodes_sample_aes_frame_exact(origin_server: RunningOrigin,
                                                     tmp_path: Path) -> None:
    base = origin_server.base
    clear = framemd5(f"{base}/hls/demo/clear/ts-360p/index.m3u8")
    assert set(clear) == {"0", "1"} and len(clear["0"]) >= 300
    playlist, _ = await local_playlist(base, tmp_path)
    protected = framemd5(str(playlist))
    for stream, frames in clear.items():
        assert protected[stream][:len(frames)] == frames, f"stream {stream}"
    # A wrong key (a data: URI here, in the test only) turns it red.
    wrong = "data:application/octet-stream;base64," + base64.b64encode(b"\x42" * 16).decode()
    bad_playlist, _ = await local_playlist(base, tmp_path, wrong)
    bad = framemd5(str(bad_playlist))
    assert bad.get("0", [])[:len(clear["0"])] != clear["0"]


@pytest.fixture
def broken_ts_origin(tmp_path: Path, media_copy: Path) -> Iterator[RunningOrigin]:
    folder = media_copy / "demo" / "ts-360p"
    seg = bytearray((folder / "seg-00002.ts").read_bytes())
    seg[188 * 5] = 0x00  # lost sync in the sixth packet
    (folder / "seg-00002.ts").write_bytes(bytes(seg))
    (folder / "seg-00003.ts").write_bytes((folder / "seg-00003.ts").read_bytes()[:1000])
    server = start_origin(media_copy, tmp_path / "state")
    yield server
    server.stop()


@pytest.mark.parametrize("name", ["seg-00002.ts", "seg-00003.ts"])
async def test_broken_ts_is_502(broken_ts_origin: RunningOrigin, name: str) -> None:
    status, body = await get(f"{broken_ts_origin.base}/hls/demo/sample-aes/ts-360p/{name}")
    assert status == 502 and b"error" in body and b"Traceback" not in body
    status, _ = await get(f"{broken_ts_origin.base}/hls/demo/sample-aes/ts-360p/seg-00001.ts")
    assert status == 200
