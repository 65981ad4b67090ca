"""MPEG-TS parsing and rewriting (origin.container.ts) on real ffmpeg output.

- packets, PAT and PMT of the demo segments parse, CRCs check, and rebuilding
  the sections reproduces them byte for byte;
- the PES reassembly gives exactly the elementary streams ffmpeg's own
  demuxer gives (``-c copy -f data``);
- rewriting PES packets in place, or with a different size (repacketised over
  the original packets), keeps continuity counters continuous, PCRs and random
  access flags where they were, the PID's packet count modulo 16, and ffmpeg
  decodes the result exactly like the original;
- broken input raises typed errors, and a fuzzer finds nothing else escaping.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.container import ts
from origin.errors import MalformedMedia

ROOT = Path(__file__).resolve().parent.parent
DEMO_TS = sorted((ROOT / "media" / "demo" / "ts-360p").glob("seg-*.ts"))
MEDIA_TS = ROOT / "tests" / "media" / "ts"
SEG1 = DEMO_TS[0]
VIDEO, AUDIO, PMT_PID = 0x100, 0x101, 0x1000


@pytest.fixture(scope="module")
def seg1() -> bytes:
    return SEG1.read_bytes()


def ffmpeg_es(source: Path | bytes, stream: str) -> bytes:
    """The packets of one stream as ffmpeg's demuxer (plus parser) hands them out."""
    data = source.read_bytes() if isinstance(source, Path) else source
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "mpegts", "-i", "-",
         "-map", f"0:{stream}", "-c", "copy", "-f", "data", "-"],
        input=data, capture_output=True, check=True, timeout=60)
    return out.stdout


def framemd5(data: bytes) -> list[str]:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "mpegts", "-i", "-",
         "-map", "0", "-f", "framemd5", "-"],
        input=data, capture_output=True, check=True, timeout=60)
    return [ln for ln in out.stdout.decode().splitlines() if ln and not ln.startswith("#")]


def cc_gaps(data: bytes) -> list[tuple[int, int]]:
    """(pid, row) of every payload packet whose continuity counter does not follow on."""
    table = ts.scan_packets(data)
    gaps = []
    last: dict[int, int] = {}
    for row in range(table.count):
        pid = int(table.pid[row])
        if pid == ts.NULL_PID or not table.afc[row] & 1:
            continue
        cc = int(table.cc[row])
        if pid in last and cc != (last[pid] + 1) % 16:
            gaps.append((pid, row))
        last[pid] = cc
    return gaps


def pcrs(data: bytes, pid: int) -> list[int]:
    table = ts.scan_packets(data)
    out = []
    for row in table.rows_of(pid).tolist():
        pcr = table.packet(row).adaptation_field().pcr
        if pcr is not None:
            out.append(pcr)
    return out


def payload_packets(data: bytes, pid: int) -> int:
    table = ts.scan_packets(data)
    rows = table.rows_of(pid)
    return int(((table.afc[rows] & 1) != 0).sum())


# -- packets and PSI ---------------------------------------------------------------------


def test_crc32_mpeg2_check_value() -> None:
    assert ts.crc32_mpeg2(b"123456789") == 0x0376E6E7  # reveng catalogue check value
    assert ts.crc32_mpeg2(b"") == 0xFFFFFFFF


