"""HLS ``METHOD=SAMPLE-AES`` for MPEG-TS segments (SPECS §2.3, §9 item 8).

Apple "MPEG-2 Stream Encryption Format for HTTP Live Streaming", byte-exact
with Shaka Packager's TS output and with what FFmpeg's
``hls_sample_encryption.c`` and hls.js's ``sample-aes.ts`` decrypt.
AES-128-CBC; the chain restarts from the IV for every NAL unit / audio frame.

H.264 (stream_type 0x1B → 0xDB)
    Annex-B NAL units of each video PES.  A NAL unit runs from after its
    start code to the next ``00 00 01`` (one zero before it belongs to a
    4-byte start code), as FFmpeg delimits them.  Only types 1 and 5 longer
    than 48 bytes are protected.  The plaintext is the NAL as it is in the
    elementary stream, its emulation-prevention bytes included: bytes 0–31
    clear, then {16 encrypted, up to 144 clear} while more than 16 bytes
    remain (a block ending exactly at the NAL's end stays clear), all blocks
    of one NAL one CBC chain.  Emulation prevention is then applied to the
    whole NAL (``00 00`` followed by ``00``–``03`` gets a ``03``, so an
    original ``00 00 03`` becomes ``00 00 03 03``): a decryptor strips one
    layer of emulation prevention, decrypts, and hands the decoder the
    original NAL.  (Encrypting the NAL with its EPBs removed instead corrupts
    every NAL that has one in FFmpeg's output, and in hls.js's, which
    decrypts the same way.)  The PES grows accordingly (PES_packet_length
    updated, 0 stays 0).
AAC in ADTS (0x0F → 0xCF)
    Per frame: the header (7 bytes, 9 with CRC) and the next 16 bytes clear,
    then every whole 16-byte block encrypted, a trailing partial block clear;
    frames with fewer than 32 bytes after the header stay clear.
AC-3 (0x81 → 0xC1), E-AC-3 (0x87 → 0xC2)
    Per syncframe (E-AC-3: every independent and dependent substream frame):
    the first 16 bytes clear, then every whole block, trailing partial block
    clear; syncframes under 32 bytes stay clear.  (Shaka Packager chains the
    syncframes of one E-AC-3 *sample* together; with one syncframe per
    1536-sample frame, the usual case, both agree.)
Audio frames may cross PES boundaries (the PID's PES payloads are walked as
one stream); a frame cut by the end of the segment is an error.

PMT: each protected stream's stream_type is changed as above; its ES
descriptors get a private_data_indicator_descriptor (tag 0x0F) 'zavc' /
'aacd' / 'ac3d' / 'ec3d' and, for audio, a registration_descriptor (tag 0x05)
'apad' + audio_setup_information: audio_type 'zaac' / 'zac3' / 'zec3',
priming u16 0, version u8 1, setup_data_length u8, setup_data (AAC: the
AudioSpecificConfig of the first ADTS header; AC-3: the first 10 bytes of
the first syncframe, as Shaka Packager writes it; E-AC-3: an EC3SpecificBox
``dec3`` payload; FFmpeg parses both that way).  Earlier registration
and private-data-indicator descriptors of that stream are dropped, others
kept; the version is kept (this segment has no clear lead).  The section's
length and CRC32 are recomputed; a PMT that outgrows its packet spills into
more packets.

Other stream types pass through untouched (clear).  Elementary streams that
are already SAMPLE-AES (0xDB, 0xCF, 0xC1, 0xC2) are refused.  ADTS cannot
tell HE-AAC from AAC-LC (SBR is implicit), so audio_type is always 'zaac'.

IVs: FFmpeg (5.1) decrypts a packet with the IV of the segment that is
current when its parser emits it, one access unit late at every segment
boundary, so per-segment IVs break the last frame of each segment there.
Callers should use one IV per rendition and key (reusing an IV across
segments adds nothing to what SAMPLE-AES already does: every NAL unit and
frame restarts from the same IV).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from origin.container.ts import (
    Descriptor,
    EsInfo,
    PesStream,
    Pmt,
    Programs,
    SegmentEditor,
    TsUnsupported,
    read_programs,
    reassemble_pes,
    rebuild_pes,
    scan_packets,
)
from origin.crypto.sample_aes import (
    AUDIO_CLEAR_LEAD,
    BLOCK,
    VIDEO_MIN_PROTECTED_NAL,
    encrypt_nals,
    encrypt_ranges,
)
from origin.errors import MalformedMedia

PRIVATE_DATA_INDICATOR_TAG = 0x0F
REGISTRATION_TAG = 0x05
AUDIO_SETUP_VERSION = 1
PROTECTED_NAL_TYPES = frozenset({1, 5})
START_CODE = b"\x00\x00\x01"


class SampleAesError(MalformedMedia):
    reason = "elementary stream cannot be SAMPLE-AES protected"


class AvcFramingError(SampleAesError):
    reason = "malformed H.264 Annex-B stream"


class AdtsError(SampleAesError):
    reason = "malformed AAC ADTS stream"


class Ac3Error(SampleAesError):
    reason = "malformed AC-3/E-AC-3 stream"


class AlreadyEncrypted(SampleAesError):
    reason = "elementary stream is already SAMPLE-AES encrypted"


@dataclass(frozen=True, slots=True)
class StreamRule:
    encrypted_type: int
    fourcc: bytes  # private_data_indicator
    audio_type: bytes | None  # audio_setup_information audio_type; None for video


H264, ADTS_AAC, AC3, EAC3 = 0x1B, 0x0F, 0x81, 0x87
RULES: dict[int, StreamRule] = {
    H264: StreamRule(0xDB, b"zavc", None),
    ADTS_AAC: StreamRule(0xCF, b"aacd", b"zaac"),
    AC3: StreamRule(0xC1, b"ac3d", b"zac3"),
    EAC3: StreamRule(0xC2, b"ec3d", b"zec3"),
}
ENCRYPTED_TYPES = frozenset(rule.encrypted_type for rule in RULES.values())


def protect_ts_segment(data: bytes, key: bytes, iv: bytes) -> bytes:
    """Apply SAMPLE-AES to every H.264 / AAC / AC-3 / E-AC-3 stream of a TS segment.

    ``key`` and ``iv`` are 16 bytes (``ValueError`` otherwise); malformed media
    raises a :class:`~origin.errors.MalformedMedia` subclass.
    """
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("SAMPLE-AES needs a 16-byte key and a 16-byte IV")
    table = scan_packets(data)
    programs = read_programs(table)
    plan = _plan(programs)
    editor = SegmentEditor(table)
    setup: dict[int, bytes] = {}
    for pid, stream_type in plan.items():
        stream = reassemble_pes(table, pid)
        if stream_type == H264:
            _protect_avc(stream, key, iv, editor)
        else:
            setup[pid] = _protect_audio(stream, stream_type, key, iv, editor)
    for occurrence, pmt in programs.pmt_occurrences:
        editor.replace_section(occurrence, rewrite_pmt(pmt, plan, setup).build())
    return editor.build()


def _plan(programs: Programs) -> dict[int, int]:
    """PID -> clear stream_type of every stream to protect (consistent across PMTs)."""
    seen: dict[int, int] = {}
    for _, pmt in programs.pmt_occurrences:
        for es in pmt.streams:
            if es.stream_type in ENCRYPTED_TYPES:
                raise AlreadyEncrypted(f"PID {es.pid} has stream_type 0x{es.stream_type:02x}")
            if seen.setdefault(es.pid, es.stream_type) != es.stream_type:
                raise TsUnsupported(f"PID {es.pid} changes stream_type within the segment")
    return {pid: st for pid, st in seen.items() if st in RULES}


def rewrite_pmt(pmt: Pmt, plan: dict[int, int], setup: dict[int, bytes]) -> Pmt:
    """``pmt`` with the SAMPLE-AES stream types and descriptors for the planned PIDs."""
    streams = []
    for es in pmt.streams:
        if es.pid not in plan:
            streams.append(es)
            continue
        rule = RULES[es.stream_type]
        ours = [Descriptor(PRIVATE_DATA_INDICATOR_TAG, rule.fourcc)]
        if rule.audio_type is not None:
            ours.append(Descriptor(REGISTRATION_TAG,
                                   b"apad" + audio_setup_information(rule.audio_type,
                                                                     setup[es.pid])))
        kept = [d for d in es.descriptors
                if d.tag not in (PRIVATE_DATA_INDICATOR_TAG, REGISTRATION_TAG)]
        streams.append(EsInfo(rule.encrypted_type, es.pid, (*ours, *kept)))
    return Pmt(pmt.program_number, pmt.version, pmt.current_next, pmt.pcr_pid,
               pmt.program_descriptors, tuple(streams))


def audio_setup_information(audio_type: bytes, setup_data: bytes) -> bytes:
    """audio_type 4cc, priming u16 (0), version u8 (1), setup_data_length u8, setup_data."""
    if len(setup_data) > 0xFF - 12:
        raise TsUnsupported("audio setup data too long for a registration descriptor")
    return audio_type + b"\x00\x00" + bytes([AUDIO_SETUP_VERSION, len(setup_data)]) + setup_data


# -- H.264 -----------------------------------------------------------------------


def annexb_nals(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of every NAL unit of the Annex-B byte stream ``data[start:end]``.

    The stream must begin with a start code.  A NAL unit ends at the next
    ``00 00 01``, or one byte earlier if a zero precedes it (a 4-byte start
    code); further zeros stay in the NAL (FFmpeg's delimiting).  Offsets are
    into ``data``.
    """
    stop = len(data) if end is None else end
    if data.startswith(START_CODE, start, stop):
        pos = start + 3
    elif data.startswith(b"\x00" + START_CODE, start, stop):
        pos = start + 4
    else:
        raise AvcFramingError("video PES payload does not begin with a start code")
    out = []
    while True:
        nxt = data.find(START_CODE, pos, stop)
        if nxt < 0:
            out.append((pos, stop))
            return out
        out.append((pos, nxt - 1 if nxt > pos and data[nxt - 1] == 0 else nxt))
        pos = nxt + 3


