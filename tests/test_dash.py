"""DASH at ``/dash/{asset}/{scheme}/…``: generated and rewritten MPDs, key signalling, segments.

The MPD is checked against the media itself (every ``S@t`` is the segment's
``tfdt``, read here with an independent box reader, and the timeline agrees
with ffprobe's packet timestamps), its segment URLs against the HLS URLs
(byte-identical under clear, cenc and cbcs), its ContentProtection against
the init segment's ``pssh`` boxes, and the clear MPD against ffmpeg, which
plays it frame-exact with the clear HLS stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import struct
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from origin.container.pssh import SystemId, parse_pssh
from origin.container.timeline import (
    FragmentTiming,
    TimelineError,
    TrackTiming,
    fragment_timing,
    read_track_timings,
)
from origin.errors import MalformedMedia
from origin.packaging.dash import (
    MpdDocument,
    frame_rate,
    number_template,
    parse_mpd,
    segment_timeline,
    serialize_mpd,
)
from tests.conftest import DEMO, RunningOrigin, start_origin
from tests.tools.mp4check import boxes, child

NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011", "cenc": "urn:mpeg:cenc:2013",
      "mspr": "urn:microsoft:playready", "dashif": "https://dashif.org/CPS",
      "clearkey": "http://dashif.org/guidelines/clearKey"}
MPD = "{urn:mpeg:dash:schema:mpd:2011}"
CENC = "{urn:mpeg:cenc:2013}"
MP4_PROTECTION = "urn:mpeg:dash:mp4protection:2011"
CLEARKEY = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"
COMMON, WIDEVINE, PLAYREADY = SystemId.COMMON.urn, SystemId.WIDEVINE.urn, SystemId.PLAYREADY.urn
RENDITIONS = {"video-360p", "video-720p", "audio-en"}


async def get(url: str, headers: dict[str, str] | None = None
              ) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def get_mpd(base: str, asset: str, scheme: str) -> tuple[bytes, ET.Element]:
    status, headers, body = await get(f"{base}/dash/{asset}/{scheme}/manifest.mpd")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/dash+xml")
    return body, ET.fromstring(body)


# --- reading an MPD back, independently of origin.packaging.dash -------------------------------


@dataclass(frozen=True)
class Segment:
    number: int
    t: int
    d: int
    path: str  # relative to the MPD


@dataclass(frozen=True)
class Rep:
    id: str
    element: ET.Element
    adaptation_set: ET.Element
    timescale: int
    init: str
    segments: tuple[Segment, ...]


def fill(template: str, rep_id: str, number: int = 0, t: int = 0) -> str:
    def one(match: re.Match[str]) -> str:
        name, width = match.group(1), match.group(2)
        if not name:
            return "$"
        value = {"RepresentationID": rep_id, "Number": number, "Time": t}[name]
        return f"{value:0{int(width)}d}" if width else str(value)

    return re.sub(r"\$(RepresentationID|Number|Time)?(?:%0(\d+)d)?\$", one, template)


def representations(root: ET.Element) -> list[Rep]:
    out = []
    for aset in root.iterfind("mpd:Period/mpd:AdaptationSet", NS):
        for rep in aset.iterfind("mpd:Representation", NS):
            rep_id = rep.get("id", "")
            template = rep.find("mpd:SegmentTemplate", NS)
            listed = rep.find("mpd:SegmentList", NS)
            addressing = template if template is not None else listed
            assert addressing is not None
            timescale = int(addressing.get("timescale", "1"))
            number = int(addressing.get("startNumber", "1"))
            urls = [u.get("media", "") for u in addressing.iterfind("mpd:SegmentURL", NS)]
            segments: list[Segment] = []
            t = 0
            for s in addressing.iterfind("mpd:SegmentTimeline/mpd:S", NS):
                t = int(s.get("t", t))
                d = int(s.get("d", "0"))
                for _ in range(int(s.get("r", "0")) + 1):
                    path = (fill(template.get("media", ""), rep_id, number, t)
                            if template is not None else urls[len(segments)])
                    segments.append(Segment(number, t, d, path))
                    number += 1
                    t += d
            if template is not None:
                init = fill(template.get("initialization", ""), rep_id)
            else:
                initialization = addressing.find("mpd:Initialization", NS)
                assert initialization is not None and len(urls) == len(segments)
                init = initialization.get("sourceURL", "")
            out.append(Rep(rep_id, rep, aset, timescale, init, tuple(segments)))
    return out


def tfdt(segment: bytes) -> int:
    """baseMediaDecodeTime of the first traf (own reader: tests/tools/mp4check)."""
    moof = next(b for b in boxes(segment, 0, len(segment)) if b.type == "moof")
    box = child(segment, child(segment, moof, "traf")[0], "tfdt")[0]
    version = segment[box.start + 8]
    fmt = ">Q" if version == 1 else ">I"
    return int(struct.unpack_from(fmt, segment, box.start + 12)[0])


def mdhd_timescale(init: bytes) -> int:
    moov = next(b for b in boxes(init, 0, len(init)) if b.type == "moov")
    mdhd = child(init, child(init, child(init, moov, "trak")[0], "mdia")[0], "mdhd")[0]
    version = init[mdhd.start + 8]
    return int(struct.unpack_from(">I", init, mdhd.start + (28 if version == 1 else 20))[0])


def pssh_boxes(init: bytes) -> list[bytes]:
    moov = next(b for b in boxes(init, 0, len(init)) if b.type == "moov")
    return [init[b.start:b.end] for b in child(init, moov, "pssh")]


def protections(aset: ET.Element) -> list[ET.Element]:
    return aset.findall("mpd:ContentProtection", NS)


# --- the generated MPD --------------------------------------------------------------------------


async def test_generated_mpd_structure(origin_server: RunningOrigin) -> None:
    body, root = await get_mpd(origin_server.base, "demo", "clear")
    assert root.tag == f"{MPD}MPD"
    assert root.get("type") == "static"
    assert root.get("profiles") == "urn:mpeg:dash:profile:isoff-live:2011"
    assert root.get("mediaPresentationDuration") == "PT12.011S"  # audio: 576512 / 48000 s
    assert root.get("minBufferTime") == "PT2.006S"
    (period,) = root.findall("mpd:Period", NS)
    sets = period.findall("mpd:AdaptationSet", NS)
    assert [(s.get("contentType"), s.get("mimeType")) for s in sets] == [
        ("video", "video/mp4"), ("audio", "audio/mp4")]
    video, audio = sets
    reps = {r.id: r for r in representations(root)}
    assert set(reps) == RENDITIONS  # the MPEG-TS rendition is not CMAF: left out
    v360, v720, aud = (r.element for r in (reps["video-360p"], reps["video-720p"],
                                           reps["audio-en"]))
    # Video attributes come from the multivariant playlist's EXT-X-STREAM-INF.
    assert dict(v360.attrib) == {"id": "video-360p", "bandwidth": "518989",
                                 "codecs": "avc1.64001e", "width": "640", "height": "360",
                                 "frameRate": "25"}
    assert v720.get("bandwidth") == "1104801" and v720.get("codecs") == "avc1.64001f"
    assert (v720.get("width"), v720.get("height")) == ("1280", "720")
    assert [r.get("id") for r in video.findall("mpd:Representation", NS)] == [
        "video-360p", "video-720p"]
    # Audio: language, main role for DEFAULT=YES, channels, a measured bandwidth.
    assert audio.get("lang") == "en"
    role = audio.find("mpd:Role", NS)
    assert role is not None
    assert (role.get("schemeIdUri"), role.get("value")) == ("urn:mpeg:dash:role:2011", "main")
    assert aud.get("codecs") == "mp4a.40.2" and aud.get("audioSamplingRate") == "48000"
    channels = aud.find("mpd:AudioChannelConfiguration", NS)
    assert channels is not None and channels.get("value") == "2"
    peak = max(
        (DEMO / "audio-en" / s.path.rsplit("/", 1)[1]).stat().st_size * 8 * 48000 / s.d
        for s in reps["audio-en"].segments)
    assert int(aud.get("bandwidth", "0")) == pytest.approx(peak, abs=1)
    # Templates: numbered names become $Number%05d$, paths relative to the MPD.
    template = v360.find("mpd:SegmentTemplate", NS)
    assert template is not None
    assert template.get("media") == "video-360p/seg-$Number%05d$.m4s"
    assert template.get("initialization") == "video-360p/init.mp4"
    assert template.get("startNumber") == "1"
    # Clear: no key signalling, no foreign namespaces.
    assert not root.findall(".//mpd:ContentProtection", NS)
    assert b"cenc" not in body


async def test_mpd_etag_and_304(origin_server: RunningOrigin) -> None:
    url = f"{origin_server.base}/dash/demo/cenc/manifest.mpd"
    status, headers, body = await get(url)
    assert status == 200 and headers["ETag"].startswith('"')
    status, again, _ = await get(url, {"If-None-Match": headers["ETag"]})
    assert status == 304 and again["ETag"] == headers["ETag"]
    status, _, second = await get(url)
    assert second == body  # deterministic


async def test_timeline_is_exact(origin_server: RunningOrigin, tmp_path: Path) -> None:
    base = f"{origin_server.base}/dash/demo/clear/"
    _, root = await get_mpd(origin_server.base, "demo", "clear")
    for rep in representations(root):
        _, _, init = await get(base + rep.init)
        assert rep.timescale == mdhd_timescale(init)
        media = []
        for seg in rep.segments:
            status, _, data = await get(base + seg.path)
            assert status == 200
            assert seg.t == tfdt(data), (rep.id, seg.number)
            media.append(data)
        assert len(media) == 6
        # Contiguous, and the sum is the rendition's duration as ffprobe sees it.
        for before, after in zip(rep.segments, rep.segments[1:], strict=False):
            assert after.t == before.t + before.d
        joined = tmp_path / f"{rep.id}.mp4"
        joined.write_bytes(init + b"".join(media))
        probe = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries",
             "stream=time_base:packet=dts,duration,pos", "-of", "json", str(joined)],
            check=True, capture_output=True, text=True).stdout)
        assert probe["streams"][0]["time_base"] == f"1/{rep.timescale}"
        packets = probe["packets"]
        # Segment boundaries by byte position: the first packet of each segment.
        starts, offset = [], len(init)
        for data in media:
            first = min((p for p in packets if offset <= int(p["pos"]) < offset + len(data)),
                        key=lambda p: int(p["dts"]))
            starts.append(int(first["dts"]))
            offset += len(data)
        last = max(packets, key=lambda p: int(p["dts"]))
        end = int(last["dts"]) + int(last["duration"])
        assert starts == [s.t for s in rep.segments]
        assert [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)] == [
            s.d for s in rep.segments]
        total = sum(s.d for s in rep.segments)
        assert total == end - starts[0]
        # … and agrees with the playlists' EXTINF to their microsecond precision.
        extinf = sum(Fraction(x) for x in re.findall(
            r"#EXTINF:([\d.]+)", (DEMO / rep.id / "index.m3u8").read_text()))
        assert abs(Fraction(total, rep.timescale) - extinf) < Fraction(1, 10**5)


@pytest.mark.parametrize("scheme", ["clear", "cenc", "cbcs"])
async def test_segments_identical_to_hls(origin_server: RunningOrigin, scheme: str) -> None:
    _, root = await get_mpd(origin_server.base, "demo", scheme)
    paths = [p for rep in representations(root) for p in (rep.init, *(s.path for s in
                                                                      rep.segments))]
    assert len(paths) == 21

    async def compare(path: str) -> None:
        dash = await get(f"{origin_server.base}/dash/demo/{scheme}/{path}")
        hls = await get(f"{origin_server.base}/hls/demo/{scheme}/{path}")
        assert dash[0] == hls[0] == 200, path
        assert dash[2] == hls[2], path
        assert dash[1]["Content-Type"] == hls[1]["Content-Type"]
        if scheme == "clear":
            assert dash[2] == (DEMO / path).read_bytes()
        else:
            assert dash[1]["ETag"] == hls[1]["ETag"]

    await asyncio.gather(*(compare(p) for p in paths))
    # Range requests work on DASH URLs as on HLS ones.
    status, headers, part = await get(f"{origin_server.base}/dash/demo/{scheme}/{paths[1]}",
                                      {"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and "Content-Range" in headers


# --- ContentProtection ----------------------------------------------------------------------


async def hls_key_id(base: str, scheme: str) -> str:
    _, _, body = await get(f"{base}/hls/demo/{scheme}/video-360p/index.m3u8")
    ids = set(re.findall(r"KEYID=0x([0-9A-F]{32})", body.decode()))
    assert len(ids) == 1
    return str(uuid.UUID(hex=ids.pop()))


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
async def test_content_protection(origin_server: RunningOrigin, scheme: str) -> None:
    base = origin_server.base
    body, root = await get_mpd(base, "demo", scheme)
    kid = await hls_key_id(base, scheme)
    text = body.decode()
    # The prefixes players match on by text (SPECS §3), with their namespaces.
    for decl in ('xmlns:cenc="urn:mpeg:cenc:2013"', 'xmlns:mspr="urn:microsoft:playready"',
                 'xmlns:dashif="https://dashif.org/CPS"',
                 'xmlns:clearkey="http://dashif.org/guidelines/clearKey"',
                 "<dashif:Laurl>", '<clearkey:Laurl Lic_type="EME-1.0">', "cenc:default_KID="):
        assert decl in text
    sets = root.findall("mpd:Period/mpd:AdaptationSet", NS)
    assert len(sets) == 2
    for aset in sets:
        cps = protections(aset)
        assert [c.get("schemeIdUri") for c in cps] == [
            MP4_PROTECTION, WIDEVINE, PLAYREADY, CLEARKEY]
        assert list(aset)[:4] == cps  # first: nothing here goes before them in schema order
        mp4, widevine, playready, clearkey = cps
        assert mp4.get("value") == scheme
        assert mp4.get(f"{CENC}default_KID") == kid
        assert playready.get("value") == "MSPR 2.0"
        assert clearkey.get("value") == "ClearKey1.0"
        laurls = [clearkey.findtext("dashif:Laurl", namespaces=NS),
                  clearkey.findtext("clearkey:Laurl", namespaces=NS)]
        assert laurls == [f"{base}/license/clearkey"] * 2
        signalled = [base64.b64decode(c.findtext("cenc:pssh", namespaces=NS) or "")
                     for c in (widevine, playready)]
        pro = base64.b64decode(playready.findtext("mspr:pro", namespaces=NS) or "")
        assert pro == parse_pssh(signalled[1]).data
        # The very pssh boxes the init segment carries, in the same order, after the Common
        # PSSH, which lives in the init only (see content_protection in dash.py).
        for rep in aset.iterfind("mpd:Representation", NS):
            template = rep.find("mpd:SegmentTemplate", NS)
            assert template is not None
            _, _, init = await get(f"{base}/dash/demo/{scheme}/{template.get('initialization')}")
            common, *rest = pssh_boxes(init)
            assert parse_pssh(common).system_id == SystemId.COMMON
            assert parse_pssh(common).kids == (uuid.UUID(kid).bytes,)
            assert rest == signalled
    # The key itself is nowhere in the MPD.
    _, _, key = await get(f"{base}/license/aes128/{uuid.UUID(kid).hex}")
    assert len(key) == 16
    assert key not in body and key.hex() not in text.lower()
    assert base64.b64encode(key) not in body


@pytest.mark.parametrize("scheme", ["aes128", "sample-aes", "nonsense", "CENC"])
async def test_unknown_scheme_is_404(origin_server: RunningOrigin, scheme: str) -> None:
    for tail in ("manifest.mpd", "video-360p/init.mp4"):
        status, _, body = await get(f"{origin_server.base}/dash/demo/{scheme}/{tail}")
        assert status == 404, body
        assert json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/dash/nope/clear/manifest.mpd",
                                  "/dash/demo/clear/video-360p/index.m3u8",
                                  "/dash/demo/cenc/master.m3u8",
                                  "/dash/demo/clear/other.mpd",
                                  "/dash/demo/clear/video-360p/seg-99999.m4s"])
async def test_not_dash_content_is_404(origin_server: RunningOrigin, path: str) -> None:
    status, _, _ = await get(origin_server.base + path)
    assert status == 404


# --- assets with their own configuration and MPDs ------------------------------------------------

OWN_MPD = """<?xml version="1.0" encoding="UTF-8"?>
<!-- before the root: not part of the tree -->
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:ext="urn:example:ext"
     xsi:schemaLocation="urn:mpeg:dash:schema:mpd:2011 DASH-MPD.xsd"
     profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static"
     mediaPresentationDuration="PT12S" minBufferTime="PT2S" ext:origin="hand">
  <ProgramInformation><Title>Own &amp; handmade &lt;3</Title></ProgramInformation>
  <ext:Custom ext:flag="yes">keep me</ext:Custom>
  <Period id="p0" start="PT0S">
    <!-- a comment inside -->
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4" ext:note="v">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <SegmentTemplate timescale="12800" initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/seg-$Number%05d$.m4s" startNumber="1"
                       duration="25600"/>
      <Representation id="video-360p" bandwidth="500000" codecs="avc1.64001e"
                      width="640" height="360"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4" lang="en">
      <AudioChannelConfiguration
          schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
      <UnknownThing xmlns="urn:example:other" attr="1"/>
      <Representation id="audio-en" bandwidth="96000" codecs="mp4a.40.2">
        <SegmentTemplate timescale="48000" initialization="audio-en/init.mp4"
                         media="audio-en/seg-$Number%05d$.m4s" startNumber="1"
                         duration="96256"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""

