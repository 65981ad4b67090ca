"""DASH-IF CPIX 2.3 documents: content keys and their DRM signalling, parsed and built.

Pure: bytes in, values out; no I/O.  ``origin keys import`` / ``export``
(:mod:`origin.keys_cpix`) read and write the files.  The document (DASH-IF CPIX 2.3,
SPECS §7), as far as origin reads or writes it::

    <CPIX xmlns="urn:dashif:org:cpix" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
          contentId="…" version="2.3">
      <ContentKeyList>
        <ContentKey kid="UUID" explicitIV="b64" commonEncryptionScheme="cbcs">
          <Data><pskc:Secret><pskc:PlainValue>b64 key</pskc:PlainValue></pskc:Secret></Data>
        </ContentKey>
      </ContentKeyList>
      <DRMSystemList>
        <DRMSystem kid="UUID" systemId="UUID">
          <PSSH>b64 whole box</PSSH>
          <ContentProtectionData>b64 XML fragment</ContentProtectionData>
          <URIExtXKey>b64</URIExtXKey>
          <HLSSignalingData playlist="media|master">b64 tag lines</HLSSignalingData>
        </DRMSystem>
      </DRMSystemList>
    </CPIX>

Rules:

- Input must be UTF-8, at most ``MAX_CPIX_BYTES``, and may not declare a DTD or
  entities (``<!DOCTYPE``, ``<!ENTITY`` … are refused before parsing, so nothing is
  ever expanded); nesting deeper than ``MAX_XML_DEPTH`` is refused
  (``origin.untrusted_xml``).
- ``CPIX@contentId`` is required (SPEKE: "Missing CPIX@contentId"); ``@version``, when
  present, must be a 2.x version.
- Every ``ContentKey`` needs a ``kid`` in UUID form (8-4-4-4-12 hex) and its 16-byte
  key as ``pskc:PlainValue`` (base64).  A key wrapped for a recipient
  (``pskc:EncryptedValue``, CPIX §7.4.3 DeliveryDataList, SPEKE content key
  encryption) is refused with :class:`EncryptedCpixKey`: no document key is ever held
  here.  ``explicitIV`` is base64 of 16 bytes; ``commonEncryptionScheme`` one of the
  four ISO/IEC 23001-7 scheme names.
- ``DRMSystem`` needs ``kid`` and ``systemId`` (UUIDs); its kid must name a
  ``ContentKey`` of the document and each (kid, systemId) pair appears once.  Payloads
  are base64: ``PSSH`` bytes, the others UTF-8 text.  ``HLSSignalingData`` without
  ``playlist`` is for the media playlist (CPIX default).
- Everything else (usage rules and their filters, key periods, update history,
  ``ds:Signature``, vendor extensions) is tolerated and ignored.  Signatures are not
  verified: the document's origin is the operator's to trust.
- Errors are :class:`CpixError` (a 400 if ever served) with short messages that may
  name a kid but never contain a key or any payload text; ``CpixKey`` hides its key
  from ``repr``.
- :func:`build_cpix` writes the same structure, UTF-8, deterministic (same document,
  same bytes): prefixes ``pskc`` and the default CPIX namespace, two-space indent.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from origin.crypto.key import KEY_SIZE, KID_SIZE, ContentKey
from origin.errors import BadRequest
from origin.untrusted_xml import UntrustedXmlError, check_xml_depth, decode_untrusted_xml

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"  # ds:Signature: recognised, not verified
CPIX_VERSION = "2.3"
MAX_CPIX_BYTES = 8 << 20
MAX_XML_DEPTH = 32
EXPLICIT_IV_SIZE = 16
SYSTEM_ID_SIZE = 16

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_VERSION = re.compile(r"2(?:\.\d+){1,2}")
_WHITESPACE = re.compile(r"\s+")


class CpixError(BadRequest):
    """A CPIX document origin cannot use; the detail says why, never with key material."""

    reason = "malformed CPIX document"


class EncryptedCpixKey(CpixError):
    """A content key given as ``pskc:EncryptedValue`` (SPEKE/DeliveryDataList)."""

    reason = "encrypted CPIX keys are not supported; export them as PlainValue"


class EncryptionScheme(enum.Enum):
    """``ContentKey@commonEncryptionScheme`` (ISO/IEC 23001-7 scheme names, CPIX 2.3)."""

    CENC = "cenc"
    CBC1 = "cbc1"
    CENS = "cens"
    CBCS = "cbcs"


class HlsPlaylist(enum.Enum):
    """``HLSSignalingData@playlist``: EXT-X-KEY lines (media) or EXT-X-SESSION-KEY (master)."""

    MEDIA = "media"
    MASTER = "master"


@dataclass(frozen=True, slots=True)
class CpixKey:
    """One ``ContentKey``: its id, the clear key (hidden from repr), scheme and IV."""

    kid: bytes
    key: bytes = field(repr=False)
    common_encryption_scheme: EncryptionScheme | None = None
    explicit_iv: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.kid) != KID_SIZE:
            raise CpixError("a content key id must be 16 bytes")
        if len(self.key) != KEY_SIZE:
            raise CpixError(f"content key {_uuid(self.kid)} is not 16 bytes")
        if self.explicit_iv is not None and len(self.explicit_iv) != EXPLICIT_IV_SIZE:
            raise CpixError(f"explicitIV of key {_uuid(self.kid)} is not 16 bytes")

    @property
    def content_key(self) -> ContentKey:
        return ContentKey(kid=self.kid, key=self.key)


@dataclass(frozen=True, slots=True)
class CpixDrmSystem:
    """One ``DRMSystem``: the signalling of one key for one DRM system."""

    kid: bytes
    system_id: bytes
    pssh: bytes | None = None
    content_protection_data: str | None = None
    uri_ext_x_key: str | None = None
    hls_signaling_data: tuple[tuple[HlsPlaylist, str], ...] = ()

    def __post_init__(self) -> None:
        if len(self.kid) != KID_SIZE or len(self.system_id) != SYSTEM_ID_SIZE:
            raise CpixError("DRMSystem kid and systemId must be 16 bytes")
        playlists = [playlist for playlist, _ in self.hls_signaling_data]
        if len(set(playlists)) != len(playlists):
            raise CpixError(f"DRMSystem {_uuid(self.system_id)} of key {_uuid(self.kid)}"
                            " has two HLSSignalingData for one playlist")

    def hls(self, playlist: HlsPlaylist) -> str | None:
        return next((text for kind, text in self.hls_signaling_data if kind is playlist), None)


@dataclass(frozen=True, slots=True)
class CpixDocument:
    """A CPIX document as origin reads and writes it."""

    content_id: str
    keys: tuple[CpixKey, ...]
    drm_systems: tuple[CpixDrmSystem, ...] = ()
    version: str = CPIX_VERSION

    def __post_init__(self) -> None:
        if not self.content_id:
            raise CpixError("missing CPIX@contentId")
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise CpixError("a ContentKey kid appears twice")
        pairs = [(drm.kid, drm.system_id) for drm in self.drm_systems]
        if len(set(pairs)) != len(pairs):
            raise CpixError("a DRMSystem (kid, systemId) pair appears twice")
        for drm in self.drm_systems:
            if drm.kid not in kids:
                raise CpixError(f"DRMSystem refers to key {_uuid(drm.kid)}, not in ContentKeyList")


# --- parsing ---------------------------------------------------------------------------------


def parse_cpix(raw: bytes) -> CpixDocument:
    """Parse an untrusted CPIX document (see the module rules); ``CpixError`` on anything wrong."""
    root = _parse_xml(raw)
    if root.tag != _q(CPIX_NS, "CPIX"):
        raise CpixError("not a CPIX document (root must be CPIX in urn:dashif:org:cpix)")
    content_id = root.get("contentId", "")
    if not content_id.strip():
        raise CpixError("missing CPIX@contentId")
    version = root.get("version", CPIX_VERSION)
    if _VERSION.fullmatch(version) is None:
        raise CpixError("unsupported CPIX@version")
    key_list = root.find(_q(CPIX_NS, "ContentKeyList"))
    elements = [] if key_list is None else key_list.findall(_q(CPIX_NS, "ContentKey"))
    if not elements:
        raise CpixError("no ContentKey in ContentKeyList")
    keys = tuple(_parse_content_key(element) for element in elements)
    systems: list[CpixDrmSystem] = []
    for system_list in root.findall(_q(CPIX_NS, "DRMSystemList")):
        systems += [_parse_drm_system(el) for el in system_list.findall(_q(CPIX_NS, "DRMSystem"))]
    return CpixDocument(content_id, keys, tuple(systems), version)


def _parse_xml(raw: bytes) -> ET.Element:
    # No DTD can reach expat (decode_untrusted_xml refuses it), so no entity is ever
    # declared or expanded.
    parser = ET.XMLParser()  # noqa: S314
    try:
        text = decode_untrusted_xml(raw, limit=MAX_CPIX_BYTES)
        parser.feed(text.encode("utf-8"))
        root = parser.close()
        check_xml_depth(root, limit=MAX_XML_DEPTH)
    except UntrustedXmlError as exc:
        raise CpixError(f"CPIX document {exc.reason}") from None
    except ET.ParseError:
        raise CpixError("CPIX document is not well-formed XML") from None
    return root


def _parse_content_key(element: ET.Element) -> CpixKey:
    kid = _parse_uuid(element.get("kid"), "ContentKey@kid")
    name = _uuid(kid)
    scheme_text = element.get("commonEncryptionScheme")
    scheme = None
    if scheme_text is not None:
        try:
            scheme = EncryptionScheme(scheme_text)
        except ValueError:
            raise CpixError(f"key {name}: unsupported commonEncryptionScheme") from None
    iv_text = element.get("explicitIV")
    explicit_iv = None if iv_text is None else _b64(iv_text, f"explicitIV of key {name}")
    secret = None
    for data_ns in (CPIX_NS, PSKC_NS):  # cpix:Data per the schema; pskc:Data seen in the wild
        data = element.find(_q(data_ns, "Data"))
        if data is not None:
            secret = data.find(_q(PSKC_NS, "Secret"))
            break
    if secret is not None and secret.find(_q(PSKC_NS, "EncryptedValue")) is not None:
        raise EncryptedCpixKey()
    plain = None if secret is None else secret.find(_q(PSKC_NS, "PlainValue"))
    if plain is None:
        raise CpixError(f"content key {name} has no pskc:PlainValue")
    key = _b64(_text(plain), f"content key {name}")
    if len(key) != KEY_SIZE:
        raise CpixError(f"content key {name} is not 16 bytes")
    return CpixKey(kid, key, scheme, explicit_iv)


def _parse_drm_system(element: ET.Element) -> CpixDrmSystem:
    kid = _parse_uuid(element.get("kid"), "DRMSystem@kid")
    system_id = _parse_uuid(element.get("systemId"), "DRMSystem@systemId")
    what = f"DRMSystem {_uuid(system_id)} of key {_uuid(kid)}"

    def payload(tag: str) -> bytes | None:
        child = element.find(_q(CPIX_NS, tag))
        return None if child is None else _b64(_text(child), f"{what}: {tag}")

    def text(tag: str) -> str | None:
        data = payload(tag)
        return None if data is None else _utf8(data, f"{what}: {tag}")

    hls: list[tuple[HlsPlaylist, str]] = []
    for child in element.findall(_q(CPIX_NS, "HLSSignalingData")):
        try:
            playlist = HlsPlaylist(child.get("playlist", HlsPlaylist.MEDIA.value))
        except ValueError:
            raise CpixError(f"{what}: HLSSignalingData@playlist must be media or master") from None
        data = _b64(_text(child), f"{what}: HLSSignalingData")
        hls.append((playlist, _utf8(data, f"{what}: HLSSignalingData")))
    return CpixDrmSystem(kid, system_id, payload("PSSH"), text("ContentProtectionData"),
                         text("URIExtXKey"), tuple(hls))


def _parse_uuid(text: str | None, what: str) -> bytes:
    if text is None:
        raise CpixError(f"missing {what}")
    if _UUID.fullmatch(text.strip()) is None:
        raise CpixError(f"{what} is not a UUID")
    return uuid.UUID(text.strip()).bytes


def _text(element: ET.Element) -> str:
    return "".join(element.itertext())


def _b64(text: str, what: str) -> bytes:
    """Decode base64 (line breaks and spaces allowed); the message never repeats the text."""
    try:
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise CpixError(f"{what} is not base64") from None


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CpixError(f"{what} is not UTF-8 text") from None


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _uuid(value: bytes) -> str:
    return str(uuid.UUID(bytes=value)) if len(value) == KID_SIZE else value.hex()


# --- building --------------------------------------------------------------------------------


def build_cpix(doc: CpixDocument) -> bytes:
    """The document as CPIX 2.3 XML (UTF-8, deterministic)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<CPIX xmlns="{CPIX_NS}" xmlns:pskc="{PSKC_NS}"'
        f" contentId={quoteattr(doc.content_id)} version={quoteattr(doc.version)}>",
        "  <ContentKeyList>",
    ]
    for key in doc.keys:
        attrs = f'kid="{_uuid(key.kid)}"'
        if key.explicit_iv is not None:
            attrs += f' explicitIV="{_b64encode(key.explicit_iv)}"'
        if key.common_encryption_scheme is not None:
            attrs += f' commonEncryptionScheme="{key.common_encryption_scheme.value}"'
        lines += [
            f"    <ContentKey {attrs}>",
            "      <Data>",
            "        <pskc:Secret>",
            f"          <pskc:PlainValue>{_b64encode(key.key)}</pskc:PlainValue>",
            "        </pskc:Secret>",
            "      </Data>",
            "    </ContentKey>",
        ]
    lines.append("  </ContentKeyList>")
    if doc.drm_systems:
        lines.append("  <DRMSystemList>")
        for drm in doc.drm_systems:
            lines += _drm_system_lines(drm)
        lines.append("  </DRMSystemList>")
    lines.append("</CPIX>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _drm_system_lines(drm: CpixDrmSystem) -> list[str]:
    """One DRMSystem, children in schema order: PSSH, ContentProtectionData, URIExtXKey,
    HLSSignalingData (media, then master)."""
    out = [f'    <DRMSystem kid="{_uuid(drm.kid)}" systemId="{_uuid(drm.system_id)}">']
    if drm.pssh is not None:
        out.append(f"      <PSSH>{_b64encode(drm.pssh)}</PSSH>")
    if drm.content_protection_data is not None:
        data = _b64encode(drm.content_protection_data.encode("utf-8"))
        out.append(f"      <ContentProtectionData>{data}</ContentProtectionData>")
    if drm.uri_ext_x_key is not None:
        uri = _b64encode(drm.uri_ext_x_key.encode("utf-8"))
        out.append(f"      <URIExtXKey>{uri}</URIExtXKey>")
    for playlist in HlsPlaylist:
        text = drm.hls(playlist)
        if text is not None:
            out.append(f'      <HLSSignalingData playlist="{playlist.value}">'
                       f"{_b64encode(text.encode('utf-8'))}</HLSSignalingData>")
    out.append("    </DRMSystem>")
    return out


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
