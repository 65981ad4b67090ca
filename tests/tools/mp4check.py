"""An independent structural check of protected fMP4 output (for tests).

Re-parses what the origin wrote, with its own small readers, and checks the
relations decryptors rely on: ``saio`` → first ``senc`` entry, ``saiz`` sizes
→ ``senc`` entry sizes, ``trun.data_offset`` → inside the ``mdat``, sample
sizes covering the ``mdat`` payload, and every box size inside its parent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class RawBox:
    type: str
    start: int
    header: int
    end: int


def boxes(buf: bytes, start: int, end: int) -> list[RawBox]:
    out = []
    pos = start
    while pos < end:
        assert end - pos >= 8, "truncated header"
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            header = 16
        assert header <= size <= end - pos, f"box {kind!r} overruns its parent"
        out.append(RawBox(kind.decode("latin-1"), pos, header, pos + size))
        pos += size
    return out


def child(buf: bytes, box: RawBox, kind: str) -> list[RawBox]:
    return [b for b in boxes(buf, box.start + box.header, box.end) if b.type == kind]


def check_fragment(buf: bytes, iv_size: int) -> int:
    """Check every moof of a protected segment; return the number of samples seen."""
    top = boxes(buf, 0, len(buf))
    total = 0
    for i, moof in enumerate(top):
        if moof.type != "moof":
            continue
        mdat = next(b for b in top[i + 1:] if b.type == "mdat")
        for traf_index, traf in enumerate(child(buf, moof, "traf")):
            (tfhd,) = child(buf, traf, "tfhd")
            flags = struct.unpack_from(">I", buf, tfhd.start + 8)[0] & 0xFFFFFF
            assert flags & 0x020000, "CMAF needs default-base-is-moof"
            sizes: list[int] = []
            for trun in child(buf, traf, "trun"):
                tflags = struct.unpack_from(">I", buf, trun.start + 8)[0] & 0xFFFFFF
                count, offset = struct.unpack_from(">Ii", buf, trun.start + 12)
                assert tflags & 1
                stride = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if tflags & bit)
                at = trun.start + 20 + (4 if tflags & 4 else 0)
                size_at = 4 * sum(1 for bit in (0x100,) if tflags & bit)
                run = [struct.unpack_from(">I", buf, at + k * stride + size_at)[0]
                       for k in range(count)]
                first = moof.start + offset
                assert mdat.start + mdat.header <= first, "data offset before mdat payload"
                assert first + sum(run) <= mdat.end, "samples run past mdat"
                if not sizes and traf_index == 0:
                    assert first == mdat.start + mdat.header, "first sample not at mdat start"
                sizes += run
            (senc,) = child(buf, traf, "senc")
            sflags = struct.unpack_from(">I", buf, senc.start + 8)[0] & 0xFFFFFF
            (count,) = struct.unpack_from(">I", buf, senc.start + 12)
            assert count == len(sizes)
            pos = senc.start + 16
            entry_sizes = []
            for k in range(count):
                begin = pos
                pos += iv_size
                if sflags & 2:
                    (n,) = struct.unpack_from(">H", buf, pos)
                    pos += 2
                    covered = 0
                    for _ in range(n):
                        clear, prot = struct.unpack_from(">HI", buf, pos)
                        covered += clear + prot
                        pos += 6
                    assert covered == sizes[k], "subsamples do not cover the sample"
                entry_sizes.append(pos - begin)
            assert pos == senc.end, "senc size does not match its entries"
            total += count
            saiz = child(buf, traf, "saiz")
            saio = child(buf, traf, "saio")
            if sum(entry_sizes) == 0:
                assert not saiz and not saio
                continue
            (saiz_box,) = saiz
            default, n = struct.unpack_from(">BI", buf, saiz_box.start + 12)
            assert n == count
            listed = ([default] * n if default else
                      list(buf[saiz_box.start + 17:saiz_box.start + 17 + n]))
            assert listed == entry_sizes, "saiz disagrees with senc"
            (saio_box,) = saio
            n_off, off = struct.unpack_from(">II", buf, saio_box.start + 12)
            assert n_off == 1
            assert moof.start + off == senc.start + 16, "saio does not point at senc entries"
    assert total > 0
    return total
