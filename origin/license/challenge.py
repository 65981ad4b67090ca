"""Widevine and PlayReady licence challenges: which key ids a player asks for.

Pure: bytes in, frozen values out, typed errors (all ``ChallengeError``, 400) out;
no I/O.  The upstream proxy (``origin.license.upstream_routes``) checks the policy
for the kids found here before the challenge leaves for a licence server; the
challenge itself is forwarded unchanged, so only what the policy needs is read.

Widevine (protobuf, proto2; field numbers from Google's ``license_protocol.proto``
as published with the Widevine CDM and in pywidevine)::

    SignedMessage          type = 1 (enum, varint): 1 LICENSE_REQUEST,
                                  4 SERVICE_CERTIFICATE_REQUEST (players send ``08 04``)
                           msg  = 2 (bytes): a serialised LicenseRequest
    LicenseRequest         content_id = 2 (ContentIdentification)
    ContentIdentification  (a oneof) widevine_pssh_data = 1, webm_key_id = 2,
                           existing_license = 3 (renewal/release: no kid), init_data = 4
    .WidevinePsshData      pssh_data = 1 (repeated bytes), license_type = 2
    .WebmKeyId             header = 1 (bytes: the 16-byte key id), license_type = 2
    .InitData              init_data_type = 1 (1 CENC = pssh box(es), 2 WEBM = a key id;
                           default CENC), init_data = 2 (bytes), license_type = 3
    LicenseType            1 STREAMING, 2 OFFLINE, 3 AUTOMATIC (left to the server)
    WidevinePsshData       key_id = 2 (repeated bytes, 16 each) — the pssh box payload
    (the pssh payload)     (SPECS §5; ``origin.container.widevine`` writes it)

A ``pssh_data`` entry is the Widevine pssh box payload; a whole ``pssh`` box is also
accepted there (its first byte would be tag 0, which no protobuf field can have).
Only ``pssh`` boxes of the Widevine system id count; a v1 box's KID list counts too.
The wire reader is bounded: varints at most 10 bytes, every length checked against
what is left, field number 0, groups (wire types 3/4) and wire types 6/7 refused.

PlayReady: the body is the SOAP ``AcquireLicense`` challenge (UTF-8 XML); the kids
come from each ``WRMHEADER`` (namespace ``…/2007/03/PlayReadyHeader``) directly inside
a ``ContentHeader`` element (SPECS §5):

- 4.0.0.0: ``DATA/KID`` text;
- 4.1.0.0: ``DATA/PROTECTINFO/KID/@VALUE``;
- 4.2.0.0 / 4.3.0.0: ``DATA/PROTECTINFO/KIDS/KID/@VALUE``;

each the base64 of the key id as a **little-endian GUID** (bytes 0–3, 4–5, 6–7
reversed), turned back into the 16-byte big-endian kid used everywhere else.  A
``<!DOCTYPE`` or any other markup declaration is refused (no DTD, no entities),
nesting is capped, and the body must be UTF-8 (the size, encoding and declaration
checks are ``origin.untrusted_xml``'s).  The challenge carries no standard
"persistent" signal; the route takes that from its query instead.

At most ``MAX_KIDS`` distinct kids; repeated kids are kept once, in order.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn
from xml.parsers import expat

from origin.errors import BadRequest
from origin.untrusted_xml import UntrustedXmlError, decode_untrusted_xml

MAX_CHALLENGE_BYTES = 128 * 1024
MAX_KIDS = 64
MAX_XML_DEPTH = 32
KID_SIZE = 16

WIDEVINE_SYSTEM_ID = bytes.fromhex("edef8ba979d64acea3c827dcd51d21ed")
PLAYREADY_HEADER_NS = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"

_MAX_VARINT_BYTES = 10
_MAX_FIELD_NUMBER = (1 << 29) - 1
_MAX_KID_TEXT = 128


class ChallengeError(BadRequest):
    """A licence challenge that cannot be read (400); the detail never echoes the body."""

    reason = "malformed licence request"


class MalformedWidevineRequest(ChallengeError):
    reason = "malformed Widevine licence request"


class MalformedPlayReadyChallenge(ChallengeError):
    reason = "malformed PlayReady licence challenge"


class NoKeyId(ChallengeError):
    reason = "no key id in licence request"


class TooManyKeyIds(ChallengeError):
    reason = f"at most {MAX_KIDS} key ids per licence request"


# --- protobuf wire format --------------------------------------------------------------------


class WireType(enum.IntEnum):
    VARINT = 0
    I64 = 1
    LEN = 2
    I32 = 5


@dataclass(frozen=True, slots=True)
class ProtoField:
    """One field as it sits on the wire: ``value`` is an int (varint, fixed) or bytes (LEN)."""

    number: int
    wire_type: WireType
    value: int | bytes


def read_proto_fields(data: bytes) -> tuple[ProtoField, ...]:
    """Every top-level field of a serialised message; ``MalformedWidevineRequest`` otherwise."""
    return tuple(_iter_fields(bytes(data)))


def _iter_fields(buf: bytes) -> Iterator[ProtoField]:
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            _malformed_widevine("bad protobuf field number")
        value: int | bytes
        if wire == WireType.VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == WireType.LEN:
            length, pos = _read_varint(buf, pos)
            if length > end - pos:
                _malformed_widevine("protobuf field past the end")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (WireType.I64, WireType.I32):
            size = 8 if wire == WireType.I64 else 4
            if size > end - pos:
                _malformed_widevine("protobuf field past the end")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            _malformed_widevine("unsupported protobuf wire type")
        yield ProtoField(number, WireType(wire), value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if pos >= len(buf):
            _malformed_widevine("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, pos
    _malformed_widevine("protobuf varint too long")


# --- Widevine --------------------------------------------------------------------------------


class WidevineMessageType(enum.IntEnum):
    """``SignedMessage.MessageType`` values the proxy accepts."""

    LICENSE_REQUEST = 1
    SERVICE_CERTIFICATE_REQUEST = 4


class WidevineLicenseType(enum.IntEnum):
    STREAMING = 1
    OFFLINE = 2
    AUTOMATIC = 3


@dataclass(frozen=True, slots=True)
class WidevineChallenge:
    """What a Widevine request asks for.  A service-certificate request has no kids."""

    message_type: WidevineMessageType
    kids: tuple[bytes, ...] = ()
    license_type: WidevineLicenseType = WidevineLicenseType.STREAMING


# SignedMessage
_SM_TYPE, _SM_MSG = 1, 2
# LicenseRequest
_LR_CONTENT_ID = 2
# ContentIdentification
_CI_PSSH_DATA, _CI_WEBM_KEY_ID, _CI_INIT_DATA = 1, 2, 4
# WidevinePsshData (inside ContentIdentification) / WebmKeyId
_PD_PSSH_DATA, _PD_LICENSE_TYPE = 1, 2
_WK_HEADER, _WK_LICENSE_TYPE = 1, 2
# InitData
_ID_TYPE, _ID_DATA, _ID_LICENSE_TYPE = 1, 2, 3
_INIT_DATA_CENC, _INIT_DATA_WEBM = 1, 2
# WidevinePsshData (the pssh payload)
_PSSH_KEY_ID = 2


def parse_widevine_challenge(body: bytes) -> WidevineChallenge:
    """Read a Widevine ``SignedMessage``: its type and, for a licence request, kids and type.

    Raises ``MalformedWidevineRequest``, ``NoKeyId`` or ``TooManyKeyIds`` and nothing else.
    """
    if len(body) > MAX_CHALLENGE_BYTES:
        _malformed_widevine("licence request too large")
    fields = read_proto_fields(body)
    type_value = _last_varint(fields, _SM_TYPE)
    if type_value is None:
        _malformed_widevine("not a Widevine SignedMessage")
    try:
        message_type = WidevineMessageType(type_value)
    except ValueError:
        _malformed_widevine("unsupported Widevine message type")
    if message_type is WidevineMessageType.SERVICE_CERTIFICATE_REQUEST:
        return WidevineChallenge(message_type)
    msg = _last_bytes(fields, _SM_MSG)
    if msg is None:
        _malformed_widevine("Widevine licence request without a message")
    content_id = _last_bytes(read_proto_fields(msg), _LR_CONTENT_ID)
    if content_id is None:
        raise NoKeyId()
    kids = _KidList()
    license_types: list[WidevineLicenseType] = []
    for item in read_proto_fields(content_id):
        if item.number == _CI_PSSH_DATA:
            sub = read_proto_fields(_expect_bytes(item))
            for entry in sub:
                if entry.number == _PD_PSSH_DATA:
                    _kids_from_pssh_data(_expect_bytes(entry), kids)
            license_types.append(_license_type(sub, _PD_LICENSE_TYPE))
        elif item.number == _CI_WEBM_KEY_ID:
            sub = read_proto_fields(_expect_bytes(item))
            header = _last_bytes(sub, _WK_HEADER)
            if header is not None:
                kids.add(_kid(header))
            license_types.append(_license_type(sub, _WK_LICENSE_TYPE))
        elif item.number == _CI_INIT_DATA:
            sub = read_proto_fields(_expect_bytes(item))
            init_type = _last_varint(sub, _ID_TYPE)
            data = _last_bytes(sub, _ID_DATA) or b""
            if init_type in (None, _INIT_DATA_CENC):
                _kids_from_pssh_boxes(data, kids)
            elif init_type == _INIT_DATA_WEBM:
                kids.add(_kid(data))
            else:
                _malformed_widevine("unsupported Widevine init data type")
            license_types.append(_license_type(sub, _ID_LICENSE_TYPE))
    if not kids.items:
        raise NoKeyId()
    # Several variants (a oneof sent twice): the one asking the most (OFFLINE, AUTOMATIC) counts.
    license_type = max(license_types, default=WidevineLicenseType.STREAMING)
    return WidevineChallenge(message_type, tuple(kids.items), license_type)


class _KidList:
    """Distinct kids in order of first appearance, at most ``MAX_KIDS``."""

    def __init__(self) -> None:
        self.items: dict[bytes, None] = {}

    def add(self, kid: bytes) -> None:
        self.items[kid] = None
        if len(self.items) > MAX_KIDS:
            raise TooManyKeyIds()


def _kids_from_pssh_data(data: bytes, kids: _KidList) -> None:
    if len(data) >= 8 and data[0] == 0 and data[4:8] == b"pssh":
        _kids_from_pssh_boxes(data, kids)
        return
    for item in read_proto_fields(data):
        if item.number == _PSSH_KEY_ID:
            kids.add(_kid(_expect_bytes(item)))


def _kids_from_pssh_boxes(data: bytes, kids: _KidList) -> None:
    """Kids of every Widevine ``pssh`` box in ``data`` (concatenated boxes, ISO/IEC 23001-7)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            _malformed_widevine("truncated pssh box")
        size, box_type = struct.unpack_from(">I4s", data, pos)
        if box_type != b"pssh" or size < 32 or size > len(data) - pos:
            _malformed_widevine("malformed pssh box")
        box = data[pos:pos + size]
        pos += size
        version = box[8]
        system_id = box[12:28]
        at = 28
        box_kids: list[bytes] = []
        if version == 1:
            (count,) = struct.unpack_from(">I", box, at)
            at += 4
            if count > (len(box) - at) // KID_SIZE:
                _malformed_widevine("malformed pssh box")
            box_kids = [box[at + i * KID_SIZE:at + (i + 1) * KID_SIZE] for i in range(count)]
            at += count * KID_SIZE
        elif version != 0:
            _malformed_widevine("unsupported pssh box version")
        if len(box) - at < 4:
            _malformed_widevine("malformed pssh box")
        (data_size,) = struct.unpack_from(">I", box, at)
        at += 4
        if data_size != len(box) - at:
            _malformed_widevine("malformed pssh box")
        if system_id != WIDEVINE_SYSTEM_ID:
            continue
        for kid in box_kids:
            kids.add(kid)
        for item in read_proto_fields(box[at:]):
            if item.number == _PSSH_KEY_ID:
                kids.add(_kid(_expect_bytes(item)))


