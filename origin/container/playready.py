"""PlayReady Header Object (PRO) and its ``pssh`` box (SPECS §5, §2.5, §3).

WRMHEADER, one KID per header, exactly as Shaka Packager v3 writes it
(SP ``playready_pssh_generator.cc``):

- ``cenc`` → version 4.0.0.0: ``<PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID>
  </PROTECTINFO><KID>…</KID><CHECKSUM>…</CHECKSUM>``;
- ``cbcs`` → version 4.3.0.0 (PlayReady 4+, required for AESCBC): ``<PROTECTINFO><KIDS>
  <KID ALGID="AESCBC" VALUE="…"></KID></KIDS></PROTECTINFO>`` — no CHECKSUM (Shaka omits
  it in 4.3; it is optional);
- then the optional ``<LA_URL>`` (XML-escaped), last inside ``<DATA>`` — where Shaka
  puts its ``--playready_extra_header_data``.

``<KID>`` attributes in alphabetical order, no self-closing tags, no XML declaration, no BOM.

- KID text: base64 of the KID as a **little-endian GUID** (bytes 0–3, 4–5, 6–7 swapped).
- CHECKSUM: base64 of the first 8 bytes of AES-128-ECB(content key, KID_LE).
- PRO (all little-endian): Length u32 (whole object), RecordCount u16, then records of
  Type u16 (1 = WRM header), Length u16, UTF-16LE XML.
- The ``pssh`` box is **v0** with the PRO as its Data (Shaka ``kPlayReadyPsshBoxVersion``).
  HLS ``com.microsoft.playready`` URIs and DASH ``<mspr:pro>`` carry the bare PRO instead.
"""

from __future__ import annotations

import base64
import struct
from html import escape

from origin.container.pssh import KID_SIZE, SystemId, build_pssh
from origin.crypto.block import aes_ecb_encrypt_block
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia

WRM_HEADER_RECORD = 1
_NAMESPACE = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"
_MAX_RECORD = 0xFFFF


class PlayReadyObjectError(MalformedMedia):
    reason = "malformed PlayReady object"


def guid_le(kid: bytes) -> bytes:
    """The 16-byte KID as a little-endian GUID: bytes 0–3, 4–5 and 6–7 reversed."""
    if len(kid) != KID_SIZE:
        raise ValueError("KID must be 16 bytes")
    return kid[3::-1] + kid[5:3:-1] + kid[7:5:-1] + kid[8:]


def playready_kid(kid: bytes) -> str:
    """The WRMHEADER KID text: base64 of the little-endian GUID."""
    return base64.b64encode(guid_le(kid)).decode("ascii")


def playready_checksum(kid: bytes, key: bytes) -> str:
    """The AESCTR CHECKSUM: base64 of the first 8 bytes of AES-128-ECB(key, KID_LE)."""
    return base64.b64encode(aes_ecb_encrypt_block(key, guid_le(kid))[:8]).decode("ascii")


def playready_header_xml(kid: bytes, key: bytes | None, la_url: str,
                         scheme: CommonScheme) -> str:
    """The WRMHEADER for one KID.

    ``key`` is only used for the 4.0 CHECKSUM (omitted when ``None``); an empty
    ``la_url`` omits ``<LA_URL>``.
    """
    kid_text = playready_kid(kid)
    extra = f"<LA_URL>{escape(la_url, quote=False)}</LA_URL>" if la_url else ""
    if scheme is CommonScheme.CENC:
        checksum = "" if key is None else f"<CHECKSUM>{playready_checksum(kid, key)}</CHECKSUM>"
        return (f'<WRMHEADER xmlns="{_NAMESPACE}" version="4.0.0.0"><DATA>'
                "<PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO>"
                f"<KID>{kid_text}</KID>{checksum}{extra}</DATA></WRMHEADER>")
    if scheme is CommonScheme.CBCS:
        return (f'<WRMHEADER xmlns="{_NAMESPACE}" version="4.3.0.0"><DATA><PROTECTINFO><KIDS>'
                f'<KID ALGID="AESCBC" VALUE="{kid_text}"></KID>'
                f"</KIDS></PROTECTINFO>{extra}</DATA></WRMHEADER>")
    raise ValueError(f"no PlayReady header for scheme {scheme.value}")


def playready_object(header_xml: str) -> bytes:
    """A PlayReady Object holding one WRM-header record (type 1) with ``header_xml``."""
    value = header_xml.encode("utf-16-le")
    if len(value) > _MAX_RECORD:
        raise ValueError("PlayReady header too long for one record")
    record = struct.pack("<HH", WRM_HEADER_RECORD, len(value)) + value
    return struct.pack("<IH", 6 + len(record), 1) + record


def playready_pssh(kid: bytes, key: bytes | None, la_url: str, scheme: CommonScheme) -> bytes:
    """A PlayReady ``pssh`` box (v0, Data = the PRO) as Shaka Packager writes it."""
    pro = playready_object(playready_header_xml(kid, key, la_url, scheme))
    return build_pssh(SystemId.PLAYREADY, pro, version=0)


def parse_playready_object(pro: bytes | memoryview) -> dict[int, bytes]:
    """The records of a PRO as ``{type: value}``; the WRM header is ``[1]`` (UTF-16LE)."""
    buf = bytes(pro)
    if len(buf) < 6:
        raise PlayReadyObjectError("truncated PlayReady object header")
    length, count = struct.unpack_from("<IH", buf, 0)
    if length != len(buf):
        raise PlayReadyObjectError("PlayReady object length does not match its size")
    records: dict[int, bytes] = {}
    pos = 6
    for _ in range(count):
        if len(buf) - pos < 4:
            raise PlayReadyObjectError("truncated PlayReady record header")
        rtype, rlen = struct.unpack_from("<HH", buf, pos)
        pos += 4
        if rlen > len(buf) - pos:
            raise PlayReadyObjectError("PlayReady record past the end of the object")
        if rtype in records:
            raise PlayReadyObjectError("duplicate PlayReady record type")
        records[rtype] = buf[pos:pos + rlen]
        pos += rlen
    if pos != len(buf):
        raise PlayReadyObjectError("trailing bytes after PlayReady records")
    return records
