"""Value types shared by the subsample rules (``container``) and the ciphers (``crypto``).

ISO/IEC 23001-7 §7.2: a protected sample is a run of subsamples, each
``BytesOfClearData`` (u16) clear bytes followed by ``BytesOfProtectedData``
(u32) protected bytes.  A sample with no subsamples is protected whole
("full-sample", used for audio).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_CLEAR = 0xFFFF
MAX_PROTECTED = 0xFFFFFFFF


class CommonScheme(enum.Enum):
    """The Common Encryption schemes origin writes (``schm`` scheme_type)."""

    CENC = "cenc"  # AES-128-CTR, per-sample 8-byte IVs, no pattern
    CBCS = "cbcs"  # AES-128-CBC, constant 16-byte IV, 1:9 pattern for video


@dataclass(frozen=True, slots=True)
class Subsample:
    clear: int
    protected: int

    def __post_init__(self) -> None:
        if not (0 <= self.clear <= MAX_CLEAR and 0 <= self.protected <= MAX_PROTECTED):
            raise ValueError("subsample sizes out of range")


@dataclass(frozen=True, slots=True)
class SampleCrypto:
    """Where one sample lies in a buffer and how it is divided.

    ``subsamples`` empty means full-sample protection.  Otherwise their sizes
    add up to ``size`` exactly.
    """

    offset: int
    size: int
    subsamples: tuple[Subsample, ...] = ()

    def __post_init__(self) -> None:
        if self.offset < 0 or self.size < 0:
            raise ValueError("negative sample offset or size")
        if self.subsamples and sum(s.clear + s.protected for s in self.subsamples) != self.size:
            raise ValueError("subsamples do not cover the sample exactly")