BAD_MPDS = {
    "bad-xml": "<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'><Period></MPD>",
    "bad-root": "<html><body/></html>",
    "bad-doctype": (
        '<?xml version="1.0"?>\n<!DOCTYPE MPD [\n <!ENTITY a "AAAAAAAAAAAAAAAA">\n'
        ' <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n'
        "<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'><Period><AdaptationSet>"
        "<Label>&b;</Label></AdaptationSet></Period></MPD>"),
    "bad-external": (
        '<!DOCTYPE MPD SYSTEM "file:///etc/passwd">'
        "<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'/>"),
    "bad-entity": "<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'><Title>&undefined;</Title></MPD>",
    "bad-utf16": "\ufeff<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'/>",
}


def make_renamed(asset: Path) -> None:
    """Video 720p segments without numbers; audio numbered from 11."""
    names = {"video-720p": [f"part-{c}.m4s" for c in "abcdef"],
             "audio-en": [f"seg-{i:05d}.m4s" for i in range(11, 17)]}
    for folder, new_names in names.items():
        playlist = (asset / folder / "index.m3u8").read_text()
        for i, new in enumerate(new_names, start=1):
            (asset / folder / f"seg-{i:05d}.m4s").rename(asset / folder / new)
            playlist = playlist.replace(f"seg-{i:05d}.m4s", new)
        (asset / folder / "index.m3u8").write_text(playlist)


