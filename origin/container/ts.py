"""MPEG-2 transport stream: packets, PAT/PMT, PES reassembly and repacketisation.

ISO/IEC 13818-1 §2.4.3 (packets, adaptation field), §2.4.4 (PSI sections,
PAT, PMT, CRC32 Annex A), §2.4.3.6-7 (PES).  Pure functions on ``bytes``.

- :func:`scan_packets` reads every packet header of a segment at once with
  numpy (sync byte, PID, PUSI, scrambling, adaptation field control,
  continuity counter, where the payload starts) into a :class:`PacketTable`;
  :func:`parse_packet` is the one-packet view.
- :func:`read_programs` reassembles the PAT and every PMT it names (CRC
  checked) and records each occurrence, so a rewrite can replace them.
- :func:`reassemble_pes` collects one PID's payload bytes with one numpy mask
  and cuts them into PES packets at the PUSI packets; headers and
  ``PES_packet_length`` are checked.
- :class:`SegmentEditor` writes changed PES packets and sections back.  A PES
  whose size did not change is written in place (one numpy scatter per PID);
  headers, adaptation fields and PCRs stay as they were.  A PES whose size
  changed is repacketised over its original packets' positions: every
  original packet keeps its adaptation field content (PCR, random access,
  discontinuity, …; only stuffing is dropped), payload fills the packets in
  order, extra packets follow the PES's last packet, and the last payload
  packet is padded with adaptation-field stuffing.  The PID's continuity
  counters are then renumbered from the segment's first one, and the PID
  gets as many extra packets as keep its packet count unchanged modulo 16, so
  the counter at the end of the segment is what the next (independently
  rewritten) segment expects.  A rewritten section is repacketised (pointer
  field 0, 0xFF fill) into the packets it had, or spills into more packets
  where the first one was (its PID's counter then ends differently).

Every size, offset and count read from the stream is checked; malformed input
raises a :class:`TsError` (→ 502), never an ``IndexError``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from origin.errors import MalformedMedia

PACKET_SIZE = 188
SYNC_BYTE = 0x47
HEADER_SIZE = 4
MAX_PAYLOAD = PACKET_SIZE - HEADER_SIZE  # 184
PAT_PID = 0x0000
NULL_PID = 0x1FFF
PAT_TABLE_ID = 0x00
PMT_TABLE_ID = 0x02
MAX_SECTION_LENGTH = 1021  # section_length of PAT/PMT (§2.4.4.3, §2.4.4.9)
MAX_PES_PACKET_LENGTH = 0xFFFF
PES_START_CODE = b"\x00\x00\x01"
# stream_ids without the optional PES header (§2.4.3.7, Table 2-22)
NO_OPTIONAL_HEADER = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]


# -- errors -------------------------------------------------------------------


class TsError(MalformedMedia):
    reason = "malformed MPEG-TS"


class TsSyncError(TsError):
    reason = "MPEG-TS sync lost"


class TsTruncated(TsError):
    reason = "truncated MPEG-TS"


class AdaptationFieldError(TsError):
    reason = "malformed MPEG-TS adaptation field"


class ContinuityError(TsError):
    reason = "MPEG-TS continuity counter gap"


class PsiError(TsError):
    reason = "malformed MPEG-TS PSI section"


class CrcError(PsiError):
    reason = "MPEG-TS section CRC mismatch"


class PatMissing(PsiError):
    reason = "MPEG-TS segment has no PAT"


class PmtMissing(PsiError):
    reason = "MPEG-TS segment has no PMT"


class PesError(TsError):
    reason = "malformed PES packet"


class PesLengthError(PesError):
    reason = "PES_packet_length does not match the PES"


class TsUnsupported(TsError):
    reason = "unsupported MPEG-TS feature"


# -- CRC32/MPEG-2 --------------------------------------------------------------

# CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, no reflection, no xorout) is
# zlib's reflected CRC-32 run over bit-reversed bytes, result bit-reversed: C speed.
_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc32_mpeg2(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/MPEG-2 of ``data`` (a section including its CRC gives 0)."""
    reflected = zlib.crc32(bytes(data).translate(_REVERSE)) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


# -- packets -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdaptationField:
    """The flags and fields of an adaptation field (§2.4.3.4).

    ``essential`` is the field without its length byte and stuffing: what a
    repacketiser must carry over (empty when the field is stuffing only).
    """

    discontinuity: bool
    random_access: bool
    es_priority: bool
    pcr: int | None  # 27 MHz units: base * 300 + extension
    opcr: int | None
    splice_countdown: int | None
    private_data: bytes
    essential: bytes


