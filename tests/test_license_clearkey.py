"""W3C EME Clear Key licences: the pure parser/builder, the licence app's
``POST /license/clearkey`` on a real loopback port, and the same route through the origin."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from origin.crypto.key import ContentKey
from origin.errors import BadRequest
from origin.license import clearkey
from origin.license.clearkey import (
    MAX_KIDS,
    MAX_REQUEST_BYTES,
    ClearKeyRequestError,
    LicenseRequest,
    LicenseRequestTooLarge,
    MalformedLicenseRequest,
    SessionType,
    b64url_encode,
    build_license,
    decode_kid,
    parse_license_request,
)
from origin.license.keystore import Keystore
from origin.license.policy import (
    DEFAULT_POLICY,
    ContentKeyPolicy,
    Decision,
    Entitlement,
    KeyRequest,
    KeySystem,
    PolicyDecisionPoint,
)
from origin.license.settings import LicenseSettings
from tests.conftest import RunningOrigin
from tests.tools.licence import (
    DenyingPolicy,
    LicenceClient,
    RecordingPolicy,
    running_licence_app,
)

CLEARKEY = "/license/clearkey"


def b64u(data: bytes) -> str:
    return b64url_encode(data)


def b64u_padded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def request_body(*kids: str, type_: str | None = None) -> bytes:
    message: dict[str, object] = {"kids": list(kids)}
    if type_ is not None:
        message["type"] = type_
    return json.dumps(message).encode()


# --- the licence app on loopback -----------------------------------------------------------------


@dataclass
class Server(LicenceClient):
    async def post(
        self,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, str, CIMultiDictProxy[str]]:
        async with self.session.post(
            self.url + CLEARKEY, data=body, headers=headers, params=params
        ) as resp:
            return resp.status, await resp.text(), resp.headers


@pytest.fixture
async def server(
    settings: LicenseSettings, policy: PolicyDecisionPoint, caplog_all: pytest.LogCaptureFixture
) -> AsyncIterator[Server]:
    async with running_licence_app(settings, policy) as url, aiohttp.ClientSession() as session:
        yield Server(url=url, session=session)


def secret_forms(*keys: ContentKey) -> list[str]:
    """Every spelling of the keys' bytes that could leak into a text body or a log."""
    forms: list[str] = []
    for key in keys:
        forms += [key.key.hex(), b64u(key.key), base64.b64encode(key.key).decode().rstrip("=")]
        forms.append(key.key.decode("latin-1"))
    return forms


def assert_no_secret(text: str, *keys: ContentKey) -> None:
    for form in secret_forms(*keys):
        assert form.lower() not in text.lower()


def assert_license(text: str, expected: list[ContentKey], type_: str) -> None:
    body = json.loads(text)
    assert body == {
        "keys": [{"kty": "oct", "k": b64u(k.key), "kid": b64u(k.kid)} for k in expected],
        "type": type_,
    }
    assert "=" not in text  # base64url without padding, everywhere


# --- happy paths ------------------------------------------------------------------------------


async def test_one_kid_default_type_is_temporary(server: Server) -> None:
    key = await server.asset_key("movie")
    status, text, headers = await server.post(request_body(b64u(key.kid)))
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert_license(text, [key], "temporary")


@pytest.mark.parametrize("type_", ["temporary", "persistent-license"])
async def test_several_kids_both_types(
    server: Server, settings: LicenseSettings, type_: str
) -> None:
    keys = [await server.asset_key(asset) for asset in ("movie", "trailer", "extras")]
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        for asset in ("movie", "trailer", "extras"):
            keystore.set_policy(asset, ContentKeyPolicy(persistent=True))
    # Order is kept; a kid repeated is answered once.
    order = [keys[2], keys[0], keys[1]]
    kids = [b64u(k.kid) for k in order] + [b64u(keys[0].kid)]
    status, text, _ = await server.post(request_body(*kids, type_=type_))
    assert status == 200
    assert_license(text, order, type_)


