"""DASH MPDs: an asset's own MPD with key signalling added, or one generated from its HLS.

The only module that does MPD XML (DESIGN "Layers").

Rules:
- **Source MPD** (a top-level ``.mpd`` in the asset): edited, not regenerated.
  It must be UTF-8 and may not declare a DTD or entities (``<!DOCTYPE``,
  ``<!ENTITY``, … are refused before parsing, so nothing is ever expanded);
  anything that is not well-formed, too large or too deep is ``MalformedMedia``.
  Unknown elements, attributes and comments survive, and the namespace prefixes
  the source declared are written back as they were.  For an encrypted scheme
  a source that already signals ``ContentProtection``, or whose URLs
  (``BaseURL``, templates, ``SegmentURL``, ``xlink:href``, …) are absolute or
  climb out of the asset, is refused: those would bypass the encryption.
- **Generated MPD** (no source MPD): static, one Period, built from the asset's
  default multivariant playlist and its CMAF media playlists (MPEG-TS
  renditions are left out): one AdaptationSet per video codec and per audio
  (group, language), one Representation per rendition playlist, with a
  ``SegmentTemplate`` whose ``SegmentTimeline`` comes from the media itself:
  each ``S@t`` is the segment's ``tfdt`` and ``S@d`` its summed sample
  durations, in the init's ``mdhd`` timescale.  Numbered segment names become
  a ``$Number$`` template; anything else a ``SegmentList``.  URLs are paths
  inside the asset, relative to the MPD's own URL (``/dash/{asset}/{scheme}/``).
- **ContentProtection** (SPECS §3), in every AdaptationSet, after any
  ``FramePacking``/``AudioChannelConfiguration`` (schema order): mp4protection
  with ``cenc:default_KID``; the Common PSSH; Widevine; PlayReady (``mspr:pro``
  and ``cenc:pssh``); ClearKey (``dashif:Laurl`` and ``clearkey:Laurl``) — each
  DRM only when the asset enables it.  The ``pssh`` bytes are those the init
  segment carries (:func:`~origin.packaging.drm.init_pssh_boxes`).
- The clear form of each manifest (the skeleton) is cached per asset and
  revalidated, at most once a second, against the (size, mtime) of every file
  it was built from; :func:`protect_mpd` and :func:`filter_mpd` (playback
  filters, rules at that section) edit copies of it, never the cached tree.
  Everything here that reads files is blocking: callers run
  :func:`produce_mpd` in an executor.
"""

from __future__ import annotations

import base64
import copy
import math
import os
import posixpath
import re
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from urllib.parse import unquote

from origin.container.pssh import SystemId, parse_pssh
from origin.container.timeline import (
    FragmentTiming,
    TrackTiming,
    fragment_timing,
    read_track_timings,
)
from origin.crypto.subsample import CommonScheme
from origin.errors import BadRequest, MalformedMedia, NotFound
from origin.packaging.catalog import Asset, MediaFile, MediaKind
from origin.packaging.drm import DrmContext, init_pssh_boxes
from origin.packaging.hls import (
    MAX_PLAYLIST_BYTES,
    MediaRendition,
    VariantStream,
    decode_playlist,
    parse_decimal,
    parse_media_playlist,
    parse_multivariant_playlist,
)
from origin.packaging.key_system import KeySystem
from origin.packaging.playback_filter import (
    PlaybackFilter,
    TrackType,
    codec_track_type,
)
from origin.packaging.playback_filter import (
    rendition_ids as rendition_ids,  # public here too: Representation ids
)
from origin.untrusted_xml import UntrustedXmlError, check_xml_depth, decode_untrusted_xml

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
MPD_NAMESPACES = frozenset({MPD_NS, "urn:mpeg:DASH:schema:MPD:2011"})
CENC_NS = "urn:mpeg:cenc:2013"
MSPR_NS = "urn:microsoft:playready"
DASHIF_NS = "https://dashif.org/CPS"
CLEARKEY_NS = "http://dashif.org/guidelines/clearKey"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PREFERRED_PREFIXES = {
    MPD_NS: "", CENC_NS: "cenc", MSPR_NS: "mspr", DASHIF_NS: "dashif",
    CLEARKEY_NS: "clearkey", XLINK_NS: "xlink", XSI_NS: "xsi",
}
XML_NS = "http://www.w3.org/XML/1998/namespace"

MP4_PROTECTION = "urn:mpeg:dash:mp4protection:2011"
CLEARKEY_SCHEME = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"
PLAYREADY_VALUE = "MSPR 2.0"
CLEARKEY_VALUE = "ClearKey1.0"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"
CHANNELS_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
DEFAULT_MANIFEST = "manifest.mpd"

MAX_MPD_BYTES = 4 << 20
MAX_XML_DEPTH = 32
MAX_INIT_BYTES = 16 << 20
MAX_MOOF_BYTES = 64 << 20
MAX_TOP_LEVEL_BOXES = 4096
REVALIDATE_SECONDS = 1.0
CACHE_ENTRIES = 64