def _license_type(fields: tuple[ProtoField, ...], number: int) -> WidevineLicenseType:
    value = _last_varint(fields, number)
    if value is None:
        return WidevineLicenseType.STREAMING  # proto2: the enum's first value
    try:
        return WidevineLicenseType(value)
    except ValueError:
        _malformed_widevine("unsupported Widevine licence type")


def _last_varint(fields: tuple[ProtoField, ...], number: int) -> int | None:
    """An optional scalar: the last occurrence wins (protobuf merge rules)."""
    found: int | None = None
    for item in fields:
        if item.number == number:
            if item.wire_type is not WireType.VARINT or not isinstance(item.value, int):
                _malformed_widevine("unexpected protobuf wire type")
            found = item.value
    return found


def _last_bytes(fields: tuple[ProtoField, ...], number: int) -> bytes | None:
    found: bytes | None = None
    for item in fields:
        if item.number == number:
            found = _expect_bytes(item)
    return found


def _expect_bytes(item: ProtoField) -> bytes:
    if item.wire_type is not WireType.LEN or not isinstance(item.value, bytes):
        _malformed_widevine("unexpected protobuf wire type")
    return item.value


def _kid(raw: bytes) -> bytes:
    if len(raw) != KID_SIZE:
        _malformed_widevine("key id is not 16 bytes")
    return raw


