"""HLS ``METHOD=SAMPLE-AES`` for MPEG-TS: the cipher side (SPECS §2.3).

AES-128-CBC, no padding, the chain restarted from the playlist IV for every
protected unit:

- a video NAL unit (H.264 types 1 and 5 longer than 48 bytes, counted in the
  bytes of the NAL as it is in the elementary stream): bytes 0–31 clear, then
  16 encrypted and up to 144 clear, repeated while *more than* 16 bytes remain,
  so a block ending exactly at the end of the NAL stays clear (hls.js
  ``pos < len - 16``, FFmpeg ``rem_bytes > 16``).  That is
  ``ceil((L - 48) / 160)`` blocks at offsets ``32 + 160 k``;
- an audio frame's protected range (what follows the clear lead): every whole
  16-byte block, a trailing partial block clear.

Emulation prevention and framing are the caller's (``origin.container.sample_aes``).

Hot path (DESIGN "Hot path rules"): the blocks of every chain of a call are
gathered with one numpy fancy index over a 16-byte-wide, stride-1 view of the
buffer, encrypted by one OpenSSL CBC encryptor — one ``update_into`` call per
chain; before each chain after the first its first plaintext block is XORed
with ``IV ⊕ previous ciphertext block``, which turns the running CBC state into
a restart from the IV — and scattered back with one assignment.  No per-byte or
per-block Python loop; one short Python step per chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
KEY_SIZE = 16
IV_SIZE = 16
VIDEO_CLEAR_LEAD = 32  # NAL header + 31 bytes
VIDEO_MIN_PROTECTED_NAL = 49  # "longer than 48 bytes"
VIDEO_PERIOD = 160  # 16 bytes encrypted, then up to 144 clear
AUDIO_CLEAR_LEAD = 16  # after the frame header (AAC) or from the syncword (AC-3, E-AC-3)

IntArray = npt.NDArray[np.int64]


def _check(key: bytes, iv: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError("SAMPLE-AES needs a 16-byte AES-128 key")
    if len(iv) != IV_SIZE:
        raise ValueError("SAMPLE-AES needs a 16-byte IV")


def nal_blocks(length: int) -> int:
    """How many 16-byte blocks of a NAL unit of ``length`` bytes are encrypted."""
    if length < VIDEO_MIN_PROTECTED_NAL:
        return 0
    return (length - VIDEO_CLEAR_LEAD - BLOCK + VIDEO_PERIOD - 1) // VIDEO_PERIOD


def _writable(buf: bytearray | memoryview) -> memoryview:
    view = memoryview(buf)
    if view.readonly or not view.c_contiguous:
        raise ValueError("buffer must be writable and contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def run_chains(key: bytes, iv: bytes, buf: bytearray | memoryview, starts: IntArray,
               nblocks: IntArray, period: int) -> None:
    """Chain ``i``: ``nblocks[i]`` blocks at ``starts[i] + period * k``; each from ``iv``.

    The blocks are gathered into one array (chain after chain), encrypted by
    one CBC encryptor with one ``update_into`` per chain, and scattered back.
    """
    _check(key, iv)
    view = _writable(buf)
    keep = nblocks > 0
    starts, nblocks = starts[keep], nblocks[keep]
    total = int(nblocks.sum())
    if not total:
        return
    first = np.cumsum(nblocks) - nblocks
    chain = np.repeat(np.arange(len(starts)), nblocks)
    offsets = starts[chain] + period * (np.arange(total) - first[chain])
    if offsets.min() < 0 or offsets.max() + BLOCK > len(view):
        raise ValueError("protected block outside the buffer")
    windows = np.ndarray((len(view) - BLOCK + 1,), dtype=f"V{BLOCK}", buffer=view, strides=(1,))
    plain = np.empty(total, f"V{BLOCK}")
    plain[:] = windows[offsets]
    cipher = np.empty(total + 1, f"V{BLOCK}")  # one spare block: update_into wants 15 more bytes
    src = plain.view(np.uint8).data
    dst = cipher.view(np.uint8).data
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ivx = int.from_bytes(iv, "little")
    restart = -1  # IV ⊕ last ciphertext block, once a chain has run
    for a, b in pairwise((BLOCK * np.concatenate((first, [total]))).tolist()):
        if restart >= 0:  # P_0 ⊕ IV ⊕ C_prev: the CBC state restarts from the IV
            head = int.from_bytes(src[a:a + BLOCK], "little") ^ restart
            src[a:a + BLOCK] = head.to_bytes(BLOCK, "little")
        enc.update_into(src[a:b], dst[a:])
        restart = int.from_bytes(dst[b - BLOCK:b], "little") ^ ivx
    enc.finalize()
    windows[offsets] = cipher[:total]


def encrypt_nals(key: bytes, iv: bytes, buf: bytearray | memoryview,
                 nals: Sequence[tuple[int, int]]) -> None:
    """Encrypt, in place, the NAL units ``(offset, length)`` of ``buf`` (SAMPLE-AES video).

    Each NAL is one CBC chain from ``iv``; NALs of 48 bytes or fewer are left
    alone.  Emulation prevention is the caller's business (it is applied to
    the whole NAL afterwards).
    """
    if not nals:
        return
    spans = np.array(nals, np.int64).reshape(-1, 2)
    lengths = spans[:, 1]
    nblocks = np.where(lengths >= VIDEO_MIN_PROTECTED_NAL,
                       (lengths - VIDEO_CLEAR_LEAD - BLOCK + VIDEO_PERIOD - 1) // VIDEO_PERIOD, 0)
    run_chains(key, iv, buf, spans[:, 0] + VIDEO_CLEAR_LEAD, nblocks, VIDEO_PERIOD)


def encrypt_ranges(key: bytes, iv: bytes, buf: bytearray | memoryview,
                   ranges: Sequence[tuple[int, int]]) -> None:
    """Encrypt, in place, every whole block of each range ``(offset, length)``; one chain each."""
    if not ranges:
        return
    spans = np.array(ranges, np.int64).reshape(-1, 2)
    run_chains(key, iv, buf, spans[:, 0], np.maximum(spans[:, 1], 0) // BLOCK, BLOCK)

