"""Init segments: their tracks, and their protected form (ISO/IEC 23001-7 §8, SPECS §1.5, 1.7).

Rules:
- protected video entries ``avc1/avc3/hvc1/hev1`` become ``encv``, audio
  entries (``mp4a``, ``ac-3``, ``ec-3`` and any other sound entry) ``enca``;
  each gets a ``sinf`` appended after its own children: ``frma`` (the
  original 4cc), ``schm`` (scheme, version 0x00010000), ``schi/tenc``;
- ``tenc`` for cbcs video is version 1 with the 1:9 pattern and a 16-byte
  constant IV; cbcs audio is full-sample (version 0, pattern 0, constant
  IV); cenc is version 0 with 8-byte per-sample IVs;
- ``pssh`` boxes are appended to ``moov``; every ancestor size is written
  anew (nothing is patched in place);
- a video codec without NAL subsample rules here (VP9, AV1, …) cannot be
  protected: ``UnsupportedMedia``; an entry already protected is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from origin.container.boxes import (
    Box,
    BoxError,
    Buffer,
    build_box,
    build_full_box,
    find_boxes,
    iter_boxes,
    read_full_box_header,
)
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia

NAL_VIDEO = frozenset({"avc1", "avc3", "hvc1", "hev1"})
HEVC = frozenset({"hvc1", "hev1"})
PROTECTED_ENTRIES = frozenset({"encv", "enca", "enct", "encs"})
VISUAL_ENTRY_HEADER = 78  # SampleEntry (8) + VisualSampleEntry fields (70)
AUDIO_ENTRY_HEADER = {0: 28, 1: 44, 2: 64}  # SampleEntry (8) + AudioSampleEntry v0/v1/v2
CBCS_PATTERN = (1, 9)


class UnsupportedMedia(MalformedMedia):
    reason = "media cannot be protected with this scheme"


@dataclass(frozen=True, slots=True)
class TrackInfo:
    track_id: int
    handler: str
    codec: str
    codec_config: bytes = field(repr=False)  # avcC / hvcC payload for NAL video, else b""
    default_sample_size: int = 0  # from trex

    @property
    def is_video(self) -> bool:
        return self.handler == "vide"

    @property
    def is_hevc(self) -> bool:
        return self.codec in HEVC


@dataclass(frozen=True, slots=True)
class InitInfo:
    tracks: Mapping[int, TrackInfo]

    def track(self, track_id: int) -> TrackInfo:
        found = self.tracks.get(track_id)
        if found is None:
            raise MalformedMedia(f"fragment refers to unknown track {track_id}")
        return found


def _u32(buf: Buffer, at: int, end: int) -> int:
    if at + 4 > end:
        raise BoxError("truncated box")
    value: int = struct.unpack_from(">I", buf, at)[0]
    return value


def _one(buf: Buffer, path: tuple[str, ...], start: int, end: int) -> Box:
    for box in find_boxes(buf, path, start, end):
        return box
    raise MalformedMedia(f"init segment lacks {'/'.join(path)}")


def _entry_children_start(buf: Buffer, entry: Box, handler: str) -> int:
    if handler == "vide":
        start = entry.payload_start + VISUAL_ENTRY_HEADER
    elif handler == "soun":
        if entry.end - entry.payload_start < 10:
            raise BoxError("truncated audio sample entry")
        (version,) = struct.unpack_from(">H", buf, entry.payload_start + 8)
        start = entry.payload_start + AUDIO_ENTRY_HEADER.get(version, 28)
    else:
        raise UnsupportedMedia(f"cannot protect a {handler!r} track")
    if start > entry.end:
        raise BoxError(f"truncated {entry.type} sample entry")
    return start


def parse_init(init: Buffer) -> InitInfo:
    """Read the tracks of an init segment (``moov``)."""
    moov = _one(init, ("moov",), 0, len(init))
    defaults: dict[int, int] = {}
    for trex in find_boxes(init, ("mvex", "trex"), moov.payload_start, moov.end):
        # FullBox(4) track_ID, default_sample_description_index, _duration, _size, _flags
        track_id = _u32(init, trex.payload_start + 4, trex.end)
        defaults[track_id] = _u32(init, trex.payload_start + 16, trex.end)
    tracks: dict[int, TrackInfo] = {}
    for trak in find_boxes(init, ("trak",), moov.payload_start, moov.end):
        tkhd = _one(init, ("tkhd",), trak.payload_start, trak.end)
        version, _ = read_full_box_header(init, tkhd)
        track_id = _u32(init, tkhd.payload_start + (20 if version == 1 else 12), tkhd.end)
        hdlr = _one(init, ("mdia", "hdlr"), trak.payload_start, trak.end)
        if hdlr.payload_start + 12 > hdlr.end:
            raise BoxError("truncated hdlr box")
        handler = bytes(init[hdlr.payload_start + 8:hdlr.payload_start + 12]).decode("latin-1")
        stsd = _one(init, ("mdia", "minf", "stbl", "stsd"), trak.payload_start, trak.end)
        if stsd.payload_start + 8 > stsd.end:
            raise BoxError("truncated stsd box")
        entries = list(iter_boxes(init, stsd.payload_start + 8, stsd.end))
        if not entries:
            raise MalformedMedia("stsd holds no sample entry")
        entry = entries[0]
        config = b""
        if entry.type in NAL_VIDEO:
            wanted = "hvcC" if entry.type in HEVC else "avcC"
            start = _entry_children_start(init, entry, handler)
            box = _one(init, (wanted,), start, entry.end)
            config = bytes(init[box.payload_start:box.end])
        tracks[track_id] = TrackInfo(track_id, handler, entry.type, config,
                                     defaults.get(track_id, 0))
    if not tracks:
        raise MalformedMedia("init segment has no tracks")
    return InitInfo(tracks)


def build_tenc(scheme: CommonScheme, kid: bytes, constant_iv: bytes, *, pattern: bool) -> bytes:
    """``tenc`` (§8.2): see the module rules for version, pattern and IV fields."""
    if scheme is CommonScheme.CBCS:
        if len(constant_iv) != 16:
            raise ValueError("cbcs needs a 16-byte constant IV")
        version = 1 if pattern else 0
        crypt, skip = CBCS_PATTERN if pattern else (0, 0)
        body = bytes([0, crypt << 4 | skip, 1, 0]) + kid + bytes([16]) + constant_iv
    else:
        version = 0
        body = bytes([0, 0, 1, 8]) + kid
    return build_full_box("tenc", version, 0, body)


def build_sinf(original: str, scheme: CommonScheme, tenc: bytes) -> bytes:
    return build_box(
        "sinf",
        build_box("frma", original.encode("latin-1")),
        build_full_box("schm", 0, 0, scheme.value.encode() + struct.pack(">I", 0x00010000)),
        build_box("schi", tenc),
    )


@dataclass(frozen=True, slots=True)
class _Protection:
    scheme: CommonScheme
    kid: bytes
    constant_iv: bytes = field(repr=False)


def protect_init(init: Buffer, *, scheme: CommonScheme, kid: bytes,
                 constant_iv: bytes, pssh: Sequence[bytes]) -> bytes:
    """The protected form of an init segment (see the module rules)."""
    spec = _Protection(scheme, kid, constant_iv)
    out: list[bytes] = []
    seen_moov = False
    for box in iter_boxes(init):
        if box.type == "moov":
            seen_moov = True
            out.append(_rewrite_moov(init, box, spec, pssh))
        else:
            out.append(bytes(init[box.start:box.end]))
    if not seen_moov:
        raise MalformedMedia("init segment lacks moov")
    return b"".join(out)


def _rewrite_moov(buf: Buffer, moov: Box, spec: _Protection,
                  pssh: Sequence[bytes]) -> bytes:
    children = []
    for child in iter_boxes(buf, moov.payload_start, moov.end):
        if child.type == "trak":
            children.append(_rewrite_trak(buf, child, spec))
        elif child.type != "pssh":
            children.append(bytes(buf[child.start:child.end]))
    return build_box("moov", *children, *pssh)


def _rewrite_trak(buf: Buffer, trak: Box, spec: _Protection) -> bytes:
    hdlr = _one(buf, ("mdia", "hdlr"), trak.payload_start, trak.end)
    if hdlr.payload_start + 12 > hdlr.end:
        raise BoxError("truncated hdlr box")
    handler = bytes(buf[hdlr.payload_start + 8:hdlr.payload_start + 12]).decode("latin-1")
    if handler not in ("vide", "soun"):
        return bytes(buf[trak.start:trak.end])  # text, metadata: left clear

    def descend(box: Box, path: tuple[str, ...]) -> bytes:
        if not path:
            return _rewrite_stsd(buf, box, handler, spec)
        parts = [
            descend(child, path[1:]) if child.type == path[0]
            else bytes(buf[child.start:child.end])
            for child in iter_boxes(buf, box.payload_start, box.end)
        ]
        return build_box(box.type, *parts)

    return descend(trak, ("mdia", "minf", "stbl", "stsd"))


def _rewrite_stsd(buf: Buffer, stsd: Box, handler: str, spec: _Protection) -> bytes:
    if stsd.payload_start + 8 > stsd.end:
        raise BoxError("truncated stsd box")
    head = bytes(buf[stsd.payload_start:stsd.payload_start + 8])  # version/flags, entry_count
    entries = [_rewrite_entry(buf, entry, handler, spec)
               for entry in iter_boxes(buf, stsd.payload_start + 8, stsd.end)]
    return build_box("stsd", head, *entries)


def _rewrite_entry(buf: Buffer, entry: Box, handler: str, spec: _Protection) -> bytes:
    if entry.type in PROTECTED_ENTRIES:
        raise UnsupportedMedia("source is already encrypted")
    video = handler == "vide"
    if video and entry.type not in NAL_VIDEO:
        raise UnsupportedMedia(f"no subsample rules for video codec {entry.type!r}")
    children_start = _entry_children_start(buf, entry, handler)
    list(iter_boxes(buf, children_start, entry.end))  # validate the children
    tenc = build_tenc(spec.scheme, spec.kid, spec.constant_iv,
                      pattern=video and spec.scheme is CommonScheme.CBCS)
    sinf = build_sinf(entry.type, spec.scheme, tenc)
    return build_box("encv" if video else "enca", buf[entry.payload_start:entry.end], sinf)