def _malformed_widevine(detail: str) -> NoReturn:
    raise MalformedWidevineRequest(detail)


# --- PlayReady -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayReadyChallenge:
    """The kids of every PlayReady header in an ``AcquireLicense`` challenge."""

    kids: tuple[bytes, ...]


_SEP = "}"
# Paths below WRMHEADER (local names) and where each header version keeps its kids.
_KID_TEXT_PATH = ("DATA", "KID")  # 4.0.0.0
_KID_VALUE_PATHS = (("DATA", "PROTECTINFO", "KID"), ("DATA", "PROTECTINFO", "KIDS", "KID"))


def kid_from_guid_le(raw: bytes) -> bytes:
    """The 16-byte kid of a little-endian GUID (bytes 0–3, 4–5, 6–7 reversed back)."""
    if len(raw) != KID_SIZE:
        raise ValueError("a GUID is 16 bytes")
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


def parse_playready_challenge(body: bytes) -> PlayReadyChallenge:
    """Read the kids of a PlayReady ``AcquireLicense`` challenge (module rules).

    Raises ``MalformedPlayReadyChallenge``, ``NoKeyId`` or ``TooManyKeyIds`` only.
    """
    try:
        decode_untrusted_xml(body, limit=MAX_CHALLENGE_BYTES)  # expat reads the bytes as sent
    except UntrustedXmlError as exc:
        _malformed_playready(f"licence challenge {exc.reason}")
    reader = _ChallengeReader()
    parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=_SEP)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    parser.ExternalEntityRefHandler = _refuse_declaration
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(body, True)
    except expat.ExpatError:
        _malformed_playready("licence challenge is not well-formed XML")
    if not reader.saw_acquire_license:
        _malformed_playready("not a PlayReady AcquireLicense challenge")
    if not reader.kids.items:
        raise NoKeyId()
    return PlayReadyChallenge(tuple(reader.kids.items))


