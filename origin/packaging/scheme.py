"""Protection schemes a request can ask for (the ``{scheme}`` URL component)."""

from __future__ import annotations

import enum

from origin.errors import NotFound


class Scheme(enum.Enum):
    CLEAR = "clear"
    AES128 = "aes128"

    @property
    def encrypted(self) -> bool:
        return self is not Scheme.CLEAR


def parse_scheme(text: str) -> Scheme:
    try:
        return Scheme(text)
    except ValueError:
        raise NotFound("unknown protection scheme") from None
