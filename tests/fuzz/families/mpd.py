"""DASH MPD XML: parsing untrusted source MPDs, writing them back, protection, filters.

Invariants beyond "typed errors only": what ``serialize_mpd`` writes parses again
and writes the same bytes a second time; what ``protect_mpd`` and ``filter_mpd``
give serialises to an MPD that parses.  Inputs: the MPD generated from the demo
asset, a hand-written source MPD with foreign namespaces, comments and processing
instructions, and a prefixed one.  Typed errors: ``MalformedMedia``, ``BadRequest``.
"""

from __future__ import annotations

from functools import cache

from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme
from origin.errors import BadRequest, MalformedMedia
from origin.packaging.catalog import scan_catalog
from origin.packaging.dash import (
    MpdDocument,
    filter_mpd,
    generate_mpd,
    parse_mpd,
    protect_mpd,
    serialize_mpd,
)
from origin.packaging.drm import DrmContext
from origin.packaging.key_system import ALL_KEY_SYSTEMS
from tests.fuzz import media
from tests.fuzz.core import Target
from tests.fuzz.families.hls import FILTERS

TYPED = (MalformedMedia, BadRequest)
DRM = DrmContext(ContentKey(bytes(range(16)), bytes(range(16, 32))), ALL_KEY_SYSTEMS,
                 "https://origin.example", license_query="token=abc")

SOURCE_MPD = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- before the root -->
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:ext="urn:example:ext" xmlns:xlink="http://www.w3.org/1999/xlink"
     xsi:schemaLocation="urn:mpeg:dash:schema:mpd:2011 DASH-MPD.xsd"
     profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static"
     mediaPresentationDuration="PT12S" minBufferTime="PT2S" ext:origin="hand">
  <ProgramInformation><Title>Own &amp; handmade &lt;3</Title></ProgramInformation>
  <ext:Custom ext:flag="yes">keep me<?pi data?></ext:Custom>
  <Period id="p0" start="PT0S">
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <SegmentTemplate timescale="12800" initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/seg-$Number%05d$.m4s" startNumber="1"
                       duration="25600"/>
      <Representation id="video-360p" bandwidth="500000" codecs="avc1.64001e"/>
      <Representation id="video-720p" bandwidth="1100000" codecs="avc1.64001f"/>
    </AdaptationSet>
    <AdaptationSet id="2" mimeType="audio/mp4" lang="en">
      <AudioChannelConfiguration
          schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
      <UnknownThing xmlns="urn:example:other" attr="1"/>
      <Representation id="audio-en" bandwidth="96000" codecs="mp4a.40.2">
        <BaseURL>audio-en/</BaseURL>
        <SegmentList><SegmentURL media="seg-00001.m4s"/></SegmentList>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="3" mimeType="application/mp4" codecs="stpp" lang="de">
      <Representation id="subs" bandwidth="1000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""
PREFIXED_MPD = (b'<mpd:MPD xmlns:mpd="urn:mpeg:dash:schema:mpd:2011" xmlns:x="urn:x" x:a="1">'
                b'<plain b="&quot;"/><x:e/><!--c--><?pi data?><mpd:Period><o xmlns="urn:o">'
                b"<p/></o></mpd:Period></mpd:MPD>")


@cache
def mpds() -> tuple[bytes, ...]:
    doc, _ = generate_mpd(scan_catalog(str(media.DEMO.parent)).assets["demo"])
    return (serialize_mpd(doc), SOURCE_MPD, PREFIXED_MPD)


def _reparsed(out: bytes) -> MpdDocument:
    """What the origin wrote must parse again: a typed error here is a finding."""
    try:
        return parse_mpd(out)
    except MalformedMedia as exc:
        raise AssertionError(f"written MPD does not parse: {exc.detail}") from exc


def run_round_trip(raw: bytes) -> None:
    out = serialize_mpd(parse_mpd(raw))
    again = serialize_mpd(_reparsed(out))
    assert again == out, "serialize_mpd is not stable over a parse"


def _choice(payload: bytes) -> tuple[int, MpdDocument]:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    return payload[0], parse_mpd(payload[1:])


def run_protect(payload: bytes) -> None:
    choice, doc = _choice(payload)
    scheme = (CommonScheme.CENC, CommonScheme.CBCS)[choice & 1]
    _reparsed(serialize_mpd(protect_mpd(doc, scheme, DRM)))


def run_filter(payload: bytes) -> None:
    choice, doc = _choice(payload)
    before = serialize_mpd(doc)
    filtered = filter_mpd(doc, FILTERS[choice % len(FILTERS)])
    _reparsed(serialize_mpd(filtered))
    assert serialize_mpd(doc) == before, "filter_mpd changed its input"


TARGETS: tuple[Target, ...] = (
    Target("round_trip", run_round_trip, TYPED, mpds, media.markup_starts),
    Target("protect", run_protect, TYPED,
           lambda: [bytes([bit]) + raw for raw in mpds() for bit in (0, 1)],
           lambda d: media.shifted(media.markup_starts(d[1:]), 1)),
    Target("filter", run_filter, TYPED,
           lambda: [bytes([i]) + raw for raw in mpds() for i in range(len(FILTERS))],
           lambda d: media.shifted(media.markup_starts(d[1:]), 1)),
)