_ZERO_RUNS = re.compile(b"\x00\x00+")


def escape_nal(nal: bytes | bytearray | memoryview) -> bytes:
    """Apply emulation prevention to a whole NAL unit (H.264 §7.4.1).

    A ``03`` goes before every byte ``00``–``03`` that follows two zeros
    counted since the last inserted ``03``.  Per run of ``L >= 2`` zeros
    (found by a regex, so the loop is per run, never per byte): a ``03`` after
    every second zero inside the run, and one before the byte after the run
    if ``L`` is even and that byte is ``01``–``03``.  Nothing is appended
    after trailing zeros (the last bytes of a protected NAL are clear and
    unchanged, so a trailing zero is the stream's own).
    """
    raw = bytes(nal)
    if raw.find(b"\x00\x00") < 0:
        return raw
    parts: list[bytes] = []
    prev = 0
    n = len(raw)
    for run in _ZERO_RUNS.finditer(raw):
        a, b = run.span()
        pairs = (b - a - 1) // 2
        odd = (b - a) % 2 == 1
        after = not odd and b < n and raw[b] <= 3
        if not pairs and not after:
            continue
        parts.append(raw[prev:a])
        parts.append(b"\x00\x00\x03" * pairs + (b"\x00" if odd else b"\x00\x00"))
        if after:
            parts.append(b"\x03")
        prev = b
    if not parts:
        return raw
    parts.append(raw[prev:])
    return b"".join(parts)


