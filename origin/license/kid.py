"""Key ids as they arrive in URLs and on the command line."""

from __future__ import annotations

from origin.crypto.key import parse_kid
from origin.errors import BadRequest


def parse_kid_strict(text: str) -> bytes:
    """Parse a key id in 32-hex or canonical UUID form; ``BadRequest`` otherwise."""
    try:
        return parse_kid(text)
    except ValueError:
        raise BadRequest("malformed key id") from None