def _clock(b: bytes) -> int:
    base = int.from_bytes(b[:5], "big") >> 7
    ext = ((b[4] & 1) << 8) | b[5]
    return base * 300 + ext


def parse_adaptation_field(af: bytes) -> AdaptationField:
    """Parse an adaptation field given *without* its length byte (may be empty)."""
    if not af:
        return AdaptationField(False, False, False, None, None, None, b"", b"")
    flags = af[0]
    pos = 1
    pcr = opcr = splice = None
    private = b""

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(af):
            raise AdaptationFieldError("adaptation field fields overrun its length")
        out = af[pos:pos + n]
        pos += n
        return out

    if flags & 0x10:
        pcr = _clock(take(6))
    if flags & 0x08:
        opcr = _clock(take(6))
    if flags & 0x04:
        raw = take(1)[0]
        splice = raw - 256 if raw & 0x80 else raw
    if flags & 0x02:
        private = take(take(1)[0])
    if flags & 0x01:
        take(take(1)[0])
    essential = af[:pos] if flags else b""
    return AdaptationField(bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x20),
                           pcr, opcr, splice, private, essential)


@dataclass(frozen=True, slots=True)
class TsPacket:
    """One 188-byte packet (§2.4.3.2).  ``adaptation`` excludes the length byte."""

    pid: int
    pusi: bool
    transport_error: bool
    priority: bool
    scrambling: int
    afc: int
    cc: int
    adaptation: bytes
    payload: bytes

    @property
    def has_payload(self) -> bool:
        return bool(self.afc & 1)

    def adaptation_field(self) -> AdaptationField:
        return parse_adaptation_field(self.adaptation)


def parse_packet(data: bytes | memoryview, offset: int = 0) -> TsPacket:
    """The packet at ``offset`` of ``data``."""
    if offset < 0 or offset + PACKET_SIZE > len(data):
        raise TsTruncated("truncated MPEG-TS packet")
    p = bytes(data[offset:offset + PACKET_SIZE])
    if p[0] != SYNC_BYTE:
        raise TsSyncError(f"no sync byte at offset {offset}")
    afc = (p[3] >> 4) & 3
    adaptation = b""
    start = HEADER_SIZE
    if afc & 2:
        af_len = p[4]
        if af_len > (MAX_PAYLOAD - 1 if afc == 2 else MAX_PAYLOAD - 2):
            raise AdaptationFieldError(f"adaptation field too long at offset {offset}")
        adaptation = p[5:5 + af_len]
        start = 5 + af_len
    payload = p[start:] if afc & 1 else b""
    return TsPacket(((p[1] & 0x1F) << 8) | p[2], bool(p[1] & 0x40), bool(p[1] & 0x80),
                    bool(p[1] & 0x20), p[3] >> 6, afc, p[3] & 0x0F, adaptation, payload)


@dataclass(frozen=True, slots=True, eq=False)
class PacketTable:
    """Every packet header of a segment, as numpy columns (one row per packet)."""

    data: bytes
    rows: ByteArray  # (n, 188), read-only view of ``data``
    pid: IntArray
    pusi: BoolArray
    scrambling: IntArray
    afc: IntArray
    cc: IntArray
    payload_start: IntArray  # offset of the payload inside the packet; 188 if none
    payload_mask: BoolArray  # (n, 188): which bytes of each packet are payload

    @property
    def count(self) -> int:
        return len(self.pid)

    def payload(self, row: int) -> bytes:
        at = row * PACKET_SIZE
        return self.data[at + int(self.payload_start[row]):at + PACKET_SIZE]

    def packet(self, row: int) -> TsPacket:
        return parse_packet(self.data, row * PACKET_SIZE)

    def rows_of(self, pid: int) -> IntArray:
        return np.flatnonzero(self.pid == pid)


