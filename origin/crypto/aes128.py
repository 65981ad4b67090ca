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

Making an OpenSSL encryptor (key schedule, context) costs about 2 µs, 5 % of a 64 KiB
segment, so each thread keeps the encryptor of its last segments under a key running,
with the last ciphertext block it wrote, and starts the next segment's chain from it: CBC
gives ``C_0 = E(P_0 ⊕ C_last)``, so feeding ``P_0 ⊕ IV ⊕ C_last`` gives ``E(P_0 ⊕ IV)``,
exactly the first block of a fresh chain from ``IV`` (the trick ``crypto/cbcs.py`` uses
between subsamples).  An encryptor an error interrupted is never kept.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from origin.crypto.cipher_contexts import encryptor

BLOCK = 16
UPDATE_SPARE = BLOCK - 1  # update_into wants this much room beyond its input
_PADDING = [bytes([n]) * n for n in range(BLOCK + 1)]  # PKCS#7: n bytes of value n
KEPT_KEYS = 4  # running encryptors a thread keeps (one per key)


class _Running(threading.local):
    """Per thread: encryptors left running after a segment, by key, each with the last
    ciphertext block it wrote (module docstring)."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, tuple[CipherContext, int]] = {}


_RUNNING = _Running()


def _start_chain(key: bytes, iv: bytes) -> tuple[CipherContext, int]:
    """An encryptor ready for a chain from ``iv``, and the mask to XOR into that chain's
    first plaintext block (0: the encryptor is fresh, made with ``iv``)."""
    found = _RUNNING.by_key.pop(key, None)
    if found is None:
        return encryptor(algorithms.AES(key), modes.CBC(iv)), 0
    running, last = found
    return running, int.from_bytes(iv, "big") ^ last


def _keep_running(key: bytes, running: CipherContext, last_block: memoryview) -> None:
    kept = _RUNNING.by_key
    if len(kept) >= KEPT_KEYS:
        del kept[next(iter(kept))]
    kept[key] = (running, int.from_bytes(last_block, "big"))


def _masked(block: bytes | memoryview, mask: int) -> bytes:
    return (int.from_bytes(block, "big") ^ mask).to_bytes(BLOCK, "big")


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
    tail = size % BLOCK
    whole = size - tail
    if len(out) < output_room(size):
        raise ValueError("the output buffer needs output_room(size) bytes")
    src, dst = memoryview(data), memoryview(out)
    running, mask = _start_chain(key, iv)
    n = 0
    if whole and mask:
        n = running.update_into(_masked(src[:BLOCK], mask), dst)
        mask = 0
    if whole > n:
        n += running.update_into(src[n:whole], dst[n:])
    last = bytes(src[whole:]) + _PADDING[BLOCK - tail]  # PKCS#7, RFC 8216 §5.2
    n += running.update_into(_masked(last, mask) if mask else last, dst[n:])
    _keep_running(key, running, dst[n - BLOCK:n])
    return n


class SegmentEncryptor:
    """One segment's AES-128-CBC chain with PKCS#7, fed in pieces: ``update_into`` for
    each piece in order, then ``finish_into``; together they write exactly what
    :func:`encrypt_segment_into` writes for the pieces joined."""

    __slots__ = ("_enc", "_key", "_mask", "_tail")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != 16 or len(iv) != 16:
            raise ValueError("AES-128 needs a 16-byte key and a 16-byte IV")
        self._key = key
        self._enc, self._mask = _start_chain(key, iv)  # mask: for the first block only
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
                n = self._enc.update_into(self._first(self._tail), dst)
                self._tail = b""
            whole = len(src) - len(src) % BLOCK
            done = 0
            if whole and self._mask:
                n += self._enc.update_into(self._first(src[:BLOCK]), dst[n:])
                done = BLOCK
            if whole > done:
                n += self._enc.update_into(src[done:whole], dst[n:])
            self._tail = bytes(src[whole:])
        return n

    def _first(self, block: bytes | memoryview) -> bytes | memoryview:
        """``block`` as the encryptor must see it: masked if it is the chain's first."""
        if not self._mask:
            return block
        masked, self._mask = _masked(block, self._mask), 0
        return masked

    def finish_into(self, out: bytearray | memoryview) -> int:
        """The last block, padded (PKCS#7, RFC 8216 §5.2), into the start of ``out`` (at
        least 31 bytes); the bytes written (16)."""
        with memoryview(out) as dst:
            last = self._first(self._tail + _PADDING[BLOCK - len(self._tail)])
            n = self._enc.update_into(last, dst)
            _keep_running(self._key, self._enc, dst[n - BLOCK:n])
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