async def test_persistent_licence_needs_a_policy_that_allows_offline(
    server: Server, settings: LicenseSettings
) -> None:
    movie, trailer = await server.asset_key("movie"), await server.asset_key("trailer")
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        keystore.set_policy("movie", ContentKeyPolicy(persistent=True))
    body = request_body(b64u(movie.kid), type_="persistent-license")
    assert (await server.post(body))[0] == 200
    # The default policy is streaming only; one such kid refuses the whole request.
    body = request_body(b64u(movie.kid), b64u(trailer.kid), type_="persistent-license")
    status, text, _ = await server.post(body)
    assert status == 403
    assert json.loads(text) == {"error": "persistent licences are not allowed for this asset"}
    assert_no_secret(text, movie, trailer)
    status, text, _ = await server.post(request_body(b64u(trailer.kid)))
    assert status == 200


async def test_padding_variants_are_accepted(server: Server) -> None:
    keys = [await server.asset_key(asset) for asset in ("movie", "trailer")]
    body = request_body(b64u_padded(keys[0].kid), b64u(keys[1].kid))
    assert b"==" in body
    status, text, _ = await server.post(body)
    assert status == 200
    assert_license(text, keys, "temporary")


async def test_extra_members_are_ignored(server: Server) -> None:
    key = await server.asset_key("movie")
    body = json.dumps({"kids": [b64u(key.kid)], "alg": "A128KW", "x": [1, {"y": None}]})
    status, text, _ = await server.post(body.encode())
    assert status == 200
    assert_license(text, [key], "temporary")


async def test_body_at_the_limit_is_accepted(server: Server) -> None:
    key = await server.asset_key("movie")
    body = request_body(b64u(key.kid))
    body += b" " * (MAX_REQUEST_BYTES - len(body))
    assert len(body) == MAX_REQUEST_BYTES
    status, text, _ = await server.post(body)
    assert status == 200
    assert_license(text, [key], "temporary")


# --- malformed requests → 400, no key material -------------------------------------------------

