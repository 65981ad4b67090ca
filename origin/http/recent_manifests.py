"""Which cached manifest a repeated request gets, found from the request's own words.

A rewritten manifest is cached under a digest of everything that shapes it
(``origin.http.segment_cache.manifest_key``): the parsed query, the key and signalling
context, the source stamps.  Working that out costs more than sending the body, and
players ask for the same URLs over and over; ``RecentManifests`` remembers, per request
*shape*, the cache key its last answer had and what that answer was made from.

Rules:

- a shape is what a route reads from a request without parsing anything: route, asset
  name, path, scheme, the public base of licence URLs and the raw query — the query as
  a SHA-256 digest, never as text (tokens travel there), and a public base longer than
  ``LONG_TEXT`` characters (a client's ``Host`` header) as its digest too, so a shape
  stays small whatever a client sends (``manifest_shape``);
- an answer is remembered only after it was worked out in full (so its query parsed
  and its asset was valid; the same text parses the same way), with: the catalog
  generation it was made in, the content key object it was made with (``None`` for
  clear), the stamps of its source files, its cache key and its ``Cache-Control``;
- ``recall`` gives that answer back only for the same generation and the very same key
  object (a new snapshot, a key fetched again after its TTL: a miss); the caller then
  checks the stamps and that the body is still cached and fresh.  A miss costs
  nothing but the lookup: the route works the answer out as before and remembers it;
- bounded: at most ``MAX_SHAPES`` shapes (the oldest first out), all dropped when the
  catalog generation moves on, so no old snapshot's assets are kept; entries hold no
  body (the segment cache's budget stays the only one);
- one event loop owns it (no locks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from origin.crypto.key import ContentKey
from origin.packaging.segments import SourceStamp

MAX_SHAPES = 4096
LONG_TEXT = 256

# (route, asset name, path, scheme, public base or its digest, query digest): no token.
ManifestShape = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class RecentAnswer:
    """What a shape's last answer was made from, and where it is cached."""

    generation: int
    key: ContentKey | None = field(repr=False)
    stamps: tuple[SourceStamp, ...]
    cache_key: str
    cache_control: str


def manifest_shape(route: str, asset: str, path: str, scheme: str, public_base: str,
                   raw_query: str) -> ManifestShape:
    """The shape of a manifest request (module rules); ``path`` is checked already."""
    if len(public_base) > LONG_TEXT:
        public_base = _digest(public_base)
    return route, asset, path, scheme, public_base, _digest(raw_query) if raw_query else ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RecentManifests:
    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self._max_shapes = max_shapes
        self._generation = -1
        self._answers: dict[ManifestShape, RecentAnswer] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def __repr__(self) -> str:
        return f"RecentManifests({len(self._answers)} shapes)"

    def recall(self, shape: ManifestShape, generation: int,
               key: ContentKey | None) -> RecentAnswer | None:
        """The answer remembered for ``shape``, if made in ``generation`` with ``key``."""
        found = self._answers.get(shape)
        if found is None or found.generation != generation or found.key is not key:
            return None
        return found

    def remember(self, shape: ManifestShape, answer: RecentAnswer) -> None:
        if answer.generation < self._generation:  # worked out across a rescan: stale already
            return
        if answer.generation > self._generation:
            self._answers.clear()
            self._generation = answer.generation
        self._answers.pop(shape, None)
        self._answers[shape] = answer
        if len(self._answers) > self._max_shapes:
            del self._answers[next(iter(self._answers))]
