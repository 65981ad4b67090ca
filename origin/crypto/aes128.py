"""HLS ``METHOD=AES-128``: the whole segment under AES-128-CBC with PKCS#7.

Rules (RFC 8216 §5.2, SPECS §2.2):
- one fresh CBC chain per segment (and per ``EXT-X-MAP`` init section);
- PKCS#7 padding, so the output is 1–16 bytes longer than the input;
- the IV is 16 bytes; the origin always writes it explicitly (``IV=0x…``).

Bytes in, bytes out.  :func:`encrypt_segment_into` writes the ciphertext into a buffer
the caller owns (the origin passes a reused one, so no output buffer is allocated and
faulted in per segment); the input and the output must not overlap (pyca/cryptography
refuses overlapping buffers from 51.0 on).  OpenSSL does the whole segment in two
calls — the whole blocks, then the last partial block with its padding — never a
per-block Python loop.  :class:`SegmentEncryptor` is the same chain fed in pieces (the
origin reads a segment a piece at a time into a small buffer that stays in cache and
encrypts each piece from there).  Callers run these in an executor.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
UPDATE_SPARE = BLOCK - 1  # update_into wants this much room beyond its input


def padded_size(size: int) -> int:
    """Size of the ciphertext of ``size`` plaintext bytes (PKCS#7 always adds 1–16)."""
    return (size // BLOCK + 1) * BLOCK


def output_room(size: int) -> int:
    """Bytes the output buffer of :func:`encrypt_segment_into` must hold for ``size``."""
    return padded_size(size) + UPDATE_SPARE


def encrypt_segment_into(key: bytes, iv: bytes, data: bytes | bytearray | memoryview,
                         out: bytearray | memoryview) -> int:
    """AES-128-CBC encrypt ``data`` with PKCS#7 padding into the start of ``out``, which
    holds at least ``output_room(len(data))`` bytes and does not overlap ``data``;
    returns the ciphertext's length (``padded_size(len(data))``)."""
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128 needs a 16-byte key and a 16-byte IV")
    size = len(data)
    if len(out) < output_room(size):
        raise ValueError("the output buffer needs output_room(size) bytes")
    whole = size - size % BLOCK
    pad = BLOCK - size % BLOCK
    with memoryview(data) as src, memoryview(out) as dst:
        last = bytes(src[whole:]) + bytes([pad]) * pad  # the final block, padded (§5.2)
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        n = enc.update_into(src[:whole], dst) if whole else 0
        n += enc.update_into(last, dst[n:])
    enc.finalize()
    return n


class SegmentEncryptor:
    """One segment's AES-128-CBC chain with PKCS#7, fed in pieces: ``update_into`` for
    each piece in order, then ``finish_into``; together they write exactly what
    :func:`encrypt_segment_into` writes for the pieces joined."""

    __slots__ = ("_enc", "_tail")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != 16 or len(iv) != 16:
            raise ValueError("AES-128 needs a 16-byte key and a 16-byte IV")
        self._enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._tail = b""  # bytes of a partial block not yet encrypted

    def __repr__(self) -> str:
        return "SegmentEncryptor()"

    def update_into(self, data: bytes | bytearray | memoryview,
                    out: bytearray | memoryview) -> int:
        """Encrypt the whole blocks ``data`` completes into the start of ``out`` (at least
        ``len(data) + 31`` bytes); the bytes written."""
        with memoryview(data) as src, memoryview(out) as dst:
            n = 0
            if self._tail:
                take = min(BLOCK - len(self._tail), len(src))
                self._tail += bytes(src[:take])
                src = src[take:]
                if len(self._tail) < BLOCK:
                    return 0
                n = self._enc.update_into(self._tail, dst)
                self._tail = b""
            whole = len(src) - len(src) % BLOCK
            if whole:
                n += self._enc.update_into(src[:whole], dst[n:])
            self._tail = bytes(src[whole:])
        return n

    def finish_into(self, out: bytearray | memoryview) -> int:
        """The last block, padded (PKCS#7, RFC 8216 §5.2), into the start of ``out`` (at
        least 31 bytes); the bytes written (16)."""
        pad = BLOCK - len(self._tail)
        with memoryview(out) as dst:
            n = self._enc.update_into(self._tail + bytes([pad]) * pad, dst)
        self._enc.finalize()
        return n


def encrypt_segment(key: bytes, iv: bytes, data: bytes | bytearray | memoryview) -> bytearray:
    """AES-128-CBC encrypt ``data`` with PKCS#7 padding into a fresh buffer."""
    out = bytearray(output_room(len(data)))
    n = encrypt_segment_into(key, iv, data, out)
    del out[n:]  # drops the spare bytes update_into needs; shrinks in place
    return out


def decrypt_segment(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Inverse of :func:`encrypt_segment`; ``ValueError`` on bad length or padding."""
    if len(data) == 0 or len(data) % BLOCK:
        raise ValueError("ciphertext length is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = dec.update(data) + dec.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad PKCS#7 padding")
    return plain[:-pad]
