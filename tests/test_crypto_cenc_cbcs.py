"""Common Encryption ``cbcs`` and ``cenc``: the fast in-place ciphers against the slow reference.

The reference (``tests.reference.cenc_reference``) is written block by block
from the spec with the pure-Python AES; the decryptors here use
``cryptography`` one range/sample at a time; ``openssl enc`` checks one
sample of each scheme independently of both.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.crypto import cbcs as cbcs_module
from origin.crypto import cenc as cenc_module
from origin.crypto import cipher_contexts
from origin.crypto.cbcs import encrypt_cbcs
from origin.crypto.cenc import encrypt_cenc, encrypt_cenc_batched, encrypt_cenc_per_sample
from origin.crypto.iv import derive_sample_ivs
from origin.crypto.subsample import SampleCrypto, Subsample
from tests.reference.cenc_reference import cbcs_reference, cenc_reference, protected_ranges

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
IV16 = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
IV8 = bytes.fromhex("f0f1f2f3f4f5f6f7")
PATTERNS = [(1, 9), (1, 0), (0, 0), (2, 3)]
CENC_FUNCTIONS = [encrypt_cenc, encrypt_cenc_per_sample, encrypt_cenc_batched]
CencFunction = Callable[[bytes, bytearray, Sequence[SampleCrypto], Sequence[bytes]], None]

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------
# Layouts


@contextmanager
def chain_mode(mode: str) -> Iterator[None]:
    """Force cbcs chains to run alone, in lockstep, or as the cost model picks."""
    if mode == "auto":
        yield
        return
    force = {
        "alone": lambda nblocks, _cost: len(nblocks),
        "lockstep": lambda nblocks, _cost: 0,
        "half": lambda nblocks, _cost: len(nblocks) // 2,
    }[mode]
    with mock.patch.object(cbcs_module, "_lockstep_split", force):
        yield


@contextmanager
def chunk_cells(cells: int | None) -> Iterator[None]:
    """Shrink the lockstep table / batched keystream chunk to ``cells`` blocks."""
    if cells is None:
        yield
        return
    with (
        mock.patch.object(cbcs_module, "LOCKSTEP_CELLS", cells),
        mock.patch.object(cenc_module, "BATCH_BYTES", 16 * cells),
    ):
        yield


protected_sizes = st.one_of(
    st.sampled_from([0, 1, 5, 15, 16, 17, 159, 160, 161, 175, 176, 177]),
    st.integers(0, 600),
)


@st.composite
def one_sample(draw: st.DrawFn, offset: int) -> SampleCrypto:
    if draw(st.booleans()):
        return SampleCrypto(offset, draw(st.integers(0, 600)))  # full-sample
    subs: list[Subsample] = []
    for _ in range(draw(st.integers(1, 3))):
        subs.append(Subsample(draw(st.integers(0, 40)), draw(protected_sizes)))
        if sum(s.clear + s.protected for s in subs) > 600:
            break
    return SampleCrypto(offset, sum(s.clear + s.protected for s in subs), tuple(subs))


@st.composite
def layouts(draw: st.DrawFn) -> tuple[bytes, list[SampleCrypto]]:
    """Random data and samples inside it: gaps, empty samples, any order."""
    samples: list[SampleCrypto] = []
    pos = draw(st.integers(0, 8))
    for _ in range(draw(st.integers(0, 5))):
        sample = draw(one_sample(pos))
        samples.append(sample)
        pos += sample.size + draw(st.integers(0, 8))
    if draw(st.booleans()):
        samples = draw(st.permutations(samples))
    data = draw(st.binary(min_size=pos, max_size=pos + 8))
    return data, samples


# ---------------------------------------------------------------------------
# Independent decryptors: cryptography, one range / one sample at a time


def cbcs_decrypt(
    key: bytes, iv: bytes, data: bytes, samples: Sequence[SampleCrypto], crypt: int, skip: int
) -> bytes:
    out = bytearray(data)
    for sample in samples:
        every = not sample.subsamples or skip == 0
        for start, length in protected_ranges(sample):
            positions = [
                start + 16 * n for n in range(length // 16) if every or n % (crypt + skip) < crypt
            ]
            if not positions:
                continue
            gathered = b"".join(bytes(out[p : p + 16]) for p in positions)
            plain = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update(gathered)
            for i, p in enumerate(positions):
                out[p : p + 16] = plain[16 * i : 16 * i + 16]
    return bytes(out)


def cenc_decrypt(
    key: bytes, data: bytes, samples: Sequence[SampleCrypto], ivs: Sequence[bytes]
) -> bytes:
    out = bytearray(data)
    for sample, iv in zip(samples, ivs, strict=True):
        ctr = Cipher(algorithms.AES(key), modes.CTR(iv + bytes(8))).decryptor()
        for start, length in protected_ranges(sample):
            out[start : start + length] = ctr.update(bytes(out[start : start + length]))
    return bytes(out)


def ivs_for(samples: Sequence[SampleCrypto], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(8) for _ in samples]


def cbcs(data: bytes, samples: Sequence[SampleCrypto], crypt: int, skip: int) -> bytes:
    buf = bytearray(data)
    encrypt_cbcs(KEY, IV16, buf, samples, crypt=crypt, skip=skip)
    return bytes(buf)


def cenc(data: bytes, samples: Sequence[SampleCrypto], ivs: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    encrypt_cenc(KEY, buf, samples, ivs)
    return bytes(buf)


def aes_block(block: bytes, key: bytes = KEY) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------
# Properties: fast == reference, and decryption round trips


@PROPERTY
@given(
    layout=layouts(),
    pattern=st.sampled_from(PATTERNS),
    mode=st.sampled_from(["auto", "alone", "lockstep", "half"]),
    cells=st.sampled_from([None, 1, 7, 64]),
)
def test_cbcs_matches_reference(
    layout: tuple[bytes, list[SampleCrypto]],
    pattern: tuple[int, int],
    mode: str,
    cells: int | None,
) -> None:
    data, samples = layout
    crypt, skip = pattern
    with chain_mode(mode), chunk_cells(cells):
        out = cbcs(data, samples, crypt, skip)
    assert out == cbcs_reference(KEY, IV16, data, samples, crypt, skip)
    assert cbcs_decrypt(KEY, IV16, out, samples, crypt, skip) == data


@PROPERTY
@given(
    layout=layouts(),
    which=st.sampled_from(CENC_FUNCTIONS),
    cells=st.sampled_from([None, 1, 7, 64]),
)
def test_cenc_matches_reference(
    layout: tuple[bytes, list[SampleCrypto]], which: CencFunction, cells: int | None
) -> None:
    data, samples = layout
    ivs = ivs_for(samples)
    buf = bytearray(data)
    with chunk_cells(cells):
        which(KEY, buf, samples, ivs)
    assert bytes(buf) == cenc_reference(KEY, data, samples, ivs)
    assert cenc_decrypt(KEY, bytes(buf), samples, ivs) == data


@pytest.mark.parametrize("cells", [None, 50])
@pytest.mark.parametrize("mode", ["auto", "alone", "lockstep", "half"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_cbcs_round_trip_realistic_fragment(
    pattern: tuple[int, int], mode: str, cells: int | None
) -> None:
    """A fragment too big for the slow reference: video samples, audio frames, gaps."""
    rng = random.Random(7)
    samples: list[SampleCrypto] = []
    pos = 0
    for i in range(120):
        if i % 10 == 0:  # a video-like sample with several NAL-ish subsamples
            subs = tuple(Subsample(rng.randint(5, 40), rng.randint(0, 3000)) for _ in range(3))
            size = sum(s.clear + s.protected for s in subs)
            samples.append(SampleCrypto(pos, size, subs))
        else:  # an audio-like frame
            size = rng.randint(300, 500)
            samples.append(SampleCrypto(pos, size))
        pos += size + rng.randint(0, 3)
    data = rng.randbytes(pos)
    crypt, skip = pattern
    with chain_mode(mode), chunk_cells(cells):
        out = cbcs(data, samples, crypt, skip)
    assert cbcs_decrypt(KEY, IV16, out, samples, crypt, skip) == data
    with chain_mode("alone"):
        assert cbcs(data, samples, crypt, skip) == out


@pytest.mark.parametrize("cells", [None, 50])
@pytest.mark.parametrize("which", CENC_FUNCTIONS)
def test_cenc_round_trip_realistic_fragment(which: CencFunction, cells: int | None) -> None:
    """Small and large samples (both sides of the per-sample/batched threshold)."""
    rng = random.Random(8)
    samples: list[SampleCrypto] = []
    pos = 0
    for i in range(60):
        size = rng.randint(20_000, 40_000) if i % 7 == 0 else rng.randint(0, 3000)
        clear = rng.randint(0, min(size, 40))
        rest = size - clear
        if i % 3 == 0:
            samples.append(SampleCrypto(pos, size))
        else:
            cut = rng.randint(0, rest)
            subs = (Subsample(clear, cut), Subsample(0, rest - cut))
            samples.append(SampleCrypto(pos, size, subs))
        pos += size + rng.randint(0, 3)
    data = rng.randbytes(pos)
    ivs = ivs_for(samples, 1)
    buf = bytearray(data)
    with chunk_cells(cells):
        which(KEY, buf, samples, ivs)
    assert cenc_decrypt(KEY, bytes(buf), samples, ivs) == data
    expected = bytearray(data)
    encrypt_cenc_per_sample(KEY, expected, samples, ivs)
    assert buf == expected


# ---------------------------------------------------------------------------
# cbcs: the exact rules


def test_cbcs_chain_restarts_at_every_subsample() -> None:
    data = bytes(64)
    two = cbcs(data, [SampleCrypto(0, 64, (Subsample(0, 32), Subsample(0, 32)))], 1, 0)
    one = cbcs(data, [SampleCrypto(0, 64, (Subsample(0, 64),))], 1, 0)
    assert two != one
    assert two[32:64] == two[0:32]  # same plaintext, same IV: the chain restarted
    assert one[32:48] == aes_block(xor(one[16:32], bytes(16)))  # one chain continues
    first = aes_block(IV16)  # P = 0, so C0 = E(IV)
    assert two[0:16] == first and one[0:16] == first


def test_cbcs_chain_restarts_per_sample_too() -> None:
    data = bytes(64)
    out = cbcs(data, [SampleCrypto(0, 32), SampleCrypto(32, 32)], 0, 0)
    assert out[0:32] == out[32:64]


def test_cbcs_final_exact_block_encrypted_partial_clear() -> None:
    data = bytes(range(48))
    exact = cbcs(data, [SampleCrypto(0, 48, (Subsample(0, 16), Subsample(0, 32)))], 1, 9)
    assert exact[0:16] == aes_block(xor(data[0:16], IV16))  # a lone 16-byte range: encrypted
    assert exact[16:32] == aes_block(xor(data[16:32], IV16))
    assert exact[32:48] == data[32:48]  # 1:9 skips the second block

    partial = cbcs(data, [SampleCrypto(0, 48, (Subsample(0, 15), Subsample(1, 32)))], 1, 0)
    assert partial[0:15] == data[0:15]  # 15 bytes: a partial block stays clear
    assert partial[16:32] == aes_block(xor(data[16:32], IV16))

    tail = cbcs(data, [SampleCrypto(0, 47)], 1, 9)  # full sample: 2 blocks + 15 clear
    assert tail[32:47] == data[32:47]
    assert tail[16:32] == aes_block(xor(data[16:32], tail[0:16]))  # no pattern on full samples


@pytest.mark.parametrize(("length", "encrypted"), [(160, [0]), (175, [0]), (176, [0, 10])])
def test_cbcs_pattern_blocks_and_chaining(length: int, encrypted: list[int]) -> None:
    data = os.urandom(length + 20)
    out = cbcs(data, [SampleCrypto(0, length + 20, (Subsample(20, length),))], 1, 9)
    assert out[:20] == data[:20]
    chain = IV16
    for n in range(length // 16):
        at = 20 + 16 * n
        if n in encrypted:
            chain = aes_block(xor(data[at : at + 16], chain))  # chained over encrypted only
            assert out[at : at + 16] == chain
        else:
            assert out[at : at + 16] == data[at : at + 16]
    assert out[20 + 16 * (length // 16) :] == data[20 + 16 * (length // 16) :]


def test_cbcs_openssl_cli_full_sample() -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed")
    data = os.urandom(407)  # 25 whole blocks + 7 clear bytes
    out = cbcs(data, [SampleCrypto(0, 407)], 0, 0)
    done = subprocess.run(
        [openssl, "enc", "-aes-128-cbc", "-nopad", "-K", KEY.hex(), "-iv", IV16.hex()],
        input=data[:400],
        capture_output=True,
        check=True,
    )
    assert out == done.stdout + data[400:]


# ---------------------------------------------------------------------------
# cenc: the exact rules


def test_cenc_counter_starts_at_iv_then_zero() -> None:
    out = cenc(bytes(40), [SampleCrypto(0, 40)], [IV8])
    keystream = b"".join(aes_block(IV8 + n.to_bytes(8, "big")) for n in range(3))
    assert out == keystream[:40]


@pytest.mark.parametrize("which", CENC_FUNCTIONS)
def test_cenc_keystream_continues_mid_block_across_subsamples(which: CencFunction) -> None:
    data = os.urandom(100)
    subs = (Subsample(5, 10), Subsample(7, 20), Subsample(3, 0), Subsample(0, 33), Subsample(22, 0))
    sample = SampleCrypto(0, 100, subs)
    buf = bytearray(data)
    which(KEY, buf, [sample], [IV8])
    ranges = [(5, 10), (22, 20), (45, 33)]
    protected = b"".join(data[a : a + n] for a, n in ranges)
    ctr = Cipher(algorithms.AES(KEY), modes.CTR(IV8 + bytes(8))).encryptor()
    expected = ctr.update(protected)  # one stream over the concatenation
    assert b"".join(bytes(buf[a : a + n]) for a, n in ranges) == expected
    for a, b in [(0, 5), (15, 22), (42, 45), (78, 100)]:
        assert buf[a:b] == data[a:b]  # clear bytes untouched, consume no keystream


def test_cenc_keystream_restarts_per_sample() -> None:
    out = cenc(bytes(64), [SampleCrypto(0, 20), SampleCrypto(20, 44)], [IV8, IV8])
    assert out[0:20] == out[20:40]


def test_cenc_openssl_cli_full_sample() -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed")
    data = os.urandom(437)
    out = cenc(data, [SampleCrypto(0, 437)], [IV8])
    done = subprocess.run(
        [openssl, "enc", "-aes-128-ctr", "-K", KEY.hex(), "-iv", (IV8 + bytes(8)).hex()],
        input=data,
        capture_output=True,
        check=True,
    )
    assert out == done.stdout


# ---------------------------------------------------------------------------
# Keys, buffers, validation


def test_wrong_key_does_not_decrypt() -> None:
    data = os.urandom(700)
    samples = [SampleCrypto(0, 300, (Subsample(10, 290),)), SampleCrypto(300, 400)]
    other = bytes(16)
    c1 = cbcs(data, samples, 1, 9)
    assert cbcs_decrypt(other, IV16, c1, samples, 1, 9) != data
    buf = bytearray(data)
    encrypt_cbcs(other, IV16, buf, samples, crypt=1, skip=9)
    assert bytes(buf) != c1
    ivs = ivs_for(samples)
    c2 = cenc(data, samples, ivs)
    assert cenc_decrypt(other, c2, samples, ivs) != data
    assert cenc_decrypt(KEY, c2, samples, ivs) == data


def test_memoryview_and_wide_format_buffers() -> None:
    data = os.urandom(512)
    samples = [SampleCrypto(8, 400, (Subsample(30, 370),))]
    expected = cbcs(data, samples, 1, 9)
    raw = bytearray(data)
    encrypt_cbcs(KEY, IV16, memoryview(raw).cast("I"), samples, crypt=1, skip=9)
    assert bytes(raw) == expected
    raw = bytearray(data)
    encrypt_cbcs(KEY, IV16, memoryview(raw)[:], samples, crypt=1, skip=9)
    assert bytes(raw) == expected
    raw = bytearray(b"\xee" * 5 + data)  # offsets index into the view, not the bytearray
    encrypt_cbcs(KEY, IV16, memoryview(raw)[5:], samples, crypt=1, skip=9)
    assert bytes(raw) == b"\xee" * 5 + expected
    ivs = ivs_for(samples)
    raw = bytearray(b"\xee" * 5 + data)
    encrypt_cenc(KEY, memoryview(raw)[5:], samples, ivs)
    assert bytes(raw) == b"\xee" * 5 + cenc(data, samples, ivs)


def test_threads_get_their_own_scratch() -> None:
    rng = random.Random(3)
    jobs = []
    for seed in range(8):
        pos, samples = 0, []
        for _ in range(200 + 50 * seed):
            size = rng.randint(300, 500)
            samples.append(SampleCrypto(pos, size))
            pos += size
        jobs.append((rng.randbytes(pos), samples))
    expected = [(cbcs(d, s, 0, 0), cenc(d, s, ivs_for(s))) for d, s in jobs]

    def run(job: tuple[bytes, list[SampleCrypto]]) -> tuple[bytes, bytes]:
        d, s = job
        return cbcs(d, s, 0, 0), cenc(d, s, ivs_for(s))

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(run, jobs)) == expected


BAD_CBCS: list[tuple[str, dict[str, object]]] = [
    ("short key", {"key": bytes(15)}),
    ("long key", {"key": bytes(32)}),
    ("8-byte IV", {"iv": bytes(8)}),
    ("crypt 16", {"crypt": 16, "skip": 0}),
    ("negative skip", {"crypt": 1, "skip": -1}),
    ("pattern 0:5", {"crypt": 0, "skip": 5}),
    ("past the end", {"samples": [SampleCrypto(0, 60), SampleCrypto(60, 41)]}),
    ("overlap", {"samples": [SampleCrypto(0, 60), SampleCrypto(59, 20)]}),
    ("overlap unordered", {"samples": [SampleCrypto(50, 20), SampleCrypto(0, 51)]}),
    ("read-only", {"buf": memoryview(bytes(100))}),
]


@pytest.mark.parametrize(("case", "change"), BAD_CBCS, ids=[c for c, _ in BAD_CBCS])
def test_cbcs_rejects_bad_input_and_leaves_buffer(case: str, change: dict[str, object]) -> None:
    data = os.urandom(100)
    buf = bytearray(data)
    args: dict[str, object] = {
        "key": KEY,
        "iv": IV16,
        "buf": buf,
        "samples": [SampleCrypto(0, 40), SampleCrypto(40, 60, (Subsample(4, 56),))],
        "crypt": 1,
        "skip": 9,
    }
    args.update(change)
    with pytest.raises(ValueError):
        encrypt_cbcs(
            args["key"],  # type: ignore[arg-type]
            args["iv"],  # type: ignore[arg-type]
            args["buf"],  # type: ignore[arg-type]
            args["samples"],  # type: ignore[arg-type]
            crypt=args["crypt"],  # type: ignore[arg-type]
            skip=args["skip"],  # type: ignore[arg-type]
        )
    assert bytes(buf) == data


BAD_CENC: list[tuple[str, dict[str, object]]] = [
    ("short key", {"key": bytes(15)}),
    ("missing IV", {"ivs": [IV8]}),
    ("extra IV", {"ivs": [IV8, IV8, IV8]}),
    ("16-byte IV", {"ivs": [IV8, IV8 + IV8]}),
    ("past the end", {"samples": [SampleCrypto(0, 60), SampleCrypto(60, 41)]}),
    ("overlap", {"samples": [SampleCrypto(0, 60), SampleCrypto(30, 20)]}),
    ("read-only", {"buf": memoryview(bytes(100))}),
]


@pytest.mark.parametrize("which", CENC_FUNCTIONS)
@pytest.mark.parametrize(("case", "change"), BAD_CENC, ids=[c for c, _ in BAD_CENC])
def test_cenc_rejects_bad_input_and_leaves_buffer(
    case: str, change: dict[str, object], which: CencFunction
) -> None:
    data = os.urandom(100)
    buf = bytearray(data)
    args: dict[str, object] = {
        "key": KEY,
        "buf": buf,
        "samples": [SampleCrypto(0, 40), SampleCrypto(40, 60, (Subsample(4, 56),))],
        "ivs": [IV8, IV8],
    }
    args.update(change)
    with pytest.raises(ValueError):
        which(args["key"], args["buf"], args["samples"], args["ivs"])  # type: ignore[arg-type]
    assert bytes(buf) == data


def test_encryptors_fast_path_is_there() -> None:
    """The binding ``cipher_contexts.encryptor`` uses: if a cryptography release drops
    it, this fails rather than cenc and AES-128 slowing down unnoticed."""
    assert cipher_contexts.fast_path_available()


@pytest.mark.parametrize("fast", [True, False], ids=["binding", "public-only"])
def test_cenc_is_the_same_through_either_encryptor_path(
        fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast:
        monkeypatch.setattr(cipher_contexts, "_MAKE", None)
    rng = random.Random(3)
    samples, pos = [], 0
    for _ in range(12):
        size = rng.randint(17_000, 30_000)  # per-sample CTR (over CTR_MIN_SAMPLE)
        samples.append(SampleCrypto(pos, size, (Subsample(20, size - 20),)))
        pos += size
    data = os.urandom(pos)
    ivs = ivs_for(samples)
    buf = bytearray(data)
    encrypt_cenc(KEY, buf, samples, ivs)
    assert bytes(buf) == cenc_reference(KEY, data, samples, ivs)


def test_encryptors_refuse_a_block_that_is_not_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        cipher_contexts.encryptor(algorithms.AES(KEY), modes.CTR(bytes(8) + bytes(7)))


def test_empty_inputs_are_no_ops() -> None:
    data = os.urandom(50)
    assert cbcs(data, [], 1, 9) == data
    assert cbcs(data, [SampleCrypto(0, 15), SampleCrypto(15, 0)], 1, 9) == data
    assert cenc(data, [], []) == data
    assert cenc(data, [SampleCrypto(3, 0)], [IV8]) == data
    encrypt_cbcs(KEY, IV16, bytearray(), [], crypt=1, skip=9)
    encrypt_cenc(KEY, bytearray(), [], [])


# ---------------------------------------------------------------------------
# Per-sample IVs


def test_derive_sample_ivs() -> None:
    kid = bytes(range(16))
    ivs = derive_sample_ivs(kid, "video/seg-00042.m4s", 1, 5)
    msg = b"origin-cenc-iv-v1\x00" + b"video/seg-00042.m4s\x001"
    base = int.from_bytes(hmac.new(kid, msg, hashlib.sha256).digest()[:8], "big")
    assert ivs == [((base + i) % 2**64).to_bytes(8, "big") for i in range(5)]
    assert derive_sample_ivs(kid, "video/seg-00042.m4s", 1, 5) == ivs  # deterministic
    assert derive_sample_ivs(kid, "video/seg-00042.m4s", 2, 1)[0] != ivs[0]
    assert derive_sample_ivs(kid, "video/seg-00043.m4s", 1, 1)[0] != ivs[0]
    assert derive_sample_ivs(bytes(16), "video/seg-00042.m4s", 1, 1)[0] != ivs[0]
    assert derive_sample_ivs(kid, "x", 1, 0) == []
    with pytest.raises(ValueError):
        derive_sample_ivs(kid, "x", 1, -1)


def test_derive_sample_ivs_wraps_mod_2_64() -> None:
    with mock.patch("origin.crypto.iv.hmac.new") as new:
        new.return_value.digest.return_value = b"\xff" * 8 + bytes(24)
        ivs = derive_sample_ivs(b"k", "s", 1, 3)
    assert ivs == [b"\xff" * 8, bytes(8), bytes(7) + b"\x01"]