def scan_packets(data: bytes) -> PacketTable:
    """Read every packet header of ``data`` (whole 188-byte packets, sync on each)."""
    if not data:
        raise TsTruncated("empty MPEG-TS segment")
    n = len(data) // PACKET_SIZE
    rows = np.frombuffer(data, np.uint8, count=n * PACKET_SIZE).reshape(n, PACKET_SIZE)
    lost = np.flatnonzero(rows[:, 0] != SYNC_BYTE)
    if lost.size:
        at = int(lost[0])
        raise TsSyncError(f"sync byte missing at packet {at} (offset {at * PACKET_SIZE})")
    if len(data) % PACKET_SIZE:
        raise TsTruncated(f"truncated packet at offset {n * PACKET_SIZE}")
    b1 = rows[:, 1].astype(np.int64)
    b3 = rows[:, 3].astype(np.int64)
    afc = (b3 >> 4) & 3
    has_af = (afc & 2) != 0
    af_len = np.where(has_af, rows[:, 4], 0).astype(np.int64)
    too_long = has_af & (af_len > np.where(afc == 2, MAX_PAYLOAD - 1, MAX_PAYLOAD - 2))
    if too_long.any():
        at = int(np.flatnonzero(too_long)[0])
        raise AdaptationFieldError(f"adaptation field too long in packet {at}")
    payload_start = np.where((afc & 1) != 0, HEADER_SIZE + np.where(has_af, 1 + af_len, 0),
                             PACKET_SIZE)
    payload_start = payload_start.astype(np.int64)
    return PacketTable(
        data=data, rows=rows,
        pid=((b1 & 0x1F) << 8) | rows[:, 2].astype(np.int64),
        pusi=(b1 & 0x40) != 0,
        scrambling=b3 >> 6, afc=afc, cc=b3 & 0x0F,
        payload_start=payload_start,
        payload_mask=np.arange(PACKET_SIZE)[None, :] >= payload_start[:, None],
    )


def _payload_bytes(table: PacketTable, rows: IntArray) -> tuple[bytes, IntArray]:
    """The payload bytes of ``rows`` concatenated, and each row's payload size."""
    return (table.rows[rows][table.payload_mask[rows]].tobytes(),
            PACKET_SIZE - table.payload_start[rows])


def _rows_mask(table: PacketTable, rows: IntArray) -> BoolArray:
    """(n, 188) mask of the payload bytes of ``rows`` (row-major = stream order)."""
    chosen = np.zeros(table.count, np.bool_)
    chosen[rows] = True
    return table.payload_mask & chosen[:, None]


def _check_continuity(table: PacketTable, rows: IntArray) -> None:
    """Payload-carrying ``rows`` of one PID must count up by one (mod 16).

    A packet whose adaptation field sets discontinuity_indicator may jump.
    Duplicate packets and losses both raise: either would corrupt a PES.
    """
    if len(rows) < 2:
        return
    step = (table.cc[rows[1:]] - table.cc[rows[:-1]]) & 0x0F
    later = rows[1:]
    flagged = ((table.afc[later] & 2) != 0) & (table.rows[later, 4] > 0) & (
        (table.rows[later, 5] & 0x80) != 0)
    bad = (step != 1) & ~flagged
    if bad.any():
        at = int(later[np.flatnonzero(bad)[0]])
        raise ContinuityError(f"continuity counter gap on PID {int(table.pid[at])} "
                              f"at packet {at}")


# -- PSI sections --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A long-form PSI section (§2.4.4.10 syntax, section_syntax_indicator = 1)."""

    table_id: int
    table_id_extension: int
    version: int
    current_next: bool
    section_number: int
    last_section_number: int
    body: bytes  # between last_section_number and the CRC

    def build(self) -> bytes:
        return build_section(self.table_id, self.table_id_extension, self.body,
                             version=self.version, current_next=self.current_next,
                             section_number=self.section_number,
                             last_section_number=self.last_section_number)


def parse_section(buf: bytes) -> Section:
    """Parse the section at the start of ``buf`` (trailing bytes ignored); CRC checked."""
    if len(buf) < 3:
        raise TsTruncated("truncated PSI section header")
    if not buf[1] & 0x80:
        raise PsiError("PSI section without section syntax")
    length = ((buf[1] & 0x0F) << 8) | buf[2]
    if length > MAX_SECTION_LENGTH:
        raise PsiError("PSI section_length over 1021")
    if length < 9:
        raise PsiError("PSI section too short")
    if 3 + length > len(buf):
        raise TsTruncated("truncated PSI section")
    sec = buf[:3 + length]
    if crc32_mpeg2(sec) != 0:
        raise CrcError(f"CRC32 mismatch in PSI section (table_id 0x{buf[0]:02x})")
    return Section(table_id=sec[0], table_id_extension=int.from_bytes(sec[3:5], "big"),
                   version=(sec[5] >> 1) & 0x1F, current_next=bool(sec[5] & 1),
                   section_number=sec[6], last_section_number=sec[7], body=sec[8:-4])


def build_section(table_id: int, table_id_extension: int, body: bytes, *, version: int = 0,
                  current_next: bool = True, section_number: int = 0,
                  last_section_number: int = 0) -> bytes:
    """A long-form section with section_length and CRC32 computed."""
    length = 5 + len(body) + 4
    if length > MAX_SECTION_LENGTH:
        raise TsUnsupported("PSI section would exceed 1021 bytes")
    head = bytes([table_id, 0xB0 | (length >> 8), length & 0xFF,
                  table_id_extension >> 8, table_id_extension & 0xFF,
                  0xC0 | ((version & 0x1F) << 1) | int(current_next),
                  section_number, last_section_number])
    sec = head + body
    return sec + crc32_mpeg2(sec).to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Descriptor:
    tag: int
    data: bytes

    def build(self) -> bytes:
        if len(self.data) > 0xFF:
            raise TsUnsupported("descriptor longer than 255 bytes")
        return bytes([self.tag, len(self.data)]) + self.data


