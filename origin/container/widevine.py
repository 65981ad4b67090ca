"""Widevine ``pssh`` data: the ``WidevinePsshData`` protobuf, hand-encoded (SPECS §5).

Fields written (proto2, SP ``widevine_pssh_data.proto``), in field-number order as
protobuf serialises them:

| field | # | wire type | value |
|---|---|---|---|
| key_id | 2 | 2 (bytes), repeated | each 16-byte KID, in the order given |
| content_id | 4 | 2 (bytes) | only when non-empty |
| protection_scheme | 9 | 0 (varint) | 4cc as big-endian uint32 (cenc: ``48 e3 dc 95 9b 06``) |

The box is **v0** (no KID list in the box; the KIDs live in the protobuf), as
Shaka Packager writes it "for backward compatibility".  With raw keys Shaka sets no
``content_id``; pass ``b""`` to get its bytes exactly.

:func:`decode_widevine_pssh_data` reads the fields above back (skipping any other
field) and raises :class:`WidevineDataError` on malformed protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from origin.container.pssh import KID_SIZE, SystemId, build_pssh
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia

_KEY_ID = 2
_CONTENT_ID = 4
_PROTECTION_SCHEME = 9
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class WidevineDataError(MalformedMedia):
    reason = "malformed Widevine pssh data"


@dataclass(frozen=True, slots=True)
class WidevinePsshData:
    """The ``WidevinePsshData`` fields origin writes; ``None``/empty when absent."""

    key_ids: tuple[bytes, ...]
    content_id: bytes | None
    protection_scheme: str | None  # the 4cc, e.g. "cenc"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(field: int, value: bytes) -> bytes:
    return _tag(field, _LEN) + _varint(len(value)) + value


def scheme_fourcc(scheme: CommonScheme) -> int:
    """The scheme's 4cc as a big-endian uint32 (``cenc`` → 0x63656e63)."""
    return int.from_bytes(scheme.value.encode("ascii"), "big")


def encode_widevine_pssh_data(kids: Sequence[bytes], content_id: bytes,
                              scheme: CommonScheme) -> bytes:
    """Serialise ``WidevinePsshData`` (key_id×n, optional content_id, protection_scheme)."""
    if any(len(kid) != KID_SIZE for kid in kids):
        raise ValueError("every KID must be 16 bytes")
    parts = [_len_field(_KEY_ID, bytes(kid)) for kid in kids]
    if content_id:
        parts.append(_len_field(_CONTENT_ID, bytes(content_id)))
    parts.append(_tag(_PROTECTION_SCHEME, _VARINT) + _varint(scheme_fourcc(scheme)))
    return b"".join(parts)


def widevine_pssh(kids: Sequence[bytes], content_id: bytes, scheme: CommonScheme) -> bytes:
    """A Widevine ``pssh`` box (v0) as Shaka Packager writes it; ``content_id=b""`` omits it."""
    if not kids:
        raise ValueError("a Widevine pssh needs at least one KID")
    data = encode_widevine_pssh_data(kids, content_id, scheme)
    return build_pssh(SystemId.WIDEVINE, data, version=0)


def decode_widevine_pssh_data(data: bytes | memoryview) -> WidevinePsshData:
    """Read key_id / content_id / protection_scheme from serialised ``WidevinePsshData``."""
    buf = bytes(data)
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = 0
        for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
            if pos >= len(buf):
                raise WidevineDataError("truncated varint")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise WidevineDataError("varint too long")

    def take(n: int) -> bytes:
        nonlocal pos
        if n > len(buf) - pos:
            raise WidevineDataError("field past the end of the data")
        out = buf[pos:pos + n]
        pos += n
        return out

    key_ids: list[bytes] = []
    content_id: bytes | None = None
    scheme: str | None = None
    while pos < len(buf):
        key = varint()
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WidevineDataError("field number 0")
        expected = {_KEY_ID: _LEN, _CONTENT_ID: _LEN, _PROTECTION_SCHEME: _VARINT}.get(field)
        if expected is not None and wire_type != expected:
            raise WidevineDataError("unexpected wire type")
        if wire_type == _VARINT:
            value = varint()
            if field == _PROTECTION_SCHEME:
                if value > 0xFFFFFFFF:
                    raise WidevineDataError("protection_scheme out of range")
                scheme = value.to_bytes(4, "big").decode("latin-1")
        elif wire_type == _LEN:
            chunk = take(varint())
            if field == _KEY_ID:
                key_ids.append(chunk)
            elif field == _CONTENT_ID:
                content_id = chunk
        elif wire_type == _I64:
            take(8)
        elif wire_type == _I32:
            take(4)
        else:
            raise WidevineDataError("unsupported wire type")
    return WidevinePsshData(tuple(key_ids), content_id, scheme)
