"""Every parser of outside input, fuzzed: only typed errors may escape (issue 8 §1).

The targets, their typed errors and their seeds live in ``tests/fuzz`` (shared with
the atheris harnesses of ``make fuzz``).  Here each target gets real inputs damaged
by hypothesis (byte flips, truncation, splicing, length-field corruption, repetition aimed at
structure starts), derandomized so CI sees the same inputs every run; any other
exception — ``IndexError``, ``struct.error``, ``KeyError``, ``UnicodeError``,
``RecursionError`` or a failed invariant — fails the test.  Inputs the long atheris
runs found are kept below as regressions, with what each must give now.

Older fuzz tests of single parsers stay where they are (``test_container_*``,
``test_license_*``); these run every parser through one contract.
"""

from __future__ import annotations

import base64
import json
import struct

import jwt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from origin.errors import MalformedMedia, OriginError, RangeNotSatisfiable
from origin.http.ranges import parse_range
from origin.license.authorization import presented_token
from origin.license.fairplay import MalformedSpcRequest, parse_spc_request
from origin.license.token import JwtVerifier, TokenRejected
from tests.fuzz.core import KINDS, MAX_REPEAT, Target, corpus, mutate, pick
from tests.fuzz.families import NAMES, family
from tests.fuzz.families.token import HS256

EXAMPLES = 80
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

TARGETS = [(name, target) for name in NAMES for target in family(name)]
IDS = [f"{name}-{target.name}" for name, target in TARGETS]

_OPS = st.lists(st.tuples(st.integers(0, len(KINDS) - 1), st.integers(0, 1 << 17),
                          st.integers(0, 23), st.integers(0, (1 << 32) - 1),
                          st.integers(0, 1 << 10)), min_size=1, max_size=4)


def damaged(target: Target) -> st.SearchStrategy[bytes]:
    """A seed of ``target`` with a few mutations, or (rarely) arbitrary bytes."""
    seeds = list(target.seeds())

    def build(index: int, ops: list[tuple[int, int, int, int, int]]) -> bytes:
        seed = seeds[index % len(seeds)]
        return mutate(seed, ops, anchors=target.anchors(seed), others=seeds)

    mutated = st.builds(build, st.integers(0, len(seeds) - 1), _OPS)
    return st.one_of(mutated, mutated, mutated, st.binary(max_size=64))


@pytest.mark.parametrize(("name", "target"), TARGETS, ids=IDS)
@FUZZ
@given(data=st.data())
def test_only_typed_errors_escape(name: str, target: Target, data: st.DataObject) -> None:
    target.exercise(data.draw(damaged(target), label="input"))


NESTING_FAMILIES = ("hls", "mpd", "ranges", "licence", "cpix", "token")
NESTED = [(name, target) for name, target in TARGETS if name in NESTING_FAMILIES]


@pytest.mark.parametrize(("name", "target"), NESTED,
                         ids=[f"{name}-{target.name}" for name, target in NESTED])
