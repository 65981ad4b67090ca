"""AES-128 whole-segment encryption: NIST vectors, the slow reference, and round trips."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from origin.crypto import cipher_contexts
from origin.crypto.aes128 import (
    SegmentEncryptor,
    decrypt_segment,
    encrypt_segment,
    encrypt_segment_into,
    output_room,
    padded_size,
)
from origin.crypto.iv import derive_iv
from origin.crypto.key import ContentKey
from tests.reference.aes import cbc_encrypt, encrypt_block, expand_key, hls_aes128_encrypt

# NIST SP 800-38A, F.2.1 CBC-AES128.Encrypt
NIST_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
NIST_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
NIST_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710"
)
NIST_CIPHER = bytes.fromhex(
    "7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
    "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7"
)


def test_reference_matches_fips197_appendix_b() -> None:
    rk = expand_key(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    out = encrypt_block(rk, bytes.fromhex("3243f6a8885a308d313198a2e0370734"))
    assert out.hex() == "3925841d02dc09fbdc118597196a0b32"


def test_reference_matches_nist_cbc() -> None:
    assert cbc_encrypt(NIST_KEY, NIST_IV, NIST_PLAIN) == NIST_CIPHER


def test_fast_path_matches_nist_cbc() -> None:
    out = encrypt_segment(NIST_KEY, NIST_IV, NIST_PLAIN)
    # Whole blocks in, so PKCS#7 appends one full block of 0x10.
    assert out[:64] == NIST_CIPHER
    assert len(out) == 80
    assert decrypt_segment(NIST_KEY, NIST_IV, out) == NIST_PLAIN


def test_fast_path_detects_wrong_key() -> None:
    wrong = bytes(16)
    assert encrypt_segment(wrong, NIST_IV, NIST_PLAIN)[:64] != NIST_CIPHER
    with pytest.raises(ValueError):
        decrypt_segment(wrong, NIST_IV, encrypt_segment(NIST_KEY, NIST_IV, NIST_PLAIN))


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16),
       data=st.binary(max_size=200))
def test_fast_path_equals_reference(key: bytes, iv: bytes, data: bytes) -> None:
    fast = encrypt_segment(key, iv, data)
    assert fast == hls_aes128_encrypt(key, iv, data)
    assert len(fast) == padded_size(len(data))
    assert decrypt_segment(key, iv, fast) == data


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16),
       data=st.binary(max_size=200), extra=st.integers(0, 40))
def test_into_a_buffer_equals_reference(key: bytes, iv: bytes, data: bytes, extra: int) -> None:
    """The origin's path: the ciphertext written into a reused buffer with room to spare
    (any extra capacity beyond); the bytes past the ciphertext are not part of it."""
    out = bytearray(b"\xaa" * (output_room(len(data)) + extra))
    n = encrypt_segment_into(key, iv, memoryview(data), out)
    assert n == padded_size(len(data))
    assert out[:n] == hls_aes128_encrypt(key, iv, data)


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16),
       data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_pieces_equal_reference(key: bytes, iv: bytes, data: bytes, cuts: list[int]) -> None:
    """The chain fed in pieces of any sizes (empty, partial blocks, whole blocks) writes
    the same bytes as the whole segment at once."""
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    out = bytearray(b"\xaa" * (len(data) + 64))
    encryptor = SegmentEncryptor(key, iv)
    n = 0
    for a, b in itertools.pairwise(bounds):
        n += encryptor.update_into(data[a:b], memoryview(out)[n:])
        assert n <= b  # never more than the whole blocks seen so far
    n += encryptor.finish_into(memoryview(out)[n:])
    assert bytes(out[:n]) == hls_aes128_encrypt(key, iv, data)


@pytest.mark.parametrize("fast", [True, False], ids=["binding", "public-only"])
def test_either_encryptor_path_matches_nist(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast:
        monkeypatch.setattr(cipher_contexts, "_MAKE", None)
    assert encrypt_segment(NIST_KEY, NIST_IV, NIST_PLAIN)[:64] == NIST_CIPHER
    with pytest.raises(ValueError, match="16-byte IV"):
        encrypt_segment(NIST_KEY, NIST_IV[:8], NIST_PLAIN)


def test_segments_in_a_row_under_one_key_are_each_a_fresh_chain() -> None:
    """The thread's running encryptor restarts for every segment (the IV-mask trick):
    segments one after another, whole or in pieces, sizes under, at and over a block,
    each equal the reference; an interrupted chain is not reused."""
    key = bytes(range(16))
    for i, size in enumerate([0, 5, 16, 17, 100, 4096, 33]):
        iv = bytes([i]) * 16
        data = bytes((i * 7 + j) % 256 for j in range(size))
        assert encrypt_segment(key, iv, data) == hls_aes128_encrypt(key, iv, data)
        pieces = SegmentEncryptor(key, iv)
        out = bytearray(size + 64)
        n = pieces.update_into(data[:3], out)
        n += pieces.update_into(data[3:], memoryview(out)[n:])
        n += pieces.finish_into(memoryview(out)[n:])
        assert bytes(out[:n]) == hls_aes128_encrypt(key, iv, data)
    broken = SegmentEncryptor(key, bytes(16))
    broken.update_into(bytes(40), bytearray(80))  # never finished
    assert encrypt_segment(key, NIST_IV, NIST_PLAIN) == hls_aes128_encrypt(key, NIST_IV,
                                                                           NIST_PLAIN)


def test_into_refuses_a_buffer_without_room() -> None:
    with pytest.raises(ValueError, match="output_room"):
        encrypt_segment_into(bytes(16), bytes(16), bytes(40), bytearray(output_room(40) - 1))


def test_large_segment_round_trips() -> None:
    data = bytes(range(256)) * 40000 + b"tail"
    key, iv = bytes(range(16)), bytes(16)
    assert decrypt_segment(key, iv, encrypt_segment(key, iv, data)) == data


def test_ivs_are_deterministic_and_distinct() -> None:
    kid = bytes(range(16))
    a = derive_iv(kid, "aes128", "video/seg-00001.m4s")
    assert a == derive_iv(kid, "aes128", "video/seg-00001.m4s")
    assert len(a) == 16
    assert a != derive_iv(kid, "aes128", "video/seg-00002.m4s")
    assert a != derive_iv(kid, "cbcs", "video/seg-00001.m4s")
    assert a != derive_iv(bytes(16), "aes128", "video/seg-00001.m4s")


def test_content_key_repr_hides_key() -> None:
    key = ContentKey(bytes(range(16)), bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert "00112233445566778899aabbccddeeff" not in repr(key)
    assert "00112233445566778899aabbccddeeff" not in str(key)
