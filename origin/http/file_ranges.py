"""Range requests on files sent with ``FileResponse``, answered as RFC 9110 §14 says.

aiohttp's ``FileResponse`` honours one ``bytes=first-last`` or ``bytes=-suffix`` range
(206, or 416 past the end) and answers every other ``Range`` header 416.  RFC 9110
asks otherwise for some of them, and ``origin.http.ranges`` (bodies in memory) does:

- a range unit it does not know (``items=0-1``) MUST be ignored (§14.2): 200;
- a syntactically invalid header (garbage, ``bytes=5-1`` whose last is before its
  first, ``bytes=-0`` which aiohttp even answers 206 with the whole file) MAY be
  ignored: 200 — never a 206 that is not one;
- several ranges may be answered whole (§14.2): 200, as ``origin.http.ranges`` does.

``RangeCheckedFileResponse`` removes such a ``Range`` header from what
``FileResponse`` sees (a clone of the request); the others reach aiohttp unchanged.
Positions of more than ``MAX_DIGITS`` digits are ignored the same way (Python's int
parsing refuses them).  Pure header inspection, on the loop.
"""

from __future__ import annotations

import re

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

MAX_DIGITS = 4000
_SINGLE_RANGE = re.compile(rf"bytes=(\d{{0,{MAX_DIGITS}}})-(\d{{0,{MAX_DIGITS}}})",
                           re.ASCII | re.IGNORECASE)


def file_range_is_honoured(header: str) -> bool:
    """Whether ``FileResponse`` may act on this ``Range`` header (module rules)."""
    match = _SINGLE_RANGE.fullmatch(header)
    if match is None:
        return False
    first, last = match.groups()
    if not first:
        return bool(last) and int(last) > 0
    return not last or int(last) >= int(first)


class RangeCheckedFileResponse(web.FileResponse):
    """``FileResponse`` that never sees a ``Range`` header it would misanswer."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        header = request.headers.get(hdrs.RANGE)
        if header is not None and not file_range_is_honoured(header):
            headers = CIMultiDict(request.headers)
            headers.popall(hdrs.RANGE)
            request = request.clone(headers=headers)
        return await super().prepare(request)