def _protect_avc(stream: PesStream, key: bytes, iv: bytes, editor: SegmentEditor) -> None:
    """Encrypt the slice NAL units of every PES of a video PID; changed PES to ``editor``."""
    es = stream.data
    per_pes: list[list[tuple[int, int]]] = []
    protected: list[tuple[int, int]] = []
    for pes in stream.packets:
        begin = pes.offset + pes.header.size
        mine = [(s, e) for s, e in annexb_nals(es, begin, pes.offset + len(pes.data))
                if e - s >= VIDEO_MIN_PROTECTED_NAL and es[s] & 0x1F in PROTECTED_NAL_TYPES]
        per_pes.append(mine)
        protected.extend((s, e - s) for s, e in mine)
    if not protected:
        return
    buf = bytearray(es)
    encrypt_nals(key, iv, buf, protected)
    view = memoryview(buf)
    for pes, mine in zip(stream.packets, per_pes, strict=True):
        if not mine:
            continue
        parts: list[bytes | memoryview] = []
        prev = pes.offset + pes.header.size
        for s, e in mine:
            parts.append(view[prev:s])
            parts.append(escape_nal(view[s:e]))
            prev = e
        parts.append(view[prev:pes.offset + len(pes.data)])
        editor.replace_pes(pes, rebuild_pes(pes, b"".join(parts)))


