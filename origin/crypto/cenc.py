"""Common Encryption ``cenc``: AES-128-CTR with per-sample 8-byte IVs, in place.

Rules (ISO/IEC 23001-7 §9.5, §10.1; SPECS §1.2, §9 item 3):

- counter block = IV (8 B) ‖ 64-bit big-endian block counter starting at 0,
  +1 per 16-byte block; it restarts for every sample from that sample's IV;
- the keystream runs over the concatenation of the sample's protected ranges:
  clear bytes consume no keystream, and a range whose length is not a
  multiple of 16 continues mid-block in the next range;
- a sample without subsamples is one protected range (audio).

Two strategies, measured with bench/protect_cipher.py (1 MiB buffers, AMD
EPYC, OpenSSL 4.0), and a hybrid of them:

- *per sample*: one OpenSSL CTR encryptor per sample, fed the protected
  ranges one after another (CTR is byte-granular, so the stream continues
  mid-block).  Best for big samples (video, 5–60 KB: ~2.8 GB/s against
  ~1.8 GB/s batched) but creating an encryptor costs ~10 µs, which dominates
  for audio's ~400-byte samples (~60 MB/s);
- *batched*: the counter blocks of all samples built with numpy, one ECB
  call over them (ECB of distinct counters is the CTR keystream), each
  protected range's keystream copied into a zeroed image of the buffer span
  (one memoryview slice assignment per range), one numpy XOR.  ~6x faster
  than per sample on audio (~360 MB/s, bound by the per-sample Python walk
  and the per-range copies), slower on big samples (extra numpy passes);
- :func:`encrypt_cenc` runs samples of at least :data:`CTR_MIN_SAMPLE` bytes
  per sample and batches the rest (unless they are too few to pay for a
  batch), so it is about as fast as the better of the two on either layout.

Batches are cut at :data:`BATCH_BYTES` of keystream so the numpy scratch
stays small and is reused (see ``cbcs._Arena``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from origin.crypto.cbcs import LOCKSTEP_CELLS, arena, check_extent, writable_view
from origin.crypto.cipher_contexts import encryptor
from origin.crypto.subsample import SampleCrypto

BLOCK = 16
KEY_SIZE = 16
IV_SIZE = 8
BATCH_BYTES = BLOCK * LOCKSTEP_CELLS  # keystream per batched ECB call (bounds scratch memory)
SPARSE_SLACK = 64 * 1024  # XOR range by range when the keystream image would be mostly zeros
CTR_MIN_SAMPLE = 16 * 1024  # smaller samples are batched (marginal break-even ~18 KB)

# Cost model (seconds), measured with bench/protect_cipher.py-style layouts: a
# batch has a fixed cost (~15 numpy calls and an ECB encryptor), so a few
# small samples run per sample instead.
_BATCH_FIXED = 80e-6
_BATCH_SAMPLE = 2e-6
_BATCH_BYTE = 0.7e-9
_CTR_SAMPLE = 12e-6  # mostly creating the encryptor
_CTR_BYTE = 0.15e-9
_NEVER = 1 << 62

# Batched samples: protected ranges (buffer start, length, keystream offset),
# each sample's IV, each sample's keystream blocks.
_Batch = tuple[list[tuple[int, int, int]], list[bytes], list[int]]


def encrypt_cenc(
    key: bytes,
    buf: bytearray | memoryview,
    samples: Sequence[SampleCrypto],
    ivs: Sequence[bytes],
) -> None:
    """Encrypt ``samples`` of ``buf`` in place under ``cenc``; ``ivs[i]`` is sample i's IV.

    ``buf`` is a writable buffer (e.g. an mdat payload); sample offsets index
    into it.  ``ValueError`` on a key that is not 16 bytes, an IV count that
    differs from the sample count or an IV that is not 8 bytes, a read-only
    buffer, or samples outside the buffer or overlapping; nothing is
    encrypted then.
    """
    _encrypt(key, buf, samples, ivs, CTR_MIN_SAMPLE)


def encrypt_cenc_per_sample(
    key: bytes,
    buf: bytearray | memoryview,
    samples: Sequence[SampleCrypto],
    ivs: Sequence[bytes],
) -> None:
    """:func:`encrypt_cenc` with one CTR encryptor per sample (benchmarks and tests)."""
    _encrypt(key, buf, samples, ivs, 0)


def encrypt_cenc_batched(
    key: bytes,
    buf: bytearray | memoryview,
    samples: Sequence[SampleCrypto],
    ivs: Sequence[bytes],
) -> None:
    """:func:`encrypt_cenc` with every sample in the batched ECB keystream (benchmarks, tests)."""
    _encrypt(key, buf, samples, ivs, _NEVER)


def _encrypt(
    key: bytes,
    buf: bytearray | memoryview,
    samples: Sequence[SampleCrypto],
    ivs: Sequence[bytes],
    ctr_min: int,
) -> None:
    """Samples of ``ctr_min`` bytes or more run per sample, the rest batched."""
    if len(key) != KEY_SIZE:
        raise ValueError("cenc needs a 16-byte AES-128 key")
    if len(ivs) != len(samples):
        raise ValueError("need exactly one IV per sample")
    view = writable_view(buf)

    # Walk the samples once (validating them) before touching the buffer.
    alone: list[tuple[SampleCrypto, bytes]] = []
    small: list[tuple[SampleCrypto, bytes]] = []  # batched, unless too few to pay off
    small_bytes = 0
    batches: list[_Batch] = []
    ranges: list[tuple[int, int, int]] = []  # buffer start, length, keystream offset
    batch_ivs: list[bytes] = []
    batch_blocks: list[int] = []
    ks_base = 0  # keystream offset of the current batched sample
    top = 0
    ordered = True
    for sample, iv in zip(samples, ivs, strict=True):
        if len(iv) != IV_SIZE:
            raise ValueError("cenc per-sample IVs must be 8 bytes")
        pos = sample.offset
        if pos < top:
            ordered = False
        if pos + sample.size > top:
            top = pos + sample.size
        if sample.size >= ctr_min:
            alone.append((sample, iv))
            continue
        small.append((sample, iv))
        small_bytes += sample.size
        if not sample.subsamples:
            used = sample.size
            if used:
                ranges.append((pos, used, ks_base))
        else:
            used = 0
            for sub in sample.subsamples:
                pos += sub.clear
                if sub.protected:
                    ranges.append((pos, sub.protected, ks_base + used))
                    used += sub.protected
                pos += sub.protected
        if used:
            blocks = -(-used // BLOCK)
            batch_ivs.append(iv)
            batch_blocks.append(blocks)
            ks_base += BLOCK * blocks
            if ks_base >= BATCH_BYTES:
                batches.append((ranges, batch_ivs, batch_blocks))
                ranges, batch_ivs, batch_blocks, ks_base = [], [], [], 0
    if ranges:
        batches.append((ranges, batch_ivs, batch_blocks))
    check_extent(samples, len(view), top, ordered)

    aes = algorithms.AES(key)
    n = len(small)
    batch_cost = _BATCH_FIXED + n * _BATCH_SAMPLE + small_bytes * _BATCH_BYTE
    if ctr_min == _NEVER or batch_cost < n * _CTR_SAMPLE + small_bytes * _CTR_BYTE:
        for batch in batches:
            _batched(aes, view, *batch, ordered)
    else:
        alone += small
    if alone:
        _per_sample(aes, view, alone)


def _per_sample(
    aes: algorithms.AES, view: memoryview, work: Sequence[tuple[SampleCrypto, bytes]]
) -> None:
    """One CTR encryptor per sample, fed its protected ranges in order, each through the
    thread's reused scratch buffer (no fresh, zero-filled one per fragment)."""
    scratch = arena.take("ctr-scratch", max(s.size for s, _ in work) + BLOCK).data
    pad = bytes(8)
    for sample, iv in work:
        ctr = encryptor(aes, modes.CTR(iv + pad))
        if not sample.subsamples:
            end = sample.offset + sample.size
            n = ctr.update_into(view[sample.offset : end], scratch)
            view[sample.offset : end] = scratch[:n]
            continue
        pos = sample.offset
        for sub in sample.subsamples:
            pos += sub.clear
            if sub.protected:
                end = pos + sub.protected
                n = ctr.update_into(view[pos:end], scratch)
                view[pos:end] = scratch[:n]
            pos += sub.protected


