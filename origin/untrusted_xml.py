"""Untrusted XML documents: the checks made before and after a parser sees one.

Shared by every layer, like ``origin.errors``: source MPDs (``origin.packaging.dash``),
CPIX documents (``origin.license.cpix``) and PlayReady challenges
(``origin.license.challenge``).  Pure: bytes in, text out; no I/O and no XML
parser here (DESIGN "Layers": parsing stays with those callers).  Each caller maps
``UntrustedXmlError`` to its own typed error, its own noun before the reason
(``MPD is not UTF-8``, ``CPIX document too large``, …).

Rules of ``decode_untrusted_xml``, in this order (the first failure wins):

- at most ``limit`` bytes (``too large``);
- UTF-8 only (``is not UTF-8``): a UTF-16 byte-order mark, bytes that do not
  decode, or an XML declaration whose ``encoding`` is not ``UTF-8``/``utf8``
  (any case, ``_`` read as ``-``) are refused; one UTF-8 byte-order mark is
  allowed and dropped from the text;
- no markup declaration (``declares a DTD or entities``): ``<!`` anywhere, unless
  it opens a comment (``<!--``) or a CDATA section (``<![CDATA[``), refuses the
  document, so ``<!DOCTYPE``, ``<!ENTITY``, ``<!ELEMENT``, … never reach the
  parser and no entity is ever declared or expanded.  The check is textual: such
  markup quoted inside a comment or CDATA is refused too.

``check_xml_depth`` caps the nesting of a parsed tree (``nested too deeply``),
for parsers that build the whole tree (ElementTree); it walks without recursion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_NAMES = ("utf-8", "utf8")
_XML_DECL_ENCODING = re.compile(r"""\A<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
# Anything like <!DOCTYPE or <!ENTITY; comments and CDATA sections are fine.
_MARKUP_DECLARATION = re.compile(r"<!(?!--|\[CDATA\[)")


class UntrustedXmlError(Exception):
    """A document refused by the module rules; ``reason`` is short and never quotes it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class XmlNode(Protocol):
    """A node of a parsed tree: iterating over it gives its child elements."""

    def __iter__(self) -> Iterator[XmlNode]: ...


def decode_untrusted_xml(raw: bytes, *, limit: int) -> str:
    """The document's text, once it passed the module rules; ``UntrustedXmlError`` otherwise."""
    if len(raw) > limit:
        raise UntrustedXmlError("too large")
    if raw.startswith(_UTF16_BOMS):
        raise UntrustedXmlError("is not UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UntrustedXmlError("is not UTF-8") from None
    declared = _XML_DECL_ENCODING.match(text.lstrip())
    if declared is not None and declared.group(1).lower().replace("_", "-") not in _UTF8_NAMES:
        raise UntrustedXmlError("is not UTF-8")
    if _MARKUP_DECLARATION.search(text):
        raise UntrustedXmlError("declares a DTD or entities")
    return text


def check_xml_depth(root: XmlNode, *, limit: int) -> None:
    """``UntrustedXmlError`` if the tree below ``root`` (depth 1) is deeper than ``limit``."""
    todo = [(root, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > limit:
            raise UntrustedXmlError("nested too deeply")
        todo.extend((child, depth + 1) for child in node)
