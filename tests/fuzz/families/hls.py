"""HLS playlists: decoding, classification, parsing, filters, key signalling, query passing.

Each target runs what a route runs on a source playlist (``hls_routes.edit_playlist``:
decode → classify → filter → key tags → query on media playlist URIs; the DASH
generator: decode → parse).  The payload's first byte picks the playback filter
and the key tags.  Inputs are the demo asset's playlists and ``tests/golden``.
Typed errors: ``MalformedMedia`` (bad source) and ``BadRequest`` (a filter that
leaves nothing to play).
"""

from __future__ import annotations

from functools import cache

from origin.errors import BadRequest, MalformedMedia
from origin.packaging.hls import (
    KeyMethod,
    KeyTag,
    PlaylistKind,
    append_query_to_playlist_uris,
    classify_playlist,
    decode_playlist,
    filter_multivariant_playlist,
    multivariant_rendition_ids,
    parse_attributes,
    parse_media_playlist,
    parse_multivariant_playlist,
    resolve_segment_path,
    rewrite_media_playlist,
    rewrite_multivariant_playlist,
)
from origin.packaging.playback_filter import PlaybackFilter, TrackType
from tests.fuzz import media
from tests.fuzz.core import Target

TYPED = (MalformedMedia, BadRequest)
KID = bytes(range(16))
MULTIVARIANT_PATH = "master.m3u8"
MEDIA_PATH = "video-360p/index.m3u8"
QUERY = "token=abc.def&key_systems=fairplay%2Cwidevine"
FILTERS = (
    PlaybackFilter(),
    PlaybackFilter(offline=True),
    PlaybackFilter(tracks=frozenset({TrackType.VIDEO})),
    PlaybackFilter(tracks=frozenset({TrackType.AUDIO})),
    PlaybackFilter(audio_languages=("en",)),
    PlaybackFilter(offline=True, flavor="video-720p", audio_languages=("de", "en")),
    PlaybackFilter(bandwidth=1_000_000),
    PlaybackFilter(min_bitrate=500_000, max_bitrate=2_000_000),
    PlaybackFilter(tracks=frozenset({TrackType.VIDEO, TrackType.SUBTITLES}), offline=True),
)
KEY_SETS = (
    (KeyTag(KeyMethod.AES_128, "/license/aes128/" + KID.hex()),),
    (KeyTag(KeyMethod.SAMPLE_AES, "skd://" + KID.hex(), "com.apple.streamingkeydelivery", "1"),
     KeyTag(KeyMethod.SAMPLE_AES, "data:text/plain;base64,AAAA",
            "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed", "1", KID)),
    (KeyTag(KeyMethod.SAMPLE_AES_CTR, "/license/aes128/" + KID.hex(), "identity", None, None,
            bytes(16)),),
)


@cache
def playlists() -> tuple[bytes, ...]:
    paths = sorted(media.DEMO.glob("*.m3u8")) + sorted(media.DEMO.glob("*/*.m3u8"))
    paths += sorted(media.GOLDEN.glob("*.m3u8")) + sorted(media.GOLDEN.glob("offline/*.m3u8"))
    return tuple(media.read(p) for p in paths)


def _kind(raw: bytes) -> PlaylistKind:
    return classify_playlist(decode_playlist(raw))


def _choice(payload: bytes) -> tuple[int, bytes]:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    return payload[0], payload[1:]


def run_multivariant_edit(payload: bytes) -> None:
    choice, raw = _choice(payload)
    text = decode_playlist(raw)
    if classify_playlist(text) is not PlaylistKind.MULTIVARIANT:
        return
    f = FILTERS[choice % len(FILTERS)]
    if f.active:
        text = filter_multivariant_playlist(text, MULTIVARIANT_PATH, f)
    text = rewrite_multivariant_playlist(text, KEY_SETS[choice % len(KEY_SETS)])
    text = append_query_to_playlist_uris(text, QUERY)
    assert text.lstrip().startswith("#EXTM3U")


def run_media_edit(payload: bytes) -> None:
    choice, raw = _choice(payload)
    text = decode_playlist(raw)
    if classify_playlist(text) is not PlaylistKind.MEDIA:
        return
    keys = KEY_SETS[choice % len(KEY_SETS)]
    iv_for = (lambda path: bytes(16)) if keys[0].method is KeyMethod.AES_128 else None
    out = rewrite_media_playlist(text, playlist_path=MEDIA_PATH, keys=keys, iv_for=iv_for)
    assert out.lstrip().startswith("#EXTM3U")


def run_parse_multivariant(raw: bytes) -> None:
    text = decode_playlist(raw)
    info = parse_multivariant_playlist(text, MULTIVARIANT_PATH)
    for path in [v.path for v in info.variants] + [r.path for r in info.renditions if r.path]:
        assert not path.startswith(("/", "../")) and path != ".."
    multivariant_rendition_ids(text, MULTIVARIANT_PATH)


def run_parse_media(raw: bytes) -> None:
    info = parse_media_playlist(decode_playlist(raw), MEDIA_PATH)
    for segment in info.segments:
        assert not segment.path.startswith(("/", "../")) and segment.path != ".."
        assert 0 <= segment.duration < 1e9


def run_uri(raw: bytes) -> None:
    """An attribute list and a URI as a playlist line holds them."""
    text = raw.decode("utf-8", "replace")
    parse_attributes(text)
    path = resolve_segment_path(MEDIA_PATH, text.strip())
    assert not path.startswith(("/", "../")) and path != ".."


def _multivariant_seeds() -> list[bytes]:
    found = [raw for raw in playlists() if _kind(raw) is PlaylistKind.MULTIVARIANT]
    return [bytes([i]) + raw for raw in found for i in range(len(FILTERS))]


def _media_seeds() -> list[bytes]:
    found = [raw for raw in playlists() if _kind(raw) is PlaylistKind.MEDIA]
    return [bytes([i]) + raw for raw in found for i in range(len(KEY_SETS))]


def _of_kind(kind: PlaylistKind) -> list[bytes]:
    return [raw for raw in playlists() if _kind(raw) is kind]


def _uri_seeds() -> list[bytes]:
    return [b"seg-00001.m4s", b"../video-720p/seg-00001.m4s?x=1#f", b"a/./b/../c.ts",
            b'METHOD=AES-128,URI="k",IV=0x00,KEYFORMAT="identity"']


def _skip_first(payload: bytes) -> list[int]:
    return media.shifted(media.line_starts(payload[1:]), 1)


TARGETS: tuple[Target, ...] = (
    Target("multivariant_edit", run_multivariant_edit, TYPED, _multivariant_seeds, _skip_first),
    Target("media_edit", run_media_edit, TYPED, _media_seeds, _skip_first),
    Target("parse_multivariant", run_parse_multivariant, TYPED,
           lambda: _of_kind(PlaylistKind.MULTIVARIANT), media.line_starts),
    Target("parse_media", run_parse_media, TYPED, lambda: _of_kind(PlaylistKind.MEDIA),
           media.line_starts),
    Target("uri", run_uri, TYPED, _uri_seeds),
)
