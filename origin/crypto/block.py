"""One AES-128 block, ECB (FIPS-197): the PlayReady header ``CHECKSUM`` primitive.

SPECS §5: CHECKSUM = first 8 bytes of AES-128-ECB(content key, KID as a
little-endian GUID).  One block, no mode state, no padding; this is not a
bulk cipher and must not be used as one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16


def aes_ecb_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt exactly one 16-byte ``block`` under the 16-byte AES-128 ``key``."""
    if len(key) != 16 or len(block) != BLOCK:
        raise ValueError("AES-128 block encryption needs a 16-byte key and a 16-byte block")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block, by design
    return enc.update(block) + enc.finalize()
