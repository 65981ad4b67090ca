"""Track timing and codec descriptions, read from init segments and fragments (for manifests).

Rules (ISO/IEC 14496-12 §8.4.2, §8.8; RFC 6381; ISO/IEC 14496-1 §7.2.6):
- a track's timescale is its ``mdhd`` timescale (v0: 32-bit times, v1: 64-bit);
- a fragment's start is the ``tfdt.baseMediaDecodeTime`` of the track's first
  ``traf``; a first ``traf`` without ``tfdt`` cannot be placed: malformed;
- its duration is the sum of the sample durations of every ``trun`` of every
  ``traf`` of the track in every ``moof``: the ``trun``'s per-sample duration,
  else the ``tfhd`` default, else the ``trex`` default; a sample without any
  duration is malformed;
- codec strings: ``avc1``/``avc3`` from ``avcC`` (profile, compatibility,
  level as hex), ``mp4a`` from ``esds`` (objectTypeIndication in hex, then the
  AudioObjectType of the AudioSpecificConfig); any other entry: its 4cc.

Every size, offset and count is checked before use; malformed input raises
:class:`TimelineError` (a :class:`~origin.errors.MalformedMedia`).  Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from origin.container.boxes import (
    Box,
    Buffer,
    find_boxes,
    iter_boxes,
    iter_sample_entries,
    read_full_box_header,
)
from origin.container.track_fragment import read_tfhd, read_trun
from origin.errors import MalformedMedia

VISUAL_ENTRY_HEADER = 78  # SampleEntry (8) + VisualSampleEntry fields (70)
AUDIO_ENTRY_HEADER = {0: 28, 1: 44, 2: 64}
MAX_DESCRIPTOR_DEPTH = 4


class TimelineError(MalformedMedia):
    reason = "malformed media timing"


@dataclass(frozen=True, slots=True)
class TrackTiming:
    """What a manifest needs to know about one track of an init segment."""

    track_id: int
    handler: str  # "vide", "soun", …
    timescale: int
    default_duration: int  # trex default_sample_duration (0: none)
    entry: str  # sample entry 4cc ("avc1", "mp4a", …)
    codec: str  # RFC 6381 codec string derived from the sample entry
    width: int = 0  # visual entries
    height: int = 0
    channels: int = 0  # audio entries
    sample_rate: int = 0


@dataclass(frozen=True, slots=True)
class FragmentTiming:
    """One segment's place on its track's timeline, in timescale units."""

    start: int  # tfdt of the first traf
    duration: int  # Σ sample durations
    samples: int


def _u(fmt: str, buf: Buffer, at: int, end: int) -> int:
    if at < 0 or at + struct.calcsize(fmt) > end:
        raise TimelineError("truncated box")
    value: int = struct.unpack_from(fmt, buf, at)[0]
    return value


def _first(buf: Buffer, path: tuple[str, ...], start: int, end: int) -> Box:
    for box in find_boxes(buf, path, start, end):
        return box
    raise TimelineError(f"init segment lacks {'/'.join(path)}")


def read_track_timings(init: Buffer) -> Mapping[int, TrackTiming]:
    """Every track of an init segment (``moov``) with its timescale and codec."""
    moov = _first(init, ("moov",), 0, len(init))
    trex_durations: dict[int, int] = {}
    for trex in find_boxes(init, ("mvex", "trex"), moov.payload_start, moov.end):
        # FullBox(4) track_ID default_sample_description_index default_sample_duration …
        track_id = _u(">I", init, trex.payload_start + 4, trex.end)
        trex_durations[track_id] = _u(">I", init, trex.payload_start + 12, trex.end)
    tracks: dict[int, TrackTiming] = {}
    for trak in find_boxes(init, ("trak",), moov.payload_start, moov.end):
        tkhd = _first(init, ("tkhd",), trak.payload_start, trak.end)
        version, _ = read_full_box_header(init, tkhd)
        track_id = _u(">I", init, tkhd.payload_start + (20 if version == 1 else 12), tkhd.end)
        mdhd = _first(init, ("mdia", "mdhd"), trak.payload_start, trak.end)
        version, _ = read_full_box_header(init, mdhd)
        timescale = _u(">I", init, mdhd.payload_start + (20 if version == 1 else 12), mdhd.end)
        if timescale == 0:
            raise TimelineError("mdhd timescale is zero")
        hdlr = _first(init, ("mdia", "hdlr"), trak.payload_start, trak.end)
        if hdlr.payload_start + 12 > hdlr.end:
            raise TimelineError("truncated hdlr box")
        handler = bytes(init[hdlr.payload_start + 8:hdlr.payload_start + 12]).decode("latin-1")
        stsd_entries = [
            entry for entry in iter_sample_entries(init)
            if trak.payload_start <= entry.start < trak.end
        ]
        if not stsd_entries:
            raise TimelineError("stsd holds no sample entry")
        tracks[track_id] = _describe(init, track_id, handler, timescale,
                                     trex_durations.get(track_id, 0), stsd_entries[0])
    if not tracks:
        raise TimelineError("init segment has no tracks")
    return tracks


def _describe(init: Buffer, track_id: int, handler: str, timescale: int, default: int,
              entry: Box) -> TrackTiming:
    p = entry.payload_start
    if handler == "vide":
        width = _u(">H", init, p + 24, entry.end)
        height = _u(">H", init, p + 26, entry.end)
        codec = entry.type
        if entry.type in ("avc1", "avc3"):
            codec = _avc_codec(init, entry, p + VISUAL_ENTRY_HEADER)
        return TrackTiming(track_id, handler, timescale, default, entry.type, codec,
                           width=width, height=height)
    if handler == "soun":
        version = _u(">H", init, p + 8, entry.end)
        channels = _u(">H", init, p + 16, entry.end)
        rate = _u(">I", init, p + 24, entry.end) >> 16
        codec = entry.type
        if entry.type == "mp4a":
            codec = _mp4a_codec(init, entry, p + AUDIO_ENTRY_HEADER.get(version, 28))
        return TrackTiming(track_id, handler, timescale, default, entry.type, codec,
                           channels=channels, sample_rate=rate)
    return TrackTiming(track_id, handler, timescale, default, entry.type, entry.type)


def _child(init: Buffer, entry: Box, children_start: int, kind: str) -> Box | None:
    if children_start > entry.end:
        raise TimelineError(f"truncated {entry.type} sample entry")
    for box in iter_boxes(init, children_start, entry.end):
        if box.type == kind:
            return box
    return None


def _avc_codec(init: Buffer, entry: Box, children_start: int) -> str:
    avcc = _child(init, entry, children_start, "avcC")
    if avcc is None or avcc.end - avcc.payload_start < 4:
        return entry.type
    profile, compat, level = bytes(init[avcc.payload_start + 1:avcc.payload_start + 4])
    return f"{entry.type}.{profile:02x}{compat:02x}{level:02x}"


def _mp4a_codec(init: Buffer, entry: Box, children_start: int) -> str:
    esds = _child(init, entry, children_start, "esds")
    if esds is None:
        return entry.type
    found = _find_descriptor(init, esds.payload_start + 4, esds.end, 0x03, 0)
    if found is None:
        return entry.type
    at, end = found
    flags = _u(">B", init, at + 2, end)
    at += 3
    if flags & 0x80:  # streamDependenceFlag: dependsOn_ES_ID
        at += 2
    if flags & 0x40:  # URL_Flag: URLlength, URLstring
        at += 1 + _u(">B", init, at, end)
    if flags & 0x20:  # OCRstreamFlag: OCR_ES_Id
        at += 2
    config = _find_descriptor(init, at, end, 0x04, 0)
    if config is None:
        return entry.type
    cat, cend = config
    oti = _u(">B", init, cat, cend)
    codec = f"mp4a.{oti:02x}"
    specific = _find_descriptor(init, cat + 13, cend, 0x05, 0)
    if specific is None:
        return codec
    sat, send = specific
    if send - sat < 1:
        return codec
    aot = _u(">B", init, sat, send) >> 3
    if aot == 31:  # escape: 32 + the next 6 bits
        aot = 32 + ((_u(">H", init, sat, send) >> 5) & 0x3F)
    return f"{codec}.{aot}"


def _find_descriptor(buf: Buffer, start: int, end: int, tag: int,
                     depth: int) -> tuple[int, int] | None:
    """The first descriptor with ``tag`` laid end to end in ``buf[start:end]``: its payload span."""
    if depth > MAX_DESCRIPTOR_DEPTH:
        raise TimelineError("descriptors nested too deeply")
    at = start
    while at < end:
        this = _u(">B", buf, at, end)
        at += 1
        size = 0
        for _ in range(4):  # expandable size: up to four 7-bit groups
            byte = _u(">B", buf, at, end)
            at += 1
            size = size << 7 | (byte & 0x7F)
            if not byte & 0x80:
                break
        if size > end - at:
            raise TimelineError("descriptor past the end of its box")
        if this == tag:
            return at, at + size
        at += size
    return None


def fragment_timing(seg: Buffer, track: TrackTiming) -> FragmentTiming:
    """Start (``tfdt``) and summed sample durations of ``track`` in a segment's ``moof``s.

    ``seg`` needs only the segment's ``moof`` boxes (other top-level boxes are skipped).
    """
    start: int | None = None
    duration = 0
    samples = 0
    for moof in iter_boxes(seg):
        if moof.type != "moof":
            continue
        for traf in iter_boxes(seg, moof.payload_start, moof.end):
            if traf.type != "traf":
                continue
            found = _traf_timing(seg, traf, track)
            if found is None:
                continue
            tfdt, traf_duration, traf_samples = found
            if start is None:
                if tfdt is None:
                    raise TimelineError("first traf of the track has no tfdt")
                start = tfdt
            duration += traf_duration
            samples += traf_samples
    if start is None:
        raise TimelineError(f"segment has no fragment of track {track.track_id}")
    return FragmentTiming(start, duration, samples)


def _traf_timing(seg: Buffer, traf: Box, track: TrackTiming) -> tuple[int | None, int, int] | None:
    children = list(iter_boxes(seg, traf.payload_start, traf.end))
    tfhds = [c for c in children if c.type == "tfhd"]
    if len(tfhds) != 1:
        raise TimelineError("traf needs exactly one tfhd")
    tfhd = read_tfhd(seg, tfhds[0])
    if tfhd.track_id != track.track_id:
        return None
    default = tfhd.default_duration if tfhd.default_duration is not None \
        else track.default_duration
    tfdt: int | None = None
    duration = 0
    samples = 0
    for box in children:
        if box.type == "tfdt":
            version, _ = read_full_box_header(seg, box)
            tfdt = _u(">Q" if version == 1 else ">I", seg, box.payload_start + 4, box.end)
        elif box.type == "trun":
            trun = read_trun(seg, box)
            if trun.durations is not None:
                duration += sum(trun.durations)
            elif trun.count:
                if default == 0:
                    raise TimelineError("samples have no duration")
                duration += default * trun.count
            samples += trun.count
    return tfdt, duration, samples

