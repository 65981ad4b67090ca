"""Protection schemes a request can ask for (the ``{scheme}`` URL component)."""

from __future__ import annotations

import enum

from origin.crypto.subsample import CommonScheme
from origin.errors import NotFound


class Scheme(enum.Enum):
    CLEAR = "clear"
    AES128 = "aes128"
    CBCS = "cbcs"
    CENC = "cenc"
    SAMPLE_AES = "sample-aes"  # Apple SAMPLE-AES: MPEG-TS sample encryption; cbcs for fMP4

    @property
    def encrypted(self) -> bool:
        return self is not Scheme.CLEAR

    @property
    def common(self) -> CommonScheme | None:
        """The Common Encryption scheme behind this URL scheme, if it is one."""
        return {Scheme.CBCS: CommonScheme.CBCS, Scheme.CENC: CommonScheme.CENC,
                Scheme.SAMPLE_AES: CommonScheme.CBCS}.get(self)


TS_SCHEMES = (Scheme.CLEAR, Scheme.AES128, Scheme.SAMPLE_AES)  # the ones MPEG-TS can take


def parse_scheme(text: str) -> Scheme:
    try:
        return Scheme(text)
    except ValueError:
        raise NotFound("unknown protection scheme") from None
