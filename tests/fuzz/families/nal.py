"""NAL units and slice headers: framing, parameter sets, ``avcC``/``hvcC``, slice headers,
subsample maps and the RBSP bit reader.

Inputs are the real samples, parameter sets and codec configurations of the demo
video and the ``tests/media`` CMAF files (H.264 and H.265).  Slice-header and
subsample targets read the configuration's index (and the scheme) from the
payload's first byte.  Typed errors: ``MalformedMedia`` (``BitstreamError``).
"""

from __future__ import annotations

from functools import cache

from origin.container import avc, hevc
from origin.container.bits import BitReader, escaped_offset, unescape
from origin.container.fragment import parse_fragment
from origin.container.init_segment import parse_init
from origin.container.nal import Codec, is_vcl, iter_nals, parse_nal_header, read_config_nals
from origin.container.subsamples import SubsampleGenerator
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia
from tests.fuzz import media
from tests.fuzz.core import Target

TYPED = (MalformedMedia,)
LENGTH_SIZES = (1, 2, 4)
SLICE_HEAD_BYTES = 256  # enough for any slice header of the seeds; the rest is slice data


@cache
def configs() -> tuple[tuple[Codec, bytes], ...]:
    """(codec, avcC/hvcC payload) of every video init segment, in :func:`media.inits` order."""
    out = []
    for _, data in media.inits():
        track = next(iter(parse_init(data).tracks.values()))
        if track.codec_config:
            out.append((Codec.HEVC if track.is_hevc else Codec.AVC, track.codec_config))
    return tuple(out)


@cache
def parsed(index: int) -> avc.AvcConfig | hevc.HevcConfig:
    codec, payload = configs()[index]
    return hevc.parse_hvcc(payload) if codec is Codec.HEVC else avc.parse_avcc(payload)


def _of(codec: Codec) -> list[int]:
    return [i for i, (c, _) in enumerate(configs()) if c is codec]


@cache
def samples() -> tuple[tuple[int, bytes], ...]:
    """(config index, sample): the first sample (IDR) and the three smallest of a fragment."""
    out: list[tuple[int, bytes]] = []
    config_of = {name: i for i, (name, _) in enumerate(
        (n, d) for n, d in media.inits() if next(iter(parse_init(d).tracks.values())).codec_config)}
    for init_index, fragment in media.fragments():
        name, init = media.inits()[init_index]
        if name not in config_of:
            continue
        (traf,) = parse_fragment(fragment, parse_init(init)).moofs[0].trafs
        chosen = [traf.samples[0], *sorted(traf.samples[1:], key=lambda s: s[1])[:3]]
        out += [(config_of[name], fragment[o:o + s]) for o, s in chosen]
    return tuple(out)


@cache
def nal_units() -> tuple[tuple[int, int, bytes], ...]:
    """(config index, NAL type, NAL unit) of every NAL of every seed sample and config."""
    out: list[tuple[int, int, bytes]] = []
    for index, (codec, payload) in enumerate(configs()):
        for nal in _config_nals(codec, payload):
            out.append((index, parse_nal_header(codec, nal).type, nal))
    for index, sample in samples():
        codec = configs()[index][0]
        for start, end in iter_nals(sample, 4):
            nal = sample[start:end]
            out.append((index, parse_nal_header(codec, nal).type, nal[:SLICE_HEAD_BYTES]))
    return tuple(out)


def _config_nals(codec: Codec, payload: bytes) -> list[bytes]:
    if codec is Codec.AVC:
        sps, pos = read_config_nals(payload, 6, payload[5] & 0x1F, "avcC")
        pps, _ = read_config_nals(payload, pos + 1, payload[pos], "avcC")
        return [bytes(n) for n in sps + pps]
    nals: list[bytes] = []
    pos = 23
    for _ in range(payload[22]):
        count = int.from_bytes(payload[pos + 1:pos + 3], "big")
        found, pos = read_config_nals(payload, pos + 3, count, "hvcC")
        nals += [bytes(n) for n in found]
    return nals


def _nals_of(codec: Codec, types: set[int] | None = None, vcl: bool = False) -> list[bytes]:
    wanted = set(_of(codec))
    return list(dict.fromkeys(
        nal for index, kind, nal in nal_units()
        if index in wanted and (types is None or kind in types)
        and (not vcl or is_vcl(codec, kind))))


def _prefixed(codec: Codec) -> list[bytes]:
    """VCL NAL units with their configuration's index (among ``codec``'s) in front."""
    indices = _of(codec)
    return list(dict.fromkeys(
        bytes([indices.index(index)]) + nal for index, kind, nal in nal_units()
        if index in indices and is_vcl(codec, kind)))


# -- runs ---------------------------------------------------------------------------------------


def run_iter_nals(payload: bytes) -> None:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    size = LENGTH_SIZES[(payload[0] & 3) % 3]
    codec = Codec.HEVC if payload[0] & 4 else Codec.AVC
    sample = payload[1:]
    last = 0
    for start, end in iter_nals(sample, size):
        assert last + size == start <= end <= len(sample)
        last = end
        if end > start:
            parse_nal_header(codec, sample[start:end])