def test_deep_nesting_at_every_structure_start(name: str, target: Target) -> None:
    """What random mutation rarely builds: the byte (or tag) at a structure start repeated
    into thousands of levels of nesting (``[[[…``, ``{"a":{"a":…``, ``<a><a>…``)."""
    seeds = list(target.seeds())
    for seed in seeds[:: max(1, len(seeds) // 8)]:
        anchors = sorted(set(target.anchors(seed)))
        for at in anchors[:: max(1, len(anchors) // 12)]:
            for width in (1, 3, 5):
                chunk = seed[at:at + width]
                target.exercise(seed[:at] + chunk * (MAX_REPEAT // width) + seed[at:])


@pytest.mark.parametrize(("name", "target"), TARGETS, ids=IDS)
def test_seeds_pass_the_first_checks(name: str, target: Target) -> None:
    """Mutations start from inputs the parser accepts, so they reach its deeper code."""
    seeds = target.seeds()
    assert seeds, f"{name}/{target.name} has no seed"
    assert any(target.exercise(seed) for seed in seeds)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_entries_name_their_target(name: str) -> None:
    members = family(name)
    entries = corpus(members)
    assert len(entries) == sum(len(t.seeds()) for t in members)
    for target in members:
        for seed in target.seeds():
            chosen, payload = pick(members, bytes([members.index(target)]) + seed)
            assert chosen is target and payload == seed


def test_mutate_is_deterministic_and_damages() -> None:
    seed = bytes(range(64))
    ops = [(0, 1, 3, 0xAB, 0), (2, 0, 0, 0, 3), (4, 100, 0, 0, 0)]
    once = mutate(seed, ops, anchors=[8, 16])
    assert once == mutate(seed, ops, anchors=[8, 16]) and once != seed
    assert isinstance(mutate(b"", [(k, 0, 0, 0, 0) for k in range(len(KINDS))], others=[b"x"]),
                      bytes)
    assert mutate(b"ab", [(KINDS.index("splice"), 2, 0, 0, 0)], others=[b"xyz"]) == b"axb"


# -- negative controls: the machinery finds what it is meant to find --------------------------


def _careless_box_size(data: bytes) -> int:
    """A box reader that trusts its size field (what every real parser here must not do)."""
    if len(data) < 8:
        raise MalformedMedia("truncated box header")
    size, _ = struct.unpack_from(">I4s", data)
    (tail,) = struct.unpack_from(">I", data, size - 4)  # struct.error when size lies
    return int(tail)


CARELESS = Target("careless", _careless_box_size, (MalformedMedia,),
                  lambda: [struct.pack(">I4sI", 12, b"free", 7)], lambda d: [0])


def test_exercise_lets_untyped_errors_through() -> None:
    assert CARELESS.exercise(CARELESS.seeds()[0])
    with pytest.raises(struct.error):
        CARELESS.exercise(struct.pack(">I4sI", 400, b"free", 7))


def test_hypothesis_finds_an_unchecked_length_field() -> None:
    @settings(FUZZ, phases=[Phase.generate], report_multiple_bugs=False)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        CARELESS.exercise(data.draw(damaged(CARELESS)))

    with pytest.raises(struct.error):
        fuzz()


# -- regressions: inputs the fuzzers found, and what they give now ----------------------------
#
# (family, target, payload after the selector byte, accepted?).  Each was a crash before the
# fix named beside it; the tests after the list check the fixed behaviour directly.

DEEP = 3000
HUGE_DATE = b"1" + b"7" * 400  # an integer JSON number past float range
REGRESSIONS: list[tuple[str, str, bytes, bool]] = [
    # ranges.parse_range: "bytes=-N" on an empty body gave (0, 0), a 206 "bytes 0--1/0".
    ("ranges", "parse_range", b"\x00\x00bytes=-500", True),
    ("ranges", "respond_bytes", b'\x01bytes=-16\nW/"x"\n*', True),
    # fairplay.decode_base64: "spc==" (padding only) gave an empty SPC, sent on to the KSM.
    ("licence", "spc", b"\x02spc==&assetId=45egQ72&offline=true", False),
    ("licence", "spc", b'\x01{"spc": "==", "assetId": "x"}', False),
    # token._numeric_date: math.isfinite() of a 400-digit exp/iat raised OverflowError.
    ("token", "verify_signed",
     b'{"alg":"HS256","typ":"JWT"}\0{"iss":"https://issuer.example","aud":"origin","iat":'
     + HUGE_DATE + b',"exp":1700000600,"asset":"demo"}', False),
    ("token", "verify_signed",
     b'{"alg":"HS256"}\0{"iss":"https://issuer.example","aud":"origin","exp":'
     + HUGE_DATE + b',"asset":"demo"}', False),
    # authorization._kaltura_user_token: RecursionError on deeply nested custom_data JSON.
    ("token", "presented_token", b"\n\n\n\n" + b"[" * DEEP, True),
    ("token", "presented_token", b'\n\n\n\n{"user_token":' + b"[" * DEEP + b"]" * DEEP + b"}",
     True),
]


@pytest.mark.parametrize(("name", "target_name", "data", "accepted"), REGRESSIONS,
                         ids=[f"{n}-{t}-{i}" for i, (n, t, _, _) in enumerate(REGRESSIONS)])
def test_regressions(name: str, target_name: str, data: bytes, accepted: bool) -> None:
    (target,) = [t for t in family(name) if t.name == target_name]
    assert target.exercise(data) is accepted


def test_suffix_range_of_an_empty_body_is_answered_whole() -> None:
    assert parse_range("bytes=-500", 0) is None
    assert parse_range("bytes=-500", 10) == (0, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 0)


@pytest.mark.parametrize("body", [b"spc==&assetId=x", b"spc=%3D%3D", b'{"spc": "="}'])
def test_spc_of_padding_only_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedSpcRequest, match="spc is not base64"):
        parse_spc_request(body, None)
    assert parse_spc_request(b"spc=AAAA", None).spc == b"\0\0\0"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_token_with_a_huge_numeric_date_is_rejected(claim: str) -> None:
    claims = {"iss": HS256.issuer, "aud": HS256.audience, "exp": 1_700_000_600, "asset": "x"}
    payload = json.dumps(claims)[:-1] + f', "{claim}": {HUGE_DATE.decode()}}}'
    token = jwt.encode(json.loads(payload), HS256.secret, algorithm="HS256")
    with pytest.raises(TokenRejected, match="malformed token"):
        JwtVerifier(HS256).verify(token, now=1_700_000_000)


def test_deeply_nested_kaltura_custom_data_is_no_token() -> None:
    nested = base64.b64encode(b'{"user_token":' + b"[" * DEEP + b"]" * DEEP + b"}").decode()
    assert presented_token({}, {"custom_data": nested}) is None
    plain = base64.b64encode(b'{"user_token": "t0k"}').decode()
    assert presented_token({}, {"custom_data": plain}) == "t0k"


def test_typed_errors_are_origin_errors_or_documented() -> None:
    documented = {"TokenRejected"}
    for _, target in TARGETS:
        for error in target.typed:
            assert issubclass(error, OriginError) or error.__name__ in documented, error


# --- regressions of the ten-minute atheris runs (2026-11-23) --------------------------------

HUGE = "9" * 6400  # over int()'s 4,300-digit limit: int() raised ValueError, a 500


@pytest.mark.parametrize("value", [HUGE, "²", "٣", "", "1e3", "-1", "1" * 19])
def test_mpd_bandwidth_that_is_no_decimal_is_malformed_media(value: str) -> None:
    from origin.errors import BadRequest, MalformedMedia
    from origin.packaging.dash import filter_mpd, parse_mpd
    from origin.packaging.playback_filter import parse_playback_filter

    mpd = (
        '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
        '<Period><AdaptationSet contentType="video" mimeType="video/mp4">'
        f'<Representation id="v" bandwidth="{value}"/></AdaptationSet></Period></MPD>'
    ).encode()
    with pytest.raises((MalformedMedia, BadRequest)):
        filter_mpd(parse_mpd(mpd), parse_playback_filter({"max_bitrate": "5000000"}))


@pytest.mark.parametrize("value", [HUGE, "²", "٣", "1" * 19])
def test_hls_bandwidth_and_version_that_are_no_decimal_are_malformed_media(value: str) -> None:
    from origin.errors import MalformedMedia
    from origin.packaging.hls import (
        parse_multivariant_playlist,
        rewrite_media_playlist,
    )

    variant = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH={value}\nv/index.m3u8\n"
    with pytest.raises(MalformedMedia):
        parse_multivariant_playlist(variant, "master.m3u8")
    media = f"#EXTM3U\n#EXT-X-VERSION:{value}\n#EXTINF:2,\ns.ts\n#EXT-X-ENDLIST\n"
    with pytest.raises(MalformedMedia):
        rewrite_media_playlist(media, playlist_path="v/index.m3u8", keys=[], iv_for=None)
