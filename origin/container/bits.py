"""RBSP bit reading for H.264/H.265 NAL units (ITU-T H.264 §7.2-7.4.1, H.265 §7.2, §9.2).

A NAL unit payload is its RBSP with emulation-prevention bytes inserted: every
``00 00 03`` in the escaped bytes carries a ``03`` that is not part of the RBSP.
:class:`BitReader` reads the RBSP (``u(n)``, ``ue(v)``, ``se(v)``) while keeping
the map back to escaped offsets, because the clear part of a slice must be
counted in escaped bytes (Shaka Packager and Bento4 both count the
emulation-prevention bytes that lie inside the slice header).

Escaped bytes are unescaped lazily, a window at a time, so reading a slice
header never copies the slice data behind it.  Every read is bounds-checked;
running off the end raises :class:`BitstreamError`.
"""

from __future__ import annotations

from bisect import bisect_right

from origin.errors import MalformedMedia

EPB_PATTERN = b"\x00\x00\x03"
MAX_UE_LEADING_ZEROS = 31  # ue(v) values fit in 32 bits (H.264 §9.1, H.265 §9.2)
FIRST_WINDOW = 64


class BitstreamError(MalformedMedia):
    reason = "malformed video bitstream"


class UnsupportedBitstream(BitstreamError):
    reason = "unsupported video bitstream feature"


def unescape(escaped: bytes) -> tuple[bytes, tuple[int, ...]]:
    """Remove emulation-prevention bytes.

    Returns the RBSP and, for each removed ``03``, the RBSP offset of the byte
    that followed it (non-decreasing; used by :func:`escaped_offset`).
    """
    first = escaped.find(EPB_PATTERN)
    if first < 0:
        return escaped, ()
    parts: list[bytes] = []
    marks: list[int] = []
    start = 0
    at = first
    removed = 0
    while at >= 0:
        epb = at + 2
        parts.append(escaped[start:epb])
        marks.append(epb - removed)
        removed += 1
        start = epb + 1
        at = escaped.find(EPB_PATTERN, start)
    parts.append(escaped[start:])
    return b"".join(parts), tuple(marks)


def escaped_offset(rbsp_offset: int, marks: tuple[int, ...]) -> int:
    """The escaped offset of the RBSP byte at ``rbsp_offset`` (``marks`` from :func:`unescape`)."""
    return rbsp_offset + bisect_right(marks, rbsp_offset)


class BitReader:
    """Big-endian bit reader over the RBSP of escaped NAL payload bytes."""

    __slots__ = ("_marks", "_nbits", "_pos", "_src", "_value", "_window")

    def __init__(self, escaped: bytes | memoryview, *, lazy: bool = True) -> None:
        self._src = escaped
        self._pos = 0
        self._window = 0
        self._value = 0
        self._nbits = 0
        self._marks: tuple[int, ...] = ()
        self._load(min(FIRST_WINDOW, len(self._src)) if lazy else len(self._src))

    # -- window management -------------------------------------------------

    def _load(self, window: int) -> None:
        rbsp, self._marks = unescape(bytes(self._src[:window]))
        self._window = window
        self._value = int.from_bytes(rbsp, "big")
        self._nbits = len(rbsp) * 8

    def _ensure(self, end: int) -> None:
        """Make RBSP bits ``[0, end)`` available or raise."""
        total = len(self._src)
        while end > self._nbits:
            if self._window >= total:
                raise BitstreamError("read past the end of a NAL unit")
            self._load(min(total, max(self._window * 2, FIRST_WINDOW)))

    # -- reads ----------------------------------------------------------------

    @property
    def pos(self) -> int:
        """Bits of RBSP consumed so far."""
        return self._pos

    def u(self, n: int) -> int:
        """``u(n)``: the next ``n`` bits as an unsigned integer."""
        if n < 0:
            raise BitstreamError("negative bit count")
        if n == 0:
            return 0
        end = self._pos + n
        if end > self._nbits:
            self._ensure(end)
        value = (self._value >> (self._nbits - end)) & ((1 << n) - 1)
        self._pos = end
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if n < 0:
            raise BitstreamError("negative bit count")
        end = self._pos + n
        if end > self._nbits:
            self._ensure(end)
        self._pos = end

    def ue(self) -> int:
        """``ue(v)``: unsigned Exp-Golomb."""
        while True:
            remaining = self._nbits - self._pos
            rest = self._value & ((1 << remaining) - 1)
            if rest:
                break
            # Only zero bits left in the window: widen it (or fail at the end).
            self._ensure(self._nbits + 1)
        zeros = remaining - rest.bit_length()
        if zeros > MAX_UE_LEADING_ZEROS:
            raise BitstreamError("Exp-Golomb code longer than 32 bits")
        end = self._pos + 2 * zeros + 1
        if end > self._nbits:
            self._ensure(end)
        self._pos = end
        return ((self._value >> (self._nbits - end)) & ((2 << zeros) - 1)) - 1

    def se(self) -> int:
        """``se(v)``: signed Exp-Golomb (H.264 Table 9-3)."""
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)

    def byte_aligned(self) -> bool:
        return self._pos % 8 == 0

    def more_rbsp_data(self) -> bool:
        """``more_rbsp_data()``: is there anything before the ``rbsp_stop_one_bit``?

        The stop bit is the last 1 bit of the RBSP (trailing zero bytes, e.g.
        ``cabac_zero_word``, are ignored).  Loads the whole NAL unit.
        """
        if self._window < len(self._src):
            self._load(len(self._src))
        value = self._value
        if value == 0:
            return False
        trailing = (value & -value).bit_length() - 1
        stop = self._nbits - 1 - trailing
        return self._pos < stop

    def escaped_size(self) -> int:
        """Escaped bytes from the start up to and including the last byte a read touched.

        This matches Shaka Packager's ``H26xBitReader``: an emulation-prevention
        byte counts only if a byte after it was read.
        """
        if self._pos == 0:
            return 0
        last = (self._pos - 1) >> 3
        return escaped_offset(last, self._marks) + 1