@pytest.fixture(scope="module")
def assets_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    """demo copies: key systems configured, an own MPD, broken MPDs."""
    root = tmp_path_factory.mktemp("dash-media")
    for name, systems in (("ck-only", ["clearkey"]), ("wv-fp", ["widevine", "fairplay"])):
        shutil.copytree(DEMO, root / name)
        (root / name / "asset.json").write_text(json.dumps({"key_systems": systems}))
    shutil.copytree(DEMO, root / "renamed")
    make_renamed(root / "renamed")
    shutil.copytree(DEMO, root / "own")
    (root / "own" / "manifest.mpd").write_text(OWN_MPD)
    (root / "own" / "other.mpd").write_text(OWN_MPD.replace("ext:origin", "ext:second"))
    escaping = {
        "bad-url": "<BaseURL>https://cdn.example/</BaseURL>",
        "bad-dotdot": "<BaseURL>%2e%2e/clear/</BaseURL>",
        "bad-location": "<Location>http://elsewhere.example/clear.mpd</Location>",
    }
    for name, text in {**BAD_MPDS, **{k: OWN_MPD.replace("<Period", v + "\n  <Period")
                                      for k, v in escaping.items()}}.items():
        folder = root / name
        folder.mkdir()
        shutil.copy(DEMO / "master.m3u8", folder / "master.m3u8")
        encoding = "utf-16" if name == "bad-utf16" else "utf-8"
        (folder / "manifest.mpd").write_bytes(text.encode(encoding))
    server = start_origin(root, tmp_path_factory.mktemp("dash-state"))
    yield server
    server.stop()