# -- audio -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFrame:
    start: int
    size: int
    lead: int  # clear bytes before the first encrypted block


def adts_frames(es: bytes) -> tuple[list[AudioFrame], bytes]:
    """Every ADTS frame of ``es`` (back to back) and the AudioSpecificConfig of the first."""
    frames = []
    asc = b""
    pos = 0
    n = len(es)
    while pos < n:
        if n - pos < 7:
            raise AdtsError("truncated ADTS header")
        b0, b1, b2, b3, b4, b5 = es[pos:pos + 6]
        if b0 != 0xFF or b1 & 0xF0 != 0xF0:
            raise AdtsError(f"no ADTS syncword at ES offset {pos}")
        header = 7 if b1 & 1 else 9
        sfi = (b2 >> 2) & 0x0F
        if sfi > 12:
            raise AdtsError("reserved ADTS sampling_frequency_index")
        size = ((b3 & 0x03) << 11) | (b4 << 3) | (b5 >> 5)
        if size < header:
            raise AdtsError("ADTS frame_length shorter than its header")
        if pos + size > n:
            raise AdtsError("ADTS frame cut off by the end of the segment")
        if not asc:
            aot = (b2 >> 6) + 1
            channels = ((b2 & 0x01) << 2) | (b3 >> 6)
            asc = ((aot << 11) | (sfi << 7) | (channels << 3)).to_bytes(2, "big")
        frames.append(AudioFrame(pos, size, header + AUDIO_CLEAR_LEAD))
        pos += size
    return frames, asc


# A/52 Table 5.18: nominal bit rate (kbit/s) per frmsizecod >> 1.
_AC3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448,
                 512, 576, 640)
_EAC3_RATES = (48000, 44100, 32000)
_EAC3_REDUCED_RATES = (24000, 22050, 16000)
_EAC3_BLOCKS = (1, 2, 3, 6)


def _ac3_frame_size(fscod: int, frmsizecod: int) -> int:
    """AC-3 syncframe size in bytes (A/52 Table 5.18)."""
    kbps = _AC3_BITRATES[frmsizecod >> 1]
    if fscod == 0:  # 48 kHz
        words = 2 * kbps
    elif fscod == 1:  # 44.1 kHz
        words = kbps * 320 // 147 + (frmsizecod & 1)
    else:  # 32 kHz
        words = 3 * kbps
    return 2 * words