# "{kid}" in a template is replaced by a real, stored kid, so that a leak would be visible.
MALFORMED: list[tuple[str, bytes]] = [
    ("empty body", b""),
    ("not json", b"kids please"),
    ("truncated json", b'{"kids": ["{kid}"'),
    ("invalid utf-8", b'{"kids": ["{kid}"], "type": "temporary\xff"}'),
    ("utf-8 bom", b'\xef\xbb\xbf{"kids": ["{kid}"]}'),
    ("json array", b'["{kid}"]'),
    ("json null", b"null"),
    ("json string", b'"{kid}"'),
    ("kids missing", b'{"type": "temporary"}'),
    ("kids null", b'{"kids": null}'),
    ("kids a string", b'{"kids": "{kid}"}'),
    ("kids an object", b'{"kids": {"{kid}": 1}}'),
    ("kids empty", b'{"kids": []}'),
    ("kid a number", b'{"kids": ["{kid}", 7]}'),
    ("kid nested list", b'{"kids": [["{kid}"]]}'),
    ("kid hex", b'{"kids": ["00112233445566778899aabbccddeeff"]}'),
    ("kid 15 bytes", b'{"kids": ["AAAAAAAAAAAAAAAAAAAA"]}'),
    ("kid 17 bytes", b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAAA"]}'),
    ("kid standard b64 alphabet", b'{"kids": ["+/AAAAAAAAAAAAAAAAAAAA"]}'),
    ("kid with a space", b'{"kids": ["AAAAAAAAAA AAAAAAAAAAA"]}'),
    ("kid one pad char", b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA="]}'),
    ("kid three pad chars", b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA==="]}'),
    ("kid non-canonical tail", b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAB"]}'),
    ("kid empty", b'{"kids": [""]}'),
    ("kid non-ascii digit", '{"kids": ["AAAAAAAAAAAAAAAAAAAAA\u0661"]}'.encode()),
    ("type unknown", b'{"kids": ["{kid}"], "type": "persistent-usage-record"}'),
    ("type wrong case", b'{"kids": ["{kid}"], "type": "Temporary"}'),
    ("type null", b'{"kids": ["{kid}"], "type": null}'),
    ("type a number", b'{"kids": ["{kid}"], "type": 1}'),
    ("duplicate member", b'{"kids": ["{kid}"], "kids": ["{kid}"]}'),
    ("NaN", b'{"kids": ["{kid}"], "n": NaN}'),
    ("too many kids", json.dumps({"kids": ["{kid}"] * (MAX_KIDS + 1)}).encode()),
    ("deep nesting", b'{"kids": ["{kid}"], "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    ("huge integer", b'{"kids": ["{kid}"], "n": ' + b"9" * 5000 + b"}"),
]


@pytest.mark.parametrize(("label", "template"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_request_is_400_without_key_material(
    server: Server, caplog_all: pytest.LogCaptureFixture, label: str, template: bytes
) -> None:
    key = await server.asset_key("movie")
    body = template.replace(b"{kid}", b64u(key.kid).encode())
    assert len(body) <= MAX_REQUEST_BYTES
    status, text, headers = await server.post(body)
    assert status == 400, label
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(text)
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert len(error["error"]) < 80
    assert_no_secret(text + caplog_all.text, key)


async def test_unknown_kid_is_404_and_no_partial_answer(server: Server) -> None:
    key = await server.asset_key("movie")
    unknown = b64u(os.urandom(16))
    for kids in ([unknown], [b64u(key.kid), unknown], [unknown, b64u(key.kid)]):
        status, text, _ = await server.post(request_body(*kids))
        assert status == 404
        assert json.loads(text) == {"error": "unknown key id"}
        assert_no_secret(text, key)


async def test_oversized_body_is_413(server: Server) -> None:
    key = await server.asset_key("movie")
    body = request_body(b64u(key.kid))
    body += b" " * (MAX_REQUEST_BYTES + 1 - len(body))
    # With a Content-Length.
    status, text, headers = await server.post(body)
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(text) == {"error": "licence request too large"}
    assert_no_secret(text, key)

    # Chunked, so the size is only known while reading.
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with server.session.post(server.url + CLEARKEY, data=chunks()) as resp:
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert resp.status == 413
        assert await resp.json() == {"error": "licence request too large"}


async def test_other_methods_are_405(server: Server) -> None:
    async with server.session.get(server.url + CLEARKEY) as resp:
        assert resp.status == 405


# --- policy -----------------------------------------------------------------------------------


class DenyAssetPolicy(PolicyDecisionPoint):
    """Refuses one asset only: a request naming it must fail as a whole."""

    def decide(self, request: KeyRequest, policy: ContentKeyPolicy = DEFAULT_POLICY,
               entitlement: Entitlement | None = None) -> Decision:
        if request.asset == "trailer":
            return Decision(allowed=False, reason="not entitled")
        return super().decide(request, policy, entitlement)


@pytest.mark.parametrize("policy", [DenyingPolicy()])
async def test_policy_refusal_is_403(server: Server) -> None:
    key = await server.asset_key("movie")
    status, text, _ = await server.post(request_body(b64u(key.kid)))
    assert status == 403
    assert json.loads(text) == {"error": "token required"}
    assert_no_secret(text, key)


@pytest.mark.parametrize("policy", [DenyAssetPolicy()])
async def test_one_refused_kid_refuses_the_whole_request(server: Server) -> None:
    movie, trailer = await server.asset_key("movie"), await server.asset_key("trailer")
    status, _, _ = await server.post(request_body(b64u(movie.kid)))
    assert status == 200
    status, text, _ = await server.post(request_body(b64u(movie.kid), b64u(trailer.kid)))
    assert status == 403
    assert json.loads(text) == {"error": "not entitled"}
    assert_no_secret(text, movie, trailer)


@pytest.mark.parametrize("policy", [RecordingPolicy()])
async def test_policy_sees_every_kid_asset_key_system_and_token(
    server: Server, policy: RecordingPolicy, caplog_all: pytest.LogCaptureFixture
) -> None:
    movie, trailer = await server.asset_key("movie"), await server.asset_key("trailer")
    body = request_body(b64u(movie.kid), b64u(trailer.kid))
    query_token, header_token = "player-query-token-7f3a9c", "player-header-token-51be0d"
    assert (await server.post(body))[0] == 200
    assert (await server.post(body, params={"token": query_token}))[0] == 200
    headers = {"Authorization": f"Bearer {header_token}"}
    assert (await server.post(body, headers=headers))[0] == 200
    assert [(r.kid, r.asset, r.token) for r in policy.requests] == [
        (movie.kid, "movie", None),
        (trailer.kid, "trailer", None),
        (movie.kid, "movie", query_token),
        (trailer.kid, "trailer", query_token),
        (movie.kid, "movie", header_token),
        (trailer.kid, "trailer", header_token),
    ]
    assert {r.key_system for r in policy.requests} == {KeySystem.CLEARKEY}
    for secret in (query_token, header_token):
        assert secret not in caplog_all.text


async def test_logs_never_contain_keys(
    server: Server, caplog_all: pytest.LogCaptureFixture
) -> None:
    key = await server.asset_key("movie")
    status, text, _ = await server.post(request_body(b64u(key.kid)), params={"token": "q-t0k3n"})
    assert status == 200 and b64u(key.key) in text
    await server.post(b"not json")
    await server.post(request_body(b64u(os.urandom(16))))
    # The access log line of the licence request shows up (path only).
    for _ in range(100):
        if f"POST {CLEARKEY}" in caplog_all.text:
            break
        await asyncio.sleep(0.01)
    assert f"POST {CLEARKEY}" in caplog_all.text
    assert "q-t0k3n" not in caplog_all.text
    assert_no_secret(caplog_all.text, key)


# --- through the origin (licence module co-hosted) ------------------------------------------------


async def test_clearkey_through_the_origin(origin_server: RunningOrigin) -> None:
    base = origin_server.base
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/hls/demo/cenc/video-360p/index.m3u8") as resp:
            assert resp.status == 200
            playlist = await resp.text()
        match = re.search(r"KEYID=0x([0-9A-Fa-f]{32})", playlist)
        assert match is not None
        kid = bytes.fromhex(match.group(1))
        async with session.get(f"{base}/license/aes128/{kid.hex()}") as resp:
            assert resp.status == 200
            key = await resp.read()
        assert len(key) == 16

        message = request_body(b64u(kid), type_="temporary")
        async with session.post(
            f"{base}{CLEARKEY}",
            data=message,
            headers={"Origin": "https://player.example", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert resp.headers["Cache-Control"] == "no-store"
            assert "Access-Control-Allow-Origin" in resp.headers
            text = await resp.text()
        assert_license(text, [ContentKey(kid=kid, key=key)], "temporary")

        async with session.post(f"{base}{CLEARKEY}", data=b'{"kids": 1}') as resp:
            assert resp.status == 400
            assert "error" in await resp.json()

        async with session.options(
            f"{base}{CLEARKEY}",
            headers={
                "Origin": "https://player.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        ) as resp:
            assert resp.status == 204
            assert "Access-Control-Allow-Origin" in resp.headers
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]


# --- the pure module ----------------------------------------------------------------------------


def test_parse_and_build_round_trip() -> None:
    kids = [os.urandom(16) for _ in range(3)]
    parsed = parse_license_request(
        request_body(b64u(kids[0]), b64u_padded(kids[1]), b64u(kids[2]), type_="persistent-license")
    )
    assert parsed == LicenseRequest(tuple(kids), SessionType.PERSISTENT_LICENSE)
    assert parse_license_request(request_body(b64u(kids[0]))).session_type is SessionType.TEMPORARY
    keys = [ContentKey(kid=k, key=os.urandom(16)) for k in kids]
    licence = build_license(keys, SessionType.PERSISTENT_LICENSE)
    assert_license(licence.to_json().decode(), keys, "persistent-license")


def test_reprs_hold_no_key() -> None:
    key = ContentKey(kid=os.urandom(16), key=os.urandom(16))
    licence = build_license([key])
    assert_no_secret(repr(licence) + str(licence), key)


def test_errors_are_typed() -> None:
    with pytest.raises(MalformedLicenseRequest) as malformed:
        parse_license_request(b"[]")
    assert isinstance(malformed.value, BadRequest) and malformed.value.status == 400
    with pytest.raises(LicenseRequestTooLarge) as large:
        parse_license_request(b" " * (MAX_REQUEST_BYTES + 1))
    assert large.value.status == 413
    assert issubclass(MalformedLicenseRequest, ClearKeyRequestError)
    assert issubclass(LicenseRequestTooLarge, ClearKeyRequestError)


def test_decode_kid() -> None:
    kid = uuid.uuid4().bytes
    assert decode_kid(b64u(kid)) == kid == decode_kid(b64u_padded(kid))
    assert clearkey.KEY_SYSTEM == "org.w3.clearkey"


def _parse_or_typed_error(body: bytes) -> LicenseRequest | None:
    try:
        parsed = parse_license_request(body)
    except MalformedLicenseRequest as exc:
        assert exc.status == 400 and len(exc.detail) < 80
        return None
    assert 1 <= len(parsed.kids) <= MAX_KIDS
    assert all(len(kid) == 16 for kid in parsed.kids)
    assert len(set(parsed.kids)) == len(parsed.kids)
    return parsed


_kid_text = st.one_of(
    st.binary(min_size=16, max_size=16).map(b64u),
    st.binary(min_size=16, max_size=16).map(b64u_padded),
    st.binary(max_size=24).map(b64u),
    st.from_regex(r"[A-Za-z0-9_=+/-]{0,26}", fullmatch=True),
    st.text(max_size=30),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
_message = st.dictionaries(
    st.sampled_from(["kids", "type", "alg", "x"]),
    st.one_of(
        st.lists(st.one_of(_kid_text, _json), max_size=MAX_KIDS + 2),
        st.sampled_from(["temporary", "persistent-license", "", "Temporary"]),
        _json,
    ),
)
_to_bytes: Callable[[object], bytes] = lambda value: json.dumps(value).encode()  # noqa: E731


@hyp_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_fuzz_arbitrary_bytes(body: bytes) -> None:
    _parse_or_typed_error(body)


@hyp_settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_message, _json).map(_to_bytes))
def test_fuzz_json_messages(body: bytes) -> None:
    parsed = _parse_or_typed_error(body)
    if parsed is not None:
        message = json.loads(body)
        assert parsed.session_type.value == message.get("type", "temporary")
        assert set(parsed.kids) == {decode_kid(k) for k in message["kids"]}


@hyp_settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=MAX_KIDS),
    st.lists(st.booleans(), min_size=MAX_KIDS, max_size=MAX_KIDS),
    st.sampled_from(list(SessionType)),
)
def test_fuzz_valid_requests_round_trip(
    kids: list[bytes], padded: list[bool], session_type: SessionType
) -> None:
    texts = [b64u_padded(k) if p else b64u(k) for k, p in zip(kids, padded, strict=False)]
    parsed = parse_license_request(request_body(*texts, type_=session_type.value))
    assert parsed.kids == tuple(dict.fromkeys(kids))
    assert parsed.session_type is session_type