@pytest.mark.parametrize("scheme", ["clear", "cbcs"])
async def test_unnumbered_segments_get_a_segment_list(assets_origin: RunningOrigin,
                                                      scheme: str) -> None:
    base = assets_origin.base
    _, root = await get_mpd(base, "renamed", scheme)
    reps = {r.id: r for r in representations(root)}
    assert set(reps) == RENDITIONS
    video, audio = reps["video-720p"], reps["audio-en"]
    assert video.element.find("mpd:SegmentList", NS) is not None
    assert [s.path for s in video.segments] == [f"video-720p/part-{c}.m4s" for c in "abcdef"]
    template = audio.element.find("mpd:SegmentTemplate", NS)
    assert template is not None and template.get("startNumber") == "11"
    assert audio.segments[0].path == "audio-en/seg-00011.m4s"
    # The same timeline as the demo's.
    assert [s.t for s in video.segments] == [25600 * i for i in range(6)]
    for rep in (video, audio):
        for path in (rep.init, *(s.path for s in rep.segments)):
            dash = await get(f"{base}/dash/renamed/{scheme}/{path}")
            hls = await get(f"{base}/hls/renamed/{scheme}/{path}")
            assert dash[0] == 200 and dash[2] == hls[2], path


@pytest.mark.parametrize(("asset", "expected"), [
    ("ck-only", [MP4_PROTECTION, CLEARKEY]),
    ("wv-fp", [MP4_PROTECTION, WIDEVINE]),  # FairPlay is not signalled in DASH
])
@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
async def test_asset_config_selects_systems(assets_origin: RunningOrigin, asset: str,
                                            expected: list[str], scheme: str) -> None:
    base = assets_origin.base
    body, root = await get_mpd(base, asset, scheme)
    for aset in root.findall("mpd:Period/mpd:AdaptationSet", NS):
        cps = protections(aset)
        assert [c.get("schemeIdUri") for c in cps] == expected
        _, _, init = await get(f"{base}/dash/{asset}/{scheme}/video-360p/init.mp4")
        signalled = [base64.b64decode(c.findtext("cenc:pssh", namespaces=NS) or "")
                     for c in cps[1:] if c.get("schemeIdUri") != CLEARKEY]
        assert pssh_boxes(init)[1:] == signalled  # after the init-only Common PSSH
    assert (b"mspr" in body, b"dashif" in body) == (False, asset == "ck-only")


