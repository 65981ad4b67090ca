"""HTTP request fields: ``Range`` / ``If-Range`` / ``If-None-Match`` on bodies built in
memory, and the playback query (tokens, ``key_systems``, playback filter).

Header values reach the origin as aiohttp gives them (UTF-8, undecodable bytes
as surrogates); query values as decoded text.  Invariants: a 206 carries exactly
the bytes its ``Content-Range`` names, inside the body; a parsed playback filter
gives back the query items it was parsed from.  Typed errors:
``RangeNotSatisfiable``, ``BadRequest``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp.test_utils import make_mocked_request
from multidict import MultiDict

from origin.errors import BadRequest, RangeNotSatisfiable
from origin.http.playback_query import parse_playback_query
from origin.http.ranges import parse_range, respond_bytes
from origin.packaging.playback_filter import parse_playback_filter
from tests.fuzz.core import Target

ETAG = '"0123456789abcdef0123456789abcdef"'
BODY = bytes(range(256)) * 4


def _header_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def run_parse_range(payload: bytes) -> None:
    """``payload[:2]``: the body size; the rest: the ``Range`` header."""
    size = int.from_bytes(payload[:2], "big")
    span = parse_range(_header_text(payload[2:]), size)
    if span is not None:
        start, end = span
        assert 0 <= start < end <= size, f"range {span} of a {size}-byte body"


def run_respond_bytes(payload: bytes) -> None:
    """Lines: ``Range``, ``If-Range``, ``If-None-Match``; the first byte picks the body size
    and which of them are present."""
    if not payload:
        return
    # (aiohttp's test request cannot carry the surrogates a real one may: parse_range gets them)
    flags, lines = payload[0], payload[1:].decode("utf-8", "replace").split("\n")
    names = ("Range", "If-Range", "If-None-Match")
    headers = {name: value for bit, (name, value) in enumerate(zip(names, lines, strict=False))
               if flags >> bit & 1}
    body = BODY[:len(BODY) * ((flags >> 3) & 7) // 7]
    request = make_mocked_request("GET", "/hls/a/cbcs/seg.m4s", headers=headers)
    response = respond_bytes(request, body, content_type="video/mp4", etag=ETAG,
                             cache_control="max-age=60")
    assert response.headers["ETag"] == ETAG
    if response.status == 206:
        unit, _, rest = response.headers["Content-Range"].partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        assert unit == "bytes" and int(total) == len(body)
        assert 0 <= int(first) <= int(last) < len(body)
        assert response.body == body[int(first):int(last) + 1]
    else:
        assert response.status in (200, 304)


def _query(payload: bytes) -> MultiDict[str]:
    text = payload.decode("utf-8", "replace")
    return MultiDict(parse_qsl(text, keep_blank_values=True))


def run_playback_query(payload: bytes) -> None:
    query = _query(payload)
    parsed = parse_playback_query(query)
    assert "\n" not in parsed.license_query and " " not in parsed.media_playlist_query
    items = parsed.filter.query_items()
    assert parse_playback_filter(dict(items)) == parsed.filter


def run_playback_filter(payload: bytes) -> None:
    parse_playback_filter(dict(_query(payload)))


def _range_seeds() -> list[bytes]:
    headers = [b"bytes=0-99", b"bytes=100-", b"bytes=-500", b"bytes=0-0", b" bytes=5-10 ",
               b"bytes=0-1,5-9", b"bytes=1000-2000"]
    return [size.to_bytes(2, "big") + h for h in headers for size in (0, 1, 1024)]


def _respond_seeds() -> list[bytes]:
    lines = [b"bytes=0-99\n" + ETAG.encode() + b"\n" + b'"other"',
             b"bytes=-16\nW/" + ETAG.encode() + b"\n*", b"bytes=2000-\n\n" + ETAG.encode()]
    return [bytes([flags]) + line for line in lines for flags in (0x01, 0x3B, 0x3F, 0x04)]


def _query_seeds() -> list[bytes]:
    return [b"token=abc.def.ghi&key_systems=fairplay,widevine,identity",
            b"ks=djJ8MTIzfA==&tracks=video,audio&min_bitrate=100000&max_bitrate=2000000",
            b"audio_lang=en,fr-CA&flavor=video-720p&profile=offline&bandwidth=1000000",
            b"tracks=subtitles&key_systems=clearkey&token=&token=second"]


TARGETS: tuple[Target, ...] = (
    Target("parse_range", run_parse_range, (RangeNotSatisfiable,), _range_seeds,
           lambda d: [2, 8, 9, 10]),
    Target("respond_bytes", run_respond_bytes, (RangeNotSatisfiable,), _respond_seeds,
           lambda d: [0, 1, 7, 8]),
    Target("playback_query", run_playback_query, (BadRequest,), _query_seeds),
    Target("playback_filter", run_playback_filter, (BadRequest,), _query_seeds),
)
