"""``tfhd`` and ``trun`` (ISO/IEC 14496-12 §8.8.7, §8.8.8): one reader for every user.

Both the protection path (sample positions) and the DASH timeline (sample
durations) read these two boxes; the field layout lives here once.  Counts
are checked against the box size before any table is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from origin.container.boxes import Box, Buffer, read_full_box_header
from origin.errors import MalformedMedia

TFHD_BASE_DATA_OFFSET = 0x000001
TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
TFHD_DEFAULT_DURATION = 0x000008
TFHD_DEFAULT_SIZE = 0x000010
TFHD_DEFAULT_FLAGS = 0x000020
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TRUN_DATA_OFFSET = 0x000001
TRUN_FIRST_SAMPLE_FLAGS = 0x000004
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200
TRUN_FLAGS = 0x000400
TRUN_CTO = 0x000800
MAX_SAMPLES = 1 << 20


class TrackFragmentError(MalformedMedia):
    reason = "malformed track fragment"


def read_u(fmt: str, buf: Buffer, at: int, end: int) -> int:
    """One unsigned (or signed, per ``fmt``) field, checked against ``end``."""
    if at < 0 or at + struct.calcsize(fmt) > end:
        raise TrackFragmentError("truncated box")
    value: int = struct.unpack_from(fmt, buf, at)[0]
    return value


@dataclass(frozen=True, slots=True)
class Tfhd:
    box: Box
    flags: int
    track_id: int
    base_offset_at: int | None  # where base_data_offset sits, when present
    base_data_offset: int | None
    default_duration: int | None
    default_size: int | None

    @property
    def default_base_is_moof(self) -> bool:
        return bool(self.flags & TFHD_DEFAULT_BASE_IS_MOOF)


def read_tfhd(buf: Buffer, box: Box) -> Tfhd:
    _, flags = read_full_box_header(buf, box)
    at = box.payload_start + 4
    track_id = read_u(">I", buf, at, box.end)
    at += 4
    base_at = base = None
    if flags & TFHD_BASE_DATA_OFFSET:
        base_at, base = at, read_u(">Q", buf, at, box.end)
        at += 8
    at += 4 if flags & TFHD_SAMPLE_DESCRIPTION_INDEX else 0
    duration = size = None
    if flags & TFHD_DEFAULT_DURATION:
        duration = read_u(">I", buf, at, box.end)
        at += 4
    if flags & TFHD_DEFAULT_SIZE:
        size = read_u(">I", buf, at, box.end)
    return Tfhd(box, flags, track_id, base_at, base, duration, size)


@dataclass(frozen=True, slots=True)
class Trun:
    box: Box
    flags: int
    count: int
    data_offset: int | None
    data_offset_at: int | None  # where data_offset sits, when present
    durations: tuple[int, ...] | None = field(repr=False)  # None: the default applies
    sizes: tuple[int, ...] | None = field(repr=False)


def read_trun(buf: Buffer, box: Box) -> Trun:
    _, flags = read_full_box_header(buf, box)
    at = box.payload_start + 4
    count = read_u(">I", buf, at, box.end)
    at += 4
    offset = offset_at = None
    if flags & TRUN_DATA_OFFSET:
        offset_at, offset = at, read_u(">i", buf, at, box.end)
        at += 4
    at += 4 if flags & TRUN_FIRST_SAMPLE_FLAGS else 0
    fields = [bit for bit in (TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO) if flags & bit]
    stride = len(fields)
    if count > MAX_SAMPLES or at + 4 * stride * count > box.end:
        raise TrackFragmentError("trun sample count larger than the box")
    table = struct.unpack_from(f">{stride * count}I", buf, at) if stride and count else ()

    def column(bit: int) -> tuple[int, ...] | None:
        return tuple(table[fields.index(bit)::stride]) if bit in fields else None

    return Trun(box, flags, count, offset, offset_at, column(TRUN_DURATION), column(TRUN_SIZE))
