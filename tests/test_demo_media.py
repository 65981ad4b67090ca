"""The committed demo asset (media/demo, made by ``python -m origin.demo media/demo``).

Checks the files themselves, with no ffmpeg: both multivariant playlists parse,
every playlist and segment they reference exists, each rendition has six
segments, and the CODECS strings agree with the bytes of the streams.  The
H.264 parameters are read here with a deliberately naive byte search, not with
``origin.demo``'s box parser, so the two check each other.
"""

from __future__ import annotations

import math
from pathlib import Path

import m3u8
import pytest

ASSET = Path(__file__).resolve().parent.parent / "media" / "demo"
SEGMENTS = 6
SEGMENT_SECONDS = 2.0
LAYOUT = {"master.m3u8", "master-ts.m3u8", "video-360p", "video-720p", "audio-en", "ts-360p"}
VIDEO = {"video-360p/index.m3u8": (640, 360), "video-720p/index.m3u8": (1280, 720)}


def load(relative: str) -> m3u8.M3U8:
    return m3u8.load(str(ASSET / relative))


def avc1_from_avcc(init: bytes) -> str:
    """``avc1.PPCCLL`` from the first ``avcC`` box: version, profile, constraints, level."""
    at = init.find(b"avcC")
    assert at > 0, "no avcC box"
    version, profile, constraints, level = init[at + 4 : at + 8]
    assert version == 1
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def avc1_from_ts(segment: bytes) -> str:
    """``avc1.PPCCLL`` from the first SPS NAL (nal_ref_idc 3, type 7) in a TS segment."""
    at = segment.find(b"\x00\x00\x01\x67")
    assert at > 0, "no SPS"
    profile, constraints, level = segment[at + 4 : at + 7]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def check_media(relative: str, *, fmp4: bool) -> m3u8.M3U8:
    """A media playlist: relative bare segment names that exist, six of ~2 s, VOD."""
    playlist = load(relative)
    folder = (ASSET / relative).parent
    assert not playlist.is_variant
    assert playlist.is_endlist
    assert playlist.playlist_type == "vod"
    assert len(playlist.segments) == SEGMENTS
    for segment in playlist.segments:
        assert "/" not in segment.uri
        assert (folder / segment.uri).is_file()
        assert segment.duration == pytest.approx(SEGMENT_SECONDS, abs=0.03)
        assert segment.uri.endswith(".m4s" if fmp4 else ".ts")
    total = sum(s.duration for s in playlist.segments)
    assert total == pytest.approx(SEGMENTS * SEGMENT_SECONDS, abs=0.05)
    if fmp4:
        assert [m.uri for m in playlist.segment_map] == ["init.mp4"]
        assert (folder / "init.mp4").is_file()
    return playlist


def peak_bps(relative: str) -> int:
    playlist = load(relative)
    folder = (ASSET / relative).parent
    return max(
        math.ceil((folder / s.uri).stat().st_size * 8 / s.duration) for s in playlist.segments
    )


def test_layout_and_size() -> None:
    assert {p.name for p in ASSET.iterdir()} == LAYOUT
    size = sum(p.stat().st_size for p in ASSET.rglob("*") if p.is_file())
    assert size < 6_000_000


def test_cmaf_master() -> None:
    master = load("master.m3u8")
    assert master.is_variant
    assert master.is_independent_segments
    [audio] = master.media
    assert (audio.type, audio.group_id, audio.language) == ("AUDIO", "aud", "en")
    assert (audio.default, audio.autoselect, audio.channels) == ("YES", "YES", "2")
    assert audio.uri == "audio-en/index.m3u8"
    check_media(audio.uri, fmp4=True)
    audio_init = (ASSET / "audio-en" / "init.mp4").read_bytes()
    assert b"mp4a" in audio_init and b"avcC" not in audio_init

    assert [v.uri for v in master.playlists] == list(VIDEO)
    for variant in master.playlists:
        info = variant.stream_info
        check_media(variant.uri, fmp4=True)
        init = (ASSET / variant.uri).with_name("init.mp4").read_bytes()
        assert info.codecs == f"{avc1_from_avcc(init)},mp4a.40.2"
        assert info.resolution == VIDEO[variant.uri]
        assert info.frame_rate == pytest.approx(25.0)
        assert info.audio == "aud"
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.bandwidth >= peak_bps(variant.uri) + peak_bps(audio.uri)


def test_ts_master() -> None:
    master = load("master-ts.m3u8")
    assert master.is_variant
    [variant] = master.playlists
    assert variant.uri == "ts-360p/index.m3u8"
    playlist = check_media(variant.uri, fmp4=False)
    first = (ASSET / "ts-360p" / playlist.segments[0].uri).read_bytes()
    assert len(first) % 188 == 0 and first[0] == 0x47
    info = variant.stream_info
    assert info.codecs == f"{avc1_from_ts(first)},mp4a.40.2"
    assert info.resolution == (640, 360)
    assert info.bandwidth >= peak_bps(variant.uri)


def test_every_init_is_plain_fmp4() -> None:
    for folder in ("video-360p", "video-720p", "audio-en"):
        init = (ASSET / folder / "init.mp4").read_bytes()
        assert init[4:8] == b"ftyp"
        assert b"moov" in init and b"mvex" in init
        assert b"encv" not in init and b"enca" not in init
