"""Parsed media structure, remembered under the stamp of the bytes it was parsed from.

Segment production parses before it encrypts: a media segment's boxes, where its
samples lie, and each sample's subsample layout, which for video means reading every
slice header (ISO/IEC 23001-7 §10.2: the NAL unit header and slice header stay clear).
That is a pure function of the source file's bytes, its init section and the scheme,
and it costs as much as the encryption itself; nginx-vod-module keeps the same kind
of thing in its metadata cache.

Rules:

- what is kept is parsed structure only — an init section's tracks and codec
  configuration, a media segment's fragment plan — never a key, an IV or a byte of
  output: with it, every response is still read from its source and encrypted;
- keys include the stamp (path, size, mtime) the bytes were read under, so a changed
  file is a miss, and entries of its old bytes age out;
- bounded by weight — a plan weighs its samples plus subsamples, an init section one —
  least recently used first; an entry heavier than the whole budget is not kept;
- thread-safe: the production threads share one index per kind of entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class MediaIndex(Generic[K, V]):
    """A least-recently-used map bounded by the weights of its entries (module rules)."""

    def __init__(self, budget: int) -> None:
        if budget <= 0:
            raise ValueError("a media index needs a positive budget")
        self.budget = budget
        self.weight = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MediaIndex({len(self._entries)} entries, weight {self.weight} of {self.budget})"

    def get(self, key: K) -> V | None:
        """The entry under ``key`` (now the most recently used), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keep ``value`` under ``key``, evicting the least recently used over budget."""
        weight = max(1, weight)
        if weight > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self._entries[key] = (value, weight)
            self.weight += weight
            while self.weight > self.budget:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.weight -= dropped
