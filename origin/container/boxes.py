"""ISO-BMFF box reading (ISO/IEC 14496-12 §4.2).

Rules:
- a box header is ``size:u32 type:4cc``; ``size == 1`` means a ``largesize:u64``
  follows, ``size == 0`` means the box runs to the end of its container;
- a box never extends past its parent; a size smaller than its own header is
  malformed;
- nesting is bounded (``MAX_DEPTH``) so hostile input cannot recurse forever.

Every size and offset is checked before use; malformed input raises
:class:`BoxError` (a :class:`~origin.errors.MalformedMedia`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

from origin.errors import MalformedMedia

Buffer: TypeAlias = bytes | bytearray | memoryview

MAX_DEPTH = 16
CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "mvex", "moof", "traf", "edts",
                        "dinf", "sinf", "schi", "udta"})


class BoxError(MalformedMedia):
    reason = "malformed ISO-BMFF box"


@dataclass(frozen=True, slots=True)
class Box:
    """One box: its type and where its header and payload lie in the buffer."""

    type: str
    start: int
    header_size: int
    end: int

    @property
    def payload_start(self) -> int:
        return self.start + self.header_size


def iter_boxes(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """Yield the boxes laid end to end in ``buf[start:end]``."""
    end = len(buf) if end is None else end
    if not 0 <= start <= end <= len(buf):
        raise BoxError("box range outside buffer")
    pos = start
    while pos < end:
        if end - pos < 8:
            raise BoxError("truncated box header")
        size, raw_type = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise BoxError("truncated largesize")
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or size > end - pos:
            raise BoxError("box size past the end of its container")
        yield Box(raw_type.decode("latin-1"), pos, header, pos + size)
        pos += size


def find_boxes(buf: Buffer, path: tuple[str, ...], start: int = 0,
               end: int | None = None, _depth: int = 0) -> Iterator[Box]:
    """Yield every box reached by following ``path`` (e.g. ``("moov", "trak")``)."""
    if _depth > MAX_DEPTH:
        raise BoxError("boxes nested too deeply")
    if not path:
        return
    for box in iter_boxes(buf, start, end):
        if box.type != path[0]:
            continue
        if len(path) == 1:
            yield box
        else:
            yield from find_boxes(buf, path[1:], box.payload_start, box.end, _depth + 1)


def read_handler_types(init: Buffer) -> frozenset[str]:
    """The ``hdlr`` handler types (``vide``, ``soun``, …) of every track in an init segment."""
    kinds: set[str] = set()
    for hdlr in find_boxes(init, ("moov", "trak", "mdia", "hdlr")):
        # FullBox header (4) + pre_defined (4), then handler_type (4cc).
        at = hdlr.payload_start + 8
        if at + 4 > hdlr.end:
            raise BoxError("truncated hdlr box")
        kinds.add(bytes(init[at:at + 4]).decode("latin-1"))
    return frozenset(kinds)


def iter_sample_entries(init: Buffer) -> Iterator[Box]:
    """The sample entries (``avc1``, ``mp4a``, …) of every track's ``stsd``."""
    for stsd in find_boxes(init, ("moov", "trak", "mdia", "minf", "stbl", "stsd")):
        # FullBox header (4) + entry_count (4), then the entries (§8.5.2).
        first = stsd.payload_start + 8
        if first > stsd.end:
            raise BoxError("truncated stsd box")
        yield from iter_boxes(init, first, stsd.end)


def build_box(box_type: str, *payload: bytes | bytearray | memoryview) -> bytes:
    """A box of ``box_type`` around ``payload`` (32-bit size; 64-bit when it must)."""
    size = 8 + sum(len(p) for p in payload)
    kind = box_type.encode("latin-1")
    if len(kind) != 4:
        raise ValueError("box type must be 4 characters")
    if size <= 0xFFFFFFFF:
        return b"".join([struct.pack(">I4s", size, kind), *payload])
    return b"".join([struct.pack(">I4sQ", 1, kind, size + 8), *payload])


def build_full_box(box_type: str, version: int, flags: int,
                   *payload: bytes | bytearray | memoryview) -> bytes:
    """A FullBox (§4.2): version u8 and flags u24 before the payload."""
    return build_box(box_type, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *payload)


def read_full_box_header(buf: Buffer, box: Box) -> tuple[int, int]:
    """``(version, flags)`` of a FullBox; BoxError if the box is too short."""
    if box.end - box.payload_start < 4:
        raise BoxError(f"truncated {box.type} box")
    (word,) = struct.unpack_from(">I", buf, box.payload_start)
    return word >> 24, word & 0xFFFFFF
