"""Responses for bodies the origin has produced before: 304s, memory bodies, disk bodies.

Rules:
- ``If-None-Match`` holding the body's ETag (weak comparison, RFC 9110
  §13.1.2) is answered 304 before anything is read or encrypted;
- a body kept on disk goes out as a ``web.FileResponse`` (Range, 206/416 and
  HEAD by aiohttp, as ``origin.http.file_ranges`` lets it; the bytes by ``sendfile``,
  whole or visibly cut short, as ``origin.http.intact_file`` sends them) carrying
  the body's own strong ETag and no ``Last-Modified``:
  the cache file's mtime says nothing about the representation;
- a request with ``If-Range``, ``If-Match``, ``If-Modified-Since`` or
  ``If-Unmodified-Since`` is answered from the bytes with ``respond_bytes``
  instead, because ``FileResponse`` judges those by the cache file's own
  mtime-based validator rather than by our ETag.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.helpers import ETag

from origin.http.intact_file import IntactFileResponse

FILE_VALIDATORS = (hdrs.IF_RANGE, hdrs.IF_MATCH, hdrs.IF_MODIFIED_SINCE,
                   hdrs.IF_UNMODIFIED_SINCE)


def if_none_match_hits(request: web.Request, etag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (or is ``*``)."""
    header = request.headers.get(hdrs.IF_NONE_MATCH)
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def not_modified(etag: str, cache_control: str) -> web.Response:
    return web.Response(status=304, headers={hdrs.ETAG: etag, hdrs.CACHE_CONTROL: cache_control})


def file_can_answer(request: web.Request) -> bool:
    """Whether ``FileResponse`` answers this request as our ETag would (module rules)."""
    return not any(name in request.headers for name in FILE_VALIDATORS)


class StoredFileResponse(IntactFileResponse):
    """A ``FileResponse`` that keeps the stored body's strong ETag and sends no Last-Modified."""

    zero_copy = True  # the disk tier writes each file once and replaces it only by rename

    def __init__(self, path: Path, etag: str, headers: dict[str, str]) -> None:
        super().__init__(path, headers={**headers, hdrs.ETAG: etag})
        self._stored_etag = etag

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        self.headers[hdrs.ETAG] = self._stored_etag

    @property
    def last_modified(self) -> None:
        return None

    @last_modified.setter
    def last_modified(self, value: object) -> None:
        self.headers.popall(hdrs.LAST_MODIFIED, None)
