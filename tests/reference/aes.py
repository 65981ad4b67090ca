"""A slow, obviously correct AES-128 (FIPS-197) and CBC/PKCS#7, for checking the fast path.

Written straight from the standard: byte-wise S-box, ShiftRows, MixColumns over
GF(2^8), key expansion with Rcon.  Nothing here is fast, on purpose.
"""

from __future__ import annotations


def _xtime(b: int) -> int:
    b <<= 1
    return (b ^ 0x11B) & 0xFF if b & 0x100 else b


def _gmul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = _xtime(a)
        b >>= 1
    return out


def _sbox() -> list[int]:
    box = []
    for x in range(256):
        inv = 0 if x == 0 else next(y for y in range(1, 256) if _gmul(x, y) == 1)
        s = inv
        for shift in range(1, 5):
            s ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
        box.append(s ^ 0x63)
    return box


SBOX = _sbox()


def expand_key(key: bytes) -> list[list[int]]:
    """FIPS-197 §5.2: 11 round keys of 16 bytes for AES-128."""
    assert len(key) == 16
    words = [list(key[i:i + 4]) for i in range(0, 16, 4)]
    rcon = 1
    for i in range(4, 44):
        temp = list(words[i - 1])
        if i % 4 == 0:
            temp = temp[1:] + temp[:1]
            temp = [SBOX[b] for b in temp]
            temp[0] ^= rcon
            rcon = _xtime(rcon)
        words.append([a ^ b for a, b in zip(words[i - 4], temp, strict=True)])
    return [[b for w in words[r * 4:(r + 1) * 4] for b in w] for r in range(11)]


def encrypt_block(round_keys: list[list[int]], block: bytes) -> bytes:
    """FIPS-197 §5.1 Cipher(); the state is column-major: s[r + 4c]."""
    s = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 11):
        s = [SBOX[b] for b in s]
        s = [s[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4)]
        if rnd != 10:
            mixed = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                mixed += [
                    _gmul(a[0], 2) ^ _gmul(a[1], 3) ^ a[2] ^ a[3],
                    a[0] ^ _gmul(a[1], 2) ^ _gmul(a[2], 3) ^ a[3],
                    a[0] ^ a[1] ^ _gmul(a[2], 2) ^ _gmul(a[3], 3),
                    _gmul(a[0], 3) ^ a[1] ^ a[2] ^ _gmul(a[3], 2),
                ]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[rnd], strict=True)]
    return bytes(s)


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """CBC over whole blocks, no padding (SP 800-38A §6.2)."""
    assert len(data) % 16 == 0
    rk = expand_key(key)
    prev, out = iv, b""
    for i in range(0, len(data), 16):
        prev = encrypt_block(rk, bytes(a ^ b for a, b in zip(data[i:i + 16], prev, strict=True)))
        out += prev
    return out


def pkcs7_pad(data: bytes) -> bytes:
    pad = 16 - len(data) % 16
    return data + bytes([pad]) * pad


def hls_aes128_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """RFC 8216 §5.2 METHOD=AES-128: CBC with PKCS#7 over the whole segment."""
    return cbc_encrypt(key, iv, pkcs7_pad(data))
