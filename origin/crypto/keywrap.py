"""Wrapping content keys under a key-encryption key (RFC 3394 AES key wrap).

The licence module stores only wrapped keys; the KEK comes from configuration
(environment or a file), never from the repository or the database.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

KEK_SIZES = (16, 24, 32)


class KeyUnwrapError(Exception):
    """The wrapped key does not unwrap under this KEK (wrong KEK or corrupt row)."""


def wrap_key(kek: bytes, key: bytes) -> bytes:
    if len(kek) not in KEK_SIZES:
        raise ValueError("key-encryption key must be 16, 24 or 32 bytes")
    return aes_key_wrap(kek, key)


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    if len(kek) not in KEK_SIZES:
        raise ValueError("key-encryption key must be 16, 24 or 32 bytes")
    try:
        return aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap as exc:
        raise KeyUnwrapError("wrapped key does not unwrap under the configured KEK") from exc
