"""``Cache-Control`` for what the origin serves, so CDNs and players cache the right things
(RFC 9111; ``immutable``: RFC 8246).

Rules:
- VOD segments, encrypted or clear, and init sections: ``public,
  max-age=31536000, immutable`` with a strong ETag.  The bytes at one URL
  change only when the source file or the asset's key does (the ETag covers
  both), and VOD sources do not change;
- manifests (playlists, MPDs) that carry the caller's token in their licence
  or media-playlist URLs: ``private, no-cache``.  No shared cache may store
  them (§5.2.2.7: a CDN that drops the query from its cache key would hand one
  viewer's token to everyone); the player's own cache may keep them and
  revalidates each use, which the strong ETag answers with a 304;
- other manifests: ``public, max-age=2``.  Shared caches absorb bursts of
  players, while a key rotation or a replaced source reaches players within
  seconds; revalidation is a 304;
- error responses (4xx, 5xx): ``no-store`` — never kept, not even the
  heuristically cacheable 404/405/410/414/501 (§4.2.2); set in the app's one
  ``on_response_prepare`` hook (``origin.http.middleware.response_finisher``),
  whatever produced the error.
"""

from __future__ import annotations

from aiohttp import web

SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
MANIFEST_CACHE_CONTROL = "public, max-age=2"
PRIVATE_MANIFEST_CACHE_CONTROL = "private, no-cache"
ERROR_CACHE_CONTROL = "no-store"


def manifest_cache_control(carries_token: bool) -> str:
    """The ``Cache-Control`` of a manifest, by whether its body holds the caller's token."""
    return PRIVATE_MANIFEST_CACHE_CONTROL if carries_token else MANIFEST_CACHE_CONTROL


def forbid_storing_errors(response: web.StreamResponse) -> None:
    """Every 4xx/5xx goes out ``Cache-Control: no-store`` (called while it is prepared)."""
    if response.status >= 400:
        response.headers["Cache-Control"] = ERROR_CACHE_CONTROL