def test_packet_table_matches_the_one_packet_view(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    assert table.count == len(seg1) // 188
    assert set(np.unique(table.pid).tolist()) == {0x0000, 0x0011, PMT_PID, VIDEO, AUDIO}
    for row in range(0, table.count, 7):
        packet = table.packet(row)
        assert (packet.pid, packet.pusi, packet.afc, packet.cc) == (
            int(table.pid[row]), bool(table.pusi[row]), int(table.afc[row]), int(table.cc[row]))
        assert packet.payload == table.payload(row)
        assert 4 + (1 + len(packet.adaptation) if packet.afc & 2 else 0) + len(
            packet.payload) == 188
    first_video = table.packet(int(table.rows_of(VIDEO)[0]))
    field = first_video.adaptation_field()
    assert first_video.pusi and field.random_access and field.pcr is not None


def test_pat_and_pmt_parse_and_rebuild_byte_exact(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    programs = ts.read_programs(table)
    assert programs.pat.programs == ((1, PMT_PID),)
    pmt = programs.pmts[1]
    assert pmt.pcr_pid == VIDEO
    assert [(es.stream_type, es.pid) for es in pmt.streams] == [(0x1B, VIDEO), (0x0F, AUDIO)]
    for occurrence in (*programs.pat_occurrences, *(o for o, _ in programs.pmt_occurrences)):
        assert ts.crc32_mpeg2(occurrence.section) == 0
        assert ts.parse_section(occurrence.section).build() == occurrence.section
    (pmt_occurrence, parsed), = programs.pmt_occurrences
    assert parsed.build() == pmt_occurrence.section
    assert ts.packetise_section(PMT_PID, pmt_occurrence.section)[0][4:] == table.payload(
        pmt_occurrence.rows[0])


@pytest.mark.ffmpeg
@pytest.mark.parametrize("segment", DEMO_TS, ids=lambda p: p.name)
def test_pes_reassembly_gives_ffmpegs_elementary_streams(segment: Path) -> None:
    data = segment.read_bytes()
    table = ts.scan_packets(data)
    video = ts.reassemble_pes(table, VIDEO)
    audio = ts.reassemble_pes(table, AUDIO)
    assert not video.leading_rows and not audio.leading_rows
    assert b"".join(p.payload for p in video.packets) == ffmpeg_es(segment, "v")
    assert b"".join(p.payload for p in audio.packets) == ffmpeg_es(segment, "a")
    assert len(video.packets) == 50
    assert all(p.header.packet_length == 0 and p.header.stream_id == 0xE0 for p in video.packets)
    assert all(p.header.packet_length == len(p.data) - 6 for p in audio.packets)
    pts = [p.header.pts for p in audio.packets]
    assert all(t is not None for t in pts) and pts == sorted(pts)  # type: ignore[type-var]
    for p in video.packets:
        assert p.header.pts is not None
        assert p.header.dts is None or p.header.dts <= p.header.pts


# -- rewriting ---------------------------------------------------------------------------


def test_unchanged_pes_rewrite_is_identity(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    editor = ts.SegmentEditor(table)
    for pid in (VIDEO, AUDIO):
        for pes in ts.reassemble_pes(table, pid).packets:
            editor.replace_pes(pes, pes.data)
    for occurrence, pmt in ts.read_programs(table).pmt_occurrences:
        editor.replace_section(occurrence, pmt.build())
    assert editor.build() == seg1


FILLER = b"\x00\x00\x01\x0c"  # filler data NAL unit (type 12): decoders skip it


def grow_video(data: bytes, sizes: list[int]) -> bytes:
    """Every video PES gets a filler NAL of sizes[i % len] bytes inserted after its AUD."""
    table = ts.scan_packets(data)
    editor = ts.SegmentEditor(table)
    for i, pes in enumerate(ts.reassemble_pes(table, VIDEO).packets):
        payload = pes.payload
        cut = payload.index(b"\x00\x00\x01", 4)  # after the access unit delimiter
        filler = FILLER + b"\xff" * sizes[i % len(sizes)] + b"\x80"
        editor.replace_pes(pes, ts.rebuild_pes(pes, payload[:cut] + filler + payload[cut:]))
    return editor.build()


@pytest.mark.parametrize("sizes", [[1], [183, 0, 7], [400, 1000, 3], [5000]])
def test_grown_pes_are_repacketised_continuously(seg1: bytes, sizes: list[int]) -> None:
    out = grow_video(seg1, sizes)
    table = ts.scan_packets(out)
    assert cc_gaps(out) == []
    # The next segment continues where the original ended: same count modulo 16.
    assert payload_packets(out, VIDEO) % 16 == payload_packets(seg1, VIDEO) % 16
    assert table.cc[table.rows_of(VIDEO)[0]] == ts.scan_packets(seg1).cc[
        ts.scan_packets(seg1).rows_of(VIDEO)[0]]
    # Every PCR survives, in order; every PES still starts with its random-access flag.
    assert pcrs(out, VIDEO) == pcrs(seg1, VIDEO)
    original = ts.reassemble_pes(ts.scan_packets(seg1), VIDEO).packets
    rewritten = ts.reassemble_pes(table, VIDEO).packets
    assert len(rewritten) == len(original)
    for old, new in zip(original, rewritten, strict=True):
        first_old = ts.scan_packets(seg1).packet(old.rows[0]).adaptation_field()
        first_new = table.packet(new.rows[0]).adaptation_field()
        assert first_new.essential == first_old.essential
        assert new.header == old.header
        assert len(new.payload) > len(old.payload)
    # Audio untouched, byte for byte.
    assert ts.reassemble_pes(table, AUDIO).data == ts.reassemble_pes(
        ts.scan_packets(seg1), AUDIO).data


@pytest.mark.ffmpeg
def test_repacketised_segment_decodes_like_the_original(seg1: bytes) -> None:
    out = grow_video(seg1, [100, 2000, 0, 31])
    assert framemd5(out) == framemd5(seg1)


def test_shrunk_pes_keeps_pcr_packets(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    editor = ts.SegmentEditor(table)
    stream = ts.reassemble_pes(table, VIDEO)
    for pes in stream.packets:
        editor.replace_pes(pes, ts.rebuild_pes(pes, pes.payload[:len(pes.payload) // 3]))
    out = editor.build()
    assert cc_gaps(out) == []
    assert pcrs(out, VIDEO) == pcrs(seg1, VIDEO)
    assert payload_packets(out, VIDEO) % 16 == payload_packets(seg1, VIDEO) % 16
    new = ts.reassemble_pes(ts.scan_packets(out), VIDEO).packets
    assert [p.payload for p in new] == [p.payload[:len(p.payload) // 3] for p in stream.packets]


def test_pmt_spilling_into_a_second_packet(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    programs = ts.read_programs(table)
    (occurrence, pmt), = programs.pmt_occurrences
    big = ts.Descriptor(0x0A, b"eng\x00" * 60)  # 240-byte language descriptor
    streams = tuple(ts.EsInfo(es.stream_type, es.pid, (big,)) for es in pmt.streams)
    grown = ts.Pmt(pmt.program_number, pmt.version, pmt.current_next, pmt.pcr_pid,
                   pmt.program_descriptors, streams)
    editor = ts.SegmentEditor(table)
    editor.replace_section(occurrence, grown.build())
    out = editor.build()
    assert len(out) == len(seg1) + 2 * 188  # 1 + 27 + 2 * (5 + 242) + 4 bytes: 3 packets
    assert cc_gaps(out) == []
    again = ts.read_programs(ts.scan_packets(out))
    assert again.pmts[1] == grown
    assert len(again.pmt_occurrences[0][0].rows) == 3


def test_make_packet_pads_with_adaptation_stuffing() -> None:
    for size in (0, 1, 182, 183, 184):
        payload = bytes(range(size))
        if size == 0:
            packet = ts.make_packet(0x42, payload, adaptation=b"\x40")
        else:
            packet = ts.make_packet(0x42, payload, pusi=True, cc=5)
        parsed = ts.parse_packet(packet)
        assert len(packet) == 188 and parsed.payload == payload and parsed.pid == 0x42
    pcr_field = b"\x50" + bytes(6)
    parsed = ts.parse_packet(ts.make_packet(7, b"x" * 100, adaptation=pcr_field))
    assert parsed.adaptation_field().pcr == 0 and parsed.adaptation_field().random_access
    with pytest.raises(ValueError, match="do not fit"):
        ts.make_packet(7, b"x" * 180, adaptation=pcr_field)


# -- broken input -------------------------------------------------------------------------


def corrupt(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


def test_lost_sync(seg1: bytes) -> None:
    with pytest.raises(ts.TsSyncError, match="packet 5"):
        ts.scan_packets(corrupt(seg1, 5 * 188, 0x48))
    with pytest.raises(ts.TsSyncError):
        ts.scan_packets(b"\x00" * 188 * 3)
    with pytest.raises(ts.TsSyncError):
        ts.parse_packet(corrupt(seg1, 0, 0), 0)


def test_truncated(seg1: bytes) -> None:
    with pytest.raises(ts.TsTruncated, match="truncated packet"):
        ts.scan_packets(seg1[:-10])
    with pytest.raises(ts.TsTruncated):
        ts.scan_packets(b"")
    with pytest.raises(ts.TsTruncated):
        ts.scan_packets(seg1[:100])
    with pytest.raises(ts.TsTruncated):
        ts.parse_packet(seg1[:187])


def test_pes_length_that_lies(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    first_audio = int(table.rows_of(AUDIO)[0])
    at = first_audio * 188 + int(table.payload_start[first_audio]) + 5  # PES_packet_length low
    for delta in (1, -1):
        broken = corrupt(seg1, at, (seg1[at] + delta) % 256)
        with pytest.raises(ts.PesLengthError):
            ts.reassemble_pes(ts.scan_packets(broken), AUDIO)
    start = at - 5
    with pytest.raises(ts.PesError, match="start code"):
        ts.reassemble_pes(ts.scan_packets(corrupt(seg1, start + 2, 0x02)), AUDIO)
    with pytest.raises(ts.PesError, match="header_data_length"):
        ts.parse_pes_header(b"\x00\x00\x01\xc0\x00\x08\x80\x80\x0a" + bytes(5))
    with pytest.raises(ts.PesError, match="PTS"):
        ts.parse_pes_header(b"\x00\x00\x01\xc0\x00\x08\x80\x80\x02" + bytes(5))
    with pytest.raises(ts.PesError, match="truncated"):
        ts.parse_pes_header(b"\x00\x00\x01\xe0\x00")


def null_out(data: bytes, pid: int) -> bytes:
    """Every packet of ``pid`` turned into a null packet."""
    table = ts.scan_packets(data)
    out = bytearray(data)
    for row in table.rows_of(pid).tolist():
        out[row * 188 + 1] = (out[row * 188 + 1] & 0xE0) | 0x1F
        out[row * 188 + 2] = 0xFF
    return bytes(out)


def test_missing_or_broken_psi(seg1: bytes) -> None:
    with pytest.raises(ts.PmtMissing):
        ts.read_programs(ts.scan_packets(null_out(seg1, PMT_PID)))
    with pytest.raises(ts.PatMissing):
        ts.read_programs(ts.scan_packets(null_out(seg1, 0)))
    table = ts.scan_packets(seg1)
    pmt_row = int(table.rows_of(PMT_PID)[0])
    with pytest.raises(ts.PmtMissing, match="CRC32"):
        ts.read_programs(ts.scan_packets(corrupt(seg1, pmt_row * 188 + 20, 0x42)))
    pat_row = int(table.rows_of(0)[0])
    with pytest.raises(ts.CrcError):
        ts.read_programs(ts.scan_packets(corrupt(seg1, pat_row * 188 + 12, 0x42)))
    with pytest.raises(ts.TsTruncated):  # section_length past the packet, nothing follows
        ts.read_programs(ts.scan_packets(corrupt(seg1, pmt_row * 188 + 7, 0xF0)))


def test_continuity_gap_and_bad_adaptation_field(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    video_rows = table.rows_of(VIDEO)
    drop = int(video_rows[3])
    gap = seg1[:drop * 188] + seg1[(drop + 1) * 188:]
    with pytest.raises(ts.ContinuityError):
        ts.reassemble_pes(ts.scan_packets(gap), VIDEO)
    first = int(video_rows[0])
    with pytest.raises(ts.AdaptationFieldError):
        ts.scan_packets(corrupt(seg1, first * 188 + 4, 184))
    with pytest.raises(ts.AdaptationFieldError):
        ts.parse_adaptation_field(b"\x10\x00\x00")  # PCR flag, 2 of 6 bytes


def test_scrambled_packets_are_refused(seg1: bytes) -> None:
    table = ts.scan_packets(seg1)
    row = int(table.rows_of(AUDIO)[2])
    with pytest.raises(ts.TsUnsupported):
        ts.reassemble_pes(ts.scan_packets(corrupt(seg1, row * 188 + 3, seg1[row * 188 + 3] | 0x80)),
                          AUDIO)


def test_typed_errors_are_malformed_media() -> None:
    for cls in (ts.TsSyncError, ts.TsTruncated, ts.PesLengthError, ts.PmtMissing,
                ts.ContinuityError, ts.TsUnsupported, ts.CrcError):
        assert issubclass(cls, MalformedMedia) and cls().status == 502


# -- fuzz ----------------------------------------------------------------------------------

SMALL = SEG1.read_bytes()[:188 * 60]  # PSI, a whole audio PES or two, video PES starts
NOISY_HEAD = (MEDIA_TS / "h264_ac3.ts").read_bytes()[:188 * 40]


def parse_everything(data: bytes) -> None:
    table = ts.scan_packets(data)
    for row in range(min(table.count, 50)):
        table.packet(row).adaptation_field()
    programs = ts.read_programs(table)
    for pid in programs.streams():
        for pes in ts.reassemble_pes(table, pid).packets:
            ts.parse_pes_header(pes.data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([SMALL, NOISY_HEAD])))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "byte", "cut", "drop", "dup"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        else:
            row = at // 188 * 188
            chunk = data[row:row + 188]
            if kind == "drop":
                del data[row:row + 188]
            else:
                data[row:row] = chunk
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated() | st.binary(max_size=2000))
def test_fuzzed_input_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedMedia):
        parse_everything(data)
