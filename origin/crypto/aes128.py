"""HLS ``METHOD=AES-128``: the whole segment under AES-128-CBC with PKCS#7.

Rules (RFC 8216 §5.2, SPECS §2.2):
- one fresh CBC chain per segment (and per ``EXT-X-MAP`` init section);
- PKCS#7 padding, so the output is 1–16 bytes longer than the input;
- the IV is 16 bytes; the origin always writes it explicitly (``IV=0x…``).

Bytes in, bytes out — or, with ``encrypt_segment_in_place``, the plaintext's own
buffer turned into the ciphertext (the origin reads each source into a fresh buffer
with ``IN_PLACE_SPARE`` bytes to spare, so no output buffer is allocated and faulted in
per segment).  OpenSSL does the whole segment in one call: no per-block Python loop;
CBC encryption in place is safe because each output block is written after its input
block is read.  Callers run it in an executor.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16


def padded_size(size: int) -> int:
    """Size of the ciphertext of ``size`` plaintext bytes (PKCS#7 always adds 1–16)."""
    return (size // BLOCK + 1) * BLOCK


def encrypt_segment(key: bytes, iv: bytes, data: bytes | bytearray | memoryview) -> bytearray:
    """AES-128-CBC encrypt ``data`` with PKCS#7 padding.

    Writes straight into one preallocated buffer and returns it (no copy of the
    output: at 8 MB segments the copies, not AES, set the speed).
    """
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128 needs a 16-byte key and a 16-byte IV")
    pad = BLOCK - len(data) % BLOCK
    out = bytearray(len(data) + pad + BLOCK - 1)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    n = enc.update_into(data, out)
    n += enc.update_into(bytes([pad]) * pad, memoryview(out)[n:])
    enc.finalize()
    del out[n:]  # drops the 15 spare bytes update_into needs; shrinks in place
    return out


IN_PLACE_SPARE = 2 * BLOCK - 1  # the padding (1–16) plus the 15 bytes update_into asks for


def encrypt_segment_in_place(key: bytes, iv: bytes, buf: bytearray, size: int) -> bytearray:
    """AES-128-CBC with PKCS#7 over ``buf[:size]``, in place: ``buf`` must hold at least
    ``size + IN_PLACE_SPARE`` bytes; it is trimmed to the ciphertext and returned."""
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128 needs a 16-byte key and a 16-byte IV")
    if not 0 <= size <= len(buf) - IN_PLACE_SPARE:
        raise ValueError("the buffer needs IN_PLACE_SPARE bytes after the plaintext")
    end = padded_size(size)
    pad = end - size
    buf[size:end] = bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    with memoryview(buf) as view:
        n = enc.update_into(view[:end], buf)
    enc.finalize()
    del buf[n:]  # the spare bytes update_into needed; shrinking keeps the allocation
    return buf


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