def parse_descriptors(raw: bytes) -> tuple[Descriptor, ...]:
    out = []
    pos = 0
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise PsiError("truncated descriptor header")
        end = pos + 2 + raw[pos + 1]
        if end > len(raw):
            raise PsiError("descriptor runs past its loop")
        out.append(Descriptor(raw[pos], raw[pos + 2:end]))
        pos = end
    return tuple(out)


def build_descriptors(descriptors: Iterable[Descriptor]) -> bytes:
    return b"".join(d.build() for d in descriptors)


@dataclass(frozen=True, slots=True)
class Pat:
    transport_stream_id: int
    version: int
    programs: tuple[tuple[int, int], ...]  # (program_number, PMT PID), program_number != 0
    network_pid: int | None


def parse_pat(section: Section) -> Pat:
    if section.table_id != PAT_TABLE_ID:
        raise PsiError("PAT section with a wrong table_id")
    body = section.body
    if len(body) % 4:
        raise PsiError("PAT program loop is not a whole number of entries")
    programs = []
    network = None
    for at in range(0, len(body), 4):
        number = int.from_bytes(body[at:at + 2], "big")
        pid = int.from_bytes(body[at + 2:at + 4], "big") & 0x1FFF
        if number == 0:
            network = pid
        else:
            programs.append((number, pid))
    return Pat(section.table_id_extension, section.version, tuple(programs), network)


@dataclass(frozen=True, slots=True)
class EsInfo:
    stream_type: int
    pid: int
    descriptors: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Pmt:
    program_number: int
    version: int
    current_next: bool
    pcr_pid: int
    program_descriptors: tuple[Descriptor, ...]
    streams: tuple[EsInfo, ...]

    def build(self) -> bytes:
        """The PMT section (section_length and CRC32 recomputed)."""
        prog = build_descriptors(self.program_descriptors)
        parts = [bytes([0xE0 | (self.pcr_pid >> 8), self.pcr_pid & 0xFF,
                        0xF0 | (len(prog) >> 8), len(prog) & 0xFF]), prog]
        for es in self.streams:
            info = build_descriptors(es.descriptors)
            if len(info) > 0x3FF:
                raise TsUnsupported("ES_info_length over 1023")
            parts.append(bytes([es.stream_type, 0xE0 | (es.pid >> 8), es.pid & 0xFF,
                                0xF0 | (len(info) >> 8), len(info) & 0xFF]))
            parts.append(info)
        if len(prog) > 0x3FF:
            raise TsUnsupported("program_info_length over 1023")
        return build_section(PMT_TABLE_ID, self.program_number, b"".join(parts),
                             version=self.version, current_next=self.current_next)


def parse_pmt(section: Section) -> Pmt:
    if section.table_id != PMT_TABLE_ID:
        raise PsiError("PMT section with a wrong table_id")
    body = section.body
    if len(body) < 4:
        raise PsiError("truncated PMT")
    pcr_pid = int.from_bytes(body[0:2], "big") & 0x1FFF
    info_len = int.from_bytes(body[2:4], "big") & 0x0FFF
    pos = 4 + info_len
    if pos > len(body):
        raise PsiError("program_info_length runs past the PMT")
    program_descriptors = parse_descriptors(body[4:pos])
    streams = []
    while pos < len(body):
        if pos + 5 > len(body):
            raise PsiError("truncated PMT stream entry")
        stream_type = body[pos]
        pid = int.from_bytes(body[pos + 1:pos + 3], "big") & 0x1FFF
        es_len = int.from_bytes(body[pos + 3:pos + 5], "big") & 0x0FFF
        end = pos + 5 + es_len
        if end > len(body):
            raise PsiError("ES_info_length runs past the PMT")
        streams.append(EsInfo(stream_type, pid, parse_descriptors(body[pos + 5:end])))
        pos = end
    return Pmt(section.table_id_extension, section.version, section.current_next, pcr_pid,
               program_descriptors, tuple(streams))


@dataclass(frozen=True, slots=True)
class SectionOccurrence:
    """One section as carried on a PID: the packets holding it and its bytes."""

    pid: int
    rows: tuple[int, ...]
    section: bytes


