"""A slow, obviously correct emulation-prevention escaper (H.264 §7.4.1, H.265 §7.4.2).

After two zero bytes, a byte of value 0–3 gets an ``emulation_prevention_three_byte``
(0x03) in front of it.  A byte loop on purpose: it checks the fast code.
"""

from __future__ import annotations


def escape_rbsp(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