def _pack(fields: Sequence[tuple[int, int]]) -> bytes:
    value = bits = 0
    for v, width in fields:
        value = (value << width) | (v & ((1 << width) - 1))
        bits += width
    return value.to_bytes(bits // 8, "big")


AC3_SETUP_SIZE = 10


def _dec3(es: bytes, frames: list[AudioFrame]) -> bytes:
    """EC3SpecificBox payload (ETSI TS 102 366 F.6) for one independent substream.

    bsmod and asvc are written 0 and chan_loc 0 (they sit deep in the
    bitstream information); data_rate, fscod, bsid, acmod, lfeon and the
    number of dependent substreams come from the syncframe headers.
    """
    pos = frames[0].start
    fscod = es[pos + 4] >> 6
    if fscod == 3:
        rate, blocks = _EAC3_REDUCED_RATES[(es[pos + 4] >> 4) & 3], 6
    else:
        rate, blocks = _EAC3_RATES[fscod], _EAC3_BLOCKS[(es[pos + 4] >> 4) & 3]
    acmod, lfeon = (es[pos + 4] >> 1) & 0x07, es[pos + 4] & 1
    bsid = es[pos + 5] >> 3
    data_rate = frames[0].size * 8 * rate // (256 * blocks * 1000)
    dependent = 0
    for frame in frames[1:]:
        if es[frame.start + 2] >> 6 != 1:
            break
        dependent += 1
    fields = [(data_rate, 13), (0, 3), (fscod, 2), (bsid, 5), (0, 1), (0, 1), (0, 3),
              (acmod, 3), (lfeon, 1), (0, 3), (dependent, 4)]
    fields.append((0, 9) if dependent else (0, 1))
    return _pack(fields)


def ac3_frames(es: bytes) -> tuple[list[AudioFrame], bytes]:
    """Every AC-3 / E-AC-3 syncframe of ``es`` (back to back) and the audio setup data.

The setup data is, for AC-3, the first 10 bytes of the first syncframe
(what Shaka Packager writes and FFmpeg parses as a syncframe header); for
E-AC-3, an EC3SpecificBox (``dec3``) payload (what FFmpeg parses).
"""
    frames = []
    pos = 0
    n = len(es)
    first_bsid = -1
    while pos < n:
        if n - pos < 8:
            raise Ac3Error("truncated AC-3 syncframe header")
        if es[pos] != 0x0B or es[pos + 1] != 0x77:
            raise Ac3Error(f"no AC-3 syncword at ES offset {pos}")
        bsid = es[pos + 5] >> 3
        if bsid <= 10:
            fscod, frmsizecod = es[pos + 4] >> 6, es[pos + 4] & 0x3F
            if fscod == 3 or frmsizecod > 37:
                raise Ac3Error("reserved AC-3 fscod or frmsizecod")
            size = _ac3_frame_size(fscod, frmsizecod)
        elif bsid <= 16:
            if es[pos + 2] >> 6 == 3:
                raise Ac3Error("reserved E-AC-3 strmtyp")
            if es[pos + 4] >> 4 == 0x0F:
                raise Ac3Error("reserved E-AC-3 fscod2")
            size = ((((es[pos + 2] & 0x07) << 8) | es[pos + 3]) + 1) * 2
            if size < 8:
                raise Ac3Error("E-AC-3 syncframe shorter than its header")
        else:
            raise Ac3Error("unsupported AC-3 bsid")
        if pos + size > n:
            raise Ac3Error("AC-3 syncframe cut off by the end of the segment")
        if first_bsid < 0:
            first_bsid = bsid
        frames.append(AudioFrame(pos, size, AUDIO_CLEAR_LEAD))
        pos += size
    if not frames:
        return frames, b""
    setup = es[:AC3_SETUP_SIZE] if first_bsid <= 10 else _dec3(es, frames)
    return frames, setup


def _protect_audio(stream: PesStream, stream_type: int, key: bytes, iv: bytes,
                   editor: SegmentEditor) -> bytes:
    """Encrypt an audio PID (sizes unchanged); returns its audio setup data for the PMT.

    The PES payloads are walked as one elementary stream, so frames may cross
    PES boundaries.
    """
    packets = stream.packets
    es = b"".join(pes.payload for pes in packets)
    frames, setup = adts_frames(es) if stream_type == ADTS_AAC else ac3_frames(es)
    if not frames:
        raise SampleAesError(f"no audio frame on PID {stream.pid} to describe in the PMT")
    ranges = [(f.start + f.lead, f.size - f.lead) for f in frames if f.size - f.lead >= BLOCK]
    buf = bytearray(es)
    encrypt_ranges(key, iv, buf, ranges)
    view = memoryview(buf)
    base = 0
    for pes in packets:
        size = len(pes.data) - pes.header.size
        editor.replace_pes(pes, b"".join((pes.data[:pes.header.size], view[base:base + size])))
        base += size

    return setup
