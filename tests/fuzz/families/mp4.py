"""ISO-BMFF: box reading, init segments, fragments, ``tfhd``/``trun``, timing, ``pssh``.

Inputs are init segments and media segments of the demo asset and of
``tests/media``.  Fragment targets read their init segment's index from the
payload's first byte (``protect_fragment``: index and scheme), so a corpus
file keeps the init it was cut from.  Typed errors: ``MalformedMedia``.
"""

from __future__ import annotations

from functools import cache

from origin.container.boxes import (
    CONTAINERS,
    find_boxes,
    iter_boxes,
    iter_sample_entries,
    read_handler_types,
)
from origin.container.fragment import parse_fragment
from origin.container.init_segment import InitInfo, parse_init, protect_init
from origin.container.playready import playready_pssh
from origin.container.pssh import build_pssh, common_pssh, parse_pssh
from origin.container.timeline import TrackTiming, fragment_timing, read_track_timings
from origin.container.track_fragment import read_tfhd, read_trun
from origin.container.widevine import widevine_pssh
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia
from origin.packaging.segments import protect_fragment
from tests.fuzz import media
from tests.fuzz.core import Target

KEY = ContentKey(bytes(range(16)), bytes(range(16, 32)))
IV = bytes(range(32, 48))
SCHEMES = (CommonScheme.CBCS, CommonScheme.CENC)
TYPED = (MalformedMedia,)


@cache
def _init_info(index: int) -> InitInfo:
    return parse_init(media.inits()[index][1])


@cache
def _timings(index: int) -> tuple[TrackTiming, ...]:
    return tuple(read_track_timings(media.inits()[index][1]).values())


def _init_index(payload: bytes) -> tuple[int, bytes]:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    return payload[0] % len(media.inits()), payload[1:]


def walk_boxes(data: bytes) -> None:
    """Every box of every container, the handler types and the sample entries."""
    todo = [(0, len(data), 0)]
    while todo:
        start, end, depth = todo.pop()
        for box in iter_boxes(data, start, end):
            if box.type in CONTAINERS and depth < 12:
                todo.append((box.payload_start, box.end, depth + 1))
    read_handler_types(data)
    for entry in iter_sample_entries(data):
        assert entry.start < entry.end <= len(data)


def run_parse_init(data: bytes) -> None:
    info = parse_init(data)
    for track_id, track in info.tracks.items():
        assert track.track_id == track_id and info.track(track_id) is track


def run_protect_init(payload: bytes) -> None:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    scheme = SCHEMES[payload[0] & 1]
    data = payload[1:]
    out = protect_init(data, scheme=scheme, kid=KEY.kid, constant_iv=IV,
                       pssh=[common_pssh([KEY.kid])])
    list(iter_boxes(out))  # what it wrote is well-formed at the top level


def run_parse_fragment(payload: bytes) -> None:
    index, data = _init_index(payload)
    fragment = parse_fragment(data, _init_info(index))
    for moof in fragment.moofs:
        for traf in moof.trafs:
            for offset, size in traf.samples:
                assert offset >= 0 and offset + size <= len(data)


def run_protect_fragment(payload: bytes) -> None:
    if not payload:
        raise MalformedMedia("empty fuzz input")
    index = (payload[0] >> 1) % len(media.inits())
    scheme = SCHEMES[payload[0] & 1]
    protect_fragment(payload[1:], _init_info(index), scheme, KEY, "fuzz/seg.m4s")


def run_track_fragment(data: bytes) -> None:
    for tfhd in find_boxes(data, ("moof", "traf", "tfhd")):
        read_tfhd(data, tfhd)
    for trun in find_boxes(data, ("moof", "traf", "trun")):
        parsed = read_trun(data, trun)
        for column in (parsed.durations, parsed.sizes):
            assert column is None or len(column) == parsed.count


def run_track_timings(data: bytes) -> None:
    for timing in read_track_timings(data).values():
        assert timing.timescale > 0


def run_fragment_timing(payload: bytes) -> None:
    index, data = _init_index(payload)
    for track in _timings(index):
        try:
            timing = fragment_timing(data, track)
        except MalformedMedia as exc:
            if "has no fragment of track" in exc.detail:
                continue
            raise
        assert timing.duration >= 0 and timing.samples >= 0


def run_parse_pssh(data: bytes) -> None:
    parsed = parse_pssh(data)
    rebuilt = build_pssh(parsed.system_id, parsed.data, parsed.kids, parsed.version)
    assert parse_pssh(rebuilt) == parsed


def _init_seeds() -> list[bytes]:
    return [data for _, data in media.inits()]


def _fragment_seeds() -> list[bytes]:
    return [bytes([index]) + data for index, data in media.fragments()]


def _protect_fragment_seeds() -> list[bytes]:
    return [bytes([index << 1 | bit]) + data for index, data in media.fragments()
            for bit in (0, 1)]


def _protect_init_seeds() -> list[bytes]:
    return [bytes([bit]) + data for data in _init_seeds() for bit in (0, 1)]


def _pssh_seeds() -> list[bytes]:
    kids = [KEY.kid, bytes(16)]
    return [common_pssh(kids), widevine_pssh(kids, b"content", CommonScheme.CENC),
            playready_pssh(KEY.kid, KEY.key, "https://licence.example/pr", CommonScheme.CENC),
            build_pssh(bytes(range(16)), b"data", (), 0)]


def _boxes_seeds() -> list[bytes]:
    return _init_seeds() + [data for _, data in media.fragments()]


def _skip_first(payload: bytes) -> list[int]:
    return media.shifted(media.box_starts(payload[1:]), 1)


TARGETS: tuple[Target, ...] = (
    Target("boxes", walk_boxes, TYPED, _boxes_seeds, media.box_starts),
    Target("parse_init", run_parse_init, TYPED, _init_seeds, media.box_starts),
    Target("protect_init", run_protect_init, TYPED, _protect_init_seeds, _skip_first),
    Target("parse_fragment", run_parse_fragment, TYPED, _fragment_seeds, _skip_first),
    Target("protect_fragment", run_protect_fragment, TYPED, _protect_fragment_seeds,
           _skip_first),
    Target("track_fragment", run_track_fragment, TYPED,
           lambda: [data for _, data in media.fragments()], media.box_starts),
    Target("track_timings", run_track_timings, TYPED, _init_seeds, media.box_starts),
    Target("fragment_timing", run_fragment_timing, TYPED, _fragment_seeds, _skip_first),
    Target("pssh", run_parse_pssh, TYPED, _pssh_seeds, lambda d: [0, 8, 12, 28, 32, 48]),
)
