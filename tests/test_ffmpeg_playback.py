"""ffmpeg, a real HLS client, plays our AES-128 output frame-exact against the clear stream.

ffmpeg fetches the playlists, the key (from our licence route) and the
segments over HTTP itself; ``-f framemd5`` hashes every decoded video frame
and audio packet.  A tampering proxy that serves a wrong key proves the check
can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningOrigin
from tests.tools.loopback import serve_app

pytestmark = pytest.mark.ffmpeg

PLAYLISTS = ["master.m3u8", "master-ts.m3u8"]


async def framemd5(url: str) -> tuple[int, list[str], str]:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url,
        "-map", "0", "-f", "framemd5", "-",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    frames = [ln for ln in out.decode().splitlines() if ln and not ln.startswith("#")]
    return proc.returncode or 0, frames, err.decode()


def streams(frames: list[str]) -> set[str]:
    return {ln.split(",")[0].strip() for ln in frames}


@pytest.mark.parametrize("playlist", PLAYLISTS)
async def test_ffmpeg_decodes_aes128_frame_exact(origin_server: RunningOrigin,
                                                 playlist: str) -> None:
    rc, clear, err = await framemd5(f"{origin_server.base}/hls/demo/clear/{playlist}")
    assert rc == 0, err
    rc, protected, err = await framemd5(f"{origin_server.base}/hls/demo/aes128/{playlist}")
    assert rc == 0, err
    assert len(clear) > 200
    # Every rendition is there: two video + one audio (CMAF), or video + audio (TS).
    assert len(streams(clear)) == (3 if playlist == "master.m3u8" else 2)
    assert protected == clear


@contextlib.asynccontextmanager
async def wrong_key_proxy(upstream: str) -> AsyncIterator[str]:
    """Forwards everything to the origin but answers key requests with a wrong key."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/license/aes128/"):
            return web.Response(body=b"\x42" * 16, content_type="application/octet-stream")
        forward = {k: v for k, v in request.headers.items()
                   if k.lower() in ("range", "if-range", "if-none-match")}
        async with aiohttp.ClientSession() as session, session.get(
            upstream + request.rel_url.raw_path_qs, headers=forward
        ) as resp:
            keep = {k: v for k, v in resp.headers.items()
                    if k.lower() in ("content-range", "etag", "accept-ranges", "content-type")}
            return web.Response(status=resp.status, body=await resp.read(), headers=keep)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with serve_app(app) as base:
        yield base


@pytest.mark.parametrize("playlist", PLAYLISTS)
async def test_ffmpeg_check_fails_with_a_wrong_key(origin_server: RunningOrigin,
                                                   playlist: str) -> None:
    rc, clear, _ = await framemd5(f"{origin_server.base}/hls/demo/clear/{playlist}")
    assert rc == 0
    async with wrong_key_proxy(origin_server.base) as proxy:
        # The proxy itself is faithful: through it the real key still plays.
        rc, frames, err = await framemd5(f"{proxy}/hls/demo/clear/{playlist}")
        assert rc == 0 and frames == clear, err
        rc, frames, _ = await framemd5(f"{proxy}/hls/demo/aes128/{playlist}")
    assert frames != clear
