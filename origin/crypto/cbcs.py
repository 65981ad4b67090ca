"""Common Encryption ``cbcs``: AES-128-CBC with a constant IV and a block pattern, in place.

Rules (ISO/IEC 23001-7 §9.6, §10.4; SPECS §1.3, §9 items 1–2):

- one constant 16-byte IV; **every** subsample's protected range starts a new
  CBC chain from it (never continue the chain across subsamples);
- inside a range the pattern is ``crypt`` 16-byte blocks encrypted, ``skip``
  blocks left clear, repeated from the first byte of the range; the chain runs
  through the encrypted blocks only;
- a block is encrypted only if 16 whole bytes remain at its position, so a
  trailing partial block (< 16 B) stays clear and a final exact 16-byte block
  is encrypted; a last period with fewer than ``crypt`` whole blocks left
  encrypts those it has (ISO §10.4.2 as Chromium's cbcs decryptor reads it;
  FFmpeg leaves them clear — the two agree whenever ``crypt == 1``, the only
  value origin writes);
- pattern ``0:0`` and ``N:0`` mean every whole block;
- a sample without subsamples (audio) is one range in which every whole block
  is encrypted whatever the pattern (FFmpeg; Shaka Packager writes audio with
  pattern 0:0, so players agree).  Chromium applies a non-zero pattern to such
  a sample too, so callers must never pair full-sample protection with a
  1:9 ``tenc``.

Hot path (DESIGN "Hot path rules").  A chain is either *contiguous* (a full
sample, or a pattern without skip: blocks back to back) or *patterned*
(1:9 video: one block every 160 bytes).  When every patterned chain is long
(``ALONE_MIN_BLOCKS``, video slices), each chain's blocks are one strided view of
the buffer, gathered into a contiguous run, encrypted alone and scattered back.
Otherwise patterned blocks are gathered for the whole fragment with one numpy
fancy index over a 16-byte-wide view of the buffer that starts at every byte,
and scattered back with one assignment; contiguous chains are read straight from
the buffer.  The chains then run in one of two ways, chosen per fragment by a
cost model:

- *alone*, one OpenSSL CBC call per chain (long chains: video).  Creating an
  encryptor costs ~10 µs, so a single CBC encryptor runs all chains back to
  back: before each chain after the first, its first plaintext block is
  XORed with ``IV ⊕ previous ciphertext block``, which turns the running CBC
  state into a restart from the IV;
- *lockstep* (many short chains: audio frames of ~400 B are 25 blocks).
  Block ``j`` of a chain is ``E(P_j ⊕ C_{j-1})``, independent across chains,
  so one ECB call encrypts block ``j`` of every chain at once: ``longest
  chain`` calls instead of ``chains`` calls.  The blocks sit in a table with
  one row per block position and one column per chain, columns sorted
  longest first, so the chains still running at row ``j`` are a prefix;
  tables are cut at :data:`LOCKSTEP_CELLS` blocks.

Measured (bench/protect_cipher.py, 1 MiB, AMD EPYC, OpenSSL 4.0): video 1:9
~2.7 GB/s of segment bytes (a quarter of the time is the CBC itself, a
quarter the 16-byte gather/scatter, the rest numpy set-up and the per-chain
Python loop); audio full-sample ~750 MB/s in lockstep against ~170 MB/s
with one CBC call per frame.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from origin.crypto.subsample import SampleCrypto

BLOCK = 16
KEY_SIZE = 16
IV_SIZE = 16
MAX_PATTERN = 15  # crypt and skip are 4-bit fields of tenc v1

# Cost model for running chains alone or in lockstep, in seconds, fitted to
# runs of bench/protect_cipher.py-style layouts (AMD EPYC with AES-NI,
# OpenSSL 4.0); only the ratios matter.
_COST_CHAIN = 2.0e-6  # a chain run alone: fix-up, update_into, copies
_COST_CBC_BLOCK = 8e-9  # a block of serial CBC
_COST_ROUND = 1.5e-6  # a lockstep round: XOR + one ECB call
_COST_SLOT_CONTIGUOUS = 20e-9  # a lockstep table cell: gather, transposes, XOR, ECB, scatter
_COST_SLOT_PATTERNED = 5e-9  # (patterned blocks are gathered either way)

IntArray = npt.NDArray[np.int64]
Table = npt.NDArray[np.void]
ByteArray = npt.NDArray[np.uint8]

ALONE_MIN_BLOCKS = 64  # chains this long run alone whatever the cost model would say
LOCKSTEP_CELLS = 1 << 16  # lockstep tables hold at most this many blocks (1 MiB) at a time
ARENA_KEEP = 4 << 20  # largest scratch buffer a thread keeps, per slot


class _Arena(threading.local):
    """Per-thread scratch buffers, reused from call to call.

    A fresh multi-megabyte numpy array comes from mmap and page-faults on
    first touch: batched ``cenc`` took ~870 faults per 1 MB fragment without
    this, ≈2.5 µs each on the benchmark VM, more than the AES.  Buffers up to
    :data:`ARENA_KEEP` bytes are kept, per slot name and per thread (so
    executor threads never share one); bigger requests are allocated afresh.
    Lockstep tables and batched keystreams are processed in chunks of at most
    1 MiB, so a thread keeps a few MiB plus a fifth of its largest video
    fragment (the gathered 1:9 blocks).
    """

    def __init__(self) -> None:
        self.slots: dict[str, ByteArray] = {}

    def take(self, slot: str, nbytes: int) -> ByteArray:
        """``nbytes`` uninitialised bytes, valid until the next ``take`` of ``slot``."""
        kept = self.slots.get(slot)
        if kept is not None and len(kept) >= nbytes:
            return kept[:nbytes]
        if nbytes > ARENA_KEEP:
            return np.empty(nbytes, np.uint8)
        grown = min(ARENA_KEEP, 2 * len(kept)) if kept is not None else 0
        fresh = np.empty(max(nbytes, grown), np.uint8)
        self.slots[slot] = fresh
        return fresh[:nbytes]


arena = _Arena()


def writable_view(buf: bytearray | memoryview) -> memoryview:
    """``buf`` as a flat, writable byte memoryview; ``ValueError`` if it is not one."""
    view = memoryview(buf)
    if view.readonly:
        raise ValueError("buffer is read-only")
    if not view.c_contiguous:
        raise ValueError("buffer is not contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def check_extent(samples: Sequence[SampleCrypto], size: int, top: int, ordered: bool) -> None:
    """``ValueError`` unless all samples end by ``size`` and none overlap.

    ``top`` is the largest sample end; ``ordered`` says the samples were seen
    in buffer order without overlap (the usual case, checked while walking
    them); otherwise they are sorted here and checked again.
    """
    if top > size:
        raise ValueError("sample extends past the end of the buffer")
    if ordered:
        return
    nonempty = [s for s in samples if s.size]  # an empty sample overlaps nothing
    offsets = np.fromiter((s.offset for s in nonempty), np.int64, len(nonempty))
    ends = offsets + np.fromiter((s.size for s in nonempty), np.int64, len(nonempty))
    order = np.argsort(offsets, kind="stable")
    if np.any(offsets[order[1:]] < ends[order[:-1]]):
        raise ValueError("samples overlap")


def windows(view: memoryview, width: int) -> Table:
    """Writable ``width``-byte windows of ``view`` starting at every byte (stride 1)."""
    return np.ndarray((len(view) - width + 1,), dtype=f"V{width}", buffer=view, strides=(1,))


def _pattern(crypt: int, skip: int) -> tuple[int, int]:
    """(blocks encrypted per period, period in bytes) for subsample ranges."""
    if not (0 <= crypt <= MAX_PATTERN and 0 <= skip <= MAX_PATTERN):
        raise ValueError("crypt and skip must be 0..15")
    if crypt == 0 and skip != 0:
        raise ValueError("pattern 0:N encrypts nothing")
    if skip == 0:
        return 1, BLOCK  # 0:0 and N:0 both mean every whole block
    return crypt, BLOCK * (crypt + skip)


def _protected_ranges(
    samples: Sequence[SampleCrypto], size: int, patterned: bool
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Start and length of the contiguous ranges, then of the patterned ranges.

    Also validates the layout (:func:`check_extent`) against a ``size``-byte buffer.
    """
    c_start: list[int] = []
    c_len: list[int] = []
    p_start: list[int] = []
    p_len: list[int] = []
    sub_start, sub_len = (p_start, p_len) if patterned else (c_start, c_len)
    top = 0
    ordered = True
    for sample in samples:
        pos = sample.offset
        if pos < top:
            ordered = False
        if pos + sample.size > top:
            top = pos + sample.size
        if not sample.subsamples:
            c_start.append(pos)
            c_len.append(sample.size)
            continue
        for sub in sample.subsamples:
            pos += sub.clear
            if sub.protected:
                sub_start.append(pos)
                sub_len.append(sub.protected)
            pos += sub.protected
    check_extent(samples, size, top, ordered)
    return c_start, c_len, p_start, p_len