class _ChallengeReader:
    """expat callbacks: tracks the element path and collects kids under ``WRMHEADER``."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, str]] = []  # (namespace, local name)
        self.header_at: int | None = None  # stack depth of the current WRMHEADER
        self.kid_text: list[str] | None = None
        self.kids = _KidList()
        self.saw_acquire_license = False

    def start(self, name: str, attributes: dict[str, str]) -> None:
        ns, _, local = name.rpartition(_SEP)
        if len(self.stack) >= MAX_XML_DEPTH:
            _malformed_playready("licence challenge nested too deeply")
        if local == "AcquireLicense":
            self.saw_acquire_license = True
        if (local == "WRMHEADER" and ns == PLAYREADY_HEADER_NS and self.header_at is None
                and self.stack and self.stack[-1][1] == "ContentHeader"):
            self.header_at = len(self.stack) + 1
        self.stack.append((ns, local))
        path = self._header_path()
        if path is None:
            return
        if path == _KID_TEXT_PATH:
            self.kid_text = []
        elif path in _KID_VALUE_PATHS:
            value = attributes.get("VALUE")
            if value is None:
                _malformed_playready("PlayReady KID without a VALUE")
            self.kids.add(_playready_kid(value))

    def end(self, name: str) -> None:
        if self._header_path() == _KID_TEXT_PATH and self.kid_text is not None:
            self.kids.add(_playready_kid("".join(self.kid_text)))
            self.kid_text = None
        self.stack.pop()
        if self.header_at is not None and len(self.stack) < self.header_at:
            self.header_at = None

    def text(self, data: str) -> None:
        if self.kid_text is not None:
            self.kid_text.append(data)
            if sum(map(len, self.kid_text)) > _MAX_KID_TEXT:
                _malformed_playready("PlayReady KID too long")

    def _header_path(self) -> tuple[str, ...] | None:
        """Local names below the current WRMHEADER, if inside one and all in its namespace."""
        if self.header_at is None:
            return None
        below = self.stack[self.header_at:]
        if any(ns != PLAYREADY_HEADER_NS for ns, _ in below):
            return None
        return tuple(local for _, local in below)


def _playready_kid(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        _malformed_playready("PlayReady KID is not base64")
    if len(raw) != KID_SIZE:
        _malformed_playready("PlayReady KID is not 16 bytes")
    return kid_from_guid_le(raw)


def _refuse_declaration(*_: object) -> NoReturn:
    _malformed_playready("licence challenge declares a DTD or entities")


def _malformed_playready(detail: str) -> NoReturn:
    raise MalformedPlayReadyChallenge(detail)
