"""CPIX documents (``origin keys import``): parsing untrusted XML, and writing it back.

Invariant: a document ``parse_cpix`` accepts is written by ``build_cpix`` into XML
that parses to the same document.  Seeds are exports of the origin's own
signalling (``keys_cpix.build_export``, cenc and cbcs) and a minimal document
with a ``pskc:Data`` key.  Typed error: ``CpixError`` (400).
"""

from __future__ import annotations

from functools import cache

from origin.crypto.key import ContentKey
from origin.keys_cpix import build_export
from origin.license.cpix import CpixError, EncryptionScheme, build_cpix, parse_cpix
from tests.fuzz import media
from tests.fuzz.core import Target

KEYS = (ContentKey(bytes(range(16)), bytes(range(16, 32))),
        ContentKey(bytes(range(100, 116)), bytes(range(200, 216))))
MINIMAL = b"""<?xml version="1.0" encoding="UTF-8"?>
<cpix:CPIX xmlns:cpix="urn:dashif:org:cpix" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
    contentId="a &amp; b" version="2.3">
  <cpix:ContentKeyList>
    <cpix:ContentKey kid="4060a865-8878-4267-9cbf-91ae5bae1e72"
                     explicitIV="AAECAwQFBgcICQoLDA0ODw==">
      <pskc:Data><pskc:Secret><pskc:PlainValue>
        EBESExQVFhcYGRobHB0eHw==
      </pskc:PlainValue></pskc:Secret></pskc:Data>
    </cpix:ContentKey>
  </cpix:ContentKeyList>
</cpix:CPIX>
"""


@cache
def documents() -> tuple[bytes, ...]:
    return (build_cpix(build_export(KEYS[:1], "demo", EncryptionScheme.CENC, "")),
            build_cpix(build_export(KEYS, "demo", EncryptionScheme.CBCS,
                                    "https://origin.example")),
            MINIMAL)


def run_cpix(raw: bytes) -> None:
    doc = parse_cpix(raw)
    try:
        again = parse_cpix(build_cpix(doc))
    except CpixError as exc:
        raise AssertionError(f"built CPIX does not parse: {exc.detail}") from exc
    assert again == doc, "build_cpix does not round-trip"


TARGETS: tuple[Target, ...] = (
    Target("cpix", run_cpix, (CpixError,), documents, media.markup_starts),
)