def _longest_first(start: IntArray, nblocks: IntArray) -> tuple[IntArray, IntArray]:
    """Chains with at least one block, longest first."""
    keep = np.flatnonzero(nblocks)
    order = keep[np.argsort(-nblocks[keep], kind="stable")]
    return start[order], nblocks[order]


def _lockstep_split(nblocks: IntArray, slot_cost: float) -> int:
    """How many of the (longest-first) chains run alone; the rest run in lockstep."""
    chains = len(nblocks)
    alone = np.arange(chains + 1)
    rounds = np.concatenate((nblocks, [0]))  # lockstep rounds if `alone` chains run alone
    cost = (
        alone * _COST_CHAIN
        + np.concatenate(([0], np.cumsum(nblocks))) * _COST_CBC_BLOCK
        + rounds * _COST_ROUND
        + (chains - alone) * rounds * slot_cost
    )
    return int(np.argmin(cost))


def _column_chunks(nblocks: IntArray) -> list[tuple[int, int]]:
    """Split longest-first chains into runs whose lockstep table fits LOCKSTEP_CELLS."""
    chunks = []
    c0, chains = 0, len(nblocks)
    while c0 < chains:
        c1 = min(chains, c0 + max(1, LOCKSTEP_CELLS // int(nblocks[c0])))
        chunks.append((c0, c1))
        c0 = c1
    return chunks


def _row_sizes(nblocks: IntArray) -> IntArray:
    """Chains still running at each block position (``nblocks`` longest first)."""
    rounds = int(nblocks[0])
    return len(nblocks) - np.searchsorted(nblocks[::-1], np.arange(rounds), side="right")


class _Chains:
    """Runs CBC chains that all start from one IV; see the module docstring."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self.aes = algorithms.AES(key)
        self.iv = iv
        self.ivx = int.from_bytes(iv, "little")
        self.prev = -1  # IV ⊕ last ciphertext block of the running CBC encryptor
        self.cbc = Cipher(self.aes, modes.CBC(iv)).encryptor()

    def alone(self, src: memoryview, dst: memoryview) -> None:
        """One chain: ``src`` (whole blocks, modified) → ``dst`` (15 spare bytes)."""
        if self.prev >= 0:  # restart from the IV: P_0 ⊕ IV ⊕ C_prev
            head = int.from_bytes(src[:BLOCK], "little") ^ self.prev
            src[:BLOCK] = head.to_bytes(BLOCK, "little")
        n = self.cbc.update_into(src, dst)
        self.prev = int.from_bytes(dst[n - BLOCK : n], "little") ^ self.ivx

    def lockstep(self, plain: Table, rows: IntArray) -> Table:
        """Encrypt table ``plain`` (block position × chain, longest chain first) by rows.

        Returns the ciphertext table; ``plain`` is used as scratch.
        """
        positions, chains = plain.shape
        cipher = arena.take("cipher", BLOCK * (positions * chains + 1)).view("V16")  # +1 spare
        pin = plain.reshape(-1).view(np.uint8).data
        cout = cipher.view(np.uint8).data
        p64 = plain.reshape(-1).view(np.uint64).reshape(positions, chains, 2)
        c64 = cipher[:-1].view(np.uint64).reshape(positions, chains, 2)
        # ECB here is one CBC step per row (input already XORed with C_{j-1}).
        ecb = Cipher(self.aes, modes.ECB()).encryptor()  # noqa: S305
        iv64 = np.frombuffer(self.iv, np.uint64)
        for j, live in enumerate(rows.tolist()):
            row = p64[j, :live]
            np.bitwise_xor(row, c64[j - 1, :live] if j else iv64, out=row)
            at = BLOCK * chains * j
            ecb.update_into(pin[at : at + BLOCK * live], cout[at:])
        return cipher[:-1].reshape(positions, chains)


def _table(positions: int, chains: int) -> Table:
    """An uninitialised lockstep table (block position × chain) of 16-byte cells."""
    return arena.take("table", BLOCK * positions * chains).view("V16").reshape(positions, chains)


def _contiguous(chains: _Chains, view: memoryview, start: IntArray, nblocks: IntArray) -> None:
    """Chains of back-to-back blocks (full samples, or patterns without skip)."""
    start, nblocks = _longest_first(start, nblocks)
    if not len(start):
        return
    alone = _lockstep_split(nblocks, _COST_SLOT_CONTIGUOUS)
    if alone:
        scratch = memoryview(bytearray(BLOCK * int(nblocks[0]) + BLOCK))
        for s, n in zip(start[:alone].tolist(), (BLOCK * nblocks[:alone]).tolist(), strict=True):
            chains.alone(view[s : s + n], scratch)
            view[s : s + n] = scratch[:n]
    for c0, c1 in _column_chunks(nblocks[alone:]):
        _contiguous_lockstep(
            chains, view, start[alone + c0 : alone + c1], nblocks[alone + c0 : alone + c1]
        )


def _contiguous_lockstep(
    chains: _Chains, view: memoryview, start: IntArray, nblocks: IntArray
) -> None:
    """Contiguous chains (longest first) in lockstep."""
    rows = _row_sizes(nblocks)
    table = _table(len(rows), len(start))
    # Chains of equal length are neighbours: gather each group as wide windows.
    cuts = [0, *(np.flatnonzero(np.diff(nblocks)) + 1).tolist(), len(start)]
    groups = [(a, b, int(nblocks[a])) for a, b in pairwise(cuts)]
    for a, b, n in groups:
        wide = windows(view, BLOCK * n)[start[a:b]]
        table[:n, a:b] = wide.view("V16").reshape(b - a, n).T
    table = chains.lockstep(table, rows)
    for a, b, n in groups:
        wide = np.ascontiguousarray(table[:n, a:b].T).view(f"V{BLOCK * n}").reshape(-1)
        windows(view, BLOCK * n)[start[a:b]] = wide


def _patterned(
    chains: _Chains, view: memoryview, start: IntArray, nblocks: IntArray, crypt: int, period: int
) -> None:
    """Chains of ``crypt`` blocks every ``period`` bytes (1:9 video subsamples)."""
    live = nblocks > 0
    if crypt == 1 and live.any() and int(nblocks[live].min()) >= ALONE_MIN_BLOCKS:
        _patterned_alone(chains, view, start[live], nblocks[live], period)
        return
    start, nblocks = _longest_first(start, nblocks)
    if not len(start):
        return
    # Buffer offset of every encrypted block, chain after chain.
    total = int(nblocks.sum())
    first = np.cumsum(nblocks) - nblocks
    chain = np.repeat(np.arange(len(start)), nblocks)
    index = np.arange(total) - first[chain]  # block number inside its chain
    if crypt == 1:
        offsets = start[chain] + period * index
    else:
        offsets = start[chain] + period * (index // crypt) + BLOCK * (index % crypt)
    blocks = windows(view, BLOCK)

    alone = _lockstep_split(nblocks, _COST_SLOT_PATTERNED)
    split = total if alone == len(start) else int(first[alone])
    if alone:
        plain = arena.take("gathered", BLOCK * (split + 1)).view("V16")  # +1: 15 spare bytes
        plain[:split] = blocks[offsets[:split]]
        cipher = arena.take("encrypted", BLOCK * (split + 1)).view("V16")
        pin = plain.view(np.uint8).data
        cout = cipher.view(np.uint8).data
        bounds = (BLOCK * np.concatenate((first[:alone], [split]))).tolist()
        for a, b in pairwise(bounds):
            chains.alone(pin[a:b], cout[a:])
        blocks[offsets[:split]] = cipher[:split]
    ends = [*first.tolist(), total]
    for c0, c1 in _column_chunks(nblocks[alone:]):
        c0, c1 = c0 + alone, c1 + alone
        part = slice(ends[c0], ends[c1])
        rows = _row_sizes(nblocks[c0:c1])
        table = _table(len(rows), c1 - c0)
        slots = index[part] * (c1 - c0) + (chain[part] - c0)  # row-major (position, chain)
        table.reshape(-1)[slots] = blocks[offsets[part]]
        blocks[offsets[part]] = chains.lockstep(table, rows).reshape(-1)[slots]


def _patterned_alone(
    chains: _Chains, view: memoryview, start: IntArray, nblocks: IntArray, period: int
) -> None:
    """Long 1-block-per-period chains (video slices), every one run alone: each chain's
    blocks are one strided view of the buffer, gathered into a contiguous run, encrypted
    by the running CBC encryptor and scattered back (two copies of a tenth of the bytes;
    no index arrays, no sort, no cost model)."""
    total = int(nblocks.sum())
    plain = arena.take("gathered", BLOCK * (total + 1)).view("V16")  # +1: 15 spare bytes
    cipher = arena.take("encrypted", BLOCK * (total + 1)).view("V16")
    pin = plain.view(np.uint8).data
    cout = cipher.view(np.uint8).data
    runs = []
    at = 0
    for s, n in zip(start.tolist(), nblocks.tolist(), strict=True):
        blocks = np.ndarray((n,), "V16", buffer=view, offset=s, strides=(period,))
        plain[at : at + n] = blocks
        runs.append((blocks, at, at + n))
        at += n
    for blocks, a, b in runs:
        chains.alone(pin[BLOCK * a : BLOCK * b], cout[BLOCK * a :])
        blocks[...] = cipher[a:b]


def encrypt_cbcs(
    key: bytes,
    iv: bytes,
    buf: bytearray | memoryview,
    samples: Sequence[SampleCrypto],
    *,
    crypt: int,
    skip: int,
) -> None:
    """Encrypt ``samples`` of ``buf`` in place under ``cbcs`` with pattern ``crypt:skip``.

    ``buf`` is a writable buffer (e.g. an mdat payload); sample offsets index
    into it.  Samples without subsamples are encrypted whole (every whole
    block, no pattern).  ``ValueError`` on a key or IV that is not 16 bytes, a
    pattern outside 0..15 or of the form 0:N, a read-only buffer, or samples
    outside the buffer or overlapping.
    """
    if len(key) != KEY_SIZE:
        raise ValueError("cbcs needs a 16-byte AES-128 key")
    if len(iv) != IV_SIZE:
        raise ValueError("cbcs needs a 16-byte constant IV")
    crypt_blocks, period = _pattern(crypt, skip)
    view = writable_view(buf)
    c_start, c_len, p_start, p_len = _protected_ranges(samples, len(view), period > BLOCK)
    chains = _Chains(key, iv)
    if c_start:
        _contiguous(chains, view, np.array(c_start, np.int64), np.array(c_len, np.int64) // BLOCK)
    if p_start:
        length = np.array(p_len, np.int64)
        periods = length // period
        nblocks = periods * crypt_blocks + np.minimum(
            crypt_blocks, (length - periods * period) // BLOCK
        )
        _patterned(chains, view, np.array(p_start, np.int64), nblocks, crypt_blocks, period)
