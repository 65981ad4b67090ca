"""Widevine and PlayReady licence challenges in their real wire formats, built for tests.

Widevine: a ``SignedMessage`` around a ``LicenseRequest`` (hand-encoded protobuf) whose
content id holds ``WidevinePsshData`` key ids or ``init_data`` pssh boxes; PlayReady: the
SOAP ``AcquireLicense`` challenge a CDM sends around a ``WRMHEADER`` (4.0 and 4.3 exactly
as the origin writes them, 4.1/4.2 by the spec).  Written independently of
``origin.license.challenge``, which parses them.
"""

from __future__ import annotations

import base64
import os

from origin.container.playready import playready_header_xml
from origin.container.widevine import encode_widevine_pssh_data
from origin.crypto.subsample import CommonScheme


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def pb(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for bytes."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def signed_licence_request(content_id: bytes) -> bytes:
    """SignedMessage{type: LICENSE_REQUEST, msg: LicenseRequest{client_id…, content_id, …}}."""
    licence_request = (
        pb(1, b"\x08\x01\x12\x20" + b"c" * 32)  # client_id: opaque to the proxy
        + pb(2, content_id)
        + pb(3, 1)  # type NEW
        + pb(4, 1_700_000_000)  # request_time
        + pb(6, 21)  # protocol_version 2.1
    )
    return pb(1, 1) + pb(2, licence_request) + pb(3, b"s" * 256)  # + signature


def widevine_pssh_request(*kids: bytes, license_type: int | None = None) -> bytes:
    """content_id.widevine_pssh_data{pssh_data: WidevinePsshData{key_id…}, license_type}."""
    pssh_data = encode_widevine_pssh_data(kids, b"", CommonScheme.CENC)
    inner = pb(1, pssh_data) + (pb(2, license_type) if license_type is not None else b"")
    inner += pb(3, b"request-id-0001")
    return signed_licence_request(pb(1, inner))


def widevine_init_data_request(init_data: bytes, *, init_type: int | None = 1,
                               license_type: int | None = None) -> bytes:
    """content_id.init_data{init_data_type, init_data: pssh box(es), license_type}."""
    inner = pb(1, init_type) if init_type is not None else b""
    inner += pb(2, init_data)
    if license_type is not None:
        inner += pb(3, license_type)
    return signed_licence_request(pb(4, inner))


SERVICE_CERTIFICATE_REQUEST = b"\x08\x04"


def guid_le_b64(kid: bytes) -> str:
    le = kid[3::-1] + kid[5:3:-1] + kid[7:5:-1] + kid[8:]
    return base64.b64encode(le).decode()


PR_NS = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"


def wrmheader(kid: bytes, version: str) -> str:
    """A WRMHEADER: 4.0 and 4.3 exactly as the origin writes them; 4.1/4.2 by the spec."""
    if version == "4.0":
        return playready_header_xml(kid, os.urandom(16), "https://l/?a=1&b=2", CommonScheme.CENC)
    if version == "4.3":
        return playready_header_xml(kid, None, "https://l/", CommonScheme.CBCS)
    if version == "4.1":
        return (f'<WRMHEADER xmlns="{PR_NS}" version="4.1.0.0"><DATA><PROTECTINFO>'
                f'<KID ALGID="AESCTR" VALUE="{guid_le_b64(kid)}"></KID></PROTECTINFO>'
                "</DATA></WRMHEADER>")
    raise AssertionError(version)


def wrmheader_kids(*kids: bytes) -> str:
    """A 4.2 header listing several kids (``<KIDS>``)."""
    items = "".join(f'<KID ALGID="AESCTR" VALUE="{guid_le_b64(k)}"></KID>' for k in kids)
    return (f'<WRMHEADER xmlns="{PR_NS}" version="4.2.0.0"><DATA><PROTECTINFO><KIDS>{items}'
            "</KIDS></PROTECTINFO></DATA></WRMHEADER>")


def playready_challenge(header: str, *, prolog: str = "", custom_data: str = "") -> bytes:
    """The SOAP AcquireLicense challenge a PlayReady CDM sends (structure of real ones)."""
    return (
        f'{prolog}<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        '<AcquireLicense xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols"><challenge>'
        '<Challenge xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols/messages">'
        '<LA xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols" Id="SignedData" '
        f'xml:space="preserve"><Version>1</Version><ContentHeader>{header}</ContentHeader>'
        "<CLIENTINFO><CLIENTVERSION>4.2.0.5545</CLIENTVERSION></CLIENTINFO>"
        f"<CustomData>{custom_data}</CustomData>"
        "<LicenseNonce>U9WysleTindM/gVQyExDdw==</LicenseNonce><ClientTime>1706149441</ClientTime>"
        '<EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#" '
        'Type="http://www.w3.org/2001/04/xmlenc#Element"><CipherData><CipherValue>'
        f"{base64.b64encode(os.urandom(96)).decode()}</CipherValue></CipherData></EncryptedData>"
        "</LA><Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignatureValue>"
        "AAAA</SignatureValue></Signature></Challenge></challenge></AcquireLicense>"
        "</soap:Body></soap:Envelope>"
    ).encode()