def strip_protection(root: ET.Element) -> ET.Element:
    for parent in root.iter():
        for cp in parent.findall(f"{MPD}ContentProtection"):
            parent.remove(cp)
    return root


def canonical(xml: str | bytes, *, rewrite_prefixes: bool = False) -> str:
    text = xml.decode() if isinstance(xml, bytes) else xml
    return ET.canonicalize(re.sub(r"^<\?xml[^>]*\?>", "", text.strip()), strip_text=True,
                           rewrite_prefixes=rewrite_prefixes)


async def test_own_mpd_is_edited_not_regenerated(assets_origin: RunningOrigin) -> None:
    base = assets_origin.base
    body, root = await get_mpd(base, "own", "clear")
    assert canonical(body) == canonical(OWN_MPD)
    text = body.decode()
    for kept in ("<!-- a comment inside -->", "ext:Custom", 'ext:flag="yes"', 'ext:origin="hand"',
                 "xsi:schemaLocation", "Own &amp; handmade &lt;3", "<UnknownThing"):
        assert kept in text, kept

    body, root = await get_mpd(base, "own", "cenc")
    video, audio = root.findall("mpd:Period/mpd:AdaptationSet", NS)
    # Schema order: ContentProtection after AudioChannelConfiguration, before everything else.
    assert [c.tag.split("}")[1] for c in video][:5] == ["ContentProtection"] * 4 + ["Role"]
    assert [c.tag.split("}")[1] for c in audio][:6] == [
        "AudioChannelConfiguration", *["ContentProtection"] * 4, "UnknownThing"]
    # Nothing else changed.
    assert canonical(ET.tostring(strip_protection(root)), rewrite_prefixes=True) == canonical(
        OWN_MPD, rewrite_prefixes=True)
    assert b'ext:origin="hand"' in body and b"ext:Custom" in body
    # Segments addressed by the source's own templates are the HLS ones.
    dash = await get(f"{base}/dash/own/cenc/video-360p/seg-00003.m4s")
    hls = await get(f"{base}/hls/own/cenc/video-360p/seg-00003.m4s")
    assert dash[0] == 200 and dash[2] == hls[2]
    # Any other top-level .mpd is served the same way.
    body, _ = await get_mpd(base, "own", "cbcs")
    _, _, other = await get(f"{base}/dash/own/cbcs/other.mpd")
    assert other == body.replace(b"ext:origin", b"ext:second")


