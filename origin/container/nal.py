"""NAL unit framing in ISO-BMFF samples (ISO/IEC 14496-15 §5.3.2, §8.3.2).

A video sample is a run of NAL units, each preceded by a big-endian length of
``NALUnitLength`` bytes (1, 2 or 4, from ``avcC``/``hvcC``).  This module
walks those length prefixes (per NAL, never per byte) and reads the NAL unit
header (H.264 §7.3.1: 1 byte; H.265 §7.3.1.2: 2 bytes).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from origin.container.bits import BitstreamError

NAL_LENGTH_SIZES = frozenset({1, 2, 4})


class Codec(enum.Enum):
    AVC = "avc"
    HEVC = "hevc"


HEADER_SIZE = {Codec.AVC: 1, Codec.HEVC: 2}


class NalLengthError(BitstreamError):
    reason = "malformed NAL unit length"


class MissingParameterSet(BitstreamError):
    reason = "slice refers to an unknown parameter set"


@dataclass(frozen=True, slots=True)
class NalHeader:
    """The fields of a NAL unit header that the slice-header rules need.

    ``ref_idc`` is H.264's ``nal_ref_idc`` (0 for H.265); ``layer_id`` and
    ``temporal_id`` are H.265's (0 for H.264).
    """

    type: int
    ref_idc: int = 0
    layer_id: int = 0
    temporal_id: int = 0


def is_vcl(codec: Codec, nal_type: int) -> bool:
    """Is this a VCL (coded slice) NAL unit type?

    H.264 types 1-5 (slices and data partitions; 20/21 extension slices are left
    to clear, as Shaka Packager does); H.265 types 0-31 (H.265 Table 7-1).
    """
    if codec is Codec.AVC:
        return 1 <= nal_type <= 5
    return 0 <= nal_type <= 31


def parse_nal_header(codec: Codec, nal: bytes | memoryview) -> NalHeader:
    """Read the NAL unit header at the start of ``nal``."""
    if codec is Codec.AVC:
        if len(nal) < 1:
            raise BitstreamError("empty NAL unit")
        b0 = nal[0]
        if b0 & 0x80:
            raise BitstreamError("forbidden_zero_bit set in NAL unit header")
        return NalHeader(type=b0 & 0x1F, ref_idc=(b0 >> 5) & 0x3)
    if len(nal) < 2:
        raise BitstreamError("truncated H.265 NAL unit header")
    b0, b1 = nal[0], nal[1]
    if b0 & 0x80:
        raise BitstreamError("forbidden_zero_bit set in NAL unit header")
    tid_plus1 = b1 & 0x7
    if tid_plus1 == 0:
        raise BitstreamError("nuh_temporal_id_plus1 is 0")
    return NalHeader(type=(b0 >> 1) & 0x3F, layer_id=((b0 & 1) << 5) | (b1 >> 3),
                     temporal_id=tid_plus1 - 1)


def check_length_size(length_size: int) -> int:
    if length_size not in NAL_LENGTH_SIZES:
        raise BitstreamError("NAL unit length size must be 1, 2 or 4")
    return length_size


def iter_nals(sample: bytes | memoryview, length_size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of each NAL unit (after its length prefix) in ``sample``.

    A zero length is allowed (it is framing only).  A length, or a partial
    length prefix, that runs past the end of the sample raises
    :class:`NalLengthError`.
    """
    check_length_size(length_size)
    size = len(sample)
    pos = 0
    while pos < size:
        start = pos + length_size
        if start > size:
            raise NalLengthError("truncated NAL unit length prefix")
        end = start + int.from_bytes(sample[pos:start], "big")
        if end > size:
            raise NalLengthError("NAL unit length past the end of the sample")
        yield start, end
        pos = end


def read_config_nals(data: bytes | memoryview, pos: int, count: int,
                     what: str) -> tuple[list[bytes | memoryview], int]:
    """``count`` parameter-set NAL units as stored in avcC/hvcC: u16 length, then the unit.

    Returns the units and the position after them; a length past the end raises.
    """
    nals: list[bytes | memoryview] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise BitstreamError(f"truncated {what}")
        size = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        if pos + size > len(data):
            raise BitstreamError(f"{what} parameter set past the end of the box")
        nals.append(data[pos:pos + size])
        pos += size
    return nals, pos
