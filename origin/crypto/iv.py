"""Deterministic IVs (DESIGN "Determinism").

An IV is derived, never drawn at random, from (key id, scheme, segment
identity), so every replica produces the same bytes for the same request,
ETags stay strong and CDN caches stay coherent.  HMAC-SHA-256 keyed with the
key id separates keys; the label separates schemes; the segment identity is
the segment's path inside its asset, which is unique per segment.

IVs need not be secret (RFC 8216 §5.2 only requires them per segment); they
must differ between segments encrypted under one key, which distinct paths
guarantee up to the 2^-64 collision bound of a 128-bit truncation.
"""

from __future__ import annotations

import hashlib
import hmac

IV_SIZE = 16


def derive_iv(kid: bytes, scheme: str, segment_id: str) -> bytes:
    """16-byte IV for one segment of one scheme under one key id."""
    msg = b"origin-iv-v1\x00" + scheme.encode() + b"\x00" + segment_id.encode("utf-8")
    return hmac.new(kid, msg, hashlib.sha256).digest()[:IV_SIZE]


CENC_IV_SIZE = 8
_U64 = 1 << 64


def derive_sample_ivs(kid: bytes, segment_id: str, track_id: int, count: int) -> list[bytes]:
    """8-byte ``cenc`` IVs for the ``count`` samples of one track of one segment.

    ``base`` is the first 8 bytes of HMAC-SHA-256 keyed with the key id over
    ``b"origin-cenc-iv-v1\\0" + f"{segment_id}\\0{track_id}"``, read as a
    big-endian u64; sample ``i`` gets ``(base + i) mod 2^64`` (SPECS §1.2:
    +1 per sample, as Shaka Packager and Bento4 do).

    Deterministic: the same (key id, segment, track) always yields the same
    IVs, so re-encrypting a segment reproduces it byte for byte (strong ETags,
    coherent caches).  Unique per (segment, track, sample) with overwhelming
    probability: the counter block is ``IV ‖ counter`` with the 64-bit counter
    starting at 0 inside every sample, so two samples share counter blocks
    only if they share an IV, which happens only if two bases (of different
    segments or tracks under one key) fall within one segment's sample count
    of each other — about ``n·m²/2^64`` for ``m`` segment-tracks of ``n``
    samples each.
    """
    if count < 0:
        raise ValueError("negative sample count")
    msg = b"origin-cenc-iv-v1\x00" + f"{segment_id}\x00{track_id}".encode()
    base = int.from_bytes(hmac.new(kid, msg, hashlib.sha256).digest()[:CENC_IV_SIZE], "big")
    return [((base + i) % _U64).to_bytes(CENC_IV_SIZE, "big") for i in range(count)]