_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_DIGITS = re.compile(r"\d+")
# Attributes holding URLs or URL templates (ISO/IEC 23009-1 §5.3.9, §5.6).
_URL_ATTRIBUTES = {
    "SegmentTemplate": ("media", "initialization", "index", "bitstreamSwitching"),
    "SegmentURL": ("media", "index"),
    "Initialization": ("sourceURL",),
    "RepresentationIndex": ("sourceURL",),
    "BitstreamSwitching": ("sourceURL",),
    "Representation": ("id",),  # substituted for $RepresentationID$
}
_URL_ELEMENTS = frozenset({"BaseURL", "Location", "PatchLocation"})
_BEFORE_CONTENT_PROTECTION = frozenset({"FramePacking", "AudioChannelConfiguration"})


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


# --- documents: parsing and writing --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MpdDocument:
    """An MPD tree and the namespace prefixes its source declared (URI → prefix, in order)."""

    root: ET.Element = field(repr=False)
    prefixes: tuple[tuple[str, str], ...] = ()

    @property
    def namespace(self) -> str:
        return _ns(self.root.tag)


class _TreeBuilder(ET.TreeBuilder):
    """Keeps comments and processing instructions, and records namespace declarations."""

    def __init__(self) -> None:
        super().__init__(insert_comments=True, insert_pis=True)
        self.declared: dict[str, str] = {}

    def start_ns(self, prefix: str, uri: str) -> None:
        self.declared.setdefault(uri, prefix)


def parse_mpd(raw: bytes) -> MpdDocument:
    """Parse an untrusted MPD (see the module rules); ``MalformedMedia`` on anything wrong."""
    builder = _TreeBuilder()
    # No DTD can reach expat (decode_untrusted_xml refuses it), so no entity is ever
    # declared or expanded.
    parser = ET.XMLParser(target=builder)  # noqa: S314
    try:
        text = decode_untrusted_xml(raw, limit=MAX_MPD_BYTES)
        parser.feed(text.encode("utf-8"))
        root = parser.close()
        check_xml_depth(root, limit=MAX_XML_DEPTH)
    except UntrustedXmlError as exc:
        raise MalformedMedia(f"MPD {exc.reason}") from None
    except ET.ParseError:
        raise MalformedMedia("MPD is not well-formed XML") from None
    if not isinstance(root.tag, str) or _local(root.tag) != "MPD" \
            or _ns(root.tag) not in MPD_NAMESPACES:
        raise MalformedMedia("not an MPD")
    return MpdDocument(root, tuple(builder.declared.items()))


def serialize_mpd(doc: MpdDocument) -> bytes:
    """UTF-8 XML with every namespace declared once on the root, the source's prefixes kept."""
    element_uris: dict[str, None] = {}
    attribute_uris: dict[str, None] = {}
    for element in doc.root.iter():
        if isinstance(element.tag, str):
            element_uris[_ns(element.tag)] = None
            attribute_uris.update((_ns(name), None) for name in element.attrib)
    used = [uri for uri in {**element_uris, **attribute_uris} if uri and uri != XML_NS]
    prefix: dict[str, str] = {}
    taken: set[str] = set()
    for uri, wanted in [*doc.prefixes, *PREFERRED_PREFIXES.items()]:
        if uri not in used or uri in prefix:
            continue
        if not wanted and uri in element_uris:
            prefix[uri] = ""  # a default namespace: declared where its elements start
        elif wanted and wanted not in taken:
            prefix[uri] = wanted
            taken.add(wanted)
    counter = 0

    def fresh() -> str:
        nonlocal counter
        while f"ns{counter}" in taken:
            counter += 1
        taken.add(f"ns{counter}")
        return f"ns{counter}"

    for uri in used:
        if uri not in prefix:
            prefix[uri] = fresh()
    # Attributes cannot use a default namespace: such a URI gets a prefix of its own too.
    attribute_prefix = {uri: p or fresh() for uri, p in prefix.items()
                        if p or uri in attribute_uris}
    declarations = {"xmlns:" + p: uri for uri, p in attribute_prefix.items()}
    writer = _Writer(prefix, attribute_prefix)
    writer.element(doc.root, "", dict(sorted(declarations.items())))
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + "".join(writer.out).encode()


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return (_text(value).replace('"', "&quot;").replace("\n", "&#10;")
            .replace("\r", "&#13;").replace("\t", "&#9;"))


