"""MPEG-TS: packets, adaptation fields, PSI sections (PAT, PMT, descriptors), PES, and
SAMPLE-AES over whole segments and over the elementary streams it walks.

Inputs are the MPEG-TS segments of ``tests/media/ts`` and of the demo asset, their
sections and elementary streams (H.264 Annex-B, ADTS AAC, AC-3, E-AC-3).
Typed errors: ``MalformedMedia`` (``TsError``, ``SampleAesError``).
"""

from __future__ import annotations

from functools import cache

from origin.container import sample_aes as sa
from origin.container import ts
from origin.errors import MalformedMedia
from tests.fuzz import media
from tests.fuzz.core import Target

TYPED = (MalformedMedia,)
KEY = bytes(range(16))
IV = bytes(range(16, 32))
ES_BYTES = 6000  # each elementary stream seed: its first frames up to about this size
MAX_SEED_PACKETS = 200


@cache
def segments() -> tuple[bytes, ...]:
    files = [media.TEST_MEDIA / "ts" / name for name in media.TS_FILES]
    files.append(media.DEMO / "ts-360p" / "seg-00001.ts")
    out = [media.read(path)[:MAX_SEED_PACKETS * media.PACKET] for path in files]
    return tuple(out)


@cache
def elementary_streams() -> dict[int, tuple[bytes, ...]]:
    """stream_type → elementary streams (PES payloads back to back) of the seed segments."""
    found: dict[int, list[bytes]] = {}
    for data in segments():
        table = ts.scan_packets(data)
        for pid, es in ts.read_programs(table).streams().items():
            stream = ts.reassemble_pes(table, pid)
            payload = b"".join(p.payload for p in stream.packets)
            found.setdefault(es.stream_type, []).append(_whole_frames(es.stream_type, payload))
    return {kind: tuple(streams) for kind, streams in found.items()}


def _whole_frames(stream_type: int, es: bytes) -> bytes:
    """The leading whole frames of an audio ES (a cut frame is refused); video as it is."""
    if stream_type == sa.ADTS_AAC:
        frames, _ = sa.adts_frames(es)
    elif stream_type in (sa.AC3, sa.EAC3):
        frames, _ = sa.ac3_frames(es)
    else:
        return es[:ES_BYTES]
    end = 0
    for frame in frames:
        if frame.start + frame.size > ES_BYTES and end:
            break
        end = frame.start + frame.size
    return es[:end]


@cache
def sections() -> tuple[bytes, ...]:
    out: list[bytes] = []
    for data in segments():
        programs = ts.read_programs(ts.scan_packets(data))
        out += [o.section for o in programs.pat_occurrences[:1]]
        out += [o.section for o, _ in programs.pmt_occurrences[:1]]
    return tuple(dict.fromkeys(out))


# -- runs ---------------------------------------------------------------------------------------


def run_parse_segment(data: bytes) -> None:
    """What SAMPLE-AES reads, target by target: packets, sections, every PES header."""
    table = ts.scan_packets(data)
    for row in range(min(table.count, 64)):
        packet = table.packet(row)
        if packet.afc & 2:
            packet.adaptation_field()
    programs = ts.read_programs(table)
    for pid in programs.streams():
        stream = ts.reassemble_pes(table, pid)
        for pes in stream.packets:
            assert ts.parse_pes_header(pes.data) == pes.header
            assert pes.header.size <= len(pes.data)


def run_protect(data: bytes) -> None:
    out = sa.protect_ts_segment(data, KEY, IV)
    assert len(out) % media.PACKET == 0 and len(out) >= len(data)


def run_sections(payload: bytes) -> None:
    """A PSI section as a PAT (``payload[0]`` even) or a PMT, and its descriptors."""
    if not payload:
        raise MalformedMedia("empty fuzz input")
    section = ts.parse_section(payload[1:])
    if payload[0] & 1:
        pmt = ts.parse_pmt(section)
        for es in pmt.streams:
            rebuilt = ts.parse_descriptors(ts.build_descriptors(es.descriptors))
            assert rebuilt == es.descriptors
        assert ts.parse_pmt(ts.parse_section(pmt.build())) == pmt
    else:
        ts.parse_pat(section)


def run_descriptors(data: bytes) -> None:
    parsed = ts.parse_descriptors(data)
    assert ts.build_descriptors(parsed) == data


def run_pes_header(data: bytes) -> None:
    header = ts.parse_pes_header(data)
    assert 6 <= header.size <= len(data)


def run_adts(data: bytes) -> None:
    frames, _ = sa.adts_frames(data)
    for frame in frames:
        assert frame.start + frame.size <= len(data)


def run_ac3(data: bytes) -> None:
    frames, _ = sa.ac3_frames(data)
    for frame in frames:
        assert frame.start + frame.size <= len(data)


def run_annexb(data: bytes) -> None:
    for start, end in sa.annexb_nals(data):
        assert 0 <= start <= end <= len(data)
        escaped = sa.escape_nal(data[start:end])
        assert len(escaped) >= end - start


def _section_seeds() -> list[bytes]:
    out = []
    for section in sections():
        table_id = section[0]
        out.append(bytes([1 if table_id == ts.PMT_TABLE_ID else 0]) + section)
    return out


def _descriptor_seeds() -> list[bytes]:
    out: list[bytes] = []
    for section in sections():
        if section[0] == ts.PMT_TABLE_ID:
            for es in ts.parse_pmt(ts.parse_section(section)).streams:
                out.append(ts.build_descriptors(es.descriptors))
    return [d for d in dict.fromkeys(out) if d] or [b"\x0a\x04eng\x00"]


def _pes_seeds() -> list[bytes]:
    out = []
    for data in segments()[:2]:
        table = ts.scan_packets(data)
        for pid in ts.read_programs(table).streams():
            stream = ts.reassemble_pes(table, pid)
            out += [p.data[:32] for p in stream.packets[:2]]
    return out


def _es(kind: int) -> list[bytes]:
    return list(elementary_streams().get(kind, ()))


TARGETS: tuple[Target, ...] = (
    Target("parse_segment", run_parse_segment, TYPED, segments, media.packet_starts),
    Target("protect_ts_segment", run_protect, TYPED, segments, media.packet_starts),
    Target("sections", run_sections, TYPED, _section_seeds,
           lambda d: [1, 2, 4, 9, 11, 13, 18]),
    Target("descriptors", run_descriptors, TYPED, _descriptor_seeds),
    Target("pes_header", run_pes_header, TYPED, _pes_seeds, lambda d: [0, 3, 4, 6, 7, 8, 9]),
    Target("adts", run_adts, TYPED, lambda: _es(sa.ADTS_AAC), lambda d: [0, 3, 4, 5, 6]),
    Target("ac3", run_ac3, TYPED, lambda: _es(sa.AC3) + _es(sa.EAC3),
           lambda d: [0, 2, 4, 5]),
    Target("annexb", run_annexb, TYPED, lambda: _es(sa.H264), media.packet_starts),
)