async def test_own_mpd_changes_are_picked_up(assets_origin: RunningOrigin) -> None:
    path = assets_origin.media / "own" / "other.mpd"
    url = f"{assets_origin.base}/dash/own/clear/other.mpd"
    _, _, before = await get(url)
    assert b'ext:second="hand"' in before
    time.sleep(1.1)  # the cache revalidates at most once a second
    path.write_text(OWN_MPD.replace("ext:origin", "ext:third"))
    _, _, after = await get(url)
    assert b'ext:third="hand"' in after


@pytest.mark.parametrize("asset", sorted(BAD_MPDS))
@pytest.mark.parametrize("scheme", ["clear", "cenc"])
async def test_malformed_mpd_is_502(assets_origin: RunningOrigin, asset: str,
                                    scheme: str) -> None:
    status, _, body = await get(f"{assets_origin.base}/dash/{asset}/{scheme}/manifest.mpd")
    assert status == 502, body
    reason = json.loads(body)["error"]
    assert "Traceback" not in reason and "AAAA" not in reason
    assert b"AAAAAAAA" not in body and b"root:" not in body


@pytest.mark.parametrize("asset", ["bad-url", "bad-dotdot", "bad-location"])
async def test_escaping_urls_are_refused_when_encrypting(assets_origin: RunningOrigin,
                                                         asset: str) -> None:
    base = assets_origin.base
    status, _, body = await get(f"{base}/dash/{asset}/cenc/manifest.mpd")
    assert status == 502 and b"outside" in body
    status, _, body = await get(f"{base}/dash/{asset}/clear/manifest.mpd")
    assert status == 200  # clear: served as it is
    assert b"example/" in body or b"%2e%2e/clear/" in body


