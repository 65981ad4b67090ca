"""HLS SAMPLE-AES for MPEG-TS (origin.container.sample_aes), checked three ways.

1. A slow reference *decryptor* written from FFmpeg's hls_sample_encryption.c
   (NAL delimiting, ``remove_scep_3_bytes``, the 32 + {16 enc, 144 clear}
   loop, the ADTS / AC-3 frame rules) undoes our output exactly: the
   elementary streams come back byte for byte.
2. Shaka Packager (the SPECS §2.3 reference implementation) encrypting the
   same input with the same key and IV writes the very same protected NAL
   units, audio frames and PMT descriptors.
3. ffmpeg, a real HLS client, fetches a SAMPLE-AES playlist over HTTP from a
   tiny local server and decodes it frame-exact against the clear stream
   (video and audio, demo AAC, a noisy clip with >1000 emulation-prevention
   sequences inside slices, AC-3, E-AC-3); a wrong key must not.

FFmpeg 5.1's HLS demuxer decrypts each packet with the IV of the segment that
is current when its parser *emits* the packet, which lags the segment the
packet came from: the last access unit of a segment is emitted while the next
segment is read (so all segments share one IV here: ``IV`` on one
EXT-X-KEY), and whatever is still in a parser at the end of the playlist is
emitted after the last segment and never decrypted (the final H.264 access
unit, the final AC-3 frame).  The playlists therefore end with a short
*terminator* segment (PAT/PMT, a few access-unit-delimiter + end-of-stream
access units and a copy of the last audio PES moved 10 s later) that flushes
every real frame out while a segment with the right key is current; the
terminator's own frames, all later than the real ones, are left out of the
comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.container import sample_aes as sa
from origin.container import ts
from origin.crypto import sample_aes as csa
from origin.crypto.iv import derive_iv
from origin.errors import MalformedMedia
from tests.reference import aes as reference_aes
from tests.reference.emulation import escape_rbsp
from tests.tools.loopback import serve_app
from tests.tools.packager import PACKAGER

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "media" / "demo" / "ts-360p"
DEMO_TS = sorted(DEMO_DIR.glob("seg-*.ts"))
MEDIA = ROOT / "tests" / "media" / "ts"
NOISY = MEDIA / "noisy_lossless_slices.ts"
AC3_CLIP = MEDIA / "h264_ac3.ts"
EAC3_CLIP = MEDIA / "h264_eac3.ts"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
KID = bytes.fromhex("0123456789abcdef0123456789abcdef")
IV = derive_iv(KID, "sample-aes", "demo/ts-360p")  # one IV per rendition (see docstring)
VIDEO, AUDIO = 0x100, 0x101


# -- the reference decryptor (FFmpeg libavformat/hls_sample_encryption.c) ----------------


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def ff_remove_scep_3_bytes(nal: bytes) -> bytes:
    """``00 00 03`` → ``00 00`` wherever at least one byte follows the 03."""
    out = bytearray()
    i, n = 0, len(nal)
    while i < n:
        if n - i > 3 and nal[i] == 0 and nal[i + 1] == 0 and nal[i + 2] == 3:
            out += b"\x00\x00"
            i += 3
        else:
            out.append(nal[i])
            i += 1
    return bytes(out)


def ff_nal_units(au: bytes) -> list[tuple[bytes, bytes]]:
    """(start code, NAL) pairs, as get_next_nal_unit cuts them.

    After a start code it steps byte by byte and stops at the first position
    holding ``00 00 00 01`` or ``00 00 01``; that is the next ``00 00 01``, or
    one byte before it if that byte is a zero it has not passed yet.
    """
    out = []
    pos = 0
    while pos < len(au):
        if au.startswith(b"\x00\x00\x00\x01", pos):
            code = 4
        elif au.startswith(b"\x00\x00\x01", pos):
            code = 3
        else:
            raise AssertionError("no start code")
        body = pos + code
        nxt = au.find(b"\x00\x00\x01", body)
        end = nxt if nxt >= 0 else len(au)
        if nxt > body and au[nxt - 1] == 0:
            end = nxt - 1
        out.append((au[pos:body], au[body:end]))
        pos = end
    return out


def ff_decrypt_nal(nal: bytes, key: bytes, iv: bytes) -> bytes:
    data = bytearray(ff_remove_scep_3_bytes(nal))
    pos, rem = 32, len(data) - 32
    at = []
    while rem > 0:
        if rem > 16:
            at.append(pos)
            pos += 16
            rem -= 16
        skip = min(144, rem)
        pos += skip
        rem -= skip
    plain = cbc_decrypt(key, iv, b"".join(bytes(data[p:p + 16]) for p in at))
    for k, p in enumerate(at):
        data[p:p + 16] = plain[16 * k:16 * k + 16]
    return bytes(data)


def ff_decrypt_video(au: bytes, key: bytes, iv: bytes) -> bytes:
    parts = []
    for code, nal in ff_nal_units(au):
        if nal and nal[0] & 0x1F in (1, 5) and len(nal) > 48:
            nal = ff_decrypt_nal(nal, key, iv)
        parts.append(code + nal)
    return b"".join(parts)


AC3_SIZES = [  # A/52 frame sizes in 16-bit words: 48, 44.1, 32 kHz, per frmsizecod
    (64, 69, 96), (64, 70, 96), (80, 87, 120), (80, 88, 120), (96, 104, 144), (96, 105, 144),
    (112, 121, 168), (112, 122, 168), (128, 139, 192), (128, 140, 192), (160, 174, 240),
    (160, 175, 240), (192, 208, 288), (192, 209, 288), (224, 243, 336), (224, 244, 336),
    (256, 278, 384), (256, 279, 384), (320, 348, 480), (320, 349, 480), (384, 417, 576),
    (384, 418, 576), (448, 487, 672), (448, 488, 672), (512, 557, 768), (512, 558, 768),
    (640, 696, 960), (640, 697, 960), (768, 835, 1152), (768, 836, 1152), (896, 975, 1344),
    (896, 976, 1344), (1024, 1114, 1536), (1024, 1115, 1536), (1152, 1253, 1728),
    (1152, 1254, 1728), (1280, 1393, 1920), (1280, 1394, 1920)]


def ff_audio_frames(es: bytes, codec: str) -> list[tuple[int, int, int]]:
    """(start, length, header length) of every frame: ADTS or AC-3/E-AC-3 syncframes."""
    out = []
    pos = 0
    while pos < len(es):
        if codec == "aac":
            assert es[pos] == 0xFF and es[pos + 1] & 0xF0 == 0xF0
            size = ((es[pos + 3] & 3) << 11) | (es[pos + 4] << 3) | (es[pos + 5] >> 5)
            header = 7 if es[pos + 1] & 1 else 9
        else:
            assert es[pos:pos + 2] == b"\x0b\x77"
            if es[pos + 5] >> 3 <= 10:
                size = 2 * AC3_SIZES[es[pos + 4] & 0x3F][es[pos + 4] >> 6]
            else:
                size = 2 * ((((es[pos + 2] & 7) << 8) | es[pos + 3]) + 1)
            header = 0
        out.append((pos, size, header))
        pos += size
    assert pos == len(es)
    return out


def ff_decrypt_audio(es: bytes, codec: str, key: bytes, iv: bytes) -> bytes:
    data = bytearray(es)
    for start, size, header in ff_audio_frames(es, codec):
        if size - header > 31:
            at = start + header + 16
            n = (size - header - 16) // 16 * 16
            data[at:at + n] = cbc_decrypt(key, iv, bytes(data[at:at + n]))
    return bytes(data)


# -- helpers --------------------------------------------------------------------------------


def streams_of(data: bytes) -> dict[int, int]:
    """PID -> stream_type from the first PMT."""
    programs = ts.read_programs(ts.scan_packets(data))
    return {es.pid: es.stream_type for pmt in programs.pmts.values() for es in pmt.streams}


def payloads(data: bytes, pid: int) -> list[bytes]:
    return [p.payload for p in ts.reassemble_pes(ts.scan_packets(data), pid).packets]


def slice_nals(data: bytes, pid: int) -> list[bytes]:
    """Every type 1/5 NAL unit of a PID, as on the wire."""
    out = []
    for payload in payloads(data, pid):
        out += [payload[s:e] for s, e in sa.annexb_nals(payload) if payload[s] & 0x1F in (1, 5)]
    return out


def audio_frames(data: bytes, pid: int, codec: str) -> list[bytes]:
    es = b"".join(payloads(data, pid))
    return [es[s:s + n] for s, n, _ in ff_audio_frames(es, codec)]


def check_decrypts_back(clear: bytes, protected: bytes, key: bytes, iv: bytes) -> None:
    """The reference decryptor turns every protected PID back into the clear one."""
    kinds = {0xDB: "h264", 0xCF: "aac", 0xC1: "ac3", 0xC2: "ac3"}
    clear_types = streams_of(clear)
    for pid, stream_type in streams_of(protected).items():
        kind = kinds.get(stream_type)
        if kind is None:
            assert payloads(protected, pid) == payloads(clear, pid)
        elif kind == "h264":
            assert clear_types[pid] == 0x1B
            decrypted = [ff_decrypt_video(p, key, iv) for p in payloads(protected, pid)]
            assert decrypted == payloads(clear, pid)
        else:
            es = b"".join(payloads(protected, pid))
            assert ff_decrypt_audio(es, kind, key, iv) == b"".join(payloads(clear, pid))


def continuity_ok(data: bytes) -> bool:
    table = ts.scan_packets(data)
    last: dict[int, int] = {}
    for row in range(table.count):
        if not table.afc[row] & 1:
            continue
        pid, cc = int(table.pid[row]), int(table.cc[row])
        if pid in last and cc != (last[pid] + 1) % 16:
            return False
        last[pid] = cc
    return True


def payload_packet_counts(data: bytes) -> dict[int, int]:
    table = ts.scan_packets(data)
    carrying = (table.afc & 1) != 0
    pids, counts = np.unique(table.pid[carrying], return_counts=True)
    return dict(zip(pids.tolist(), counts.tolist(), strict=True))


def epb_count(data: bytes, pid: int) -> int:
    return sum(nal.count(b"\x00\x00\x03") for nal in slice_nals(data, pid) if len(nal) > 48)


# -- the rules, against the reference decryptor -----------------------------------------------


@pytest.mark.parametrize("segment", DEMO_TS, ids=lambda p: p.name)
def test_demo_segments_decrypt_back_exactly(segment: Path) -> None:
    clear = segment.read_bytes()
    protected = sa.protect_ts_segment(clear, KEY, IV)
    assert streams_of(protected) == {VIDEO: 0xDB, AUDIO: 0xCF}
    check_decrypts_back(clear, protected, KEY, IV)
    assert continuity_ok(protected)
    # Every PID ends where the next segment's counters continue.
    assert {pid: n % 16 for pid, n in payload_packet_counts(protected).items()} == {
        pid: n % 16 for pid, n in payload_packet_counts(clear).items()}
    assert sa.protect_ts_segment(clear, KEY, IV) == protected  # deterministic
    # Most slice bytes really are encrypted: 1 block in 10 of every protected NAL.
    changed = sum(a != b for a, b in zip(slice_nals(clear, VIDEO), slice_nals(protected, VIDEO),
                                         strict=True))
    assert changed == len(slice_nals(clear, VIDEO))


def test_noisy_clip_with_many_emulation_prevention_bytes() -> None:
    clear = NOISY.read_bytes()
    assert epb_count(clear, VIDEO) > 1000  # 00 00 03 inside type 1/5 NAL units
    assert len(slice_nals(clear, VIDEO)) == 16  # 4 frames x 4 slices
    protected = sa.protect_ts_segment(clear, KEY, IV)
    check_decrypts_back(clear, protected, KEY, IV)
    # Emulation prevention is applied over the original EPBs too (00 00 03 → 00 00 03 03):
    # the NAL units grew by about one byte per EPB and the PES were repacketised.
    grown = sum(map(len, slice_nals(protected, VIDEO))) - sum(map(len, slice_nals(clear, VIDEO)))
    assert grown > 1000
    assert len(protected) > len(clear)
    assert continuity_ok(protected)
    clear_counts, counts = payload_packet_counts(clear), payload_packet_counts(protected)
    assert counts[VIDEO] > clear_counts[VIDEO]
    assert counts[VIDEO] % 16 == clear_counts[VIDEO] % 16


@pytest.mark.parametrize("clip", [AC3_CLIP, EAC3_CLIP], ids=lambda p: p.stem)
def test_ac3_and_eac3_decrypt_back_exactly(clip: Path) -> None:
    clear = clip.read_bytes()
    protected = sa.protect_ts_segment(clear, KEY, IV)
    assert streams_of(protected) == {VIDEO: 0xDB, AUDIO: 0xC1 if "_ac3" in clip.stem else 0xC2}
    check_decrypts_back(clear, protected, KEY, IV)
    assert len(protected) == len(clear) and continuity_ok(protected)


def test_nal_block_rule() -> None:
    """32 clear, then {16 encrypted, up to 144 clear} while more than 16 bytes remain."""
    for length in range(0, 2000):
        pos, count = 32, 0
        while length > 48 and pos + 16 < length:
            count += 1
            pos += 160
        assert csa.nal_blocks(length) == count, length
    assert csa.nal_blocks(48) == 0 and csa.nal_blocks(49) == 1
    assert csa.nal_blocks(208) == 1  # the block at 192 ends exactly at the end: clear
    assert csa.nal_blocks(209) == 2


def build_ts(stream_type: int, pes_payloads: list[bytes], stream_id: int) -> bytes:
    """A one-program TS: PAT, PMT, then one PES per payload on PID 0x100."""
    pat = ts.build_section(0x00, 1, b"\x00\x01\xf0\x00")
    pmt = ts.Pmt(1, 0, True, VIDEO, (), (ts.EsInfo(stream_type, VIDEO, ()),)).build()
    packets = [*ts.packetise_section(0, pat), *ts.packetise_section(0x1000, pmt)]
    ccs = {0: 0, 0x1000: 0, VIDEO: 0}
    for i, payload in enumerate(pes_payloads):
        pts = 90000 + 3600 * i
        header = bytes([0, 0, 1, stream_id]) + (
            (len(payload) + 8).to_bytes(2, "big") if stream_id != 0xE0 else b"\x00\x00"
        ) + b"\x80\x80\x05" + bytes([0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF,
                                     ((pts >> 14) & 0xFE) | 1, (pts >> 7) & 0xFF,
                                     ((pts << 1) & 0xFE) | 1])
        for lst in ts.packetise_pes(VIDEO, header + payload, [b"\x40"]):
            packets += lst
    out = bytearray(b"".join(packets))
    for row in range(len(out) // 188):
        pid = ((out[row * 188 + 1] & 0x1F) << 8) | out[row * 188 + 2]
        if out[row * 188 + 3] & 0x10:
            out[row * 188 + 3] = (out[row * 188 + 3] & 0xF0) | ccs[pid]
            ccs[pid] = (ccs[pid] + 1) % 16
    return bytes(out)


def adts(payload: bytes, crc: bool) -> bytes:
    size = len(payload) + (9 if crc else 7)
    head = bytes([0xFF, 0xF0 if crc else 0xF1, 0x4C, 0x80 | (size >> 11), (size >> 3) & 0xFF,
                  ((size & 7) << 5) | 0x1F, 0xFC])
    return head + (b"\x12\x34" if crc else b"") + payload


def test_adts_frame_rules_on_crafted_frames() -> None:
    sizes = [0, 1, 15, 16, 31, 32, 33, 47, 48, 63, 64, 100, 1000]
    rng = np.random.default_rng(7)
    frames = [adts(rng.integers(0, 256, n, np.uint8).tobytes(), crc) for crc in (False, True)
              for n in sizes]
    clear = build_ts(0x0F, [b"".join(frames[:9]), b"".join(frames[9:])], 0xC0)
    protected = sa.protect_ts_segment(clear, KEY, IV)
    check_decrypts_back(clear, protected, KEY, IV)
    out = audio_frames(protected, VIDEO, "aac")
    for before, after in zip(frames, out, strict=True):
        header = 9 if before[1] == 0xF0 else 7
        body = len(before) - header
        encrypted = max(0, (body - 16) // 16) * 16 if body > 31 else 0
        lead = header + 16
        assert after[:lead] == before[:lead]
        assert after[lead + encrypted:] == before[lead + encrypted:]  # partial block clear
        if encrypted:
            assert after[lead:lead + encrypted] == Cipher(
                algorithms.AES(KEY), modes.CBC(IV)).encryptor().update(
                before[lead:lead + encrypted])  # one chain from the IV per frame
    # The AudioSpecificConfig comes from the ADTS header: AAC LC, 48 kHz, 2 channels.
    (es,) = [es for es in ts.read_programs(ts.scan_packets(protected)).pmts[1].streams]
    assert es.descriptors == (ts.Descriptor(0x0F, b"aacd"),
                              ts.Descriptor(0x05, b"apadzaac\x00\x00\x01\x02\x11\x90"))


@st.composite
def chain_layouts(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, list[tuple[int, int]], int]:
    """A buffer and non-overlapping chains (start, blocks) at a period of 16 or 160."""
    period = draw(st.sampled_from([16, 160]))
    key, iv = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16))
    chains, pos = [], draw(st.integers(0, 20))
    for _ in range(draw(st.integers(0, 12))):
        n = draw(st.integers(0, 6))
        chains.append((pos, n))
        pos += max(1, n) * period + draw(st.integers(0, 40))
    buf = draw(st.binary(min_size=pos + 16, max_size=pos + 16))
    return key, iv, buf, chains, period


@given(chain_layouts())
@settings(max_examples=100, deadline=None)
def test_chain_engine_matches_the_slow_reference_aes(
        layout: tuple[bytes, bytes, bytes, list[tuple[int, int]], int]) -> None:
    key, iv, buf, chains, period = layout
    expected = bytearray(buf)
    for start, n in chains:  # each chain: its own CBC from the IV, FIPS-197 AES in Python
        at = [start + period * k for k in range(n)]
        cipher = reference_aes.cbc_encrypt(key, iv, b"".join(buf[a:a + 16] for a in at))
        for k, a in enumerate(at):
            expected[a:a + 16] = cipher[16 * k:16 * k + 16]
    out = bytearray(buf)
    csa.run_chains(key, iv, out, np.array([c[0] for c in chains], np.int64),
                   np.array([c[1] for c in chains], np.int64), period)
    assert out == expected




def test_crafted_nal_units() -> None:
    rng = np.random.default_rng(3)

    def nal(first: int, size: int, epbs: int = 0) -> bytes:
        body = bytearray(rng.integers(1, 256, size - 1, np.uint8).tobytes())
        for at in rng.integers(1, max(2, size - 4), epbs).tolist():
            body[at:at + 3] = b"\x00\x00\x03"  # an emulation-prevention byte of the stream
        return bytes([first]) + bytes(body[:size - 1])

    units = [nal(0x65, n) for n in (48, 49, 64, 65, 208, 209, 400, 3000)]
    units += [nal(0x41, 500, 12), nal(0x01, 49), nal(0x06, 300), nal(0x67, 60), nal(0x62, 300)]
    aus = [b"\x00\x00\x00\x01\x09\xf0" + b"".join(
        (b"\x00\x00\x01" if i % 2 else b"\x00\x00\x00\x01") + u for i, u in enumerate(units))]
    aus.append(b"\x00\x00\x01" + nal(0x65, 1000, 30) + b"\x00")  # trailing zero stays in
    clear = build_ts(0x1B, aus, 0xE0)
    protected = sa.protect_ts_segment(clear, KEY, IV)
    check_decrypts_back(clear, protected, KEY, IV)
    wire = slice_nals(protected, VIDEO)
    originals = [u for u in units if u[0] & 0x1F in (1, 5)]
    for before, after in zip(originals, wire, strict=False):
        if len(before) <= 48:
            assert after == before
        else:
            cipher = ff_remove_scep_3_bytes(after)  # the encryption domain: `before`
            assert len(cipher) == len(before)
            blocks = [32 + 160 * k for k in range(csa.nal_blocks(len(before)))]
            assert blocks[-1] + 16 < len(before)  # a block ending at the end stays clear
            mask = np.zeros(len(before), bool)
            for at in blocks:
                mask[at:at + 16] = True
            a, b = np.frombuffer(cipher, np.uint8), np.frombuffer(before, np.uint8)
            assert (a[~mask] == b[~mask]).all() and (a[mask] != b[mask]).mean() > 0.9


@given(st.binary(max_size=200) | st.lists(st.sampled_from([b"\x00", b"\x01", b"\x03", b"\xff"]),
                                           max_size=80).map(b"".join))
@settings(max_examples=400, deadline=None)
def test_escape_nal_matches_the_naive_rule_and_ffmpeg_undoes_it(data: bytes) -> None:
    escaped = sa.escape_nal(data)
    assert escaped == escape_rbsp(data)
    assert ff_remove_scep_3_bytes(escaped) == data
    for bad in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert bad not in escaped


def test_sample_aes_refusals_and_pass_through() -> None:
    clear = DEMO_TS[0].read_bytes()
    protected = sa.protect_ts_segment(clear, KEY, IV)
    with pytest.raises(sa.AlreadyEncrypted):
        sa.protect_ts_segment(protected, KEY, IV)
    with pytest.raises(ValueError):
        sa.protect_ts_segment(clear, KEY[:8], IV)
    # An unknown stream type (HEVC here) passes through untouched; AAC is still protected.
    table = ts.scan_packets(clear)
    editor = ts.SegmentEditor(table)
    for occurrence, pmt in ts.read_programs(table).pmt_occurrences:
        streams = tuple(ts.EsInfo(0x24 if es.pid == VIDEO else es.stream_type, es.pid,
                                  es.descriptors) for es in pmt.streams)
        editor.replace_section(occurrence, ts.Pmt(pmt.program_number, pmt.version,
                                                  pmt.current_next, pmt.pcr_pid,
                                                  pmt.program_descriptors, streams).build())
    hevc = editor.build()
    out = sa.protect_ts_segment(hevc, KEY, IV)
    assert streams_of(out) == {VIDEO: 0x24, AUDIO: 0xCF}
    assert payloads(out, VIDEO) == payloads(clear, VIDEO)
    check_decrypts_back(hevc, out, KEY, IV)


def test_pmt_descriptors_are_replaced_and_recomputed() -> None:
    clear = AC3_CLIP.read_bytes()
    before = ts.read_programs(ts.scan_packets(clear)).pmts[1]
    assert before.streams[1].descriptors == (ts.Descriptor(0x05, b"AC-3"),)
    protected = sa.protect_ts_segment(clear, KEY, IV)
    programs = ts.read_programs(ts.scan_packets(protected))
    after = programs.pmts[1]
    assert after.version == before.version and after.pcr_pid == before.pcr_pid
    video, audio = after.streams
    assert (video.stream_type, video.descriptors) == (0xDB, (ts.Descriptor(0x0F, b"zavc"),))
    first_frame = b"".join(payloads(clear, AUDIO))[:10]
    assert (audio.stream_type, audio.descriptors) == (0xC1, (
        ts.Descriptor(0x0F, b"ac3d"),
        ts.Descriptor(0x05, b"apadzac3\x00\x00\x01\x0a" + first_frame)))
    for occurrence, _ in programs.pmt_occurrences:
        assert ts.crc32_mpeg2(occurrence.section) == 0
    # E-AC-3: an EC3SpecificBox as FFmpeg reads it (data_rate, fscod, acmod, lfeon).
    eac3 = ts.read_programs(ts.scan_packets(sa.protect_ts_segment(
        EAC3_CLIP.read_bytes(), KEY, IV))).pmts[1].streams[1]
    reg = eac3.descriptors[1].data
    assert reg[:8] == b"apadzec3" and reg[10] == 1
    setup = int.from_bytes(reg[12:12 + reg[11]], "big")
    bits = f"{setup:0{8 * reg[11]}b}"
    assert int(bits[0:13], 2) == 96  # kbit/s
    assert int(bits[16:18], 2) == 0  # 48 kHz
    assert int(bits[28:31], 2) == 2 and bits[31] == "0"  # 2/0, no LFE


# -- Shaka Packager writes the same bytes -------------------------------------------------------


def shaka_packager(clip: Path, out: Path, audio: bool) -> tuple[bytes, bytes | None]:
    args = [str(PACKAGER), f"in={clip},stream=video,segment_template={out}/v-$Number$.ts"]
    if audio:
        args.append(f"in={clip},stream=audio,segment_template={out}/a-$Number$.ts")
    args += ["--enable_raw_key_encryption", "--keys",
             f"label=:key_id={KID.hex()}:key={KEY.hex()}", "--protection_scheme", "cbcs",
             "--clear_lead", "0", "--iv", IV.hex(), "--segment_duration", "60",
             "--hls_master_playlist_output", str(out / "master.m3u8")]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    video = (out / "v-1.ts").read_bytes()
    return video, (out / "a-1.ts").read_bytes() if audio else None


def only_pid(data: bytes) -> int:
    (pid,) = streams_of(data)
    return pid


@pytest.mark.parametrize(("clip", "codec"), [(DEMO_TS[0], "aac"), (NOISY, None),
                                             (AC3_CLIP, "ac3")], ids=["demo", "noisy", "ac3"])
def test_byte_exact_with_shaka_packager(tmp_path: Path, clip: Path, codec: str | None) -> None:
    ours = sa.protect_ts_segment(clip.read_bytes(), KEY, IV)
    video, audio = shaka_packager(clip, tmp_path, codec is not None)
    theirs = slice_nals(video, only_pid(video))
    assert len(theirs) > 10
    assert slice_nals(ours, VIDEO) == theirs
    if audio is not None and codec is not None:
        pid = only_pid(audio)
        assert audio_frames(ours, AUDIO, codec) == audio_frames(audio, pid, codec)
        sp_es = ts.read_programs(ts.scan_packets(audio)).pmts[1].streams[0]
        our_es = ts.read_programs(ts.scan_packets(ours)).pmts[1].streams[1]
        assert (our_es.stream_type, our_es.descriptors) == (sp_es.stream_type, sp_es.descriptors)


# -- fuzz -----------------------------------------------------------------------------------------

FUZZ_BASES = [AC3_CLIP.read_bytes(), build_ts(0x0F, [adts(bytes(range(40)), False) * 3], 0xC0)]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FUZZ_BASES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "byte", "drop", "cut"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "drop":
            del data[at // 188 * 188:at // 188 * 188 + 188]
        else:
            del data[at // 188 * 188:]
        if not data:
            break
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_fuzzed_segments_raise_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedMedia):
        sa.protect_ts_segment(data, KEY, IV)


# -- ffmpeg as the HLS client --------------------------------------------------------------------


def terminator(segment: bytes) -> bytes:
    """A segment that flushes ffmpeg's parsers (see the module docstring)."""
    table = ts.scan_packets(segment)
    programs = ts.read_programs(table)
    last_cc = {int(p): int(table.cc[table.rows_of(int(p))[-1]]) for p in np.unique(table.pid)}
    packets: list[tuple[int, bytes]] = []
    for occurrence in (programs.pat_occurrences[0], programs.pmt_occurrences[0][0]):
        packets += [(occurrence.pid, p) for p in ts.packetise_section(occurrence.pid,
                                                                       occurrence.section)]
    for pid in programs.streams():
        stream = ts.reassemble_pes(table, pid)
        if stream.packets[0].header.stream_id == 0xE0:
            aud_eos = (b"\x00\x00\x01\xe0\x00\x00\x80\x00\x00"  # PES header, no PTS
                       b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x0b")  # AUD, end of stream
            packets += [(pid, ts.make_packet(pid, aud_eos, pusi=True))] * 3
        else:
            last = stream.packets[-1]
            header = bytearray(last.data[:last.header.size])
            assert last.header.pts is not None
            pts = last.header.pts + 10 * 90000
            header[9:14] = bytes([0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF,
                                  ((pts >> 14) & 0xFE) | 1, (pts >> 7) & 0xFF,
                                  ((pts << 1) & 0xFE) | 1])
            for lst in ts.packetise_pes(pid, bytes(header) + last.payload, [None]):
                packets += [(pid, p) for p in lst]
    out = []
    for pid, packet in packets:
        last_cc[pid] = (last_cc.get(pid, 15) + 1) % 16
        out.append(packet[:3] + bytes([(packet[3] & 0xF0) | last_cc[pid]]) + packet[4:])
    return b"".join(out)


def playlist(segments: list[tuple[str, float]], key_uri: str | None) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
             "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
    if key_uri:
        lines.append(f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{key_uri}",IV=0x{IV.hex()}')
    for name, duration in segments:
        lines += [f"#EXTINF:{duration:.3f},", name]
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


def publish(clips: list[bytes]) -> dict[str, bytes]:
    """Clear and protected playlists over ``clips``, the key, a wrong key."""
    files = {"key.bin": KEY, "wrong.bin": bytes(16)}
    names = []
    for i, clip in enumerate(clips):
        files[f"clear-{i}.ts"] = clip
        files[f"enc-{i}.ts"] = sa.protect_ts_segment(clip, KEY, IV)
        names.append(i)
    files["end.ts"] = terminator(files[f"enc-{names[-1]}.ts"])
    files["clear.m3u8"] = playlist([(f"clear-{i}.ts", 2.0) for i in names], None)
    enc = [(f"enc-{i}.ts", 2.0) for i in names] + [("end.ts", 0.04)]
    files["enc.m3u8"] = playlist(enc, "key.bin")
    files["wrong.m3u8"] = playlist(enc, "wrong.bin")
    return files


@contextlib.asynccontextmanager
async def serve(files: dict[str, bytes]) -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        body = files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    async with serve_app(app) as base:
        yield base


async def framemd5(url: str, *, must_succeed: bool = True) -> list[tuple[int, int, str]]:
    """(stream, pts, line) of every decoded frame / audio packet."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url,
        "-map", "0", "-f", "framemd5", "-",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0 or not must_succeed, err.decode()
    rows = []
    for line in out.decode().splitlines():
        if line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            rows.append((int(fields[0]), int(fields[2]), line))
    return rows


def per_stream(frames: list[tuple[int, int, str]],
               reference: list[tuple[int, int, str]]) -> dict[int, list[str]]:
    """Each stream's framemd5 lines, without the terminator's frames.

    Those are the frames later than the reference's last one of that stream.
    Streams are compared one by one: how ffmpeg interleaves them in its output
    is no property of the decoded frames.
    """
    last: dict[int, int] = {}
    for stream, pts, _ in reference:
        last[stream] = max(pts, last.get(stream, pts))
    out: dict[int, list[str]] = {stream: [] for stream in last}
    for stream, pts, line in frames:
        if stream in last and pts <= last[stream]:
            out[stream].append(line)
    return out


async def check_playback(clips: list[bytes], min_frames: int, streams: int = 2) -> None:
    async with serve(publish(clips)) as base:
        clear = await framemd5(f"{base}/clear.m3u8")
        protected = await framemd5(f"{base}/enc.m3u8")
        # Garbage may make ffmpeg give up ("too many packets buffered"): any exit status.
        wrong = await framemd5(f"{base}/wrong.m3u8", must_succeed=False)
    assert len(clear) >= min_frames
    reference = per_stream(clear, clear)
    assert len(reference) == streams
    assert per_stream(protected, clear) == reference
    for stream, lines in per_stream(wrong, clear).items():
        assert lines != reference[stream], f"stream {stream} decoded with a wrong key"


@pytest.mark.ffmpeg
async def test_ffmpeg_plays_the_demo_playlist_frame_exact() -> None:
    await check_playback([p.read_bytes() for p in DEMO_TS], min_frames=800)


@pytest.mark.ffmpeg
async def test_ffmpeg_plays_the_noisy_clip_frame_exact() -> None:
    await check_playback([NOISY.read_bytes()], min_frames=4, streams=1)


@pytest.mark.ffmpeg
@pytest.mark.parametrize("clip", [AC3_CLIP, EAC3_CLIP], ids=lambda p: p.stem)
async def test_ffmpeg_plays_ac3_and_eac3_frame_exact(clip: Path) -> None:
    await check_playback([clip.read_bytes()], min_frames=50)


def ffprobe_streams(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(["ffprobe", "-hide_banner", "-loglevel", "error", "-show_streams",
                          str(path)], capture_output=True, text=True, check=True, timeout=60)
    streams: list[dict[str, str]] = []
    for line in out.stdout.splitlines():
        if line == "[STREAM]":
            streams.append({})
        elif "=" in line and streams:
            k, _, v = line.partition("=")
            streams[-1][k] = v
    return streams


@pytest.mark.ffmpeg
@pytest.mark.parametrize(("clip", "audio_codec"), [(DEMO_TS[0], "aac"), (AC3_CLIP, "ac3"),
                                                   (EAC3_CLIP, "eac3")],
                         ids=["aac", "ac3", "eac3"])
def test_ffprobe_sees_encrypted_stream_types(tmp_path: Path, clip: Path,
                                             audio_codec: str) -> None:
    path = tmp_path / "protected.ts"
    path.write_bytes(sa.protect_ts_segment(clip.read_bytes(), KEY, IV))
    video, audio = ffprobe_streams(path)
    assert (video["codec_name"], video["codec_tag"]) == ("h264", "0x00db")
    assert (audio["codec_name"], audio["codec_tag_string"]) == (audio_codec, "apad")
    clear_video, _ = ffprobe_streams(clip)
    assert clear_video["codec_tag"] == "0x001b"
    assert os.path.getsize(path) >= clip.stat().st_size