def section_occurrences(table: PacketTable, pid: int) -> list[SectionOccurrence]:
    """Every complete section on ``pid``, one per payload_unit_start packet.

    Payload before the first start packet (a section begun in an earlier
    segment) is skipped.  A start packet whose pointer_field is not 0 (the end
    of a previous section shares it) or that carries a second section is not
    supported; a section cut off by the end of the segment is truncated.
    """
    out: list[SectionOccurrence] = []
    rows: list[int] = []
    buf = b""
    need = -1
    for row in table.rows_of(pid).tolist():
        if not table.afc[row] & 1:
            continue
        payload = table.payload(row)
        if table.pusi[row]:
            if rows:
                raise TsTruncated(f"PSI section on PID {pid} cut off by a new one")
            if not payload:
                raise PsiError("empty PSI start packet")
            if payload[0] != 0:
                raise TsUnsupported("PSI packet with a non-zero pointer_field")
            rows, buf, need = [row], payload[1:], -1
        elif rows:
            rows.append(row)
            buf += payload
        else:
            continue
        if need < 0 and len(buf) >= 3:
            need = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
            if need - 3 > MAX_SECTION_LENGTH:
                raise PsiError("PSI section_length over 1021")
        if need >= 0 and len(buf) >= need:
            rest = buf[need:]
            if rest.strip(b"\xff"):
                raise TsUnsupported("several PSI sections in one packet")
            out.append(SectionOccurrence(pid, tuple(rows), buf[:need]))
            rows, buf, need = [], b"", -1
    if rows:
        raise TsTruncated(f"PSI section on PID {pid} cut off by the end of the segment")
    return out


@dataclass(frozen=True, slots=True)
class Programs:
    """The PAT and every PMT of a segment, with where each section sits."""

    pat: Pat
    pat_occurrences: tuple[SectionOccurrence, ...]
    pmts: Mapping[int, Pmt]  # program_number -> first PMT seen
    pmt_occurrences: tuple[tuple[SectionOccurrence, Pmt], ...]

    def streams(self) -> dict[int, EsInfo]:
        """Elementary PID -> its entry (first PMT of its program)."""
        out: dict[int, EsInfo] = {}
        for pmt in self.pmts.values():
            for es in pmt.streams:
                out.setdefault(es.pid, es)
        return out


def read_programs(table: PacketTable) -> Programs:
    """Find and parse the PAT and the PMTs it lists; PMT missing or bad raises."""
    pat_occ = section_occurrences(table, PAT_PID)
    if not pat_occ:
        raise PatMissing()
    pats = [parse_pat(parse_section(o.section)) for o in pat_occ]
    pat = pats[0]
    if not pat.programs:
        raise PmtMissing("PAT lists no program")
    pmts: dict[int, Pmt] = {}
    occurrences: list[tuple[SectionOccurrence, Pmt]] = []
    for pmt_pid in sorted({pid for _, pid in pat.programs}):
        if pmt_pid in (PAT_PID, NULL_PID):
            raise PsiError("PAT points a PMT at a reserved PID")
        for occ in section_occurrences(table, pmt_pid):
            try:
                pmt = parse_pmt(parse_section(occ.section))
            except TsError as exc:
                raise PmtMissing(f"unparseable PMT on PID {pmt_pid}: {exc.detail}") from exc
            occurrences.append((occ, pmt))
            pmts.setdefault(pmt.program_number, pmt)
    for number, pid in pat.programs:
        if number not in pmts:
            raise PmtMissing(f"no PMT for program {number} on PID {pid}")
    occurrences.sort(key=lambda item: item[0].rows[0])
    return Programs(pat, tuple(pat_occ), pmts, tuple(occurrences))


# -- PES -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PesHeader:
    stream_id: int
    packet_length: int  # PES_packet_length as written (0 = unbounded)
    size: int  # bytes before the payload: 6, or 9 + PES_header_data_length
    pts: int | None
    dts: int | None