class _Writer:
    def __init__(self, prefix: dict[str, str], attribute_prefix: dict[str, str]) -> None:
        self.prefix = prefix
        self.attribute_prefix = attribute_prefix
        self.out: list[str] = []

    def _name(self, tag: str, table: dict[str, str]) -> str:
        uri = _ns(tag)
        if uri == XML_NS:
            return f"xml:{_local(tag)}"
        p = table.get(uri, "") if uri else ""
        return f"{p}:{_local(tag)}" if p else _local(tag)

    def element(self, element: ET.Element, default: str, extra: dict[str, str]) -> None:
        """Write ``element``; ``default`` is the default namespace in scope at its parent."""
        todo: list[tuple[ET.Element, str, dict[str, str]] | str] = [(element, default, extra)]
        while todo:
            item = todo.pop()
            if isinstance(item, str):
                self.out.append(item)
                continue
            node, in_scope, attrs = item
            kind: object = node.tag
            if kind is ET.Comment:
                self.out.append(f"<!--{node.text or ''}-->{_text(node.tail or '')}")
                continue
            if kind is ET.ProcessingInstruction:
                self.out.append(f"<?{node.text or ''}?>{_text(node.tail or '')}")
                continue
            tag = node.tag
            uri = _ns(tag)
            scope = in_scope
            if uri and self.prefix.get(uri) == "" and in_scope != uri:
                scope = uri
            elif not uri and in_scope:
                scope = ""
            declared = {"xmlns": scope} if scope != in_scope else {}
            declared |= attrs
            name = self._name(tag, self.prefix)
            parts = [f"<{name}"]
            parts += [f' {k}="{_attr(v)}"' for k, v in declared.items()]
            parts += [f' {self._name(k, self.attribute_prefix)}="{_attr(v)}"'
                      for k, v in node.attrib.items()]
            children = list(node)
            tail = _text(node.tail or "")
            if not children and not node.text:
                self.out.append("".join(parts) + "/>" + tail)
                continue
            self.out.append("".join(parts) + ">" + _text(node.text or ""))
            todo.append(f"</{name}>{tail}")
            todo.extend((child, scope, {}) for child in reversed(children))


# --- ContentProtection ------------------------------------------------------------------------


def clearkey_license_url(drm: DrmContext) -> str:
    return drm.license_url(f"{drm.public_base}/license/clearkey")


def content_protection(drm: DrmContext, scheme: CommonScheme, ns: str = MPD_NS) -> list[ET.Element]:
    """The ContentProtection elements of one AdaptationSet (SPECS §3), in signalling order."""
    boxes = {parse_pssh(box).system_id: box for box in init_pssh_boxes(drm, scheme)}

    def protection(scheme_id: str, value: str | None = None) -> ET.Element:
        element = ET.Element(_q(ns, "ContentProtection"), {"schemeIdUri": scheme_id})
        if value is not None:
            element.set("value", value)
        return element

    def child(parent: ET.Element, tag: str, text: str, **attrs: str) -> None:
        ET.SubElement(parent, tag, attrs).text = text

    def pssh(parent: ET.Element, system: SystemId) -> None:
        child(parent, _q(CENC_NS, "pssh"), base64.b64encode(boxes[system]).decode())

    mp4 = protection(MP4_PROTECTION, scheme.value)
    mp4.set(_q(CENC_NS, "default_KID"), str(uuid.UUID(bytes=drm.key.kid)))
    out = [mp4]
    # No Common-PSSH (1077efec-…) element: dash.js 4.7–5.2 takes it for W3C Clear Key and
    # hands the pssh box to generateRequest() as 'keyids', which Chromium rejects (error
    # 113), so no licence is ever asked for.  The box stays in the init segment, where
    # every player finds it ('encrypted' event / cenc init data).
    if KeySystem.WIDEVINE in drm.signalled:
        widevine = protection(SystemId.WIDEVINE.urn)
        pssh(widevine, SystemId.WIDEVINE)
        out.append(widevine)
    if KeySystem.PLAYREADY in drm.signalled:
        playready = protection(SystemId.PLAYREADY.urn, PLAYREADY_VALUE)
        pro = parse_pssh(boxes[SystemId.PLAYREADY]).data
        child(playready, _q(MSPR_NS, "pro"), base64.b64encode(pro).decode())
        pssh(playready, SystemId.PLAYREADY)
        out.append(playready)
    if KeySystem.CLEARKEY in drm.signalled:
        clearkey = protection(CLEARKEY_SCHEME, CLEARKEY_VALUE)
        url = clearkey_license_url(drm)
        child(clearkey, _q(DASHIF_NS, "Laurl"), url)
        child(clearkey, _q(CLEARKEY_NS, "Laurl"), url, Lic_type="EME-1.0")
        out.append(clearkey)
    return out


def protect_mpd(doc: MpdDocument, scheme: CommonScheme, drm: DrmContext) -> MpdDocument:
    """A copy of ``doc`` with ContentProtection in every AdaptationSet (see the module rules)."""
    root = copy.deepcopy(doc.root)
    ns = doc.namespace
    if any(True for _ in root.iter(_q(ns, "ContentProtection"))):
        raise MalformedMedia("source MPD already signals protection")
    _refuse_escaping_urls(root, ns)
    for adaptation_set in root.iter(_q(ns, "AdaptationSet")):
        _insert_protection(adaptation_set, content_protection(drm, scheme, ns))
    return MpdDocument(root, doc.prefixes)


def _insert_protection(parent: ET.Element, elements: Sequence[ET.Element]) -> None:
    children = list(parent)
    at = 0
    while at < len(children) and isinstance(children[at].tag, str) \
            and _local(children[at].tag) in _BEFORE_CONTENT_PROTECTION:
        at += 1
    before = parent.text if at == 0 else children[at - 1].tail
    indent = before if before is not None and before.strip() == "" and "\n" in before else None
    for offset, element in enumerate(elements):
        if indent is not None:
            element.tail = indent
            inner = list(element)
            if inner:
                element.text = indent + "  "
                for child in inner:
                    child.tail = indent + "  "
                inner[-1].tail = indent
        parent.insert(at + offset, element)


