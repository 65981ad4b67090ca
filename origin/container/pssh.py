"""The ``pssh`` box: Protection System Specific Header (ISO/IEC 23001-7 §8.1).

Layout (SPECS §1.5; big-endian FullBox, flags 0)::

    size:u32 'pssh' version:u8 flags:u24 SystemID[16]
    v1 only: KID_count:u32 KID[16] × KID_count
    DataSize:u32 Data[DataSize]

- v0 carries no KID list; v1 lists the KIDs the box applies to.
- The Common PSSH (SystemID 1077efec-…, SPECS §1.7, §4) is **v1 with DataSize 0**: it
  is what makes a browser fire ``encrypted`` for Clear Key.
- Widevine and PlayReady boxes are v0 as Shaka Packager writes them (SPECS §5); their
  Data is built in :mod:`origin.container.widevine` / :mod:`origin.container.playready`.

Builders raise ``ValueError`` on bad arguments (a caller bug); :func:`parse_pssh` checks
every size and count against the buffer and raises :class:`PsshError` (a
:class:`~origin.errors.MalformedMedia`) on anything malformed.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from origin.container.boxes import BoxError, iter_boxes

SYSTEM_ID_SIZE = 16
KID_SIZE = 16
_FULLBOX = 4  # version:u8 + flags:u24


class PsshError(BoxError):
    reason = "malformed pssh box"


class SystemId(bytes, enum.Enum):
    """DRM SystemIDs (the 16 raw bytes); also DASH ``urn:uuid:`` scheme ids (SPECS §3)."""

    COMMON = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b").bytes
    WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed").bytes
    PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95").bytes
    FAIRPLAY = uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2").bytes

    @property
    def urn(self) -> str:
        """``urn:uuid:<lower-case 8-4-4-4-12>``: DASH ContentProtection / HLS KEYFORMAT form."""
        return uuid.UUID(bytes=bytes(self)).urn


@dataclass(frozen=True, slots=True)
class Pssh:
    """One parsed ``pssh`` box."""

    system_id: bytes
    version: int
    kids: tuple[bytes, ...]
    data: bytes


def build_pssh(system_id: bytes, data: bytes, kids: Sequence[bytes] = (),
               version: int | None = None) -> bytes:
    """A complete ``pssh`` box (header included).

    ``version`` defaults to 1 when ``kids`` are given and 0 otherwise.  A v0 box
    cannot carry KIDs, so ``kids`` with ``version=0`` is an error.
    """
    if len(system_id) != SYSTEM_ID_SIZE:
        raise ValueError("SystemID must be 16 bytes")
    if any(len(kid) != KID_SIZE for kid in kids):
        raise ValueError("every KID must be 16 bytes")
    if version is None:
        version = 1 if kids else 0
    if version not in (0, 1):
        raise ValueError("pssh version must be 0 or 1")
    if version == 0 and kids:
        raise ValueError("a v0 pssh box carries no KIDs")
    parts = [struct.pack(">B3x", version), bytes(system_id)]
    if version == 1:
        parts.append(struct.pack(">I", len(kids)))
        parts.extend(bytes(kid) for kid in kids)
    parts += [struct.pack(">I", len(data)), bytes(data)]
    payload = b"".join(parts)
    size = 8 + len(payload)
    if size > 0xFFFFFFFF:
        raise ValueError("pssh box too large")
    return struct.pack(">I4s", size, b"pssh") + payload


def common_pssh(kids: Sequence[bytes]) -> bytes:
    """The Common PSSH: v1, Common SystemID, the KIDs listed, DataSize 0 (SPECS §1.7, §4)."""
    if not kids:
        raise ValueError("a Common PSSH needs at least one KID")
    return build_pssh(SystemId.COMMON, b"", kids, version=1)


def parse_pssh(box: bytes | memoryview) -> Pssh:
    """Parse one complete ``pssh`` box that fills ``box`` exactly."""
    try:
        boxes = list(iter_boxes(box))
    except BoxError as exc:
        raise PsshError(exc.detail) from exc
    if len(boxes) != 1:
        raise PsshError("expected exactly one box")
    (head,) = boxes
    if head.type != "pssh":
        raise PsshError("not a pssh box")
    pos, end = head.payload_start, head.end

    def take(n: int) -> bytes:
        nonlocal pos
        if n > end - pos:
            raise PsshError("pssh field past the end of the box")
        out = bytes(box[pos:pos + n])
        pos += n
        return out

    version = take(_FULLBOX)[0]
    if version > 1:
        raise PsshError("unsupported pssh version")
    system_id = take(SYSTEM_ID_SIZE)
    kids: tuple[bytes, ...] = ()
    if version == 1:
        (count,) = struct.unpack(">I", take(4))
        if count > (end - pos) // KID_SIZE:
            raise PsshError("pssh KID count past the end of the box")
        kids = tuple(take(KID_SIZE) for _ in range(count))
    (data_size,) = struct.unpack(">I", take(4))
    data = take(data_size)
    if pos != end:
        raise PsshError("trailing bytes after pssh data")
    return Pssh(system_id, version, kids, data)