def _timestamp(b: bytes) -> int:
    return (((b[0] >> 1) & 0x07) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (
        b[4] >> 1)


def parse_pes_header(data: bytes) -> PesHeader:
    """The header of the PES packet at the start of ``data`` (bounds-checked)."""
    if len(data) < 6:
        raise PesError("truncated PES header")
    whole = len(data)
    data = data[:19]  # the longest header this reads: start code … DTS
    if data[:3] != PES_START_CODE:
        raise PesError("PES packet without start code")
    stream_id = data[3]
    length = int.from_bytes(data[4:6], "big")
    if stream_id in NO_OPTIONAL_HEADER:
        return PesHeader(stream_id, length, 6, None, None)
    if whole < 9:
        raise PesError("truncated PES header")
    if data[6] & 0xC0 != 0x80:
        raise PesError("PES optional header marker bits are not '10'")
    flags = data[7] >> 6
    hdl = data[8]
    size = 9 + hdl
    if size > whole or (length and size > 6 + length):
        raise PesError("PES_header_data_length runs past the PES")
    pts = dts = None
    if flags == 1:
        raise PesError("PES PTS_DTS_flags is the forbidden value 01")
    if flags & 2:
        if hdl < 5:
            raise PesError("PES header too short for its PTS")
        pts = _timestamp(data[9:14])
    if flags == 3:
        if hdl < 10:
            raise PesError("PES header too short for its DTS")
        dts = _timestamp(data[14:19])
    return PesHeader(stream_id, length, size, pts, dts)


@dataclass(frozen=True, slots=True)
class Pes:
    """One PES packet of a PID: its packets (rows) and its bytes."""

    pid: int
    rows: tuple[int, ...]  # every packet of the PID from its start up to the next start
    payload_rows: int  # how many of them carry payload
    offset: int  # where ``data`` starts in its :attr:`PesStream.data`
    data: bytes
    header: PesHeader

    @property
    def payload(self) -> bytes:
        return self.data[self.header.size:]


@dataclass(frozen=True, slots=True)
class PesStream:
    """The PES packets of one PID in a segment."""

    pid: int
    leading_rows: tuple[int, ...]  # payload before the first start (an earlier PES): untouched
    packets: tuple[Pes, ...]
    data: bytes  # every PES of ``packets``, back to back


def reassemble_pes(table: PacketTable, pid: int) -> PesStream:
    """Cut ``pid``'s payload into PES packets; headers and lengths are checked.

    Continuity counters must be continuous (or flagged discontinuous);
    transport-scrambled packets are not supported.
    """
    all_rows = table.rows_of(pid)
    if np.any(table.scrambling[all_rows] != 0):
        raise TsUnsupported(f"transport-scrambled packets on PID {pid}")
    carrying = (table.afc[all_rows] & 1) != 0
    _check_continuity(table, all_rows[carrying])
    starts = all_rows[table.pusi[all_rows] & carrying]
    if not starts.size:
        return PesStream(pid, tuple(all_rows.tolist()), (), b"")
    first = int(starts[0])
    leading = all_rows[all_rows < first]
    rows = all_rows[all_rows >= first]
    payload, sizes = _payload_bytes(table, rows)
    # Each PES runs from a start row up to the next start row (exclusive).
    bounds = [*np.searchsorted(rows, starts).tolist(), len(rows)]
    offsets = np.concatenate(([0], np.cumsum(sizes))).tolist()
    carried = np.concatenate(([0], np.cumsum(carrying[all_rows >= first]))).tolist()
    row_list = rows.tolist()
    out = []
    for a, b in pairwise(bounds):
        start, end = offsets[a], offsets[b]
        data = payload[start:end]
        header = parse_pes_header(data)
        if header.packet_length and 6 + header.packet_length != len(data):
            raise PesLengthError(f"PES_packet_length {header.packet_length} on PID {pid} "
                                 f"but the PES has {len(data) - 6} bytes after it")
        out.append(Pes(pid, tuple(row_list[a:b]), carried[b] - carried[a], start, data, header))
    return PesStream(pid, tuple(leading.tolist()), tuple(out), payload)


def rebuild_pes(pes: Pes, payload: bytes) -> bytes:
    """``pes`` with a new payload; PES_packet_length updated (0 stays 0)."""
    head = pes.data[:pes.header.size]
    if pes.header.packet_length == 0:
        return head + payload
    length = pes.header.size - 6 + len(payload)
    if length > MAX_PES_PACKET_LENGTH:
        if 0xE0 <= pes.header.stream_id <= 0xEF:
            length = 0  # unbounded: allowed for video elementary streams in TS
        else:
            raise TsUnsupported("PES would exceed 65535 bytes")
    return head[:4] + length.to_bytes(2, "big") + head[6:] + payload


# -- writing -------------------------------------------------------------------


def make_packet(pid: int, payload: bytes, *, pusi: bool = False, cc: int = 0,
                adaptation: bytes | None = None) -> bytes:
    """One packet; ``adaptation`` is adaptation-field content without its length byte.

    The packet is filled to 188 bytes with adaptation-field stuffing, adding
    an adaptation field if needed.  An empty payload makes an
    adaptation-field-only packet.
    """
    af = adaptation or b""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload over 184 bytes")
    room = MAX_PAYLOAD - len(payload)  # bytes for the adaptation field incl. its length byte
    if not payload:
        if not af:
            raise ValueError("a packet needs a payload or an adaptation field")
        afc = 2
    elif room == 0 and not af:
        afc = 1
    else:
        afc = 3
    head = bytes([SYNC_BYTE, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF,
                  (afc << 4) | (cc & 0x0F)])
    if afc == 1:
        return head + payload
    if room < 1 + len(af):
        raise ValueError("adaptation field and payload do not fit one packet")
    if room == 1:
        field_bytes = b"\x00"
    else:
        body = af or b"\x00"  # a flags byte, all clear, when the field is stuffing only
        field_bytes = bytes([room - 1]) + body + b"\xff" * (room - 1 - len(body))
    return head + field_bytes + payload


def _template_afs(table: PacketTable, rows: Sequence[int]) -> list[bytes | None]:
    """Adaptation field content (no stuffing) of each row, or None."""
    out: list[bytes | None] = [None] * len(rows)
    index = np.asarray(rows, np.int64)
    flagged = np.flatnonzero(((table.afc[index] & 2) != 0) & (table.rows[index, 4] > 0))
    for j in flagged.tolist():
        at = rows[j] * PACKET_SIZE
        af = table.data[at + 5:at + 5 + int(table.data[at + 4])]
        out[j] = parse_adaptation_field(af).essential or None
    return out


def packetise_pes(pid: int, data: bytes, afs: Sequence[bytes | None],
                  extra: int = 0) -> list[list[bytes]]:
    """Packets for PES ``data`` laid over original packets with adaptation fields ``afs``.

    Returns one list per original packet (what replaces it; the last list also
    holds any packets beyond the original count).  The first packet keeps the
    first original adaptation field; later originals keep theirs too (PCRs),
    as adaptation-field-only packets once the data has run out.  ``extra``
    more packets are made by carrying the last ``extra`` bytes one per packet.
    Continuity counters are left 0 (the caller renumbers the PID).
    """
    if not afs:
        raise ValueError("no packets to lay a PES over")
    if extra and len(data) <= extra:
        raise ValueError("PES too small for the extra packets")
    body = data[:len(data) - extra] if extra else data
    tail = data[len(data) - extra:] if extra else b""
    out: list[list[bytes]] = [[] for _ in afs]
    full = bytes([SYNC_BYTE, pid >> 8, pid & 0xFF, 0x10])  # header of a payload-only packet
    size = len(body)
    pos = 0
    for j, af in enumerate(afs):
        if af is None and pos and size - pos >= MAX_PAYLOAD:  # the common case, made quickly
            out[j].append(full + body[pos:pos + MAX_PAYLOAD])
            pos += MAX_PAYLOAD
            continue
        cap = MAX_PAYLOAD - (1 + len(af) if af is not None else 0)
        if pos >= size or cap <= 0:
            if af is not None:  # keep the field (PCR, flags) in an adaptation-only packet
                out[j].append(make_packet(pid, b"", adaptation=af))
            continue
        chunk = body[pos:pos + cap]
        out[j].append(make_packet(pid, chunk, pusi=pos == 0, adaptation=af))
        pos += len(chunk)
    while size - pos >= MAX_PAYLOAD:
        out[-1].append(full + body[pos:pos + MAX_PAYLOAD])
        pos += MAX_PAYLOAD
    if pos < size:
        out[-1].append(make_packet(pid, body[pos:]))
    out[-1].extend(make_packet(pid, tail[i:i + 1]) for i in range(len(tail)))
    return out


def packetise_section(pid: int, section: bytes) -> list[bytes]:
    """A PSI section as packets: pointer_field 0, 0xFF fill after the section."""
    data = b"\x00" + section
    data += b"\xff" * (-len(data) % MAX_PAYLOAD)
    return [make_packet(pid, data[at:at + MAX_PAYLOAD], pusi=at == 0)
            for at in range(0, len(data), MAX_PAYLOAD)]


def _payload_packets(packets: Iterable[bytes]) -> int:
    return sum(1 for p in packets if (p[3] >> 4) & 1)


class SegmentEditor:
    """Collects PES and section replacements for one segment and writes the result.

    At most one replacement per PES packet and per section occurrence; all of
    them refer to the packets of ``table``.
    """

    def __init__(self, table: PacketTable) -> None:
        self.table = table
        self._pes: dict[int, list[tuple[Pes, bytes]]] = {}
        self._sections: list[tuple[SectionOccurrence, bytes]] = []

    def replace_pes(self, pes: Pes, data: bytes) -> None:
        """Replace the whole PES packet ``pes`` (header included) by ``data``."""
        if not data.startswith(PES_START_CODE) or len(data) < 6:
            raise ValueError("replacement is not a PES packet")
        self._pes.setdefault(pes.pid, []).append((pes, data))

    def replace_section(self, occurrence: SectionOccurrence, section: bytes) -> None:
        parse_section(section)
        self._sections.append((occurrence, section))

    def build(self) -> bytes:
        table = self.table
        out = table.rows.copy()
        slots: dict[int, list[bytes]] = {}  # row -> packets written where it was
        renumber: dict[int, int] = {}  # PID -> continuity counter of its first payload packet
        for pid, edits in self._pes.items():
            same = [(pes, data) for pes, data in edits if len(data) == len(pes.data)]
            if same:
                rows = np.array([r for pes, _ in same for r in pes.rows], np.int64)
                out[_rows_mask(table, rows)] = np.frombuffer(
                    b"".join(data for _, data in same), np.uint8)
            grown = [(pes, data) for pes, data in edits if len(data) != len(pes.data)]
            if grown:
                self._repacketise(pid, grown, slots)
                renumber[pid] = self._first_cc(pid)
        for occ, section in self._sections:
            packets = packetise_section(occ.pid, section)
            if len(packets) == len(occ.rows):
                for row, packet in zip(occ.rows, packets, strict=True):
                    out[row] = np.frombuffer(packet, np.uint8)
                renumber.setdefault(occ.pid, self._first_cc(occ.pid))
            else:
                slots[occ.rows[0]] = packets
                for row in occ.rows[1:]:
                    slots[row] = []
                renumber[occ.pid] = self._first_cc(occ.pid)
        if slots:
            pieces: list[bytes] = []
            prev = 0
            for row in sorted(slots):
                pieces.append(out[prev:row].tobytes())
                pieces.extend(slots[row])
                prev = row + 1
            pieces.append(out[prev:].tobytes())
            result = b"".join(pieces)
            out = np.frombuffer(result, np.uint8).reshape(-1, PACKET_SIZE).copy()
        for pid, cc0 in renumber.items():
            _renumber(out, pid, cc0)
        return out.tobytes()

    def _first_cc(self, pid: int) -> int:
        rows = self.table.rows_of(pid)
        rows = rows[(self.table.afc[rows] & 1) != 0]
        return int(self.table.cc[rows[0]]) if rows.size else 0

    def _repacketise(self, pid: int, edits: list[tuple[Pes, bytes]],
                     slots: dict[int, list[bytes]]) -> None:
        table = self.table
        afs = [_template_afs(table, pes.rows) for pes, _ in edits]
        made = [packetise_pes(pid, data, af) for (_, data), af in zip(edits, afs, strict=True)]
        # Keep the PID's payload packet count unchanged modulo 16, so that its
        # continuity counter ends where the next (independently rewritten)
        # segment expects: the largest PES carries its last bytes one per
        # packet in as many extra packets as that takes.
        delta = sum(_payload_packets(p for lst in m for p in lst) - pes.payload_rows
                    for (pes, _), m in zip(edits, made, strict=True))
        if delta % 16:
            big = max(range(len(edits)), key=lambda i: len(edits[i][1]))
            size = len(edits[big][1])
            base = delta - _pes_packet_count(size, afs[big])
            for extra in range(1, min(size, 64)):
                if (base + _pes_packet_count(size - extra, afs[big]) + extra) % 16 == 0:
                    made[big] = packetise_pes(pid, edits[big][1], afs[big], extra)
                    break
        for (pes, _), lists in zip(edits, made, strict=True):
            for row, packets in zip(pes.rows, lists, strict=True):
                slots[row] = packets


def _pes_packet_count(size: int, afs: Sequence[bytes | None]) -> int:
    """Payload packets :func:`packetise_pes` makes for ``size`` bytes (no extra packets)."""
    pos = count = 0
    for af in afs:
        if pos >= size:
            return count
        cap = MAX_PAYLOAD - (1 + len(af) if af is not None else 0)
        if cap > 0:
            pos += cap
            count += 1
    return count + max(0, -(-(size - pos) // MAX_PAYLOAD))


def _renumber(out: ByteArray, pid: int, cc0: int) -> None:
    """Continuity counters of ``pid`` counted up from ``cc0`` over its payload packets."""
    pids = ((out[:, 1].astype(np.int64) & 0x1F) << 8) | out[:, 2]
    rows = np.flatnonzero(pids == pid)
    if not rows.size:
        return
    has_payload = (out[rows, 3] & 0x10) != 0
    cc = (cc0 + np.cumsum(has_payload) - 1) & 0x0F  # adaptation-only packets repeat the last
    out[rows, 3] = (out[rows, 3] & 0xF0) | cc.astype(np.uint8)
