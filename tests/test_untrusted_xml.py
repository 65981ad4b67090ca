"""``origin.untrusted_xml``: the shared pre-checks of untrusted XML, and how each caller
(source MPD, CPIX document, PlayReady challenge) names a refusal with its own error type."""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from origin.errors import MalformedMedia, OriginError
from origin.license.challenge import (
    MAX_CHALLENGE_BYTES,
    PLAYREADY_HEADER_NS,
    MalformedPlayReadyChallenge,
    parse_playready_challenge,
)
from origin.license.cpix import CPIX_NS, MAX_CPIX_BYTES, PSKC_NS, CpixError, parse_cpix
from origin.packaging.dash import MAX_MPD_BYTES, parse_mpd
from origin.untrusted_xml import UntrustedXmlError, check_xml_depth, decode_untrusted_xml

LIMIT = 1024
DOC = "<a><b>é</b></a>"


@pytest.mark.parametrize("raw", [
    DOC.encode(),
    b"\xef\xbb\xbf" + DOC.encode(),
    b'<?xml version="1.0" encoding="UTF-8"?>' + DOC.encode(),
    b"<?xml version='1.0' encoding='utf8'?>" + DOC.encode(),
    b'<?xml version="1.0" encoding="Utf_8" standalone="yes"?>' + DOC.encode(),
    b'<?xml version="1.0"?>' + DOC.encode(),
    b"<!-- a comment --><a><![CDATA[ <b> ]]></a>",
    b"x" * LIMIT,
], ids=["plain", "utf-8 bom", "declared", "utf8 quoted", "utf_8 any case", "no encoding",
        "comment and cdata", "at the limit"])
def test_accepted_documents_come_back_as_text(raw: bytes) -> None:
    assert decode_untrusted_xml(raw, limit=LIMIT) == raw.removeprefix(b"\xef\xbb\xbf").decode()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"x" * (LIMIT + 1), "too large"),
    (DOC.encode("utf-16"), "is not UTF-8"),
    (DOC.encode("utf-16-be").join([b"\xfe\xff", b""]), "is not UTF-8"),
    (b"<a>\xff</a>", "is not UTF-8"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "is not UTF-8"),
    (b" \n<?xml version='1.0' encoding='utf-16'?><a/>", "is not UTF-8"),
    (b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "declares a DTD or entities"),
    (b'<a><!ENTITY e "x"></a>', "declares a DTD or entities"),
    (b"<!doctype a><a/>", "declares a DTD or entities"),
    (b"<!-- hi --><!DOCTYPE a SYSTEM 'file:///etc/passwd'><a/>", "declares a DTD or entities"),
    (b"<a><!-- <!DOCTYPE quoted --></a>", "declares a DTD or entities"),
], ids=["too large", "utf-16 le bom", "utf-16 be bom", "bad utf-8", "declared latin-1",
        "declared utf-16 after white space", "doctype", "entity", "lower-case doctype",
        "doctype after a comment", "declaration quoted in a comment"])
def test_refused_documents_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(UntrustedXmlError) as caught:
        decode_untrusted_xml(raw, limit=LIMIT)
    assert caught.value.reason == reason == str(caught.value)


def test_the_first_failed_rule_wins() -> None:
    with pytest.raises(UntrustedXmlError, match="too large"):
        decode_untrusted_xml(b"<!DOCTYPE a>" + b"\xff" * LIMIT, limit=LIMIT)
    with pytest.raises(UntrustedXmlError, match="is not UTF-8"):
        decode_untrusted_xml(b"<!DOCTYPE a>\xff", limit=LIMIT)


def nested(depth: int) -> ET.Element:
    return ET.fromstring("<e>" * depth + "</e>" * depth)


def test_depth_is_capped_at_the_limit() -> None:
    check_xml_depth(nested(8), limit=8)
    check_xml_depth(ET.fromstring("<a>" + "<b/>" * 100 + "</a>"), limit=2)
    with pytest.raises(UntrustedXmlError, match="nested too deeply"):
        check_xml_depth(nested(9), limit=8)
    with pytest.raises(UntrustedXmlError, match="nested too deeply"):
        check_xml_depth(nested(5000), limit=32)  # no recursion, no RecursionError


# --- each caller: its own error type, its own noun before the shared reason ------------------

KID = uuid.UUID("4060a865-8878-4267-9cbf-91ae5bae1e72").bytes
MPD = '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">{}</MPD>'
CPIX = (f'<CPIX xmlns="{CPIX_NS}" xmlns:pskc="{PSKC_NS}" contentId="c"><ContentKeyList>'
        f'<ContentKey kid="{uuid.UUID(bytes=KID)}"><Data><pskc:Secret><pskc:PlainValue>'
        f"{base64.b64encode(bytes(16)).decode()}</pskc:PlainValue></pskc:Secret></Data>"
        "</ContentKey></ContentKeyList>{}</CPIX>")
GUID_LE = base64.b64encode(KID[3::-1] + KID[5:3:-1] + KID[7:5:-1] + KID[8:]).decode()
CHALLENGE = ('<AcquireLicense><ContentHeader>'
             f'<WRMHEADER xmlns="{PLAYREADY_HEADER_NS}" version="4.0.0.0"><DATA>'
             f"<KID>{GUID_LE}</KID></DATA></WRMHEADER></ContentHeader>{{}}</AcquireLicense>")

Caller = tuple[str, str, int, Callable[[bytes], object], type[OriginError]]
CALLERS: list[Caller] = [
    ("MPD", MPD, MAX_MPD_BYTES, parse_mpd, MalformedMedia),
    ("CPIX document", CPIX, MAX_CPIX_BYTES, parse_cpix, CpixError),
    ("licence challenge", CHALLENGE, MAX_CHALLENGE_BYTES, parse_playready_challenge,
     MalformedPlayReadyChallenge),
]


@pytest.mark.parametrize("caller", CALLERS, ids=[c[0] for c in CALLERS])
def test_each_caller_accepts_its_document(caller: Caller) -> None:
    _, template, _, parse, _ = caller
    parse(template.format("<!-- fine --><![CDATA[ fine ]]>").encode())
    parse(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>' + template.format("").encode())


@pytest.mark.parametrize("caller", CALLERS, ids=[c[0] for c in CALLERS])
def test_each_caller_names_the_refusal(caller: Caller) -> None:
    noun, template, limit, parse, error = caller
    document = template.format("").encode()
    cases = {
        "too large": document + b" " * limit,
        "is not UTF-8": template.format("").encode("utf-16"),
        "declares a DTD or entities": b'<!DOCTYPE x [<!ENTITY e "x">]>' + document,
        "nested too deeply": template.format("<x>" * 40 + "</x>" * 40).encode(),
    }
    for reason, raw in cases.items():
        with pytest.raises(error) as caught:
            parse(raw)
        assert caught.value.detail == f"{noun} {reason}", reason
