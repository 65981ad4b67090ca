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