# --- ffmpeg plays the clear MPD ------------------------------------------------------------------


async def framemd5(url: str, *maps: str) -> tuple[list[str], list[str]]:
    args = [a for m in maps for a in ("-map", m)]
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url, *args,
        "-f", "framemd5", "-", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    return [ln for ln in lines if ln.startswith("#")], [
        ln for ln in lines if ln and not ln.startswith("#")]


def by_stream(headers: list[str], frames: list[str]) -> dict[str, list[str]]:
    """Frames per stream, keyed by what the stream is (media type and dimensions)."""
    names: dict[str, str] = {}
    for line in headers:
        match = re.match(r"#(media_type|dimensions|sample_rate) (\d+): (.*)", line)
        if match:
            names[match.group(2)] = names.get(match.group(2), "") + match.group(3) + " "
    out: dict[str, list[str]] = {}
    for line in frames:
        index, rest = line.split(",", 1)
        out.setdefault(names[index.strip()], []).append(rest)
    return out


@pytest.mark.ffmpeg
async def test_ffmpeg_plays_clear_mpd_frame_exact(origin_server: RunningOrigin) -> None:
    mpd = f"{origin_server.base}/dash/demo/clear/manifest.mpd"
    hls, dash_all, *dash_each = await asyncio.gather(
        framemd5(f"{origin_server.base}/hls/demo/clear/master.m3u8", "0"),
        framemd5(mpd, "0"),
        *(framemd5(mpd, f"0:{i}") for i in range(3)))
    expected = by_stream(*hls)
    assert len(expected) == 3 and all(len(f) > 250 for f in expected.values())
    # One Representation at a time: every decoded frame equals the HLS stream's.
    seen = {}
    for headers, frames in dash_each:
        seen.update(by_stream(headers, frames))
    assert seen == expected
    # All at once (-map 0): ffmpeg 5.1's DASH demuxer ends every stream when the first one
    # ends, so up to a few trailing frames of the others are missing; the rest is identical.
    together = by_stream(*dash_all)
    assert together.keys() == expected.keys()
    for name, frames in together.items():
        full = expected[name]
        assert frames[:len(full) - 5] == full[:-5]
        assert set(frames[len(full) - 5:]) <= set(full[-5:])
        assert len(full) - len(frames) <= 4


# --- units: no server -------------------------------------------------------------------------


def test_number_template() -> None:
    assert number_template([f"v/seg-{i:05d}.m4s" for i in range(3, 9)]) == (
        "v/seg-$Number%05d$.m4s", 3)
    assert number_template(["a/9.m4s", "a/10.m4s", "a/11.m4s"]) == ("a/$Number$.m4s", 9)
    assert number_template(["a1/s1.mp4", "a1/s2.mp4"]) == ("a1/s$Number$.mp4", 1)
    assert number_template(["a/seg-1.m4s", "a/seg-3.m4s"]) is None  # a gap
    assert number_template(["a/x.m4s", "a/y.m4s"]) is None  # the 4 of m4s is no number


def test_frame_rate() -> None:
    assert frame_rate("25.000") == "25"
    assert frame_rate("29.970") == "30000/1001"
    assert frame_rate("23.976") == "24000/1001"
    assert frame_rate("59.940") == "60000/1001"
    assert frame_rate("12.5") == "25/2"
    assert frame_rate(None) is None and frame_rate("fast") is None and frame_rate("0") is None


def test_segment_timeline_runs_and_gaps() -> None:
    timings = [FragmentTiming(0, 10, 1), FragmentTiming(10, 10, 1), FragmentTiming(20, 9, 1),
               FragmentTiming(40, 9, 1), FragmentTiming(49, 9, 1)]
    assert [dict(s.attrib) for s in segment_timeline(timings)] == [
        {"t": "0", "d": "10", "r": "1"}, {"d": "9"}, {"t": "40", "d": "9", "r": "1"}]


