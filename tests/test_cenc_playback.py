"""cbcs and cenc output checked by real decryptors: ffmpeg and Shaka Packager.

For each scheme and rendition the init segment and every media segment come
from the origin over HTTP and are joined into one fragmented MP4; the key is
fetched from the licence route.  ffmpeg (``-decryption_key``) must decode
every frame identical to the clear rendition (framemd5), Shaka Packager must
decrypt it back to a stream that decodes identically, and a re-parse checks
saio/saiz/senc/trun against each other.  A wrong key turns every check red.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import DEMO, RunningOrigin, start_origin
from tests.tools.mp4check import check_fragment
from tests.tools.packager import PACKAGER

SCHEMES = ["cbcs", "cenc"]
RENDITIONS = ["video-360p", "video-720p", "audio-en"]
WRONG_KEY = "0123456789abcdef0123456789abcdef"


async def download(base: str, asset: str, scheme: str, rendition: str
                   ) -> tuple[list[bytes], str]:
    """The rendition's init and media segments, over HTTP, and the key id it signals."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/hls/{asset}/{scheme}/{rendition}/index.m3u8") as resp:
            assert resp.status == 200
            playlist = await resp.text()
        names = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist).group(1)  # type: ignore[union-attr]
        parts = []
        for name in [init, *names]:
            async with session.get(f"{base}/hls/{asset}/{scheme}/{rendition}/{name}") as resp:
                assert resp.status == 200, name
                parts.append(await resp.read())
    kid = ""
    if scheme != "clear":
        kid = re.search(r"KEYID=0x([0-9A-F]{32})", playlist).group(1).lower()  # type: ignore[union-attr]
    return parts, kid


async def fetch_key(base: str, kid: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(
        f"{base}/license/aes128/{kid}"
    ) as resp:
        assert resp.status == 200
        return (await resp.read()).hex()


def framemd5(path: Path, key: str | None = None) -> list[str]:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    if key:
        cmd += ["-decryption_key", key]
    cmd += ["-i", str(path), "-map", "0", "-f", "framemd5", "-"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    frames = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")]
    return frames if result.returncode == 0 else [f"ffmpeg failed: {result.stderr[-500:]}"]


def packager_decrypt(src: Path, dst: Path, kid: str, key: str, stream: str) -> bool:
    result = subprocess.run(
        [str(PACKAGER), f"in={src},stream={stream},output={dst}",
         "--enable_raw_key_decryption", "--keys", f"label=:key_id={kid}:key={key}"],
        capture_output=True, text=True, timeout=120)
    return result.returncode == 0


async def check_rendition(base: str, asset: str, scheme: str, rendition: str, tmp: Path,
                          stream: str) -> None:
    clear, _ = await download(base, asset, "clear", rendition)
    protected, kid = await download(base, asset, scheme, rendition)
    key = await fetch_key(base, kid)
    assert len(protected) == len(clear) >= 3
    init = protected[0]
    assert (b"encv" if stream == "video" else b"enca") in init
    assert scheme.encode() in init  # schm
    iv_size = 8 if scheme == "cenc" else 0

    # ffmpeg, one segment at a time: ffmpeg 5.1's mov demuxer misplaces encryption
    # info once one file holds three or more encrypted fragments (Shaka Packager's own
    # output fails the same way), so each init + segment is decoded on its own.
    frames = 0
    for index in range(1, len(clear)):
        plain, enc = tmp / f"clear{index}.mp4", tmp / f"enc{index}.mp4"
        plain.write_bytes(clear[0] + clear[index])
        enc.write_bytes(init + protected[index])
        expected = framemd5(plain)
        assert len(expected) > 10
        assert check_fragment(protected[index], iv_size) >= len(expected) - 1
        assert framemd5(enc, key) == expected, f"segment {index}"
        if index == 1:
            assert framemd5(enc, WRONG_KEY) != expected
        frames += len(expected)

    # Shaka Packager decrypts the whole rendition back to the clear frames.
    whole_clear, whole_enc = tmp / "clear.mp4", tmp / "enc.mp4"
    whole_clear.write_bytes(b"".join(clear))
    whole_enc.write_bytes(b"".join(protected))
    dec = tmp / "dec.mp4"
    assert packager_decrypt(whole_enc, dec, kid, key, stream)
    everything = framemd5(whole_clear)
    assert frames == len(everything)  # the per-segment checks covered every frame
    assert framemd5(dec) == everything
    bad = tmp / "bad.mp4"
    if packager_decrypt(whole_enc, bad, kid, WRONG_KEY, stream):
        assert framemd5(bad) != framemd5(whole_clear)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("rendition", RENDITIONS)
async def test_demo_rendition_decrypts_exactly(origin_server: RunningOrigin, tmp_path: Path,
                                               scheme: str, rendition: str) -> None:
    stream = "audio" if rendition.startswith("audio") else "video"
    await check_rendition(origin_server.base, "demo", scheme, rendition, tmp_path, stream)


@pytest.fixture(scope="module")
def hevc_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    """An asset with an HEVC (libx265) rendition, made here with ffmpeg."""
    root = tmp_path_factory.mktemp("hevc-media")
    folder = root / "hevc" / "video-hevc"
    folder.mkdir(parents=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
         "-c:v", "libx265", "-tag:v", "hvc1",
         "-x265-params", "keyint=50:min-keyint=50:no-open-gop=1:log-level=0",
         "-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
         "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", str(folder / "seg-%05d.m4s"), str(folder / "index.m3u8")],
        check=True, timeout=120)
    (root / "hevc" / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:6\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS="hvc1.1.6.L60.90"\n'
        "video-hevc/index.m3u8\n")
    server = start_origin(root, tmp_path_factory.mktemp("hevc-state"))
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_hevc_rendition_decrypts_exactly(hevc_origin: RunningOrigin, tmp_path: Path,
                                               scheme: str) -> None:
    await check_rendition(hevc_origin.base, "hevc", scheme, "video-hevc", tmp_path, "video")


def test_demo_has_the_renditions() -> None:
    for rendition in RENDITIONS:
        assert (DEMO / rendition / "init.mp4").is_file()
