"""Traversal, catalog changes, broken media and an unreachable licence module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.conftest import RunningOrigin, free_port, raw_get, start_origin

SECRET = b"TOP-SECRET-OUTSIDE-THE-MEDIA-ROOT"


async def fetch(url: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


@pytest.fixture
def hostile_origin(tmp_path: Path, media_copy: Path) -> Iterator[RunningOrigin]:
    """An origin whose media root holds links that point outside it, and one that doesn't."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    outside = tmp_path / "outside-asset"
    shutil.copytree(media_copy / "demo", outside)
    (outside / "secret.ts").write_bytes(SECRET)
    demo = media_copy / "demo"
    os.symlink(tmp_path / "secret.txt", demo / "abs-link.ts")
    os.symlink("../../secret.txt", demo / "rel-link.ts")
    os.symlink("/etc", demo / "etc")
    os.symlink(outside, media_copy / "evil")  # a whole asset outside the root
    os.symlink("video-360p/seg-00001.m4s", demo / "inside-link.m4s")  # allowed
    server = start_origin(media_copy, tmp_path / "state")
    yield server
    server.stop()


TRAVERSALS = [
    b"/hls/demo/clear/../../secret.txt",
    b"/hls/demo/clear/%2e%2e/%2e%2e/secret.txt",
    b"/hls/demo/clear/%2E%2E%2F%2E%2E%2Fsecret.txt",
    b"/hls/demo/clear/%252e%252e/%252e%252e/secret.txt",
    b"/hls/demo/clear/..%5c..%5csecret.txt",
    b"/hls/demo/clear/..\\..\\secret.txt",
    b"/hls/demo/clear//etc/passwd",
    b"/hls/demo/clear/%2fetc%2fpasswd",
    b"/hls/demo/clear/video-360p/%00init.mp4",
    b"/hls/demo/clear/video-360p/init.mp4%00.m3u8",
    b"/hls/demo/clear/abs-link.ts",
    b"/hls/demo/clear/rel-link.ts",
    b"/hls/demo/aes128/rel-link.ts",
    b"/hls/demo/clear/etc/passwd",
    b"/hls/evil/clear/secret.ts",
    b"/hls/evil/clear/master.m3u8",
    b"/hls/..%2f..%2fsecret.txt/clear/x",
    b"/hls/%2e%2e/clear/secret.txt",
    b"/hls/demo/clear/./master.m3u8/../../../secret.txt",
    b"/hls/demo/clear/video-360p/./init.mp4",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_404_and_leaks_nothing(hostile_origin: RunningOrigin, target: bytes) -> None:
    status, body = raw_get(hostile_origin.port, target)
    assert status in (400, 404), (target, status)
    assert SECRET not in body
    assert b"root:" not in body


def test_link_inside_the_root_is_served(hostile_origin: RunningOrigin) -> None:
    status, body = raw_get(hostile_origin.port, b"/hls/demo/clear/inside-link.m4s")
    assert status == 200
    assert body == (hostile_origin.media / "demo/video-360p/seg-00001.m4s").read_bytes()


def test_nothing_outside_the_root_is_listed(hostile_origin: RunningOrigin) -> None:
    status, body = raw_get(hostile_origin.port, b"/api/assets")
    assert status == 200
    assert b'"evil"' not in body


async def test_new_asset_is_discovered(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state")
    try:
        status, _, _ = await fetch(f"{server.base}/hls/fresh/clear/master.m3u8")
        assert status == 404
        shutil.copytree(media_copy / "demo", media_copy / "fresh")
        status, _, body = await fetch(f"{server.base}/hls/fresh/clear/master.m3u8")
        assert status == 200
        assert body == (media_copy / "demo/master.m3u8").read_bytes()
        status, _, _ = await fetch(f"{server.base}/hls/fresh/aes128/video-360p/seg-00001.m4s")
        assert status == 200
    finally:
        assert server.stop() == 0


@pytest.fixture
def broken_origin(tmp_path: Path, media_copy: Path) -> Iterator[RunningOrigin]:
    demo = media_copy / "demo"
    (demo / "video-360p/index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://elsewhere.example/a.m4s\n")
    (demo / "audio-en/index.m3u8").write_bytes(b"#EXTM3U\n\xff\xfe\xfd garbage")
    server = start_origin(media_copy, tmp_path / "state")
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["video-360p/index.m3u8", "audio-en/index.m3u8"])
async def test_broken_media_is_502_with_reason(broken_origin: RunningOrigin, path: str) -> None:
    status, headers, body = await fetch(f"{broken_origin.base}/hls/demo/aes128/{path}")
    assert status == 502
    assert headers["Content-Type"].startswith("application/json")
    assert b"error" in body
    assert b"Traceback" not in body
    # The server stays up and clear delivery still works.
    status, _, _ = await fetch(f"{broken_origin.base}/hls/demo/clear/{path}")
    assert status == 200


async def test_licence_down_gives_503_while_clear_flows(media_copy: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    server = start_origin(media_copy, tmp_path / "state", "--license-url", dead,
                          env={"ORIGIN_LICENSE_TOKEN": "t" * 32})
    try:
        status, _, _ = await fetch(f"{server.base}/hls/demo/clear/video-360p/seg-00001.m4s")
        assert status == 200
        for path in ("/hls/demo/aes128/master.m3u8",
                     "/hls/demo/aes128/video-360p/index.m3u8",
                     "/hls/demo/aes128/video-360p/seg-00001.m4s",
                     f"/license/aes128/{'ab' * 16}"):
            status, headers, body = await fetch(server.base + path)
            assert status == 503, path
            assert headers["Content-Type"].startswith("application/json")
            assert b"Traceback" not in body
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


async def test_two_replicas_give_identical_bytes(
    origin_server: RunningOrigin, tmp_path: Path
) -> None:
    """A second origin on the same keystore (another replica) serves the same bytes."""
    replica = start_origin(origin_server.media, origin_server.state_dir)
    try:
        for path in ("master.m3u8", "video-360p/index.m3u8", "video-360p/init.mp4",
                     "audio-en/seg-00003.m4s", "ts-360p/seg-00002.ts"):
            a = await fetch(f"{origin_server.base}/hls/demo/aes128/{path}")
            b = await fetch(f"{replica.base}/hls/demo/aes128/{path}")
            assert a[0] == b[0] == 200
            assert a[2] == b[2], path
            assert a[1]["ETag"] == b[1]["ETag"]
    finally:
        assert replica.stop() == 0
