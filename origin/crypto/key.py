"""The content key value type.

A key never appears in a repr or str: ``ContentKey`` hides it, and only
``kid_hex`` identifies a key in logs and error messages.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

KEY_SIZE = 16
KID_SIZE = 16
_KID_TEXT = re.compile(
    r"[0-9A-Fa-f]{32}"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)


@dataclass(frozen=True, slots=True)
class ContentKey:
    """A 128-bit content key and its 128-bit key id."""

    kid: bytes
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.kid) != KID_SIZE:
            raise ValueError("key id must be 16 bytes")
        if len(self.key) != KEY_SIZE:
            raise ValueError("content key must be 16 bytes")

    @property
    def kid_hex(self) -> str:
        return self.kid.hex()

    @property
    def kid_uuid(self) -> str:
        return str(uuid.UUID(bytes=self.kid))


def parse_kid(text: str) -> bytes:
    """Parse a key id written as 32 hex digits or as a canonical UUID; ``ValueError`` otherwise."""
    if _KID_TEXT.fullmatch(text) is None:
        raise ValueError("malformed key id")
    return bytes.fromhex(text.replace("-", ""))
