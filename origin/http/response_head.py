"""The head of an HTTP/1.1 response from the licence module, and how its body is framed.

Pure functions on bytes (``origin.http.license_channel`` reads them off the socket).

Rules (RFC 9112):

- The status line is ``HTTP/1.x SP 3DIGIT [SP reason]`` (§4); the reason is kept as
  text (Latin-1), never checked further.  Header lines are ``token ":" OWS value OWS``
  (§5); obsolete line folding, a bare CR or LF, NUL, an empty or non-token name, more
  than ``MAX_FIELDS`` lines: ``MalformedHead``.  Values are decoded UTF-8 with
  surrogate escapes, so they go back out byte for byte.
- Framing of the body (§6.3), in this order: a ``HEAD`` request, 1xx, 204 and 304
  have none; ``Transfer-Encoding`` whose last coding is ``chunked`` → chunked (any
  ``Content-Length`` beside it is ignored and the connection is not reused), another
  final coding → read until the connection closes; else ``Content-Length`` — every
  value the same decimal number, else ``MalformedHead`` (§6.3 item 5); else until close.
- Reuse: only an HTTP/1.1 answer without a ``close`` connection option, framed by
  length or chunks (or bodiless), leaves its connection fit for the next request.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_FIELDS = 100
MAX_LENGTH_DIGITS = 18
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n\x00]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NO_BODY_STATUS = frozenset({204, 304})


class MalformedHead(Exception):
    """The licence module's answer is not well-formed HTTP/1.1 (nothing of it is relayed)."""


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed response head: status, reason, fields in order, and what follows it."""

    status: int
    reason: str
    fields: tuple[tuple[str, str], ...]
    framing: Framing
    length: int | None  # the body's length under Framing.LENGTH; else Content-Length, if any
    reusable: bool  # the connection may carry another request once the body is read


def parse_head(head: bytes, *, method: str) -> ResponseHead:
    """Parse ``head`` (status line and fields, CRLF-separated, without the blank line)."""
    lines = head.split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        raise MalformedHead("bad status line")
    if len(lines) - 1 > MAX_FIELDS:
        raise MalformedHead("too many header fields")
    fields: list[tuple[str, str]] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or b"\n" in value or b"\r" in value \
                or b"\x00" in value:
            raise MalformedHead("bad header field")
        value = value.strip(b" \t")
        lower = name.lower()
        if lower == b"content-length":
            lengths.extend(part.strip(b" \t") for part in value.split(b","))
        elif lower == b"transfer-encoding":
            codings.extend(part.strip(b" \t").lower() for part in value.split(b","))
        elif lower == b"connection":
            connection.extend(part.strip(b" \t").lower() for part in value.split(b","))
        fields.append((name.decode("ascii"), value.decode("utf-8", "surrogateescape")))
    status = int(status_line.group(2))
    length = _length(lengths)
    framing = _framing(method, status, codings, length)
    reusable = (status_line.group(1) == b"1" and b"close" not in connection
                and framing is not Framing.UNTIL_CLOSE and not (codings and lengths))
    return ResponseHead(
        status=status,
        reason=(status_line.group(3) or b"").decode("latin-1"),
        fields=tuple(fields),
        framing=framing,
        length=length if framing is not Framing.CHUNKED else None,
        reusable=reusable,
    )


def _length(values: list[bytes]) -> int | None:
    if not values:
        return None
    first = values[0]
    if any(v != first for v in values) or not first.isdigit() or len(first) > MAX_LENGTH_DIGITS:
        raise MalformedHead("bad Content-Length")
    return int(first)


def _framing(method: str, status: int, codings: list[bytes], length: int | None) -> Framing:
    if method == "HEAD" or status < 200 or status in _NO_BODY_STATUS:
        return Framing.NONE
    if codings:
        return Framing.CHUNKED if codings[-1] == b"chunked" else Framing.UNTIL_CLOSE
    if length is not None:
        return Framing.LENGTH
    return Framing.UNTIL_CLOSE


def chunk_size(line: bytes) -> int:
    """The size of a chunk from its size line (``1*HEXDIG [ext]``, CRLF removed)."""
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not digits or len(digits) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
        raise MalformedHead("bad chunk size")
    return int(digits, 16)
