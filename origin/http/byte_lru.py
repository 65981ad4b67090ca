"""A least-recently-used map bounded by the bytes its values hold.

Rules:
- each entry costs the length of its body plus a fixed ``ENTRY_OVERHEAD`` (the
  key, the entry object, the dict slot), so thousands of tiny values cannot
  outgrow the budget unseen;
- an entry costing more than ``budget // MAX_ENTRY_FRACTION`` is not stored (one
  huge body must not flush everything else);
- inserting evicts the least recently used entries until the total is within
  the budget again: ``used_bytes <= budget`` holds after every call, and
  ``peak_bytes`` remembers the highest total ever reached;
- not thread-safe: one event loop owns it (every caller is on the loop thread).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from origin.http.memory_file import MemoryFile

ENTRY_OVERHEAD = 256
MAX_ENTRY_FRACTION = 8


@dataclass(frozen=True, slots=True)
class Stored:
    """One cached response body, its strong ETag, and until when it may be used (monotonic)."""

    body: bytes | bytearray = field(repr=False)
    etag: str
    fresh_until: float = math.inf


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One cached segment body in a ``MemoryFile`` (sent by ``sendfile``), its strong ETag."""

    body: MemoryFile
    etag: str
    fresh_until: float = math.inf


Entry = Stored | StoredFile


class ByteLru:
    def __init__(self, budget: int) -> None:
        if budget <= 0:
            raise ValueError("an LRU needs a positive byte budget")
        self.budget = budget
        self.max_entry = budget // MAX_ENTRY_FRACTION
        self.used_bytes = 0
        self.peak_bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"ByteLru({len(self._entries)} entries, {self.used_bytes} of "
                f"{self.budget} bytes)")

    @staticmethod
    def cost(value: Entry) -> int:
        return len(value.body) + len(value.etag) + ENTRY_OVERHEAD

    def get(self, key: str) -> Entry | None:
        """The value under ``key`` (now the most recently used), or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, value: Entry) -> bool:
        """Store ``value``; False (and nothing stored) when it is too large for this budget."""
        cost = self.cost(value)
        if cost > self.max_entry:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old[1]
        self._entries[key] = (value, cost)
        self.used_bytes += cost
        while self.used_bytes > self.budget:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.used_bytes -= dropped
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        return True

    def discard(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old[1]

    def body_bytes(self) -> int:
        """The bodies' lengths counted afresh (a check on ``used_bytes``' bookkeeping)."""
        return sum(len(value.body) for value, _ in self._entries.values())
