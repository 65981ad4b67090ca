"""Slow, obviously correct Common Encryption (``cbcs`` and ``cenc``), for checking the fast path.

Written straight from ISO/IEC 23001-7 as summarised in SPECS §1.2–1.3, one
16-byte block at a time with the pure-Python AES of ``tests.reference.aes``.
Nothing here is fast (a few hundred blocks per second); keep test data small.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from origin.crypto.subsample import SampleCrypto
from tests.reference.aes import encrypt_block, expand_key

BLOCK = 16


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def protected_ranges(sample: SampleCrypto) -> Iterator[tuple[int, int]]:
    """(start, length) of each protected range of ``sample``, in order.

    No subsamples: the whole sample is one protected range.
    """
    if not sample.subsamples:
        yield sample.offset, sample.size
        return
    pos = sample.offset
    for sub in sample.subsamples:
        pos += sub.clear
        yield pos, sub.protected
        pos += sub.protected


def cbcs_reference(
    key: bytes,
    iv: bytes,
    data: bytes,
    samples: Sequence[SampleCrypto],
    crypt: int,
    skip: int,
) -> bytes:
    """``cbcs``: for every protected range, a fresh CBC chain from ``iv``.

    Walk the range block position by block position: position ``n`` (bytes
    ``16n .. 16n+15`` of the range) is encrypted iff 16 whole bytes are there
    and ``n mod (crypt+skip) < crypt``.  Pattern 0:0 or ``skip == 0`` means
    every block; full-sample ranges ignore the pattern.
    """
    rk = expand_key(key)
    out = bytearray(data)
    for sample in samples:
        full_sample = not sample.subsamples
        for start, length in protected_ranges(sample):
            chain = iv  # the chain restarts at every protected range
            for n in range(length // BLOCK):  # whole blocks only: a partial tail stays clear
                every_block = full_sample or skip == 0
                if not every_block and n % (crypt + skip) >= crypt:
                    continue  # a skipped block: left clear, not chained
                at = start + BLOCK * n
                chain = encrypt_block(rk, _xor(bytes(out[at : at + BLOCK]), chain))
                out[at : at + BLOCK] = chain
    return bytes(out)


def cenc_counter_blocks(iv: bytes, count: int) -> Iterator[bytes]:
    """IV (8 B) ‖ 64-bit big-endian block counter from 0."""
    assert len(iv) == 8
    for n in range(count):
        yield iv + n.to_bytes(8, "big")


def cenc_reference(
    key: bytes,
    data: bytes,
    samples: Sequence[SampleCrypto],
    ivs: Sequence[bytes],
) -> bytes:
    """``cenc``: AES-CTR keystream over the concatenated protected bytes of each sample.

    Keystream for sample ``i`` = E(IV_i ‖ 0), E(IV_i ‖ 1), …; protected byte
    number ``q`` of the sample (counting across all its protected ranges,
    clear bytes not counted) is XORed with keystream byte ``q``.
    """
    rk = expand_key(key)
    out = bytearray(data)
    for sample, iv in zip(samples, ivs, strict=True):
        positions = [
            pos
            for start, length in protected_ranges(sample)
            for pos in range(start, start + length)
        ]
        blocks = (len(positions) + BLOCK - 1) // BLOCK
        keystream = b"".join(encrypt_block(rk, c) for c in cenc_counter_blocks(iv, blocks))
        for q, pos in enumerate(positions):
            out[pos] ^= keystream[q]
    return bytes(out)
