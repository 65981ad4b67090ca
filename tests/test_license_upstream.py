"""Widevine/PlayReady licence proxy to upstream licence servers.

The challenge parsers (hand-encoded protobuf, SOAP challenges around the origin's own
WRMHEADERs: ``tests.tools.challenges``), the configuration, the Kaltura identity, and the
real licence app on a loopback port in front of fake upstream licence servers
(``tests.tools.upstream``) — real aiohttp servers on 127.0.0.1 that record what they
received and answer like a licence server would (success, 403, 500, never, too much).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from origin.container.pssh import SystemId, build_pssh
from origin.container.widevine import encode_widevine_pssh_data, widevine_pssh
from origin.crypto.subsample import CommonScheme
from origin.license.app import build_license_app
from origin.license.app_state import VERIFIER_KEY
from origin.license.challenge import (
    MAX_KIDS,
    ChallengeError,
    MalformedPlayReadyChallenge,
    MalformedWidevineRequest,
    NoKeyId,
    ProtoField,
    TooManyKeyIds,
    WidevineLicenseType,
    WidevineMessageType,
    WireType,
    kid_from_guid_le,
    parse_playready_challenge,
    parse_widevine_challenge,
    read_proto_fields,
)
from origin.license.policy import (
    ContentKeyPolicy,
    Entitlement,
    KeySystem,
    Restriction,
)
from origin.license.settings import LicenseSettings
from origin.license.token import TokenRejected, VerifiedToken
from origin.license.upstream import (
    MAX_ANSWER_BYTES,
    KalturaIdentity,
    UpstreamConfig,
    build_upstream_request,
    kaltura_query,
    parse_upstream_config,
)
from tests.tools.challenges import (
    PR_NS,
    SERVICE_CERTIFICATE_REQUEST,
    guid_le_b64,
    pb,
    playready_challenge,
    signed_licence_request,
    varint,
    widevine_init_data_request,
    widevine_pssh_request,
    wrmheader,
    wrmheader_kids,
)
from tests.tools.licence import licence_app
from tests.tools.loopback import serve_app
from tests.tools.upstream import LICENCE, UPSTREAM_SECRET_BODY, FakeUpstream

ENV_HEADER_SECRET = "env-header-secret-0123456789"
KALTURA_SECRET = "kaltura-signing-secret-abcdef"
PLAYER_SECRET = "player-bearer-secret-zyx987"
COOKIE_SECRET = "cookie-secret-qwe456"
SOAP_ACTION = '"http://schemas.microsoft.com/DRM/2007/03/protocols/AcquireLicense"'


# --- pure: Widevine ---------------------------------------------------------------------------

KID_A = uuid.UUID("4060a865-8878-4267-9cbf-91ae5bae1e72").bytes
KID_B = bytes(range(16))


@pytest.mark.parametrize(("wire", "expected"), [
    (None, WidevineLicenseType.STREAMING),
    (1, WidevineLicenseType.STREAMING),
    (2, WidevineLicenseType.OFFLINE),
    (3, WidevineLicenseType.AUTOMATIC),
])
def test_widevine_pssh_data_request(wire: int | None, expected: WidevineLicenseType) -> None:
    challenge = parse_widevine_challenge(widevine_pssh_request(KID_A, KID_B, license_type=wire))
    assert challenge.message_type is WidevineMessageType.LICENSE_REQUEST
    assert challenge.kids == (KID_A, KID_B)
    assert challenge.license_type is expected


def test_widevine_pssh_data_holding_a_whole_box_and_repeated_kids() -> None:
    box = widevine_pssh([KID_B, KID_A], b"", CommonScheme.CBCS)
    inner = pb(1, box) + pb(1, encode_widevine_pssh_data([KID_A], b"", CommonScheme.CENC))
    challenge = parse_widevine_challenge(signed_licence_request(pb(1, inner)))
    assert challenge.kids == (KID_B, KID_A)


def test_widevine_init_data_cenc_reads_only_widevine_boxes() -> None:
    v1 = build_pssh(SystemId.WIDEVINE, encode_widevine_pssh_data([KID_A], b"",
                                                                 CommonScheme.CENC),
                    kids=[KID_B], version=1)
    other = build_pssh(SystemId.PLAYREADY, b"\x00" * 10, version=0)
    common = build_pssh(SystemId.COMMON, b"", kids=[bytes(16)], version=1)
    challenge = parse_widevine_challenge(
        widevine_init_data_request(other + common + v1, license_type=2))
    assert challenge.kids == (KID_B, KID_A)  # the box's KID list, then its data
    assert challenge.license_type is WidevineLicenseType.OFFLINE
    # Default init_data_type is CENC.
    default = parse_widevine_challenge(widevine_init_data_request(
        widevine_pssh([KID_A], b"", CommonScheme.CENC), init_type=None))
    assert default.kids == (KID_A,)


def test_widevine_webm_key_id_and_webm_init_data() -> None:
    webm = signed_licence_request(pb(2, pb(1, KID_A) + pb(2, 1)))
    assert parse_widevine_challenge(webm).kids == (KID_A,)
    init = widevine_init_data_request(KID_B, init_type=2)
    assert parse_widevine_challenge(init).kids == (KID_B,)


def test_widevine_service_certificate_request_has_no_kid() -> None:
    challenge = parse_widevine_challenge(SERVICE_CERTIFICATE_REQUEST)
    assert challenge.message_type is WidevineMessageType.SERVICE_CERTIFICATE_REQUEST
    assert challenge.kids == ()


def test_widevine_request_without_kid_is_no_key_id() -> None:
    only_content_id = signed_licence_request(
        pb(1, pb(1, pb(4, b"content-id-only") + pb(9, 0x63656E63))))
    renewal = signed_licence_request(pb(3, pb(1, pb(1, b"request"))))  # existing_license
    for body in (only_content_id, renewal, pb(1, 1) + pb(2, pb(6, 21))):
        with pytest.raises(NoKeyId) as caught:
            parse_widevine_challenge(body)
        assert caught.value.status == 400
        assert caught.value.detail == "no key id in licence request"


def test_widevine_too_many_kids() -> None:
    kids = [i.to_bytes(16, "big") for i in range(MAX_KIDS + 1)]
    parse_widevine_challenge(widevine_pssh_request(*kids[:MAX_KIDS]))
    with pytest.raises(TooManyKeyIds):
        parse_widevine_challenge(widevine_pssh_request(*kids))


MALFORMED_WIDEVINE: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated varint", b"\x08\xff"),
    ("varint too long", b"\x08" + b"\xff" * 10 + b"\x01"),
    ("length past the end", b"\x12\x05ab"),
    ("huge length", b"\x12\xff\xff\xff\xff\x0f"),
    ("field number 0", b"\x00\x01"),
    ("group wire type", b"\x0b\x0c"),
    ("wire type 7", b"\x0f"),
    ("fixed64 past the end", b"\x09\x01\x02"),
    ("garbage", b"\xde\xad\xbe\xef" * 8),
    ("json", b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA"]}'),
    ("type missing", pb(2, b"")),
    ("type as bytes", pb(1, b"\x01")),
    ("unknown message type", pb(1, 2) + pb(2, b"")),
    ("licence request without msg", pb(1, 1)),
    ("msg not a message", pb(1, 1) + pb(2, b"\xff\xff")),
    ("content_id a varint", pb(1, 1) + pb(2, pb(2, 5))),
    ("pssh_data a varint", signed_licence_request(pb(1, pb(1, 7)))),
    ("kid 15 bytes", signed_licence_request(pb(1, pb(1, pb(2, b"k" * 15))))),
    ("bad licence type", widevine_pssh_request(KID_A, license_type=9)),
    ("truncated pssh box", widevine_init_data_request(b"\x00\x00\x00\x40pssh\x00")),
    ("pssh size past the end",
     widevine_init_data_request(widevine_pssh([KID_A], b"", CommonScheme.CENC)[:-1])),
    ("pssh v1 count too big", widevine_init_data_request(
        struct.pack(">I4sI16sI", 36, b"pssh", 1 << 24, SystemId.WIDEVINE.value, 9999))),
    ("pssh v2", widevine_init_data_request(
        struct.pack(">I4sI16sI", 32, b"pssh", 2 << 24, SystemId.WIDEVINE.value, 0))),
    ("unknown init data type", widevine_init_data_request(b"x", init_type=5)),
]


@pytest.mark.parametrize(("label", "body"), MALFORMED_WIDEVINE,
                         ids=[m[0] for m in MALFORMED_WIDEVINE])
def test_malformed_widevine_is_a_typed_400(label: str, body: bytes) -> None:
    with pytest.raises(MalformedWidevineRequest) as caught:
        parse_widevine_challenge(body)
    assert caught.value.status == 400


@st.composite
def proto_fields(draw: st.DrawFn) -> list[ProtoField]:
    items = []
    for _ in range(draw(st.integers(0, 6))):
        number = draw(st.integers(1, (1 << 29) - 1))
        wire = draw(st.sampled_from(list(WireType)))
        value: int | bytes
        if wire in (WireType.VARINT, WireType.I64):
            value = draw(st.integers(0, (1 << 64) - 1))
        elif wire is WireType.I32:
            value = draw(st.integers(0, (1 << 32) - 1))
        else:
            value = draw(st.binary(max_size=40))
        items.append(ProtoField(number, wire, value))
    return items


def encode_field(item: ProtoField) -> bytes:
    key = varint(item.number << 3 | item.wire_type)
    if item.wire_type is WireType.I64:
        assert isinstance(item.value, int)
        return key + item.value.to_bytes(8, "little")
    if item.wire_type is WireType.I32:
        assert isinstance(item.value, int)
        return key + item.value.to_bytes(4, "little")
    if isinstance(item.value, bytes):
        return key + varint(len(item.value)) + item.value
    return key + varint(item.value)


@given(proto_fields())
def test_protobuf_reader_round_trips(fields: list[ProtoField]) -> None:
    assert read_proto_fields(b"".join(map(encode_field, fields))) == tuple(fields)


VALID_WIDEVINE = [
    widevine_pssh_request(KID_A, license_type=2),
    widevine_init_data_request(widevine_pssh([KID_A, KID_B], b"", CommonScheme.CBCS)),
    SERVICE_CERTIFICATE_REQUEST,
]


@hyp_settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(VALID_WIDEVINE), st.integers(0, 400), st.binary(max_size=4),
              st.integers(0, 400)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + t[3] % 3:]),  # splice in a few bytes
))
def test_widevine_parser_fuzz_raises_only_typed_errors(body: bytes) -> None:
    with contextlib.suppress(MalformedWidevineRequest):
        read_proto_fields(body)
    try:
        challenge = parse_widevine_challenge(body)
    except ChallengeError as exc:
        assert exc.status == 400
    else:
        assert all(len(kid) == 16 for kid in challenge.kids)
        assert len(challenge.kids) <= MAX_KIDS


# --- pure: PlayReady --------------------------------------------------------------------------


def test_kid_little_endian_guid_spec_vector() -> None:
    # SPECS §5: default_KID 4060a865-8878-4267-9cbf-91ae5bae1e72 ↔ ZahgQHiIZ0Kcv5GuW64ecg==
    raw = base64.b64decode("ZahgQHiIZ0Kcv5GuW64ecg==")
    assert kid_from_guid_le(raw) == KID_A
    assert guid_le_b64(KID_A) == "ZahgQHiIZ0Kcv5GuW64ecg=="
    assert kid_from_guid_le(raw) != raw  # the byte swap matters


@pytest.mark.parametrize("version", ["4.0", "4.1", "4.3"])
def test_playready_kid_of_each_header_version(version: str) -> None:
    challenge = parse_playready_challenge(playready_challenge(wrmheader(KID_A, version)))
    assert challenge.kids == (KID_A,)


def test_playready_kids_list_and_a_kid_elsewhere_is_ignored() -> None:
    body = playready_challenge(wrmheader_kids(KID_B, KID_A, KID_B))
    assert parse_playready_challenge(body).kids == (KID_B, KID_A)
    # A WRMHEADER that is not the ContentHeader's (here: escaped inside CustomData, and a
    # KID element in another namespace) does not count.
    decoy = wrmheader(KID_A, "4.0").replace("<", "&lt;").replace(">", "&gt;")
    with pytest.raises(NoKeyId):
        parse_playready_challenge(playready_challenge(
            '<KID xmlns="urn:other">ZahgQHiIZ0Kcv5GuW64ecg==</KID>', custom_data=decoy))


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
              for i in range(1, 10))
    + ']><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    "<AcquireLicense>&lol9;</AcquireLicense></soap:Envelope>"
).encode()

MALFORMED_PLAYREADY: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("garbage", b"\x00\x01\x02 not xml"),
    ("truncated", playready_challenge(wrmheader(KID_A, "4.0"))[:300]),
    ("doctype bomb", BILLION_LAUGHS),
    ("external entity", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM '
                        b'"file:///etc/passwd">]><AcquireLicense>&e;</AcquireLicense>'),
    ("doctype after a comment", b"<!-- hi --><!DOCTYPE x><AcquireLicense/>"),
    ("utf-16", playready_challenge(wrmheader(KID_A, "4.0")).decode().replace(
        'encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")),
    ("declared latin-1", playready_challenge(wrmheader(KID_A, "4.0")).replace(
        b'encoding="utf-8"', b'encoding="iso-8859-1"')),
    ("invalid utf-8", playready_challenge(wrmheader(KID_A, "4.0")).replace(b"<Version>",
                                                                         b"<Version>\xff")),
    ("not a challenge", f'<Other><ContentHeader>{wrmheader(KID_A, "4.0")}</ContentHeader>'
                        "</Other>".encode()),
    ("kid not base64", playready_challenge(wrmheader(KID_A, "4.0").replace(
        guid_le_b64(KID_A), "not*base64"))),
    ("kid 8 bytes", playready_challenge(wrmheader(KID_A, "4.1").replace(
        guid_le_b64(KID_A), "AAAAAAAAAAA="))),
    ("kid without value", playready_challenge(wrmheader(KID_A, "4.1").replace(
        f'VALUE="{guid_le_b64(KID_A)}"', ""))),
    ("nested too deep", playready_challenge("<a>" * 40 + "</a>" * 40)),
    ("two roots", playready_challenge(wrmheader(KID_A, "4.0")) + b"<x/>"),
]


@pytest.mark.parametrize(("label", "body"), MALFORMED_PLAYREADY,
                         ids=[m[0] for m in MALFORMED_PLAYREADY])
def test_malformed_playready_is_a_typed_400(label: str, body: bytes) -> None:
    with pytest.raises(MalformedPlayReadyChallenge) as caught:
        parse_playready_challenge(body)
    assert caught.value.status == 400


def test_playready_without_kid_is_no_key_id() -> None:
    header = f'<WRMHEADER xmlns="{PR_NS}" version="4.0.0.0"><DATA></DATA></WRMHEADER>'
    with pytest.raises(NoKeyId):
        parse_playready_challenge(playready_challenge(header))


@hyp_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 3000), st.binary(max_size=6), st.integers(0, 6))
def test_playready_parser_fuzz_raises_only_typed_errors(at: int, insert: bytes,
                                                        drop: int) -> None:
    valid = playready_challenge(wrmheader_kids(KID_A, KID_B))
    body = valid[:at] + insert + valid[at + drop:]
    try:
        challenge = parse_playready_challenge(body)
    except ChallengeError as exc:
        assert exc.status == 400
    else:
        assert all(len(kid) == 16 for kid in challenge.kids)


# --- pure: configuration and the Kaltura identity --------------------------------------------


def no_files(path: str) -> Path:
    raise AssertionError("no file expected")


def parse_config(table: dict[str, Any], env: dict[str, str] | None = None,
                 resolve: Callable[[str], Path] = no_files) -> UpstreamConfig:
    return parse_upstream_config(KeySystem.WIDEVINE, table, env=env or {}, resolve=resolve)


def test_config_full_and_secrets_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("file-secret-value\n")
    config = parse_config(
        {
            "url": "https://lic.example/wv?x=1",
            "timeout_s": 2.5,
            "headers": {"X-Static": "v", "X-Env": {"env": "WV_KEY"},
                        "X-File": {"file": "key.txt"}},
            "query": {"provider": "demo", "n": 7},
            "kaltura_partner_id": 1234,
            "kaltura_secret_env": "KS",
        },
        env={"WV_KEY": ENV_HEADER_SECRET, "KS": KALTURA_SECRET},
        resolve=lambda p: tmp_path / p,
    )
    assert config.url == "https://lic.example/wv?x=1"
    assert config.timeout_s == 2.5
    assert config.headers == (("X-Static", "v"), ("X-Env", ENV_HEADER_SECRET),
                              ("X-File", "file-secret-value"))
    assert config.query == (("provider", "demo"), ("n", "7"))
    assert config.kaltura == KalturaIdentity(1234, KALTURA_SECRET.encode())
    text = repr(config)
    for secret in (ENV_HEADER_SECRET, "file-secret-value", KALTURA_SECRET, "lic.example"):
        assert secret not in text
    assert parse_config({"url": "http://h/"}).timeout_s == 10.0


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({}, "url is required"),
    ({"url": 5}, "url is required"),
    ({"url": "ftp://h/"}, "url must be an http or https"),
    ({"url": "https:///nohost"}, "url must be an http or https"),
    ({"url": "https://user:pw@h/"}, "url must not carry credentials"),
    ({"url": "https://h/#frag"}, "url must not have a fragment"),
    ({"url": "https://h/", "timeout_s": 0}, "timeout_s"),
    ({"url": "https://h/", "timeout_s": 61}, "timeout_s"),
    ({"url": "https://h/", "timeout_s": "10"}, "timeout_s"),
    ({"url": "https://h/", "timeout_s": True}, "timeout_s"),
    ({"url": "https://h/", "headers": "X: y"}, "headers must be a table"),
    ({"url": "https://h/", "headers": {"Bad Name": "v"}}, "not a valid header name"),
    ({"url": "https://h/", "headers": {"Content-Type": "x"}}, "Content-Type is set by"),
    ({"url": "https://h/", "headers": {"X": "a\r\nInjected: 1"}}, "headers.X holds"),
    ({"url": "https://h/", "headers": {"X": 5}}, "headers.X must be a string"),
    ({"url": "https://h/", "headers": {"X": {"env": "MISSING"}}},
     "headers.X: environment variable MISSING is not set"),
    ({"url": "https://h/", "headers": {"X": {"env": "A", "file": "b"}}}, "headers.X must be"),
    ({"url": "https://h/", "query": {"a": 1.5}}, "query.a must be"),
    ({"url": "https://h/", "kaltura_partner_id": 1}, "exactly one of kaltura_secret_env"),
    ({"url": "https://h/", "kaltura_partner_id": "1", "kaltura_secret_env": "KS"},
     "kaltura_partner_id must be a positive integer"),
    ({"url": "https://h/", "kaltura_secret_env": "KS"}, "needs kaltura_partner_id"),
    ({"url": "https://h/", "kaltura_partner_id": 1, "kaltura_secret_env": "KS",
      "query": {"signature": "x"}}, "custom_data and signature"),
    ({"url": "https://h/", "secret": "inline"}, "unknown field 'secret'"),
]


@pytest.mark.parametrize(("table", "message"), BAD_CONFIGS)
def test_bad_config_names_the_field(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="licence config: \\[widevine\\]") as caught:
        parse_config(table, env={"KS": KALTURA_SECRET})
    assert message in str(caught.value)
    assert KALTURA_SECRET not in str(caught.value)


def test_kaltura_query_as_kaltura_computes_it() -> None:
    identity = KalturaIdentity(2468, KALTURA_SECRET.encode())
    (n1, custom_data), (n2, signature) = kaltura_query(identity, user_token="tok/+=",
                                                       content_id="movie")
    assert (n1, n2) == ("custom_data", "signature")
    inner = base64.b64decode(custom_data, validate=True)
    assert json.loads(inner) == {"ca_system": "OVP", "user_token": "tok/+=",
                                 "account_id": 2468, "content_id": "movie", "files": ""}
    # base64(SHA-1(secret ‖ JSON)), Kaltura's signDataWithKey, computed independently.
    expected = base64.b64encode(hashlib.sha1(KALTURA_SECRET.encode() + inner).digest())
    assert signature == expected.decode()
    wrong = base64.b64encode(hashlib.sha1(b"wrong" + inner).digest()).decode()
    assert signature != wrong
    assert kaltura_query(identity, user_token=None, content_id="")[0][1] != custom_data

    config = UpstreamConfig(KeySystem.WIDEVINE, "https://h/p?a=b", query=(("x", "1 2"),),
                            kaltura=identity)
    request = build_upstream_request(config, b"body", content_type="ct", user_token="tok/+=",
                                     content_id="movie")
    quoted = {"+": "%2B", "/": "%2F", "=": "%3D"}
    cd = "".join(quoted.get(c, c) for c in custom_data)
    sig = "".join(quoted.get(c, c) for c in signature)
    assert request.url == f"https://h/p?a=b&x=1%202&custom_data={cd}&signature={sig}"
    assert KALTURA_SECRET not in repr(request) + repr(config)


# --- the licence app in front of fake upstream licence servers -------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    try:
        async with serve_app(fake.app()) as url:
            fake.url = url
            yield fake
    finally:
        fake.release.set()


class StubVerifier:
    """Stands in for JWT verification: a token → the assets it grants."""

    def __init__(self, grants: dict[str, frozenset[str]]) -> None:
        self.grants = grants

    def verify(self, token: str, *, now: float) -> VerifiedToken:
        if token not in self.grants:
            raise TokenRejected("token does not verify")
        return VerifiedToken(
            token_id=hashlib.sha256(token.encode()).hexdigest(), expires_at=int(now) + 600,
            entitlement=Entitlement(assets=self.grants[token], kids=None, offline=False),
            max_uses=None,
        )


def upstream_config(upstream: FakeUpstream, mode: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"url": f"{upstream.url}/{mode}", **extra}


def both(upstream: FakeUpstream, mode: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"widevine": upstream_config(upstream, mode, **extra),
            "playready": upstream_config(upstream, mode, **extra)}


def error_of(body: bytes) -> dict[str, Any]:
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
    assert "Traceback" not in text


async def test_widevine_licence_is_proxied_unchanged(
    settings: LicenseSettings, upstream: FakeUpstream, caplog_all: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WV_API_KEY", ENV_HEADER_SECRET)
    config = {"widevine": upstream_config(
        upstream, headers={"X-Static": "static", "X-Api-Key": {"env": "WV_API_KEY"}},
        query={"provider": "demo"})}
    async with licence_app(settings, config) as licence:
        key = await licence.asset_key("movie")
        challenge = widevine_pssh_request(key.kid)
        status, body, headers = await licence.post(
            "/license/widevine", challenge,
            headers={"Authorization": f"Bearer {PLAYER_SECRET}",
                     "Cookie": f"session={COOKIE_SECRET}",
                     "Content-Type": "application/octet-stream"},
            params={"token": PLAYER_SECRET},
        )
        assert status == 200
        assert body == LICENCE
        assert headers["Content-Type"] == "application/x-test-licence"
        assert headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in headers and "X-Upstream" not in headers

    [seen] = upstream.received
    assert seen.path == "/ok"
    assert seen.body == challenge  # byte-identical
    assert seen.headers["Content-Type"] == "application/octet-stream"
    assert seen.headers["X-Static"] == "static"
    assert seen.headers["X-Api-Key"] == ENV_HEADER_SECRET
    assert "Authorization" not in seen.headers and "Cookie" not in seen.headers
    assert "SOAPAction" not in seen.headers
    assert dict(seen.query) == {"provider": "demo"}  # the player's query stays here
    assert_clean(caplog_all.text, ENV_HEADER_SECRET, PLAYER_SECRET, COOKIE_SECRET,
                 key.key.hex())


@pytest.mark.parametrize("shape", ["init-data-cenc", "whole-box", "service-certificate"])
async def test_other_widevine_request_shapes(
    settings: LicenseSettings, upstream: FakeUpstream, shape: str,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        box = widevine_pssh([key.kid], b"", CommonScheme.CBCS)
        challenge = {
            "init-data-cenc": widevine_init_data_request(box),
            "whole-box": signed_licence_request(pb(1, pb(1, box))),
            "service-certificate": SERVICE_CERTIFICATE_REQUEST,
        }[shape]
        status, body, _ = await licence.post("/license/widevine", challenge)
        assert status == 200
        assert body == LICENCE
    assert [r.body for r in upstream.received] == [challenge]


@pytest.mark.parametrize("version", ["4.0", "4.1", "4.2", "4.3"])
async def test_playready_challenge_is_proxied_unchanged(
    settings: LicenseSettings, upstream: FakeUpstream, version: str,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        header = wrmheader_kids(key.kid) if version == "4.2" else wrmheader(key.kid, version)
        challenge = playready_challenge(header)
        status, body, headers = await licence.post(
            "/license/playready", challenge,
            headers={"SOAPAction": SOAP_ACTION, "Content-Type": "text/xml; charset=utf-8",
                     "Authorization": f"Bearer {PLAYER_SECRET}"},
        )
        assert status == 200
        assert body == LICENCE
        assert headers["Cache-Control"] == "no-store"
    [seen] = upstream.received
    assert seen.body == challenge
    assert seen.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert seen.headers["SOAPAction"] == SOAP_ACTION
    assert "Authorization" not in seen.headers


async def test_key_system_without_upstream_is_404(
    settings: LicenseSettings, upstream: FakeUpstream,
) -> None:
    async with licence_app(settings, {"playready": upstream_config(upstream)}) as licence:
        key = await licence.asset_key("movie")
        status, body, _ = await licence.post("/license/widevine",
                                             widevine_pssh_request(key.kid))
        assert status == 404
        assert error_of(body) == {"error": "widevine licence server is not configured"}
    async with licence_app(settings, {"widevine": upstream_config(upstream)}) as licence:
        status, body, _ = await licence.post(
            "/license/playready", playready_challenge(wrmheader(key.kid, "4.0")))
        assert status == 404
        assert error_of(body) == {"error": "playready licence server is not configured"}
    assert upstream.received == []


async def test_unknown_kid_is_404_and_upstream_not_contacted(
    settings: LicenseSettings, upstream: FakeUpstream,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        unknown = os.urandom(16)
        for path, body in [
            ("/license/widevine", widevine_pssh_request(unknown)),
            ("/license/widevine", widevine_pssh_request(key.kid, unknown)),
            ("/license/playready", playready_challenge(wrmheader_kids(key.kid, unknown))),
        ]:
            status, answer, _ = await licence.post(path, body)
            assert status == 404
            assert error_of(answer) == {"error": "unknown key id"}
        # Control: the known kid alone goes through.
        assert (await licence.post("/license/widevine", widevine_pssh_request(key.kid)))[0] == 200
    assert len(upstream.received) == 1


async def test_no_kid_is_400(settings: LicenseSettings, upstream: FakeUpstream) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        empty_header = f'<WRMHEADER xmlns="{PR_NS}" version="4.0.0.0"><DATA></DATA></WRMHEADER>'
        for path, body in [
            ("/license/widevine", signed_licence_request(pb(1, pb(3, b"request-id")))),
            ("/license/playready", playready_challenge(empty_header)),
        ]:
            status, answer, _ = await licence.post(path, body)
            assert status == 400
            assert error_of(answer) == {"error": "no key id in licence request"}
    assert upstream.received == []


async def test_token_policy_is_checked_before_the_upstream_is_contacted(
    settings: LicenseSettings, upstream: FakeUpstream, caplog_all: pytest.LogCaptureFixture,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        await licence.asset_key("trailer")
        licence.set_policy("movie", ContentKeyPolicy(restriction=Restriction.TOKEN))
        licence.app[VERIFIER_KEY].verifier = StubVerifier({
            "movie-token-0123456789": frozenset({"movie"}),
            "trailer-token-0123456789": frozenset({"trailer"}),
        })
        challenges = {
            "/license/widevine": widevine_pssh_request(key.kid),
            "/license/playready": playready_challenge(wrmheader(key.kid, "4.3")),
        }
        for path, challenge in challenges.items():
            status, body, headers = await licence.post(path, challenge)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
            status, body, _ = await licence.post(
                path, challenge, headers={"Authorization": "Bearer not-a-token-at-all"})
            assert status == 401
            status, body, _ = await licence.post(
                path, challenge, headers={"Authorization": "Bearer trailer-token-0123456789"})
            assert status == 403
            assert error_of(body) == {"error": "token is not valid for this asset"}
            assert upstream.received == []
        # Control: the right token passes, through the header or the query.
        status, body, _ = await licence.post(
            "/license/widevine", challenges["/license/widevine"],
            headers={"Authorization": "Bearer movie-token-0123456789"})
        assert (status, body) == (200, LICENCE)
        status, body, _ = await licence.post(
            "/license/playready", challenges["/license/playready"],
            params={"token": "movie-token-0123456789"})
        assert (status, body) == (200, LICENCE)
    assert len(upstream.received) == 2
    assert "token-0123456789" not in caplog_all.text


async def test_offline_needs_a_policy_that_allows_it(
    settings: LicenseSettings, upstream: FakeUpstream,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        offline = widevine_pssh_request(key.kid, license_type=2)
        automatic = widevine_pssh_request(key.kid, license_type=3)
        playready = playready_challenge(wrmheader(key.kid, "4.0"))
        refused = "persistent licences are not allowed for this asset"
        for path, body, params in [
            ("/license/widevine", offline, None),
            ("/license/widevine", automatic, None),
            ("/license/playready", playready, {"offline": "1"}),
        ]:
            status, answer, _ = await licence.post(path, body, params=params)
            assert status == 403
            assert error_of(answer) == {"error": refused}
        assert upstream.received == []
        # Streaming under the same policy, then offline once the policy allows it.
        assert (await licence.post("/license/widevine",
                                   widevine_pssh_request(key.kid, license_type=1)))[0] == 200
        assert (await licence.post("/license/playready", playready))[0] == 200
        licence.set_policy("movie", ContentKeyPolicy(persistent=True))
        assert (await licence.post("/license/widevine", offline))[0] == 200
        assert (await licence.post("/license/playready", playready,
                                   params={"offline": "1"}))[0] == 200
        status, answer, _ = await licence.post("/license/playready", playready,
                                               params={"offline": "maybe"})
        assert status == 400
    assert len(upstream.received) == 4


@pytest.mark.parametrize(("mode", "upstream_status"), [("forbidden", 403), ("error", 500),
                                                       ("redirect", 302)])
async def test_upstream_refusal_is_502_with_its_status(
    settings: LicenseSettings, upstream: FakeUpstream, caplog_all: pytest.LogCaptureFixture,
    mode: str, upstream_status: int,
) -> None:
    async with licence_app(settings, both(upstream, mode)) as licence:
        key = await licence.asset_key("movie")
        for system, path, challenge in [
            ("widevine", "/license/widevine", widevine_pssh_request(key.kid)),
            ("playready", "/license/playready", playready_challenge(wrmheader(key.kid, "4.0"))),
        ]:
            status, body, headers = await licence.post(path, challenge)
            assert status == 502
            assert headers["Cache-Control"] == "no-store"
            assert error_of(body) == {
                "error": f"{system} licence server answered {upstream_status}",
                "upstream_status": upstream_status,
            }
            assert UPSTREAM_SECRET_BODY not in body
    # The redirect was not followed.
    assert [r.path for r in upstream.received] == [f"/{mode}", f"/{mode}"]
    assert_clean(caplog_all.text, UPSTREAM_SECRET_BODY.decode())


async def test_upstream_that_never_answers_is_504(
    settings: LicenseSettings, upstream: FakeUpstream,
) -> None:
    config = {"widevine": upstream_config(upstream, "hang", timeout_s=0.5)}
    async with licence_app(settings, config) as licence:
        key = await licence.asset_key("movie")
        started = time.monotonic()
        status, body, _ = await licence.post("/license/widevine",
                                             widevine_pssh_request(key.kid))
        elapsed = time.monotonic() - started
        assert upstream.hanging.is_set()  # it did reach the upstream ...
        assert status == 504  # ... which never answered
        assert error_of(body) == {"error": "widevine licence server timed out"}
        assert elapsed < 10
        upstream.release.set()
        assert await licence.healthy()


@pytest.mark.parametrize("mode", ["huge", "huge-chunked"])
async def test_oversized_answer_is_502(
    settings: LicenseSettings, upstream: FakeUpstream, mode: str,
) -> None:
    async with licence_app(settings, {"widevine": upstream_config(upstream, mode)}) as licence:
        key = await licence.asset_key("movie")
        status, body, _ = await licence.post("/license/widevine",
                                             widevine_pssh_request(key.kid))
        assert status == 502
        assert error_of(body) == {"error": "widevine licence server answer too large"}
    async with licence_app(settings, {"widevine": upstream_config(upstream, "exact")}) as licence:
        status, body, _ = await licence.post("/license/widevine",
                                             widevine_pssh_request(key.kid))
        assert status == 200
        assert len(body) == MAX_ANSWER_BYTES


async def test_unreachable_upstream_is_503(settings: LicenseSettings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.
    config = {"playready": {"url": f"http://127.0.0.1:{port}/licence"}}
    async with licence_app(settings, config) as licence:
        key = await licence.asset_key("movie")
        status, body, _ = await licence.post("/license/playready",
                                             playready_challenge(wrmheader(key.kid, "4.0")))
        assert status == 503
        assert error_of(body) == {"error": "playready licence server unreachable"}
        assert await licence.healthy()


async def test_malformed_challenges_are_400_and_the_server_stays_up(
    settings: LicenseSettings, upstream: FakeUpstream, caplog_all: pytest.LogCaptureFixture,
) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        cases = [("/license/widevine", body) for _, body in MALFORMED_WIDEVINE] + [
            ("/license/playready", body) for _, body in MALFORMED_PLAYREADY]
        for path, body in cases:
            status, answer, headers = await licence.post(path, body)
            assert status == 400, (path, body[:40])
            assert headers["Content-Type"].startswith("application/json")
            error = error_of(answer)
            assert list(error) == ["error"] and len(error["error"]) < 80
        status, answer, _ = await licence.post("/license/widevine", b"x" * (128 * 1024 + 1))
        assert status == 413
        assert await licence.healthy()
        assert (await licence.post("/license/widevine", widevine_pssh_request(key.kid)))[0] == 200
    assert len(upstream.received) == 1
    assert_clean(caplog_all.text, key.key.hex())


async def test_kaltura_identity_and_static_query(
    settings: LicenseSettings, upstream: FakeUpstream, caplog_all: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KALTURA_UDRM_SECRET", KALTURA_SECRET)
    config = {"playready": upstream_config(
        upstream, query={"static": "v"}, kaltura_partner_id=2468,
        kaltura_secret_env="KALTURA_UDRM_SECRET")}
    token = "player+token/with=chars"
    async with licence_app(settings, config) as licence:
        key = await licence.asset_key("movie")
        status, body, _ = await licence.post(
            "/license/playready", playready_challenge(wrmheader(key.kid, "4.0")),
            params={"token": token})
        assert (status, body) == (200, LICENCE)
    [seen] = upstream.received
    assert list(seen.query) == ["static", "custom_data", "signature"]
    inner = base64.b64decode(seen.query["custom_data"], validate=True)
    assert json.loads(inner) == {"ca_system": "OVP", "user_token": token,
                                 "account_id": 2468, "content_id": "movie", "files": ""}
    expected = base64.b64encode(hashlib.sha1(KALTURA_SECRET.encode() + inner).digest())
    assert seen.query["signature"] == expected.decode()
    wrong = base64.b64encode(hashlib.sha1(b"not-the-secret" + inner).digest()).decode()
    assert seen.query["signature"] != wrong
    # rawurlencode: no raw '+', '/' or '=' in the query string.
    raw_values = seen.raw_query.split("&", 1)[1]
    assert not set("+/") & set(raw_values) and raw_values.count("=") == 2
    assert KALTURA_SECRET not in seen.raw_query
    assert_clean(caplog_all.text, KALTURA_SECRET, token, seen.query["signature"])


async def test_one_keep_alive_session(settings: LicenseSettings,
                                      upstream: FakeUpstream) -> None:
    async with licence_app(settings, both(upstream)) as licence:
        key = await licence.asset_key("movie")
        for _ in range(3):
            status, _, _ = await licence.post("/license/widevine",
                                              widevine_pssh_request(key.kid))
            assert status == 200
    ports = {r.peer_port for r in upstream.received}
    assert len(upstream.received) == 3 and len(ports) == 1


@pytest.mark.parametrize(("config", "message"), [
    ({"widevine": {"url": "ftp://x/"}}, "[widevine] url must be an http or https URL"),
    ({"playready": {"url": "http://x/", "timeout_s": 120}}, "[playready] timeout_s"),
    ({"playready": {"url": "http://x/", "headers": {"K": {"env": "ORIGIN_TEST_UNSET"}}}},
     "environment variable ORIGIN_TEST_UNSET is not set"),
    ({"widevine": "https://x/"}, "[widevine] must be a table"),
])
async def test_bad_config_fails_startup(settings: LicenseSettings, config: dict[str, Any],
                                        message: str) -> None:
    app = build_license_app(dataclasses.replace(settings, config=config))
    runner = web.AppRunner(app)
    with pytest.raises(ValueError) as caught:
        await runner.setup()
    await runner.cleanup()
    assert message in str(caught.value)