def _refuse_escaping_urls(root: ET.Element, ns: str) -> None:
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        if _q(XLINK_NS, "href") in element.attrib:
            raise MalformedMedia("MPD refers to remote elements")
        local = _local(element.tag) if _ns(element.tag) == ns else ""
        urls = [element.get(name) for name in _URL_ATTRIBUTES.get(local, ())]
        if local in _URL_ELEMENTS:
            urls.append(element.text or "")
        for url in urls:
            if url is not None and _escapes(url.strip()):
                raise MalformedMedia("MPD refers to media outside the asset")


def _escapes(url: str) -> bool:
    bare = unquote(url.split("?", 1)[0].split("#", 1)[0])  # players resolve %2e%2e as ..
    return bare.startswith(("/", "\\")) or bool(_URL_SCHEME.match(bare)) \
        or ".." in bare.replace("\\", "/").split("/")


# --- generating an MPD from HLS ----------------------------------------------------------------


Stamp = tuple[str, int, int]  # real path, size, mtime_ns


class _Reader:
    """Blocking reads of catalogued files, remembering each one's (size, mtime)."""

    def __init__(self, asset: Asset) -> None:
        self.asset = asset
        self.stamps: dict[str, Stamp] = {}

    def file(self, rel: str) -> MediaFile:
        try:
            return self.asset.file(rel)
        except NotFound:
            raise MalformedMedia("playlist refers to a file missing from the asset") from None

    def _note(self, file: MediaFile, st: os.stat_result) -> None:
        self.stamps[file.real_path] = (file.real_path, st.st_size, st.st_mtime_ns)

    def read(self, file: MediaFile, limit: int) -> bytes:
        try:
            with open(file.real_path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size > limit:
                    raise MalformedMedia(f"{file.rel.rsplit('/', 1)[-1]} too large")
                data = fh.read(st.st_size + 1)
        except FileNotFoundError:
            raise MalformedMedia("a file of the asset vanished") from None
        if len(data) != st.st_size:
            raise MalformedMedia("file changed while being read")
        self._note(file, st)
        return data

    def moofs(self, file: MediaFile) -> tuple[bytes, int]:
        """The segment's top-level ``moof`` boxes (``mdat`` payloads are skipped) and its size."""
        parts: list[bytes] = []
        try:
            with open(file.real_path, "rb") as fh:
                st = os.fstat(fh.fileno())
                size, pos, count = st.st_size, 0, 0
                while pos < size:
                    count += 1
                    if count > MAX_TOP_LEVEL_BOXES or size - pos < 8:
                        raise MalformedMedia("malformed media segment")
                    fh.seek(pos)
                    head = fh.read(16)
                    if len(head) < 8:
                        raise MalformedMedia("file changed while being read")
                    box_size, kind = struct.unpack_from(">I4s", head)
                    header = 8
                    if box_size == 1:
                        if len(head) < 16:
                            raise MalformedMedia("malformed media segment")
                        (box_size,) = struct.unpack_from(">Q", head, 8)
                        header = 16
                    elif box_size == 0:
                        box_size = size - pos
                    if not header <= box_size <= size - pos:
                        raise MalformedMedia("box size past the end of the segment")
                    if kind == b"moof":
                        if box_size > MAX_MOOF_BYTES:
                            raise MalformedMedia("moof too large")
                        fh.seek(pos)
                        data = fh.read(box_size)
                        if len(data) != box_size:
                            raise MalformedMedia("file changed while being read")
                        parts.append(data)
                    pos += box_size
        except FileNotFoundError:
            raise MalformedMedia("a file of the asset vanished") from None
        self._note(file, st)
        return b"".join(parts), size


@dataclass(frozen=True, slots=True)
class _Spec:
    """A rendition the multivariant playlist names: its playlist and what HLS says of it."""

    path: str
    audio: MediaRendition | None = None
    variant: VariantStream | None = None
    codecs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Representation:
    spec: _Spec
    id: str
    track: TrackTiming
    codecs: str
    init: str
    segments: tuple[str, ...]
    timings: tuple[FragmentTiming, ...]
    bandwidth: int

    @property
    def is_audio(self) -> bool:
        return self.track.handler == "soun"

    @property
    def start(self) -> Fraction:
        return Fraction(self.timings[0].start, self.track.timescale)

    @property
    def end(self) -> Fraction:
        last = self.timings[-1]
        return Fraction(last.start + last.duration, self.track.timescale)

    @property
    def longest_segment(self) -> Fraction:
        return Fraction(max(t.duration for t in self.timings), self.track.timescale)


def generate_mpd(asset: Asset) -> tuple[MpdDocument, tuple[Stamp, ...]]:
    """A clear static MPD for the asset's default HLS presentation (blocking; see the rules)."""
    reader = _Reader(asset)
    master = reader.file(asset.default_playlist)
    info = parse_multivariant_playlist(
        decode_playlist(reader.read(master, MAX_PLAYLIST_BYTES)), master.rel)
    specs: dict[str, _Spec] = {}
    for variant in info.variants:
        specs.setdefault(variant.path, _Spec(variant.path, variant=variant,
                                             codecs=variant.codecs))
    for rendition in info.renditions:
        if rendition.type == "AUDIO" and rendition.path is not None:
            codecs = tuple(c for v in info.variants if v.audio_group == rendition.group_id
                           for c in v.codecs)
            specs.setdefault(rendition.path, _Spec(rendition.path, audio=rendition,
                                                   codecs=codecs))
    ids = rendition_ids(list(specs))
    representations = []
    for spec in specs.values():
        rep = _load_representation(reader, spec, ids[spec.path])
        if rep is not None:
            representations.append(rep)
    if not representations:
        raise MalformedMedia("no CMAF renditions to describe in DASH")
    root = _build_mpd(representations)
    ET.indent(root, space="  ")
    return MpdDocument(root), tuple(reader.stamps.values())


def _load_representation(reader: _Reader, spec: _Spec, rep_id: str) -> _Representation | None:
    playlist = reader.file(spec.path)
    media = parse_media_playlist(decode_playlist(reader.read(playlist, MAX_PLAYLIST_BYTES)),
                                 playlist.rel)
    if media.map_path is None:
        return None  # MPEG-TS (or packed audio): not CMAF, not in this MPD
    if not media.segments:
        raise MalformedMedia("media playlist has no segments")
    init = reader.file(media.map_path)
    if init.kind is not MediaKind.MP4_INIT:
        raise MalformedMedia("EXT-X-MAP is not an init segment")
    tracks = read_track_timings(reader.read(init, MAX_INIT_BYTES))
    wanted = "soun" if spec.audio is not None else "vide"
    track = next((t for t in tracks.values() if t.handler == wanted), None)
    if track is None:
        if spec.audio is not None:
            raise MalformedMedia("audio rendition without an audio track")
        track = next(iter(tracks.values()))
    timings = []
    peak = 0
    for segment in media.segments:
        seg = reader.file(segment.path)
        if seg.kind is not MediaKind.MP4_SEGMENT:
            raise MalformedMedia("segment is not an fMP4 fragment")
        moofs, size = reader.moofs(seg)
        timing = fragment_timing(moofs, track)
        if timing.duration <= 0:
            raise MalformedMedia("segment without duration")
        timings.append(timing)
        peak = max(peak, math.ceil(Fraction(size * 8 * track.timescale, timing.duration)))
    codecs = ",".join(_codec(t, spec.codecs) for t in sorted(
        tracks.values(), key=lambda t: t is not track))
    bandwidth = spec.variant.bandwidth if spec.variant is not None else peak
    return _Representation(spec, rep_id, track, codecs,
                           init.rel, tuple(s.path for s in media.segments), tuple(timings),
                           bandwidth)


def _codec(track: TrackTiming, candidates: Sequence[str]) -> str:
    """The HLS CODECS entry for this sample entry, else the one derived from the init."""
    return next((c for c in candidates if c.split(".", 1)[0] == track.entry), track.codec)


def number_template(paths: Sequence[str]) -> tuple[str, int] | None:
    """``(media template, startNumber)`` when the paths are consecutively numbered.

    Any run of digits before the first path's extension may be the number
    (``seg-00001.m4s``: not the 4 of ``m4s``); the last one that reproduces
    every path wins.
    """
    first = paths[0]
    stem = len(posixpath.splitext(first)[0])
    for run in reversed([r for r in _DIGITS.finditer(first) if r.end() <= stem]):
        prefix, digits, suffix = first[:run.start()], run.group(), first[run.end():]
        start = int(digits)
        for template, width in (("$Number$", 0), (f"$Number%0{len(digits)}d$", len(digits))):
            if all(p == f"{prefix}{start + i:0{width}d}{suffix}" for i, p in enumerate(paths)):
                return prefix.replace("$", "$$") + template + suffix.replace("$", "$$"), start
    return None


@dataclass(slots=True)
class _Run:
    t: int | None  # written only where the timeline does not continue the previous S
    d: int
    r: int = 0


def segment_timeline(timings: Sequence[FragmentTiming]) -> ET.Element:
    """``<SegmentTimeline>``: ``t`` on the first S and where the timeline jumps; runs as ``r``."""
    timeline = ET.Element(_q(MPD_NS, "SegmentTimeline"))
    runs: list[_Run] = []
    expected: int | None = None
    for timing in timings:
        if runs and timing.start == expected and timing.duration == runs[-1].d:
            runs[-1].r += 1
        else:
            runs.append(_Run(None if timing.start == expected else timing.start,
                             timing.duration))
        expected = timing.start + timing.duration
    for run in runs:
        attrs = {} if run.t is None else {"t": str(run.t)}
        attrs["d"] = str(run.d)
        if run.r:
            attrs["r"] = str(run.r)
        ET.SubElement(timeline, _q(MPD_NS, "S"), attrs)
    return timeline


def _duration(seconds: Fraction) -> str:
    """xs:duration in seconds, rounded up to the millisecond: ``PT12.011S``."""
    ms = math.ceil(seconds * 1000)
    whole, frac = divmod(ms, 1000)
    return f"PT{whole}.{frac:03d}".rstrip("0").rstrip(".") + "S"


def frame_rate(text: str | None) -> str | None:
    """HLS FRAME-RATE (decimal) as a DASH FrameRateType (``25``, ``30000/1001``)."""
    if not text:
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    if value <= 0 or value > 1000:
        return None
    tolerance = Fraction(1, 500)
    if abs(value - round(value)) < tolerance:
        return str(round(value))
    ntsc = round(value * Fraction(1001, 1000))
    if abs(value - Fraction(ntsc * 1000, 1001)) < tolerance:
        return f"{ntsc * 1000}/1001"
    approx = value.limit_denominator(1001)
    return f"{approx.numerator}/{approx.denominator}"


def _build_mpd(reps: Sequence[_Representation]) -> ET.Element:
    origin = min(rep.start for rep in reps)
    end = max(rep.end for rep in reps)
    mpd = ET.Element(_q(MPD_NS, "MPD"), {
        "profiles": PROFILE_LIVE,
        "type": "static",
        "mediaPresentationDuration": _duration(end - origin),
        "minBufferTime": _duration(max(rep.longest_segment for rep in reps)),
    })
    period = ET.SubElement(mpd, _q(MPD_NS, "Period"), {"id": "0", "start": "PT0S"})
    groups: dict[tuple[str, ...], list[_Representation]] = {}
    for rep in reps:
        audio = rep.spec.audio
        key: tuple[str, ...] = ("video", rep.track.entry)
        if rep.is_audio:
            key = ("audio", *((audio.group_id, audio.language or "") if audio else ("", "")))
        groups.setdefault(key, []).append(rep)
    ordered = sorted(groups.items(), key=lambda item: item[0][0] != "video")
    for index, (key, members) in enumerate(ordered):
        _adaptation_set(period, str(index), key[0] == "audio", members, origin)
    return mpd


def _adaptation_set(period: ET.Element, set_id: str, audio: bool,
                    members: Sequence[_Representation], origin: Fraction) -> None:
    attrs = {"id": set_id, "contentType": "audio" if audio else "video",
             "mimeType": "audio/mp4" if audio else "video/mp4"}
    rendition = members[0].spec.audio
    if rendition is not None and rendition.language:
        attrs["lang"] = rendition.language
    attrs |= {"segmentAlignment": "true", "startWithSAP": "1"}
    adaptation = ET.SubElement(period, _q(MPD_NS, "AdaptationSet"), attrs)
    if rendition is not None:
        if rendition.name:
            ET.SubElement(adaptation, _q(MPD_NS, "Label")).text = rendition.name
        if rendition.default:
            ET.SubElement(adaptation, _q(MPD_NS, "Role"),
                          {"schemeIdUri": ROLE_SCHEME, "value": "main"})
    for rep in members:
        _representation(adaptation, rep, origin)


def _representation(adaptation: ET.Element, rep: _Representation, origin: Fraction) -> None:
    attrs = {"id": rep.id, "bandwidth": str(rep.bandwidth), "codecs": rep.codecs}
    variant, track = rep.spec.variant, rep.track
    if not rep.is_audio:
        width, height = (variant.resolution if variant is not None and variant.resolution
                         else (track.width, track.height))
        if width and height:
            attrs |= {"width": str(width), "height": str(height)}
        rate = frame_rate(variant.frame_rate if variant is not None else None)
        if rate is not None:
            attrs["frameRate"] = rate
    elif track.sample_rate:
        attrs["audioSamplingRate"] = str(track.sample_rate)
    element = ET.SubElement(adaptation, _q(MPD_NS, "Representation"), attrs)
    if rep.is_audio:
        channels = _channels(rep.spec.audio.channels if rep.spec.audio else None) \
            or track.channels
        if channels:
            ET.SubElement(element, _q(MPD_NS, "AudioChannelConfiguration"),
                          {"schemeIdUri": CHANNELS_SCHEME, "value": str(channels)})
    template = number_template(rep.segments)
    common = {"timescale": str(track.timescale)}
    offset = math.floor(origin * track.timescale)
    if offset:
        common["presentationTimeOffset"] = str(offset)
    if template is not None:
        media, start_number = template
        addressing = ET.SubElement(element, _q(MPD_NS, "SegmentTemplate"), {
            **common, "initialization": rep.init.replace("$", "$$"), "media": media,
            "startNumber": str(start_number),
        })
        addressing.append(segment_timeline(rep.timings))
    else:
        addressing = ET.SubElement(element, _q(MPD_NS, "SegmentList"), common)
        ET.SubElement(addressing, _q(MPD_NS, "Initialization"), {"sourceURL": rep.init})
        addressing.append(segment_timeline(rep.timings))
        for path in rep.segments:
            ET.SubElement(addressing, _q(MPD_NS, "SegmentURL"), {"media": path})


def _channels(text: str | None) -> int:
    head = parse_decimal((text or "").split("/", 1)[0])
    return head if head is not None and head < 256 else 0


# --- the cache and the entry point ------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    doc: MpdDocument
    stamps: tuple[Stamp, ...]
    checked: float


def _unchanged(stamps: Sequence[Stamp]) -> bool:
    for path, size, mtime in stamps:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            return False
    return True


class _SkeletonCache:
    """Clear MPDs by (asset, source), revalidated against their files' (size, mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def get(self, key: tuple[str, str],
            build: Callable[[], tuple[MpdDocument, tuple[Stamp, ...]]]) -> MpdDocument:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and (now - entry.checked < REVALIDATE_SECONDS
                                  or _unchanged(entry.stamps)):
            entry.checked = max(entry.checked, now)
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
            return entry.doc
        doc, stamps = build()
        with self._lock:
            self._entries[key] = _Entry(doc, stamps, now)
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return doc

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


SKELETONS = _SkeletonCache()


def source_manifest(asset: Asset, rel: str = DEFAULT_MANIFEST) -> MediaFile | None:
    """The MPD to edit for ``rel``: that file when the asset has it, else for the default
    name, the first top-level ``.mpd`` (None: generate one from HLS)."""
    found = asset.files.get(rel)
    if found is not None and found.kind is MediaKind.MANIFEST:
        return found
    if rel != DEFAULT_MANIFEST:
        raise NotFound("no such file in asset")
    top = sorted(f.rel for f in asset.files.values()
                 if f.kind is MediaKind.MANIFEST and "/" not in f.rel)
    return asset.files[top[0]] if top else None


def _load_source(asset: Asset, source: MediaFile) -> tuple[MpdDocument, tuple[Stamp, ...]]:
    reader = _Reader(asset)
    doc = parse_mpd(reader.read(source, MAX_MPD_BYTES))
    return doc, tuple(reader.stamps.values())


def produce_mpd(asset: Asset, source: MediaFile | None, scheme: CommonScheme | None,
                drm: DrmContext | None, playback_filter: PlaybackFilter | None = None) -> bytes:
    """The MPD for one request (blocking): the clear skeleton, filtered and protected as asked."""
    if source is not None:
        key = (asset.name, "mpd:" + source.rel)
        doc = SKELETONS.get(key, lambda: _load_source(asset, source))
    else:
        key = (asset.name, "hls:" + asset.default_playlist)
        doc = SKELETONS.get(key, lambda: generate_mpd(asset))
    if playback_filter is not None and playback_filter.active:
        doc = filter_mpd(doc, playback_filter)
    if scheme is not None:
        if drm is None:
            raise ValueError("an encrypted MPD needs a DRM context")
        doc = protect_mpd(doc, scheme, drm)
    return serialize_mpd(doc)



# --- playback filters and the offline download profile ------------------------------------------
#
# filter_mpd narrows a copy of an MPD, Period by Period (the rules of
# origin.packaging.playback_filter, as for HLS):
# - an AdaptationSet's track type comes from @contentType, else @mimeType (its own or its
#   Representations'), else @codecs (stpp/wvtt in application/mp4 are subtitles), else
#   ContentComponent@contentType; sets of other or unknown types (thumbnails) stay.
# - ``tracks`` drops the sets of the types it leaves out; offline drops subtitles unless
#   ``tracks`` names them.  ``audio_lang`` drops the audio sets whose @lang (else their
#   first Representation's) matches none; when all audio sets go that is an error.
# - The bitrate range, ``flavor`` (Representation@id) and ``bandwidth`` apply to the video
#   Representations (the audio ones when no video is left), as HLS applies them to
#   variants: ``bandwidth`` and offline keep one of them, the highest @bandwidth not above
#   ``bandwidth``, else the highest.
# - Offline, with video: one audio set (the best ``audio_lang`` match, else Role "main",
#   else the first) and in it the Representation with the highest @bandwidth.
# - Sets left without Representations go; a Period left without video or audio is an error.


def adaptation_track_type(adaptation_set: ET.Element, ns: str) -> TrackType | None:
    """The track type an AdaptationSet carries (ISO/IEC 23009-1 §5.3.3, §5.3.7), if known."""
    by_content = {"video": TrackType.VIDEO, "audio": TrackType.AUDIO,
                  "text": TrackType.SUBTITLES}
    content = adaptation_set.get("contentType")
    if content in by_content:
        return by_content[content]
    reps = _child_elements(adaptation_set, ns, "Representation")
    mime = adaptation_set.get("mimeType") or next(
        (r.get("mimeType", "") for r in reps if r.get("mimeType")), "")
    codecs = adaptation_set.get("codecs") or next(
        (r.get("codecs", "") for r in reps if r.get("codecs")), "")
    if mime.startswith("video/"):
        return TrackType.VIDEO
    if mime.startswith("audio/"):
        return TrackType.AUDIO
    if mime.startswith("text/") or mime == "application/ttml+xml":
        return TrackType.SUBTITLES
    if mime == "application/mp4" and codecs.strip():
        return codec_track_type(codecs.split(",", 1)[0])
    for component in _child_elements(adaptation_set, ns, "ContentComponent"):
        found = by_content.get(component.get("contentType", ""))
        if found is not None:
            return found
    return None


def _child_elements(parent: ET.Element, ns: str, name: str) -> list[ET.Element]:
    return [child for child in parent if child.tag == _q(ns, name)]


def _remove_element(parent: ET.Element, element: ET.Element) -> None:
    """Remove ``element``, keeping the indentation of what follows it."""
    children = list(parent)
    at = next(i for i, child in enumerate(children) if child is element)
    if at == len(children) - 1:
        if at:
            children[at - 1].tail = element.tail
        else:
            parent.text = element.tail
    parent.remove(element)


def _bandwidth_of(representation: ET.Element) -> int:
    value = parse_decimal(representation.get("bandwidth", ""))
    if value is None:
        raise MalformedMedia("Representation without a valid bandwidth")
    return value


def _language_of(adaptation_set: ET.Element, ns: str) -> str | None:
    lang = adaptation_set.get("lang")
    if lang:
        return lang
    return next((r.get("lang") for r in _child_elements(adaptation_set, ns, "Representation")
                 if r.get("lang")), None)


def _is_main(adaptation_set: ET.Element, ns: str) -> bool:
    return any(role.get("schemeIdUri") == ROLE_SCHEME and role.get("value") == "main"
               for role in _child_elements(adaptation_set, ns, "Role"))


def filter_mpd(doc: MpdDocument, f: PlaybackFilter) -> MpdDocument:
    """A copy of ``doc`` narrowed to what ``f`` keeps (see the rules above); ``doc`` itself,
    which the skeleton cache shares between requests, is never changed.  ``BadRequest``
    when nothing would be left to play."""
    root = copy.deepcopy(doc.root)
    ns = doc.namespace
    if f.active:
        for period in _child_elements(root, ns, "Period"):
            _filter_period(period, ns, f)
    return MpdDocument(root, doc.prefixes)


def _filter_period(period: ET.Element, ns: str, f: PlaybackFilter) -> None:
    sets = [(s, adaptation_track_type(s, ns))
            for s in _child_elements(period, ns, "AdaptationSet")]
    had_representations = {id(s) for s, _ in sets if _child_elements(s, ns, "Representation")}

    def unwanted(kind: TrackType | None) -> bool:
        if kind is TrackType.SUBTITLES:
            return not f.wants_subtitles()
        return kind is not None and not f.wants(kind)

    def drop_set(adaptation_set: ET.Element) -> None:
        _remove_element(period, adaptation_set)
        sets[:] = [(s, k) for s, k in sets if s is not adaptation_set]

    for adaptation_set, kind in list(sets):
        if unwanted(kind):
            drop_set(adaptation_set)

    if f.audio_languages is not None:
        audio = [s for s, k in sets if k is TrackType.AUDIO]
        matching = [s for s in audio if f.language_rank(_language_of(s, ns)) is not None]
        if audio and not matching:
            raise BadRequest("no audio rendition matches audio_lang")
        for adaptation_set in audio:
            if adaptation_set not in matching:
                drop_set(adaptation_set)

    video_sets = [s for s, k in sets if k is TrackType.VIDEO]
    target_sets = video_sets or [s for s, k in sets if k is TrackType.AUDIO]
    candidates = [(s, r) for s in target_sets for r in _child_elements(s, ns, "Representation")]
    kept = [(s, r) for s, r in candidates
            if f.in_bitrate_range(_bandwidth_of(r))
            and (f.flavor is None or r.get("id") == f.flavor)]
    if f.offline or f.bandwidth is not None:
        pool = [(s, r) for s, r in kept
                if f.bandwidth is None or _bandwidth_of(r) <= f.bandwidth]
        kept = [max(pool, key=lambda item: _bandwidth_of(item[1]))] if pool else []
    if not kept:
        raise BadRequest("no representation matches the filter")
    kept_ids = {id(r) for _, r in kept}
    for adaptation_set, representation in candidates:
        if id(representation) not in kept_ids:
            _remove_element(adaptation_set, representation)

    if f.offline and video_sets:
        audio = [s for s, k in sets if k is TrackType.AUDIO
                 and _child_elements(s, ns, "Representation")]
        if audio:
            ranked = [(rank, s) for s in audio
                      if (rank := f.language_rank(_language_of(s, ns))) is not None]
            chosen = (min(ranked, key=lambda item: item[0])[1] if ranked
                      else next((s for s in audio if _is_main(s, ns)), audio[0]))
            for adaptation_set in audio:
                if adaptation_set is not chosen:
                    drop_set(adaptation_set)
            reps = _child_elements(chosen, ns, "Representation")
            best = max(reps, key=_bandwidth_of)
            for representation in reps:
                if representation is not best:
                    _remove_element(chosen, representation)

    for adaptation_set, _ in list(sets):
        if id(adaptation_set) in had_representations \
                and not _child_elements(adaptation_set, ns, "Representation"):
            drop_set(adaptation_set)
    if not any(k in (TrackType.VIDEO, TrackType.AUDIO) for _, k in sets):
        raise BadRequest("no representation matches the filter")