@pytest.mark.parametrize("raw", [
    b'<!DOCTYPE x [<!ENTITY e "x">]><MPD xmlns="urn:mpeg:dash:schema:mpd:2011">&e;</MPD>',
    b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><!ENTITY e "x"></MPD>',
    b'<?xml version="1.0" encoding="ISO-8859-1"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"/>',
    "<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'/>".encode("utf-16"),
    b"<MPD xmlns='urn:other'/>",
    b"<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'>" + b"<a>" * 100 + b"</a>" * 100 + b"</MPD>",
    b"\xff\xfe\x00",
])
def test_parse_mpd_refuses(raw: bytes) -> None:
    with pytest.raises(MalformedMedia):
        parse_mpd(raw)


def test_serialize_keeps_prefixes_and_namespaces() -> None:
    source = (b'<mpd:MPD xmlns:mpd="urn:mpeg:dash:schema:mpd:2011" xmlns:x="urn:x" x:a="1">'
              b'<plain b="&quot;"/><x:e/><!--c--><?pi data?></mpd:MPD>')
    doc = parse_mpd(source)
    out = serialize_mpd(doc)
    assert b"<mpd:MPD" in out and b"<x:e/>" in out and b'x:a="1"' in out
    assert b"<!--c-->" in out and b"<?pi data?>" in out
    assert canonical(out) == canonical(source)
    # Unqualified elements under a default namespace keep their xmlns="", nested default
    # namespaces stay default namespaces, and prefixed attributes in them get a prefix.
    source = (b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><plain xmlns=""><in/></plain>'
              b'<o xmlns="urn:o"><p/></o><Period xmlns:y="urn:o" y:z="1"/></MPD>')
    out = serialize_mpd(parse_mpd(source))
    assert b'<plain xmlns=""><in/></plain><o xmlns="urn:o"><p/></o>' in out
    assert canonical(out) == canonical(source.replace(b"y:", b"ns0:").replace(b":y=", b":ns0="))
    assert isinstance(doc, MpdDocument)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *payload)


def _fragment(tfhd_flags: int, tfhd_extra: bytes, trun_flags: int, samples: bytes,
              count: int, tfdt: int | None = 90000) -> bytes:
    parts = [_full(b"tfhd", 0, tfhd_flags, struct.pack(">I", 1), tfhd_extra)]
    if tfdt is not None:
        parts.append(_full(b"tfdt", 1, 0, struct.pack(">Q", tfdt)))
    parts.append(_full(b"trun", 0, trun_flags, struct.pack(">I", count), samples))
    return _box(b"moof", _box(b"traf", *parts))


def test_fragment_timing_duration_sources() -> None:
    track = TrackTiming(1, "vide", 90000, 3000, "avc1", "avc1")
    # Per-sample durations in the trun (plus sizes, interleaved).
    seg = _fragment(0, b"", 0x300, struct.pack(">6I", 100, 1, 200, 1, 300, 1), 3)
    assert fragment_timing(seg, track) == FragmentTiming(90000, 600, 3)
    # tfhd default duration.
    seg = _fragment(0x8, struct.pack(">I", 1500), 0, b"", 4)
    assert fragment_timing(seg, track) == FragmentTiming(90000, 6000, 4)
    # trex default (from the init).
    seg = _fragment(0, b"", 0, b"", 2)
    assert fragment_timing(seg, track) == FragmentTiming(90000, 6000, 2)
    # Other tracks' trafs are ignored; a track without any traf is malformed.
    with pytest.raises(TimelineError):
        fragment_timing(seg, TrackTiming(2, "soun", 48000, 1024, "mp4a", "mp4a"))
    # No duration anywhere, no tfdt, or a count the box cannot hold: malformed.
    for bad in (_fragment(0, b"", 0, b"", 2), _fragment(0, b"", 0, b"", 2, tfdt=None),
                _fragment(0, b"", 0x100, struct.pack(">I", 5), 1000)):
        with pytest.raises(MalformedMedia):
            fragment_timing(bad, TrackTiming(1, "vide", 90000, 0, "avc1", "avc1"))


def test_read_track_timings_on_demo() -> None:
    video = read_track_timings((DEMO / "video-360p" / "init.mp4").read_bytes())
    audio = read_track_timings((DEMO / "audio-en" / "init.mp4").read_bytes())
    (v,) = video.values()
    (a,) = audio.values()
    assert (v.handler, v.timescale, v.codec, v.width, v.height) == (
        "vide", 12800, "avc1.64001e", 640, 360)
    assert (a.handler, a.timescale, a.codec, a.channels, a.sample_rate) == (
        "soun", 48000, "mp4a.40.2", 2, 48000)
    with pytest.raises(MalformedMedia):
        read_track_timings(b"\x00\x00\x00\x08moov")
