"""The query parameters of a manifest request, and which of them travel on.

Rules (DESIGN "URLs"):

- A token in the query — ``token`` (ours) or ``ks`` (the Kaltura SDK's) — is
  copied into every licence URL the response writes (HLS key URIs, ``skd://``,
  DASH ``Laurl``), so native players need no token logic.  A token sent in an
  ``Authorization`` header is not: it never goes into a URL.
- ``key_systems`` narrows the key signalling (``origin.packaging.drm``).
- The playback filter (``tracks``, ``min_bitrate``, ``max_bitrate``,
  ``audio_lang``, ``flavor``, ``bandwidth``, ``profile=offline``) shapes a
  multivariant playlist or an MPD.
- A multivariant playlist passes the token and ``key_systems`` on to its media
  playlists' URIs (where the key tags are written); the filter has done its
  work by then and is not repeated.
- Values are re-encoded with ``urlencode``, so no caller text can break the
  playlist or XML syntax.  Repeated parameters: the first wins.
- A request without a query gets the one shared ``NO_QUERY`` (nothing to parse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from origin.errors import BadRequest
from origin.packaging.drm import KeySelection, parse_key_selection
from origin.packaging.playback_filter import PlaybackFilter, parse_playback_filter

TOKEN_PARAMS = ("token", "ks")
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class PlaybackQuery:
    token_items: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    key_selection: KeySelection | None = None
    filter: PlaybackFilter = field(default_factory=PlaybackFilter)

    @property
    def license_query(self) -> str:
        """The token parameters, URL-encoded, for licence URLs."""
        return urlencode(self.token_items) if self.token_items else ""

    @property
    def media_playlist_query(self) -> str:
        """What a multivariant playlist appends to its media playlists' URIs."""
        items = list(self.token_items)
        if self.key_selection is not None:
            items.append(("key_systems", self.key_selection.query_value()))
        return urlencode(items)


NO_QUERY = PlaybackQuery()


def parse_playback_query(query: Mapping[str, str]) -> PlaybackQuery:
    """The playback parameters of a request's query; ``BadRequest`` names a bad one."""
    if not query:
        return NO_QUERY
    tokens = []
    for name in TOKEN_PARAMS:
        value = query.get(name)
        if value:
            if len(value) > MAX_TOKEN_CHARS:
                raise BadRequest(f"{name} is too long")
            tokens.append((name, value))
    selection = None
    if "key_systems" in query:
        try:
            selection = parse_key_selection(query["key_systems"])
        except ValueError as exc:
            raise BadRequest(f"key_systems: {exc}") from None
    return PlaybackQuery(tuple(tokens), selection, parse_playback_filter(query))