def _slice_header(codec: Codec, payload: bytes) -> None:
    indices = _of(codec)
    if not payload:
        raise MalformedMedia("empty fuzz input")
    config = parsed(indices[payload[0] % len(indices)])
    nal = memoryview(payload[1:])
    if isinstance(config, avc.AvcConfig):
        size = avc.slice_header_size(nal, config.sps, config.pps)
    else:
        size = hevc.slice_header_size(nal, config.sps, config.pps)
    assert 0 < size <= len(nal)


def run_avc_slice_header(payload: bytes) -> None:
    _slice_header(Codec.AVC, payload)


def run_hevc_slice_header(payload: bytes) -> None:
    _slice_header(Codec.HEVC, payload)


def run_subsamples(payload: bytes) -> None:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    scheme = (CommonScheme.CBCS, CommonScheme.CENC)[payload[0] & 1]
    generator = SubsampleGenerator(parsed((payload[0] >> 1) % len(configs())))
    sample = payload[1:]
    entries = generator.subsamples(sample, scheme)
    assert sum(e.clear + e.protected for e in entries) == len(sample)
    if scheme is CommonScheme.CENC:
        assert all(e.protected % 16 == 0 for e in entries)


def run_hevc_parameter_set(data: bytes) -> None:
    hevc.update_parameter_sets(data, {}, {}, {})


def run_bit_reader(payload: bytes) -> None:
    """A program of reads: ``payload[0] % 32`` opcodes, then the escaped bytes they read."""
    count = payload[0] % 32 if payload else 0
    ops, escaped = payload[1:1 + count], payload[1 + count:]
    reader = BitReader(escaped)
    for op in ops:
        kind, n = op & 7, op >> 3
        if kind == 0:
            assert 0 <= reader.u(n) < 1 << max(n, 1)
        elif kind == 1:
            assert reader.ue() >= 0
        elif kind == 2:
            reader.se()
        elif kind == 3:
            reader.flag()
        elif kind == 4:
            reader.skip(n)
        elif kind == 5:
            reader.more_rbsp_data()
        elif kind == 6:
            assert 0 <= reader.escaped_size() <= len(escaped)
        else:
            reader.byte_aligned()
    rbsp, marks = unescape(escaped)
    assert len(rbsp) + len(marks) == len(escaped)
    if rbsp:
        assert escaped_offset(len(rbsp) - 1, marks) < len(escaped)


def _bit_seeds() -> list[bytes]:
    programs = [bytes([8, 1, 1, 2, 0x40, 3, 5, 6, 9]), bytes([4, 0xF8, 1, 2, 6]),
                bytes([6, 0x20, 4 | 0x50, 1, 1, 5, 6])]
    nals = [nal[1:] for _, _, nal in nal_units()[:12]]
    return [p + n for p in programs for n in nals[:4]] + [programs[0] + b"\x00\x00\x03\x01\x80"]


AVC_SPS, AVC_PPS = {7}, {8}
HEVC_VPS, HEVC_SPS, HEVC_PPS = {32}, {33}, {34}

TARGETS: tuple[Target, ...] = (
    Target("iter_nals", run_iter_nals, TYPED,
           lambda: [bytes([2 | (4 if configs()[i][0] is Codec.HEVC else 0)]) + s
                    for i, s in samples()],
           lambda d: [0, 1, 5]),
    Target("avc_sps", avc.parse_sps, TYPED, lambda: _nals_of(Codec.AVC, AVC_SPS)),
    Target("avc_pps", avc.parse_pps, TYPED, lambda: _nals_of(Codec.AVC, AVC_PPS)),
    Target("avcc", avc.parse_avcc, TYPED,
           lambda: [p for c, p in configs() if c is Codec.AVC], lambda d: [0, 4, 5, 6, 8]),
    Target("hevc_vps", hevc.vps_id, TYPED, lambda: _nals_of(Codec.HEVC, HEVC_VPS)),
    Target("hevc_sps", hevc.parse_sps, TYPED, lambda: _nals_of(Codec.HEVC, HEVC_SPS)),
    Target("hevc_pps", hevc.parse_pps, TYPED, lambda: _nals_of(Codec.HEVC, HEVC_PPS)),
    Target("hvcc", hevc.parse_hvcc, TYPED,
           lambda: [p for c, p in configs() if c is Codec.HEVC], lambda d: [0, 21, 22, 23]),
    Target("hevc_parameter_set", run_hevc_parameter_set, TYPED,
           lambda: _nals_of(Codec.HEVC, HEVC_VPS | HEVC_SPS | HEVC_PPS)),
    Target("avc_slice_header", run_avc_slice_header, TYPED, lambda: _prefixed(Codec.AVC),
           lambda d: [1, 2, 3, 4]),
    Target("hevc_slice_header", run_hevc_slice_header, TYPED, lambda: _prefixed(Codec.HEVC),
           lambda d: [1, 2, 3, 4, 5]),
    Target("subsamples", run_subsamples, TYPED,
           lambda: [bytes([i << 1 | bit]) + s for i, s in samples() for bit in (0, 1)],
           lambda d: [1, 5, 6, 7]),
    Target("bit_reader", run_bit_reader, TYPED, _bit_seeds, lambda d: [0, 1, 2, 3]),
)
