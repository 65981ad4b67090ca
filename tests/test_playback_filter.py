"""Playback filters and the offline download profile, for HLS and DASH (pure functions).

HLS outputs are compared byte for byte with hand-written files in
``tests/golden/offline/`` (reviewed line by line against the rules in
``origin.packaging.hls``); DASH filtering runs on the MPD generated from the
demo asset and on a hand-written multi-language MPD; ffprobe opens a filtered
multivariant playlist next to a copy of the demo media and must see exactly the
streams the filter kept.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from origin.errors import BadRequest, MalformedMedia
from origin.packaging.catalog import scan_catalog
from origin.packaging.dash import (
    MpdDocument,
    adaptation_track_type,
    filter_mpd,
    generate_mpd,
    parse_mpd,
    serialize_mpd,
)
from origin.packaging.hls import (
    KeyMethod,
    KeyTag,
    PlaylistKind,
    append_query_to_playlist_uris,
    classify_playlist,
    filter_multivariant_playlist,
    multivariant_rendition_ids,
    parse_attributes,
    rewrite_multivariant_playlist,
)
from origin.packaging.playback_filter import (
    PlaybackFilter,
    TrackType,
    codec_track_type,
    language_matches,
    parse_playback_filter,
    rendition_ids,
)
from tests.conftest import DEMO

GOLDEN = Path(__file__).parent / "golden" / "offline"
MPD = "{urn:mpeg:dash:schema:mpd:2011}"


def source(name: str) -> str:
    if name == "demo":
        return (DEMO / "master.m3u8").read_text()
    return (GOLDEN / f"{name}.m3u8").read_text()


# --- parsing the query -------------------------------------------------------------------------


def test_no_parameters_is_no_filter() -> None:
    f = parse_playback_filter({"token": "secret-token", "x": "1"})
    assert f == PlaybackFilter()
    assert not f.active
    assert f.query_items() == []


def test_every_parameter_parses() -> None:
    f = parse_playback_filter({
        "tracks": "audio,video", "min_bitrate": "100000", "max_bitrate": "2000000",
        "audio_lang": "fr,en-GB", "flavor": "video-720p", "bandwidth": "1500000",
        "profile": "offline", "token": "ignored",
    })
    assert f == PlaybackFilter(
        tracks=frozenset({TrackType.AUDIO, TrackType.VIDEO}), min_bitrate=100000,
        max_bitrate=2000000, audio_languages=("fr", "en-GB"), flavor="video-720p",
        bandwidth=1500000, offline=True)
    assert f.active
    # Canonical: tracks in a fixed order, parameters in a fixed order.
    assert f.query_items() == [
        ("tracks", "video,audio"), ("min_bitrate", "100000"), ("max_bitrate", "2000000"),
        ("audio_lang", "fr,en-GB"), ("flavor", "video-720p"), ("bandwidth", "1500000"),
        ("profile", "offline")]


@pytest.mark.parametrize(("query", "named"), [
    ({"tracks": ""}, "tracks"),
    ({"tracks": "video,pictures"}, "tracks"),
    ({"tracks": "Video"}, "tracks"),
    ({"min_bitrate": "-1"}, "min_bitrate"),
    ({"min_bitrate": "1e6"}, "min_bitrate"),
    ({"max_bitrate": ""}, "max_bitrate"),
    ({"max_bitrate": "１２"}, "max_bitrate"),  # full-width digits are not ASCII digits
    ({"max_bitrate": "9" * 16}, "max_bitrate"),
    ({"min_bitrate": "2000", "max_bitrate": "1000"}, "min_bitrate"),
    ({"audio_lang": ""}, "audio_lang"),
    ({"audio_lang": "en,"}, "audio_lang"),
    ({"audio_lang": "en_GB"}, "audio_lang"),
    ({"audio_lang": "languages"}, "audio_lang"),
    ({"audio_lang": "en\n"}, "audio_lang"),
    ({"audio_lang": ",".join(["en"] * 17)}, "audio_lang"),
    ({"flavor": ""}, "flavor"),
    ({"flavor": "video 720p"}, "flavor"),
    ({"flavor": "x" * 257}, "flavor"),
    ({"bandwidth": "0"}, "bandwidth"),
    ({"bandwidth": "fast"}, "bandwidth"),
    ({"profile": "download"}, "profile"),
    ({"profile": ""}, "profile"),
])
def test_bad_values_are_400_naming_the_parameter(query: dict[str, str], named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_playback_filter(query)
    assert caught.value.status == 400
    assert named in caught.value.detail
    for value in query.values():  # the value itself is never echoed back
        if value and value not in ("", "0"):
            assert value not in caught.value.detail


_LANGUAGE = st.from_regex(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,2}", fullmatch=True)
_BITRATE = st.integers(min_value=0, max_value=10**15 - 1)
_FILTERS = st.builds(
    PlaybackFilter,
    tracks=st.none() | st.frozensets(st.sampled_from(TrackType), min_size=1),
    min_bitrate=st.none() | _BITRATE,
    max_bitrate=st.none() | _BITRATE,
    audio_languages=st.none() | st.lists(_LANGUAGE, min_size=1, max_size=16).map(tuple),
    flavor=st.none() | st.from_regex(r"[A-Za-z0-9._/-]{1,256}", fullmatch=True),
    bandwidth=st.none() | st.integers(min_value=1, max_value=10**15 - 1),
    offline=st.booleans(),
).filter(lambda f: f.min_bitrate is None or f.max_bitrate is None
         or f.min_bitrate <= f.max_bitrate)


@given(_FILTERS)
def test_query_items_round_trip(f: PlaybackFilter) -> None:
    items = f.query_items()
    assert len({name for name, _ in items}) == len(items)
    assert parse_playback_filter(dict(items)) == f
    assert f.active == bool(items) == (f != PlaybackFilter())


@pytest.mark.parametrize(("wanted", "tag", "matches"), [
    ("en", "en", True), ("EN", "en-gb", True), ("en", "en-GB", True), ("en-GB", "en", True),
    ("en-GB", "en-US", False), ("en", "eng", False), ("fr", "fr-CA", True), ("de", "en", False),
])
def test_language_matching(wanted: str, tag: str, matches: bool) -> None:
    assert language_matches(wanted, tag) is matches


def test_codec_track_types() -> None:
    assert codec_track_type("avc1.64001f") is TrackType.VIDEO
    assert codec_track_type("hvc1.1.6.L93.B0") is TrackType.VIDEO
    assert codec_track_type("mp4a.40.2") is TrackType.AUDIO
    assert codec_track_type(" ec-3") is TrackType.AUDIO
    assert codec_track_type("Opus") is TrackType.AUDIO
    assert codec_track_type("wvtt") is TrackType.SUBTITLES
    assert codec_track_type("stpp.ttml.im1t") is TrackType.SUBTITLES


# --- HLS: golden files -------------------------------------------------------------------------


GOLDEN_CASES = [
    ("demo", {"profile": "offline"}, "demo.offline.out"),
    ("demo", {"profile": "offline", "flavor": "video-360p"}, "demo.offline-flavor-360p.out"),
    ("demo", {"profile": "offline", "bandwidth": "1000000"}, "demo.offline-bandwidth-1M.out"),
    ("demo", {"tracks": "video"}, "demo.video-only.out"),
    ("demo", {"max_bitrate": "600000"}, "demo.max-600k.out"),
    ("multilang", {"profile": "offline"}, "multilang.offline.out"),
    ("multilang", {"profile": "offline", "audio_lang": "fr", "flavor": "video-720p"},
     "multilang.offline-fr-720p.out"),
    ("multilang", {"profile": "offline", "tracks": "video,audio,subtitles",
                   "bandwidth": "800000"}, "multilang.offline-subtitles-800k.out"),
    ("multilang", {"profile": "offline", "tracks": "audio"}, "multilang.offline-audio.out"),
    ("multilang", {"audio_lang": "FR,en-GB", "min_bitrate": "100000",
                   "max_bitrate": "1500000"}, "multilang.lang-range.out"),
    ("multilang", {"tracks": "audio"}, "multilang.audio-only.out"),
    ("multilang", {"tracks": "video,audio", "bandwidth": "1200000"},
     "multilang.pinned-1200k.out"),
    ("audio-groups", {"profile": "offline"}, "audio-groups.offline.out"),
    ("audio-groups", {"profile": "offline", "audio_lang": "de", "flavor": "video/540p"},
     "audio-groups.offline-de-540p.out"),
    ("audio-groups", {"profile": "offline", "bandwidth": "4300000", "audio_lang": "en"},
     "audio-groups.offline-en-4300k.out"),
    ("audio-groups", {"flavor": "video/1080p", "audio_lang": "de"},
     "audio-groups.flavor-1080p-de.out"),
    ("audio-groups", {"max_bitrate": "1500000"}, "audio-groups.max-1500k.out"),
]


@pytest.mark.parametrize(("name", "query", "expected"), GOLDEN_CASES,
                         ids=[case[2] for case in GOLDEN_CASES])
def test_hls_filter_matches_golden(name: str, query: dict[str, str], expected: str) -> None:
    src = source(name)
    f = parse_playback_filter(query)
    out = filter_multivariant_playlist(src, "master.m3u8", f)
    assert out == (GOLDEN / expected).read_text()

    # Still a multivariant playlist, and made only of source lines, in order (edited
    # attribute lists apart, which must keep their tag and the EXT-X-MEDIA's identity).
    assert classify_playlist(out) is PlaylistKind.MULTIVARIANT
    src_lines = src.splitlines()
    at = 0
    for line in out.splitlines():
        if line in src_lines[at:]:
            at = src_lines.index(line, at) + 1
            continue
        assert line.startswith(("#EXT-X-STREAM-INF:", "#EXT-X-MEDIA:")), line
    if f.offline:
        check_offline_shape(out, f)


def check_offline_shape(out: str, f: PlaybackFilter) -> None:
    lines = out.splitlines()
    variants = [parse_attributes(ln.split(":", 1)[1]) for ln in lines
                if ln.startswith("#EXT-X-STREAM-INF:")]
    assert len(variants) == 1
    assert not any(ln.startswith("#EXT-X-I-FRAME-STREAM-INF") for ln in lines)
    audio = [parse_attributes(ln.split(":", 1)[1]) for ln in lines
             if ln.startswith("#EXT-X-MEDIA:TYPE=AUDIO")]
    if "AUDIO" in variants[0]:
        assert len(audio) == 1
        assert audio[0]["GROUP-ID"] == variants[0]["AUDIO"]
        assert audio[0]["DEFAULT"] == "YES" and audio[0]["AUTOSELECT"] == "YES"
    subtitles = any(ln.startswith("#EXT-X-MEDIA:TYPE=SUBTITLES") for ln in lines)
    assert subtitles == (f.tracks is not None and TrackType.SUBTITLES in f.tracks)


def test_offline_output_takes_session_keys_after_its_header() -> None:
    out = filter_multivariant_playlist(source("multilang"), "master.m3u8",
                                       PlaybackFilter(offline=True))
    key = KeyTag(KeyMethod.SAMPLE_AES, "skd://00112233445566778899aabbccddeeff",
                 keyformat="com.apple.streamingkeydelivery", keyformatversions="1")
    lines = rewrite_multivariant_playlist(out, [key]).splitlines()
    assert lines[:4] == ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS",
                         key.render("EXT-X-SESSION-KEY")]


def test_inactive_filter_leaves_the_text_alone() -> None:
    src = source("multilang").replace("\n", "\r\n")
    assert filter_multivariant_playlist(src, "master.m3u8", PlaybackFilter()) is src


def test_golden_inputs_are_not_already_filtered() -> None:
    # Negative control for the golden comparison: a filter that removes something
    # changes the text, and a different filter gives a different text.
    for name in ("demo", "multilang", "audio-groups"):
        offline = filter_multivariant_playlist(source(name), "master.m3u8",
                                               PlaybackFilter(offline=True))
        assert offline != source(name)
    assert (GOLDEN / "demo.offline.out").read_text() != \
        (GOLDEN / "demo.offline-flavor-360p.out").read_text()


@pytest.mark.parametrize(("name", "query", "reason"), [
    ("demo", {"max_bitrate": "1000"}, "no variant matches the filter"),
    ("demo", {"min_bitrate": "2000000"}, "no variant matches the filter"),
    ("demo", {"tracks": "audio"}, "no variant matches the filter"),  # no audio-only variant
    ("demo", {"tracks": "subtitles"}, "no variant matches the filter"),
    ("demo", {"flavor": "video-1080p"}, "no variant matches the filter"),
    ("demo", {"flavor": "audio-en"}, "no variant matches the filter"),
    ("demo", {"bandwidth": "500000"}, "no variant matches the filter"),
    ("demo", {"profile": "offline", "bandwidth": "100"}, "no variant matches the filter"),
    ("demo", {"audio_lang": "de"}, "no audio rendition matches audio_lang"),
    ("multilang", {"audio_lang": "es,pt-BR"}, "no audio rendition matches audio_lang"),
    ("audio-groups", {"profile": "offline", "audio_lang": "fr"},
     "no audio rendition matches audio_lang"),
])
def test_hls_filter_refusals(name: str, query: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        filter_multivariant_playlist(source(name), "master.m3u8", parse_playback_filter(query))
    assert caught.value.detail == reason


def test_hls_filter_wants_a_multivariant_playlist() -> None:
    media = (DEMO / "video-360p" / "index.m3u8").read_text()
    with pytest.raises(MalformedMedia):
        filter_multivariant_playlist(media, "video-360p/index.m3u8",
                                     PlaybackFilter(offline=True))
    broken = source("demo").replace("BANDWIDTH=518989,", "BANDWIDTH=lots,")
    with pytest.raises(MalformedMedia):
        filter_multivariant_playlist(broken, "master.m3u8", PlaybackFilter(offline=True))


def test_muxed_audio_variants_keep_their_codecs() -> None:
    src = (DEMO / "master-ts.m3u8").read_text()
    out = filter_multivariant_playlist(src, "master-ts.m3u8",
                                       parse_playback_filter({"tracks": "video"}))
    # No AUDIO group to drop: the audio muxed into the TS stays, and CODECS says so.
    assert out == src


# --- HLS: rendition ids shared with DASH -------------------------------------------------------


def demo_mpd() -> MpdDocument:
    doc, _ = generate_mpd(scan_catalog(str(DEMO.parent)).assets["demo"])
    return doc


def test_hls_and_dash_agree_on_rendition_ids() -> None:
    dash_ids = {rep.get("id") for rep in demo_mpd().root.iter(f"{MPD}Representation")}
    hls_ids = multivariant_rendition_ids(source("demo"), "master.m3u8")
    assert set(hls_ids.values()) == dash_ids == {"video-360p", "video-720p", "audio-en"}
    for rep_id in ("video-360p", "video-720p"):
        out = filter_multivariant_playlist(source("demo"), "master.m3u8",
                                           PlaybackFilter(flavor=rep_id))
        uris = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
        assert uris == [f"{rep_id}/index.m3u8"]


def test_rendition_ids_for_shared_folders() -> None:
    assert rendition_ids(["v/a.m3u8", "v/b.m3u8", "w/index.m3u8", "index.m3u8"]) == {
        "v/a.m3u8": "v/a", "v/b.m3u8": "v/b", "w/index.m3u8": "w", "index.m3u8": "index"}
    assert rendition_ids(["a/x.m3u8", "a/x.m3u", "a"]) == {
        "a/x.m3u8": "a/x", "a/x.m3u": "a/x-2", "a": "a"}
    src = "\n".join([
        "#EXTM3U",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x",URI="media/audio.m3u8"',
        '#EXT-X-STREAM-INF:BANDWIDTH=2,CODECS="avc1.64001f,mp4a.40.2",AUDIO="a"',
        "media/high.m3u8",
        '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2",AUDIO="a"',
        "media/low.m3u8?v=1",
    ]) + "\n"
    assert multivariant_rendition_ids(src, "master.m3u8") == {
        "media/high.m3u8": "media/high", "media/low.m3u8": "media/low",
        "media/audio.m3u8": "media/audio"}
    out = filter_multivariant_playlist(src, "master.m3u8", PlaybackFilter(flavor="media/low"))
    assert "media/low.m3u8?v=1" in out and "media/high.m3u8" not in out


# --- HLS: propagating the query ----------------------------------------------------------------


def test_append_query_to_every_uri() -> None:
    src = "\n".join([
        "#EXTM3U",
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer.json\"",
        "#EXT-X-SESSION-DATA:DATA-ID=\"t\",URI=\"data.json\"",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/index.m3u8"',
        '#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"',
        '#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO="a"',
        "low/index.m3u8",
        '#EXT-X-STREAM-INF:BANDWIDTH=2,AUDIO="a"',
        "high/index.m3u8?x=1#frag",
        '#EXT-X-STREAM-INF:BANDWIDTH=3,AUDIO="a"',
        "other/index.m3u8?",
        '#EXT-X-STREAM-INF:BANDWIDTH=4,AUDIO="a"',
        "https://cdn.example/elsewhere.m3u8",
        '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI="low/iframes.m3u8"',
    ]) + "\n"
    out = append_query_to_playlist_uris(src, "tracks=video%2Caudio&profile=offline")
    q = "tracks=video%2Caudio&profile=offline"
    assert out.splitlines() == [
        "#EXTM3U",
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer.json\"",
        "#EXT-X-SESSION-DATA:DATA-ID=\"t\",URI=\"data.json\"",
        f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/index.m3u8?{q}"',
        '#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"',
        '#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO="a"',
        f"low/index.m3u8?{q}",
        '#EXT-X-STREAM-INF:BANDWIDTH=2,AUDIO="a"',
        f"high/index.m3u8?x=1&{q}#frag",
        '#EXT-X-STREAM-INF:BANDWIDTH=3,AUDIO="a"',
        f"other/index.m3u8?{q}",
        '#EXT-X-STREAM-INF:BANDWIDTH=4,AUDIO="a"',
        "https://cdn.example/elsewhere.m3u8",  # another host never gets our query
        f'#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI="low/iframes.m3u8?{q}"',
    ]
    assert classify_playlist(out) is PlaylistKind.MULTIVARIANT


def test_append_query_edge_cases() -> None:
    src = source("demo")
    assert append_query_to_playlist_uris(src, "") is src
    for bad in ('a="b"', "a=b c", "a=b\n#EXT-X-KEY:x", "?a=b", "a=b#c"):
        with pytest.raises(ValueError, match="URL-encoded"):
            append_query_to_playlist_uris(src, bad)


@given(_FILTERS)
def test_appended_filter_query_parses_back(f: PlaybackFilter) -> None:
    from urllib.parse import parse_qsl, urlencode, urlsplit

    query = urlencode(f.query_items())
    out = append_query_to_playlist_uris(source("demo"), query)
    for line in out.splitlines():
        if line and not line.startswith("#"):
            parsed = dict(parse_qsl(urlsplit(line).query, keep_blank_values=True))
            assert parse_playback_filter(parsed) == f


# --- DASH -----------------------------------------------------------------------------------------


def representation_ids(doc: MpdDocument) -> list[str]:
    return [rep.get("id", "") for rep in doc.root.iter(f"{MPD}Representation")]


def adaptation_sets(doc: MpdDocument) -> list[ET.Element]:
    return list(doc.root.iter(f"{MPD}AdaptationSet"))


def test_dash_demo_offline_keeps_the_best_video_and_the_audio() -> None:
    doc = demo_mpd()
    before = serialize_mpd(doc)
    out = filter_mpd(doc, PlaybackFilter(offline=True))
    assert representation_ids(out) == ["video-720p", "audio-en"]
    assert serialize_mpd(doc) == before  # the (cached) skeleton is untouched
    assert representation_ids(doc) == ["video-360p", "video-720p", "audio-en"]
    text = serialize_mpd(out)
    ET.fromstring(text)  # well-formed
    # The removal kept the indentation of what followed it.
    assert b"\n      </AdaptationSet>" not in text
    assert b"</Representation>\n    </AdaptationSet>" in text


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ["video-360p", "video-720p", "audio-en"]),
    ({"profile": "offline", "flavor": "video-360p"}, ["video-360p", "audio-en"]),
    ({"profile": "offline", "bandwidth": "1000000"}, ["video-360p", "audio-en"]),
    ({"max_bitrate": "600000"}, ["video-360p", "audio-en"]),
    ({"min_bitrate": "600000"}, ["video-720p", "audio-en"]),
    ({"bandwidth": "2000000"}, ["video-720p", "audio-en"]),
    ({"tracks": "video"}, ["video-360p", "video-720p"]),
    ({"tracks": "audio"}, ["audio-en"]),
    ({"tracks": "audio", "max_bitrate": "100000"}, ["audio-en"]),
    ({"audio_lang": "en-US"}, ["video-360p", "video-720p", "audio-en"]),
    ({"flavor": "video-720p"}, ["video-720p", "audio-en"]),
])
def test_dash_demo_filters(query: dict[str, str], expected: list[str]) -> None:
    out = filter_mpd(demo_mpd(), parse_playback_filter(query))
    assert representation_ids(out) == expected
    ET.fromstring(serialize_mpd(out))


@pytest.mark.parametrize(("query", "reason"), [
    ({"max_bitrate": "1000"}, "no representation matches the filter"),
    ({"flavor": "video-1080p"}, "no representation matches the filter"),
    ({"flavor": "audio-en"}, "no representation matches the filter"),
    ({"bandwidth": "100"}, "no representation matches the filter"),
    ({"tracks": "subtitles"}, "no representation matches the filter"),
    ({"tracks": "audio", "min_bitrate": "100000"}, "no representation matches the filter"),
    ({"audio_lang": "de"}, "no audio rendition matches audio_lang"),
])
def test_dash_demo_refusals(query: dict[str, str], reason: str) -> None:
    doc = demo_mpd()
    before = serialize_mpd(doc)
    with pytest.raises(BadRequest) as caught:
        filter_mpd(doc, parse_playback_filter(query))
    assert caught.value.detail == reason
    assert serialize_mpd(doc) == before


MULTI_MPD = b"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:x="urn:example:vendor" type="static"
     profiles="urn:mpeg:dash:profile:isoff-live:2011" mediaPresentationDuration="PT10S"
     minBufferTime="PT2S">
  <!-- a comment that survives -->
  <x:Vendor x:kept="yes"/>
  <Period id="p0">
    <AdaptationSet id="1" mimeType="video/mp4" codecs="avc1.64001f">
      <Representation id="v-low" bandwidth="500000" width="640" height="360"/>
      <Representation id="v-mid" bandwidth="1200000" width="1280" height="720"/>
      <Representation id="v-high" bandwidth="3000000" width="1920" height="1080"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="video" mimeType="video/mp4" codecs="hvc1.1.6.L93.B0">
      <Representation id="h-mid" bandwidth="900000" width="1280" height="720"/>
      <Representation id="h-high" bandwidth="2000000" width="1920" height="1080"/>
    </AdaptationSet>
    <AdaptationSet id="3" contentType="audio" mimeType="audio/mp4" lang="fr-CA">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="alternate"/>
      <Representation id="a-fr-64" bandwidth="64000"/>
      <Representation id="a-fr-128" bandwidth="128000"/>
    </AdaptationSet>
    <AdaptationSet id="4" mimeType="audio/mp4">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <Representation id="a-en-96" bandwidth="96000" lang="en"/>
      <Representation id="a-en-192" bandwidth="192000" lang="en"/>
      <Representation id="a-en-48" bandwidth="48000" lang="en"/>
    </AdaptationSet>
    <AdaptationSet id="5" contentType="audio" mimeType="audio/mp4" lang="de">
      <Representation id="a-de" bandwidth="96000"/>
    </AdaptationSet>
    <AdaptationSet id="6" mimeType="application/mp4" codecs="stpp" lang="en">
      <Representation id="t-en" bandwidth="2000"/>
    </AdaptationSet>
    <AdaptationSet id="7" mimeType="text/vtt" lang="fr">
      <Representation id="t-fr" bandwidth="1000"/>
    </AdaptationSet>
    <AdaptationSet id="8" contentType="image" mimeType="image/jpeg">
      <Representation id="thumbs" bandwidth="10000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""
ALL_MULTI = ["v-low", "v-mid", "v-high", "h-mid", "h-high", "a-fr-64", "a-fr-128",
             "a-en-96", "a-en-192", "a-en-48", "a-de", "t-en", "t-fr", "thumbs"]


def test_dash_track_types_of_the_multi_language_mpd() -> None:
    doc = parse_mpd(MULTI_MPD)
    kinds = [adaptation_track_type(s, doc.namespace) for s in adaptation_sets(doc)]
    v, a, t = TrackType.VIDEO, TrackType.AUDIO, TrackType.SUBTITLES
    assert kinds == [v, v, a, a, a, t, t, None]


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ALL_MULTI),
    ({"tracks": "audio"}, ["a-fr-64", "a-fr-128", "a-en-96", "a-en-192", "a-en-48", "a-de",
                           "thumbs"]),
    ({"tracks": "video,subtitles"}, ["v-low", "v-mid", "v-high", "h-mid", "h-high", "t-en",
                                     "t-fr", "thumbs"]),
    ({"audio_lang": "fr"}, ["v-low", "v-mid", "v-high", "h-mid", "h-high", "a-fr-64",
                            "a-fr-128", "t-en", "t-fr", "thumbs"]),
    ({"audio_lang": "de,EN"}, ["v-low", "v-mid", "v-high", "h-mid", "h-high", "a-en-96",
                               "a-en-192", "a-en-48", "a-de", "t-en", "t-fr", "thumbs"]),
    ({"min_bitrate": "1000000", "max_bitrate": "2500000", "tracks": "video,audio"},
     ["v-mid", "h-high", "a-fr-64", "a-fr-128", "a-en-96", "a-en-192", "a-en-48", "a-de",
      "thumbs"]),
    ({"bandwidth": "1000000", "tracks": "video"}, ["h-mid", "thumbs"]),
    ({"flavor": "h-high", "tracks": "video"}, ["h-high", "thumbs"]),
    ({"profile": "offline"}, ["v-high", "a-en-192", "thumbs"]),
    ({"profile": "offline", "audio_lang": "fr"}, ["v-high", "a-fr-128", "thumbs"]),
    ({"profile": "offline", "audio_lang": "es,de,fr"}, ["v-high", "a-de", "thumbs"]),
    ({"profile": "offline", "bandwidth": "2500000", "tracks": "video,audio,subtitles"},
     ["h-high", "a-en-192", "t-en", "t-fr", "thumbs"]),
    ({"profile": "offline", "flavor": "v-low", "tracks": "video"}, ["v-low", "thumbs"]),
    ({"profile": "offline", "tracks": "audio"}, ["a-en-192", "thumbs"]),
    ({"profile": "offline", "tracks": "audio", "bandwidth": "100000"}, ["a-en-96", "thumbs"]),
])
def test_dash_multi_language_filters(query: dict[str, str], expected: list[str]) -> None:
    doc = parse_mpd(MULTI_MPD)
    before = serialize_mpd(doc)
    out = filter_mpd(doc, parse_playback_filter(query))
    assert representation_ids(out) == expected
    assert serialize_mpd(doc) == before
    text = serialize_mpd(out)
    again = parse_mpd(text)  # still an MPD the origin accepts
    assert representation_ids(again) == expected
    assert b"<!-- a comment that survives -->" in text
    assert b'<x:Vendor x:kept="yes"/>' in text
    # No AdaptationSet is left without Representations.
    for adaptation_set in adaptation_sets(out):
        assert adaptation_set.find(f"{MPD}Representation") is not None


def test_dash_offline_multi_language_layout() -> None:
    out = filter_mpd(parse_mpd(MULTI_MPD), parse_playback_filter({"profile": "offline"}))
    sets = adaptation_sets(out)
    kinds = [adaptation_track_type(s, out.namespace) for s in sets]
    assert kinds.count(TrackType.VIDEO) == 1 and kinds.count(TrackType.AUDIO) == 1
    assert TrackType.SUBTITLES not in kinds
    assert [s.get("id") for s in sets] == ["1", "4", "8"]


@pytest.mark.parametrize(("query", "reason"), [
    ({"audio_lang": "es"}, "no audio rendition matches audio_lang"),
    ({"tracks": "subtitles"}, "no representation matches the filter"),
    ({"flavor": "nope"}, "no representation matches the filter"),
    ({"min_bitrate": "4000000"}, "no representation matches the filter"),
])
def test_dash_multi_language_refusals(query: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        filter_mpd(parse_mpd(MULTI_MPD), parse_playback_filter(query))
    assert caught.value.detail == reason


def test_dash_bad_bandwidth_is_malformed_media() -> None:
    broken = MULTI_MPD.replace(b'bandwidth="500000"', b'bandwidth="fast"')
    with pytest.raises(MalformedMedia):
        filter_mpd(parse_mpd(broken), PlaybackFilter(max_bitrate=10**6))


# --- a real tool reads the filtered playlists ---------------------------------------------------


def ffprobe_streams(playlist: Path) -> list[tuple[str, int | None]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,height", "-of", "json",
         str(playlist)], capture_output=True, text=True, timeout=60, check=True)
    streams = json.loads(out.stdout)["streams"]
    return sorted((s["codec_type"], s.get("height")) for s in streams)


@pytest.mark.ffmpeg
def test_ffprobe_sees_only_the_filtered_streams(tmp_path: Path) -> None:
    asset = tmp_path / "demo"
    shutil.copytree(DEMO, asset)
    src = (asset / "master.m3u8").read_text()

    def write(name: str, query: dict[str, str]) -> Path:
        path = asset / name
        path.write_text(filter_multivariant_playlist(src, "master.m3u8",
                                                     parse_playback_filter(query)))
        return path

    # Negative control: the unfiltered playlist shows every stream.
    assert ffprobe_streams(asset / "master.m3u8") == [
        ("audio", None), ("video", 360), ("video", 720)]
    assert ffprobe_streams(write("offline.m3u8", {"profile": "offline"})) == [
        ("audio", None), ("video", 720)]
    assert ffprobe_streams(write("offline-360.m3u8", {"profile": "offline",
                                                      "flavor": "video-360p"})) == [
        ("audio", None), ("video", 360)]
    assert ffprobe_streams(write("video.m3u8", {"tracks": "video"})) == [
        ("video", 360), ("video", 720)]