def _batched(
    aes: algorithms.AES,
    view: memoryview,
    ranges: Sequence[tuple[int, int, int]],
    ivs: Sequence[bytes],
    sample_blocks: Sequence[int],
    ordered: bool,
) -> None:
    """One ECB call over every counter block, then one XOR of a keystream image.

    The image is a zeroed copy of the buffer span with each range's keystream
    at its place; if the span is mostly other (per-sample) samples, each range
    is XORed on its own instead.
    """
    nblocks = np.array(sample_blocks, np.int64)
    total = int(nblocks.sum())
    first = np.cumsum(nblocks) - nblocks
    # Counter block n of sample i is IV_i ‖ n (64-bit big-endian): rows of two u64
    # whose bytes in memory are exactly those 16 bytes, on any host.
    counters = arena.take("counters", BLOCK * total).view(np.uint64).reshape(total, 2)
    step = arena.take("step", 8 * total).view(np.int64)  # cumsum of steps = sample, then n
    step[:] = 0
    step[first[1:]] = 1
    np.cumsum(step, out=step)  # sample of each block
    np.take(np.frombuffer(b"".join(ivs), np.uint64), step, out=counters[:, 0], mode="clip")
    step[:] = 1
    step[first] = np.concatenate(([0], 1 - nblocks[:-1]))  # back to 0 at each sample's start
    np.cumsum(step, out=step)  # block number inside the sample
    np.copyto(counters[:, 1].view(">u8"), step, casting="unsafe")
    keystream = arena.take("keystream", BLOCK * total + BLOCK)  # +16: update_into's spare
    # ECB over distinct counter blocks is exactly the CTR keystream.
    ecb = Cipher(aes, modes.ECB()).encryptor()  # noqa: S305
    ecb.update_into(counters.view(np.uint8).data, keystream.data)

    if ordered:  # ranges were listed in buffer order
        lo, hi = ranges[0][0], ranges[-1][0] + ranges[-1][1]
    else:
        lo, hi = min(r[0] for r in ranges), max(r[0] + r[1] for r in ranges)
    src = keystream.data
    if hi - lo > 2 * len(keystream) + SPARSE_SLACK:  # big per-sample samples in between
        data = np.frombuffer(view, np.uint8)
        for start, length, at in ranges:
            part = data[start : start + length]
            np.bitwise_xor(part, keystream[at : at + length], out=part)
        return
    image = arena.take("image", hi - lo)
    image.fill(0)
    dst = image.data
    for start, length, at in ranges:
        dst[start - lo : start - lo + length] = src[at : at + length]
    data = np.frombuffer(view, np.uint8, hi - lo, lo)
    np.bitwise_xor(data, image, out=data)
