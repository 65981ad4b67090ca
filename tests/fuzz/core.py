"""Fuzz targets, input dispatch and seed mutation, shared by hypothesis tests and atheris harnesses.

Rules:
- A :class:`Target` is one parser entry point fed the bytes of an outside input,
  with the errors it may raise on purpose (``typed``: ``OriginError``
  subclasses, or the module's documented typed error).  Anything else escaping
  it — ``IndexError``, ``struct.error``, ``KeyError``, ``UnicodeError``,
  ``RecursionError``, a failed invariant (``AssertionError``) — is a finding.
- A family (``mp4``, ``nal``, …) is an ordered tuple of targets; one fuzzer
  input picks its target with its first byte (``data[0] % len(family)``) and
  feeds it the rest, so one atheris harness covers a family and every corpus
  file names its target.
- Seeds are real inputs; :func:`mutate` damages them the way hostile input
  does (byte flips, truncation, splicing, length-field corruption, repetition
  into deep nesting), aiming at structure starts (``Target.anchors``: box
  headers, packet starts, line starts).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def _start_only(_: bytes) -> list[int]:
    return [0]


def json_starts(data: bytes) -> list[int]:
    """Line starts and JSON structure (``[ { : , "``): where a value or a nesting begins."""
    return [0] + [i + (b == 0x0A) for i, b in enumerate(data) if b in b'\n[{:,"']


@dataclass(frozen=True)
class Target:
    """One parser entry point under fuzzing."""

    name: str
    run: Callable[[bytes], object]
    typed: tuple[type[BaseException], ...]
    seeds: Callable[[], Sequence[bytes]]
    anchors: Callable[[bytes], list[int]] = field(default=_start_only)

    def exercise(self, data: bytes) -> bool:
        """Run the target; True if the input was accepted, False if a typed error refused it."""
        try:
            self.run(data)
        except self.typed:
            return False
        return True


def pick(family: Sequence[Target], data: bytes) -> tuple[Target, bytes]:
    """The target a fuzzer input names (its first byte) and the payload it gets."""
    if not data:
        return family[0], b""
    return family[data[0] % len(family)], data[1:]


def corpus(family: Sequence[Target]) -> list[bytes]:
    """Every seed of every target of ``family``, prefixed with the target's selector byte."""
    return [bytes([index]) + seed for index, target in enumerate(family)
            for seed in target.seeds()]


# -- mutation ---------------------------------------------------------------------------------

INTERESTING_U32 = (0, 1, 2, 7, 8, 9, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000,
                   0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
KINDS = ("set", "flip", "u32", "u16", "cut", "drop", "insert", "splice", "dup", "repeat")
MAX_REPEAT = 3000  # deep enough for nesting limits (JSON, XML) and long runs
Op = tuple[int, int, int, int, int]  # kind, where, delta, value, extra


def _position(data: bytearray, anchors: Sequence[int], where: int, delta: int) -> int:
    """Anchor-relative (odd ``where``) or anywhere (even ``where``) in ``data``."""
    if not data:
        return 0
    at = anchors[(where >> 1) % len(anchors)] + delta % 24 if where & 1 and anchors else where >> 1
    return at % len(data)


def mutate(seed: bytes, ops: Sequence[Op], *, anchors: Sequence[int] = (0,),
           others: Sequence[bytes] = ()) -> bytes:
    """``seed`` damaged by ``ops`` (see the module rules); deterministic in its arguments."""
    data = bytearray(seed)
    for kind_index, where, delta, value, extra in ops:
        kind = KINDS[kind_index % len(KINDS)]
        at = _position(data, anchors, where, delta)
        if kind == "set" and data:
            data[at] = value & 0xFF
        elif kind == "flip" and data:
            data[at] ^= 1 << (value % 8)
        elif kind in ("u32", "u16"):
            width = 4 if kind == "u32" else 2
            number = INTERESTING_U32[value % len(INTERESTING_U32)] if extra & 1 else value
            if extra & 2:  # a size relative to what is left, as length fields count
                number = len(data) - at + (value % 9) - 4
            number %= 1 << (8 * width)
            data[at:at + width] = number.to_bytes(width, "big")
        elif kind == "cut":
            del data[at:]
        elif kind == "drop":
            del data[at:at + 1 + extra % 64]
        elif kind == "insert":
            data[at:at] = struct.pack(">I", value)[:1 + extra % 4]
        elif kind == "splice" and others:
            other = others[extra % len(others)]
            start = value % max(1, len(other))
            data[at:at] = other[start:start + 1 + delta * 16]
        elif kind == "dup":
            data[at:at] = data[at:at + 1 + extra % 188]
        elif kind == "repeat":  # nesting: the bytes at ``at`` many times over
            chunk = 1 + ((extra >> 1) % 4 if extra & 1 else 0)
            data[at:at] = data[at:at + chunk] * (MAX_REPEAT - value % MAX_REPEAT)
    return bytes(data)
