"""Playlist rewrites against golden files (unknown tags survive) and the refusal cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from origin.errors import MalformedMedia
from origin.packaging.hls import (
    KeyMethod,
    KeyTag,
    PlaylistKind,
    classify_playlist,
    decode_playlist,
    parse_attributes,
    resolve_segment_path,
    rewrite_media_playlist,
    rewrite_multivariant_playlist,
)

GOLDEN = Path(__file__).parent / "golden"
KEY = KeyTag(KeyMethod.AES_128, "/license/aes128/00112233445566778899aabbccddeeff")
UPDATE = False  # flip to regenerate the .out files after a deliberate change


def fake_iv(path: str) -> bytes:
    return hashlib.sha256(path.encode()).digest()[:16]


def check_golden(name: str, produced: str) -> None:
    expected = GOLDEN / name
    if UPDATE:
        expected.write_text(produced)
    assert produced == expected.read_text()


def test_multivariant_gets_session_key_and_keeps_everything() -> None:
    src = (GOLDEN / "multivariant.m3u8").read_text()
    assert classify_playlist(src) is PlaylistKind.MULTIVARIANT
    out = rewrite_multivariant_playlist(src, [KEY])
    check_golden("multivariant.aes128.out", out)
    # Every source line survives, in order.
    kept = [line for line in out.splitlines() if not line.startswith("#EXT-X-SESSION-KEY")]
    assert kept == src.splitlines()


def test_media_playlist_gets_key_before_every_segment_and_map() -> None:
    src = (GOLDEN / "media.m3u8").read_text()
    assert classify_playlist(src) is PlaylistKind.MEDIA
    out = rewrite_media_playlist(src, playlist_path="video-360p/index.m3u8", keys=[KEY],
                                 iv_for=fake_iv)
    check_golden("media.aes128.out", out)
    lines = out.splitlines()
    assert "#EXT-X-KEY:METHOD=NONE" not in lines
    assert '#EXT-X-VENDOR-UNKNOWN:attr="kept",N=1' in lines
    # The line before each URI or MAP is our key with that file's IV.
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-MAP:") or (line and not line.startswith("#")):
            target = (parse_attributes(line[11:])["URI"] if line.startswith("#EXT-X-MAP:")
                      else line)
            path = resolve_segment_path("video-360p/index.m3u8", target)
            assert lines[i - 1] == KEY.render("EXT-X-KEY", fake_iv(path))


def test_missing_version_is_added() -> None:
    src = (GOLDEN / "media-ts-noversion.m3u8").read_text()
    out = rewrite_media_playlist(src, playlist_path="ts/index.m3u8", keys=[KEY], iv_for=fake_iv)
    check_golden("media-ts-noversion.aes128.out", out)
    assert out.splitlines()[1] == "#EXT-X-VERSION:2"


def test_keyformat_raises_version_to_five() -> None:
    src = "#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n"
    tag = KeyTag(KeyMethod.SAMPLE_AES, "skd://x", keyformat="com.apple.streamingkeydelivery",
                 keyformatversions="1")
    out = rewrite_media_playlist(src, playlist_path="index.m3u8", keys=[tag], iv_for=None)
    assert "#EXT-X-VERSION:5" in out.splitlines()
    assert ('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://x",'
            'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"') in out


@pytest.mark.parametrize("body", [
    "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2,\na.ts\n",
    "#EXTM3U\n#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"k\"\n"
    "#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
    "#EXTM3U\n#EXTINF:2,\n#EXT-X-BYTERANGE:100@0\na.ts\n",
    "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"10@0\"\n#EXTINF:2,\na.m4s\n",
    "#EXTM3U\n#EXTINF:2,\nhttp://elsewhere.example/a.ts\n",
    "#EXTM3U\n#EXTINF:2,\n/abs/a.ts\n",
    "#EXTM3U\n#EXTINF:2,\n../../escape.ts\n",
    "#EXTM3U\n#EXT-X-MAP:FOO=1\n#EXTINF:2,\na.m4s\n",
])
def test_unencryptable_sources_are_refused(body: str) -> None:
    with pytest.raises(MalformedMedia):
        if classify_playlist(body) is PlaylistKind.MULTIVARIANT:
            rewrite_multivariant_playlist(body, [KEY])
        else:
            rewrite_media_playlist(body, playlist_path="v/index.m3u8", keys=[KEY],
                                   iv_for=fake_iv)


@pytest.mark.parametrize("raw", [b"", b"not a playlist", b"\xff\xfe#EXTM3U", b"<html>"])
def test_non_playlists_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMedia):
        decode_playlist(raw)


def test_attribute_parser_edge_cases() -> None:
    attrs = parse_attributes('METHOD=AES-128, URI="a,b.key",IV=0X0102')
    assert attrs == {"METHOD": "AES-128", "URI": "a,b.key", "IV": "0X0102"}
