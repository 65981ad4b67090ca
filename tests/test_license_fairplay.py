"""FairPlay Streaming: the certificate route, SPC → CKC in every request form through a fake
external KSM (the SDK reference server's JSON on a real loopback server) and through the
development test KSM, policy before the KSM, KSM failures, configuration, and the pure parsers."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from origin.crypto.key import ContentKey
from origin.crypto.rsa import RsaPrivateKey, load_private_key
from origin.errors import OriginError
from origin.license.fairplay import (
    MAX_REQUEST_BYTES,
    MalformedContentId,
    MalformedSpcRequest,
    RequestForm,
    build_ckc_response,
    detect_form,
    parse_content_id,
    parse_spc_request,
    skd_query,
)
from origin.license.fairplay_routes import ExternalKsmConfig, load_fairplay_config
from origin.license.keystore import Keystore
from origin.license.ksm import (
    CkcRequest,
    KsmFailed,
    build_ksm_request,
    parse_ksm_response,
    title_id,
)
from origin.license.policy import ContentKeyPolicy, LicenseType, PolicyDecisionPoint, Restriction
from origin.license.settings import LicenseSettings
from origin.packaging.drm import constant_iv
from tests.conftest import DEMO, start_origin
from tests.tools.fairplay import (
    KSM_ERROR_BODY,
    Credentials,
    FakeKsm,
    KsmMode,
    build_test_spc,
    fake_ckc,
    make_credentials,
    open_test_ckc,
)
from tests.tools.licence import LicenceClient, running_licence_app
from tests.tools.loopback import serve_app

FAIRPLAY = "/license/fairplay"
CERTIFICATE = "/license/fairplay/certificate"
KSM_SECRET = "ksm-api-secret-5b8f0c2e"


@pytest.fixture(scope="session")
def creds() -> Credentials:
    return make_credentials()


@pytest.fixture(scope="session")
def other_creds() -> Credentials:
    return make_credentials(name="another certificate")


def write_files(tmp_path: Path, creds: Credentials, *, pem: bool = True) -> None:
    (tmp_path / "fps.cer").write_bytes(creds.cert_pem if pem else creds.cert_der)
    (tmp_path / "fps.key").write_bytes(creds.key_pem if pem else creds.key_der)


def with_table(settings: LicenseSettings, tmp_path: Path, table: dict[str, Any]) -> LicenseSettings:
    return dataclasses.replace(settings, config={"fairplay": table}, config_dir=tmp_path)


def secret_forms(*keys: ContentKey) -> list[str]:
    forms: list[str] = []
    for key in keys:
        b64 = base64.b64encode(key.key).decode()
        forms += [key.key.hex(), b64.rstrip("="), base64.urlsafe_b64encode(key.key).decode()[:20]]
    return forms


def assert_no_secret(text: str, *keys: ContentKey) -> None:
    for form in secret_forms(*keys):
        assert form.lower() not in text.lower()


@dataclass
class Env(LicenceClient):
    fake: FakeKsm | None = None

    async def post(
        self,
        data: bytes | str,
        *,
        path: str = FAIRPLAY,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        body = data.encode() if isinstance(data, str) else data
        async with self.session.post(
            self.url + path, data=body, headers=all_headers, params=params,
            skip_auto_headers=["Content-Type"],
        ) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


@contextlib.asynccontextmanager
async def external_env(
    settings: LicenseSettings,
    tmp_path: Path,
    creds: Credentials,
    monkeypatch: pytest.MonkeyPatch,
    policy: PolicyDecisionPoint,
    *,
    mode: KsmMode = KsmMode.OK,
    timeout_s: float = 5,
    ksm_url: str | None = None,
) -> AsyncIterator[Env]:
    """The licence app with ``ksm = "external"`` pointing at a fake KSM on loopback."""
    write_files(tmp_path, creds)
    monkeypatch.setenv("FPS_TEST_KSM_KEY", KSM_SECRET)
    fake = FakeKsm(mode)
    async with serve_app(fake.app) as fake_url:
        table = {
            "certificate_file": "fps.cer",
            "ksm": "external",
            "ksm_url": ksm_url or f"{fake_url}/fps",
            "ksm_timeout_s": timeout_s,
            "ksm_headers": {"X-Api-Key": {"env": "FPS_TEST_KSM_KEY"}, "X-Tenant": "acme"},
        }
        try:
            async with running_licence_app(with_table(settings, tmp_path, table), policy) as url, \
                    aiohttp.ClientSession() as session:
                yield Env(url=url, session=session, fake=fake)
        finally:
            fake.release.set()


ExternalEnv = Callable[..., contextlib.AbstractAsyncContextManager[Env]]


@pytest.fixture
def external(settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
             creds: Credentials, monkeypatch: pytest.MonkeyPatch) -> ExternalEnv:
    """``external_env`` bound to the test's settings, policy, folder, credentials and
    environment; keywords (``mode``, ``timeout_s``, ``ksm_url``) pass through."""
    return functools.partial(external_env, settings, tmp_path, creds, monkeypatch, policy)


@contextlib.asynccontextmanager
async def dev_ksm_env(
    settings: LicenseSettings, tmp_path: Path, creds: Credentials, policy: PolicyDecisionPoint,
    *, pem: bool = True,
) -> AsyncIterator[Env]:
    """The licence app with the development test KSM."""
    write_files(tmp_path, creds, pem=pem)
    table = {"certificate_file": "fps.cer", "ksm": "test", "test_private_key_file": "fps.key"}
    async with running_licence_app(with_table(settings, tmp_path, table), policy) as url, \
            aiohttp.ClientSession() as session:
        yield Env(url=url, session=session)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SPC = b"\x00\x00\x00\x01" + bytes(range(256)) * 8  # shaped like a real SPC (version 1 first)


def operation_of(fake: FakeKsm, index: int = -1) -> dict[str, Any]:
    message = fake.requests[index]
    operation: dict[str, Any] = message["fairplay-streaming-request"]["create-ckc"][0]
    return operation


# --- the certificate --------------------------------------------------------------------------


@pytest.mark.parametrize("pem", [True, False], ids=["pem", "der"])
async def test_certificate_is_served_as_der(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
    pem: bool,
) -> None:
    async with dev_ksm_env(settings, tmp_path, creds, policy, pem=pem) as env:
        async with env.session.get(env.url + CERTIFICATE) as resp:
            assert resp.status == 200
            assert await resp.read() == creds.cert_der
            assert resp.headers["Content-Type"] == "application/pkix-cert"
            assert resp.headers["Cache-Control"] == "public, max-age=86400"
            etag = resp.headers["ETag"]
            assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
            assert resp.headers["X-Origin-Test-KSM"] == "not-apple-compatible"
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            async with env.session.get(env.url + CERTIFICATE,
                                       headers={"If-None-Match": header}) as resp:
                assert resp.status == 304
                assert resp.headers["ETag"] == etag
                assert await resp.read() == b""
        async with env.session.get(env.url + CERTIFICATE,
                                   headers={"If-None-Match": '"other"'}) as resp:
            assert resp.status == 200
            assert await resp.read() == creds.cert_der


async def test_certificate_etag_follows_the_certificate(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
    other_creds: Credentials,
) -> None:
    etags = []
    for i, credentials in enumerate((creds, other_creds)):
        directory = tmp_path / str(i)
        directory.mkdir()
        async with dev_ksm_env(settings, directory, credentials, policy) as env, \
                env.session.get(env.url + CERTIFICATE) as resp:
            assert await resp.read() == credentials.cert_der
            etags.append(resp.headers["ETag"])
    assert etags[0] != etags[1]


async def test_not_configured_is_404(
    settings: LicenseSettings, policy: PolicyDecisionPoint
) -> None:
    async with running_licence_app(settings, policy) as url, aiohttp.ClientSession() as session:
        env = Env(url=url, session=session)
        key = await env.asset_key()
        async with session.get(url + CERTIFICATE) as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "FairPlay is not configured"}
        for path in (FAIRPLAY, f"{FAIRPLAY}/{key.kid_hex}"):
            status, body, _ = await env.post(SPC, path=path,
                                             content_type="application/octet-stream")
            assert status == 404
            assert json.loads(body) == {"error": "FairPlay is not configured"}


# --- every request form through the external KSM ----------------------------------------------


@dataclass(frozen=True)
class Form:
    name: str
    content_type: str | None
    path_id: bool = False  # the content id goes in the path
    query_id: str | None = None  # ... or in this query parameter
    body: str = "raw"  # a key of form_request's bodies
    answer: RequestForm = RequestForm.RAW


FORMS = [
    Form("raw octet-stream, path id", "application/octet-stream", path_id=True),
    Form("raw without content type, path id", None, path_id=True),
    Form("raw text/plain, query assetId", "text/plain", query_id="assetId"),
    Form("raw, query contentId", "application/octet-stream", query_id="contentId"),
    Form("form with assetId", "application/x-www-form-urlencoded", body="form-assetId",
         answer=RequestForm.FORM),
    Form("form with assetID", "application/x-www-form-urlencoded; charset=UTF-8",
         body="form-assetID", answer=RequestForm.FORM),
    Form("form without assetId, path id", "application/x-www-form-urlencoded", path_id=True,
         body="form", answer=RequestForm.FORM),
    Form("form, base64 not percent-encoded", "application/x-www-form-urlencoded",
         body="form-unencoded", answer=RequestForm.FORM),
    Form("form without content type", None, body="form-assetId", answer=RequestForm.FORM),
    Form("json", "application/json", body="json", answer=RequestForm.JSON),
    Form("json without content type, path id", None, path_id=True, body="json-noid",
         answer=RequestForm.JSON),
]


def form_request(form: Form, content_id: str, spc: bytes) -> tuple[str, bytes, dict[str, str]]:
    path = f"{FAIRPLAY}/{quote(content_id, safe='')}" if form.path_id else FAIRPLAY
    params = {form.query_id: content_id} if form.query_id else {}
    encoded = quote(b64(spc), safe="")
    bodies = {
        "raw": spc,
        "form-assetId": f"spc={encoded}&assetId={quote(content_id, safe='')}".encode(),
        "form-assetID": f"assetID={quote(content_id, safe='')}&spc={encoded}".encode(),
        "form": f"spc={encoded}".encode(),
        "form-unencoded": f"spc={b64(spc)}&assetId={content_id}".encode(),
        "json": json.dumps({"spc": b64(spc), "assetId": content_id}).encode(),
        "json-noid": json.dumps({"spc": b64(spc)}).encode(),
    }
    return path, bodies[form.body], params


def read_answer(form: RequestForm, body: bytes, headers: dict[str, str]) -> bytes:
    if form is RequestForm.RAW:
        assert headers["Content-Type"] == "application/octet-stream"
        return body
    if form is RequestForm.FORM:
        assert headers["Content-Type"] == "application/xml"
        match = re.fullmatch(rb"<ckc>([A-Za-z0-9+/=]+)</ckc>", body)
        assert match is not None
        return base64.b64decode(match.group(1), validate=True)
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)
    assert list(message) == ["ckc"]
    return base64.b64decode(message["ckc"], validate=True)


@pytest.mark.parametrize("form", FORMS, ids=[f.name for f in FORMS])
async def test_request_forms_round_trip_through_the_external_ksm(
    external: ExternalEnv, caplog_all: pytest.LogCaptureFixture, form: Form,
) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key("movie")
        spc = SPC + b"+/+/>>??"  # base64 of this holds '+' and '/'
        assert "+" in b64(spc) and "/" in b64(spc)
        path, body, params = form_request(form, f"skd://{key.kid_hex}", spc)
        status, answer, headers = await env.post(body, path=path, content_type=form.content_type,
                                                 params=params)
        assert status == 200, answer
        assert headers["Cache-Control"] == "no-store"
        assert "X-Origin-Test-KSM" not in headers
        iv = constant_iv(key)
        assert read_answer(form.answer, answer, headers) == fake_ckc(spc, key.key, iv)

        # What the KSM received: the SDK's create-ckc with this key, the cbcs constant IV,
        # and no lease or offline terms under the default policy.
        assert len(env.fake.requests) == 1
        message = env.fake.requests[0]
        assert message["fairplay-streaming-request"]["version"] == 1
        operation = operation_of(env.fake)
        assert operation == {
            "id": 1,
            "spc": b64(spc),
            "asset-info": [{"content-key": key.key.hex(), "content-iv": iv.hex()}],
        }
        sent = env.fake.headers[0]
        assert sent["X-Api-Key"] == KSM_SECRET
        assert sent["X-Tenant"] == "acme"
        assert sent["Content-Type"] == "application/json"
        assert KSM_SECRET not in caplog_all.text
        assert_no_secret(caplog_all.text, key)


@pytest.mark.parametrize(
    "content_id",
    ["{hex}", "{HEX}", "{uuid}", "skd://{hex}", "skd://{uuid}", "SKD://{hex}", "skd:{hex}",
     "skd://{hex}/", "skd://{hex}?token=abc", "skd://keys.example/x?KeyId={uuid}"],
)
async def test_content_id_spellings(external: ExternalEnv, content_id: str) -> None:
    async with external() as env:
        key = await env.asset_key()
        text = content_id.format(hex=key.kid_hex, HEX=key.kid_hex.upper(), uuid=key.kid_uuid)
        body = json.dumps({"spc": b64(SPC), "assetId": text})
        status, answer, headers = await env.post(body, content_type="application/json")
        assert status == 200, answer
        assert read_answer(RequestForm.JSON, answer, headers) == fake_ckc(
            SPC, key.key, constant_iv(key))


async def test_body_content_id_wins_over_path_and_query(external: ExternalEnv) -> None:
    async with external() as env:
        movie, trailer = await env.asset_key("movie"), await env.asset_key("trailer")
        body = f"spc={quote(b64(SPC), safe='')}&assetId={movie.kid_hex}"
        status, answer, headers = await env.post(
            body, path=f"{FAIRPLAY}/{trailer.kid_hex}",
            content_type="application/x-www-form-urlencoded",
            params={"assetId": trailer.kid_hex})
        assert status == 200
        assert read_answer(RequestForm.FORM, answer, headers) == fake_ckc(
            SPC, movie.key, constant_iv(movie))
        # The path wins over the query.
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{trailer.kid_hex}",
                                           params={"contentId": movie.kid_hex})
        assert status == 200
        assert answer == fake_ckc(SPC, trailer.key, constant_iv(trailer))


# --- policy before the KSM --------------------------------------------------------------------


async def test_token_policy_without_token_is_401_and_the_ksm_is_not_contacted(
    external: ExternalEnv, settings: LicenseSettings,
) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key("movie")
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(restriction=Restriction.TOKEN))
        for form in FORMS:
            path, body, params = form_request(form, key.kid_hex, SPC)
            status, answer, headers = await env.post(body, path=path,
                                                     content_type=form.content_type, params=params)
            assert status == 401, form.name
            assert json.loads(answer) == {"error": "a token is required"}
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert_no_secret(answer.decode(), key)
        assert not env.fake.contacted
        # Control: the same request under the open policy reaches the KSM.
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy())
        status, _, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
        assert status == 200
        assert env.fake.contacted


@pytest.mark.parametrize("offline", ["query", "form", "json"])
async def test_persistent_request_under_streaming_policy_is_403_and_ksm_not_contacted(
    external: ExternalEnv, settings: LicenseSettings, offline: str,
) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key("movie")
        path, params, body, content_type = FAIRPLAY, {}, SPC, None
        if offline == "query":
            path, params = f"{FAIRPLAY}/{key.kid_hex}", {"offline": "1"}
        elif offline == "form":
            body = f"spc={quote(b64(SPC))}&assetId={key.kid_hex}&offline=true".encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body = json.dumps({"spc": b64(SPC), "assetId": key.kid_hex, "offline": True}).encode()
            content_type = "application/json"
        status, answer, _ = await env.post(body, path=path, params=params,
                                           content_type=content_type)
        assert status == 403
        assert json.loads(answer) == {
            "error": "persistent licences are not allowed for this asset"}
        assert not env.fake.contacted
        # Control: once the policy allows persistent licences, the same request passes.
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(persistent=True))
        status, _, _ = await env.post(body, path=path, params=params, content_type=content_type)
        assert status == 200
        assert "offline-hls" in operation_of(env.fake)["asset-info"][0]


async def test_policy_durations_reach_the_ksm(
    external: ExternalEnv, settings: LicenseSettings,
) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key("movie")
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(
                persistent=True, license_duration_s=3600, rental_duration_s=86400 * 2))
        iv = constant_iv(key)
        status, _, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}",
                                      params={"offline": "true"})
        assert status == 200
        assert operation_of(env.fake)["asset-info"] == [{
            "content-key": key.key.hex(),
            "content-iv": iv.hex(),
            "offline-hls": {
                "stream-id": key.kid_hex,
                "title-id": hashlib.sha256(b"movie").digest()[:16].hex(),
                "rental-duration": 172800,
                "playback-duration": 3600,
            },
        }]
        # Streaming under the same policy: the licence duration is the lease.
        status, _, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
        assert status == 200
        assert operation_of(env.fake)["asset-info"] == [
            {"content-key": key.key.hex(), "content-iv": iv.hex(), "lease-duration": 3600}]


# --- KSM failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (KsmMode.FPS_ERROR, "FairPlay KSM refused the SPC (status -42581)"),
        (KsmMode.HTTP_500, "FairPlay KSM answered HTTP 500"),
        (KsmMode.GARBAGE, "FairPlay KSM sent a malformed answer"),
        (KsmMode.WRONG_SHAPE, "FairPlay KSM sent a malformed answer"),
    ],
)
async def test_ksm_errors_are_502_without_the_ksm_body(
    external: ExternalEnv, caplog_all: pytest.LogCaptureFixture, mode: KsmMode, reason: str,
) -> None:
    async with external(mode=mode) as env:
        assert env.fake is not None
        key = await env.asset_key()
        for _ in range(2):  # the server stays up
            status, answer, headers = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
            assert status == 502
            assert json.loads(answer) == {"error": reason}
            assert headers["Cache-Control"] == "no-store"
            assert KSM_ERROR_BODY not in answer.decode()
        assert env.fake.contacted
        assert "ksm-internal-detail" not in caplog_all.text
        assert_no_secret(caplog_all.text, key)
        env.fake.mode = KsmMode.OK  # control: the same route works once the KSM does
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
        assert status == 200
        assert answer == fake_ckc(SPC, key.key, constant_iv(key))


async def test_ksm_that_never_answers_is_503_within_the_timeout(external: ExternalEnv) -> None:
    timeout_s = 0.5
    async with external(mode=KsmMode.HANG, timeout_s=timeout_s) as env:
        assert env.fake is not None
        key = await env.asset_key()
        started = time.monotonic()
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
        elapsed = time.monotonic() - started
        assert status == 503
        assert json.loads(answer) == {"error": "FairPlay KSM timed out"}
        assert env.fake.received.is_set()  # it did get the request; it just never answered
        assert timeout_s <= elapsed < timeout_s + 2.0
        env.fake.release.set()
        async with env.session.get(env.url + "/healthz") as resp:
            assert resp.status == 200


async def test_unreachable_ksm_is_503(external: ExternalEnv) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with external(ksm_url=f"http://127.0.0.1:{port}/fps") as env:
        key = await env.asset_key()
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}")
        assert status == 503
        assert json.loads(answer) == {"error": "FairPlay KSM is unreachable"}


# --- the test KSM end to end ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["raw", "form", "json"])
async def test_test_ksm_delivers_the_key_to_the_session_key_only(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
    caplog_all: pytest.LogCaptureFixture, form: str,
) -> None:
    async with dev_ksm_env(settings, tmp_path, creds, policy) as env:
        key = await env.asset_key("movie")
        async with env.session.get(env.url + CERTIFICATE) as resp:
            cert = await resp.read()
        session_key, nonce = os.urandom(16), os.urandom(16)
        content_id = f"skd://{key.kid_hex}"
        spc = build_test_spc(cert, content_id, session_key, nonce)
        if form == "raw":
            status, body, headers = await env.post(spc, path=f"{FAIRPLAY}/{key.kid_hex}",
                                                   content_type="application/octet-stream")
            ckc = read_answer(RequestForm.RAW, body, headers)
        elif form == "form":
            status, body, headers = await env.post(
                f"spc={quote(b64(spc), safe='')}&assetId={quote(content_id, safe='')}",
                content_type="application/x-www-form-urlencoded")
            ckc = read_answer(RequestForm.FORM, body, headers)
        else:
            status, body, headers = await env.post(
                json.dumps({"spc": b64(spc), "assetId": content_id}),
                content_type="application/json")
            ckc = read_answer(RequestForm.JSON, body, headers)
        assert status == 200
        assert headers["X-Origin-Test-KSM"] == "not-apple-compatible"
        assert headers["Cache-Control"] == "no-store"
        assert key.key not in ckc  # never in clear

        opened = open_test_ckc(ckc, session_key)
        assert opened.key == key.key
        assert opened.iv == constant_iv(key)
        assert opened.nonce == nonce
        assert opened.terms == {
            "content-id": key.kid_hex if form == "raw" else content_id,  # path, else body
            "kid": key.kid_hex, "license-type": "streaming",
            "lease-duration": None, "rental-duration": None, "playback-duration": None,
        }
        # Negative control: another session key cannot unwrap it.
        with pytest.raises(InvalidUnwrap):
            open_test_ckc(ckc, os.urandom(16))
        assert "NOT Apple-compatible" in caplog_all.text
        assert_no_secret(caplog_all.text, key)


async def test_test_ksm_persistent_terms(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
) -> None:
    async with dev_ksm_env(settings, tmp_path, creds, policy) as env:
        key = await env.asset_key("movie")
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(
                persistent=True, license_duration_s=600, rental_duration_s=7200))
        session_key = os.urandom(16)
        spc = build_test_spc(creds.cert_der, key.kid_hex, session_key, os.urandom(16))
        status, ckc, _ = await env.post(spc, path=f"{FAIRPLAY}/{key.kid_hex}",
                                        params={"offline": "1"})
        assert status == 200
        opened = open_test_ckc(ckc, session_key)
        assert opened.key == key.key
        assert opened.terms == {
            "content-id": key.kid_hex, "kid": key.kid_hex, "license-type": "persistent",
            "lease-duration": None, "rental-duration": 7200, "playback-duration": 600,
        }


async def test_test_ksm_rejects_spcs_it_cannot_use_with_400(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
    other_creds: Credentials, caplog_all: pytest.LogCaptureFixture,
) -> None:
    async with dev_ksm_env(settings, tmp_path, creds, policy) as env:
        movie, trailer = await env.asset_key("movie"), await env.asset_key("trailer")
        session_key = os.urandom(16)
        good = build_test_spc(creds.cert_der, movie.kid_hex, session_key, os.urandom(16))
        cases = {
            "garbage": (SPC, "not a test SPC (this KSM is for development only)"),
            "truncated": (good[:-1], "malformed test SPC"),
            "trailing byte": (good + b"\0", "malformed test SPC"),
            "another certificate": (
                build_test_spc(other_creds.cert_der, movie.kid_hex, session_key, os.urandom(16)),
                "test SPC is not for this certificate"),
            "flipped ciphertext": (good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
                                   "test SPC is not for this certificate"),
            "another key's content id": (
                build_test_spc(creds.cert_der, trailer.kid_hex, session_key, os.urandom(16)),
                "test SPC is for another key"),
            "malformed content id": (
                build_test_spc(creds.cert_der, "skd://not-a-kid", session_key, os.urandom(16)),
                "test SPC has a malformed content id"),
        }
        for label, (spc, reason) in cases.items():
            status, body, _ = await env.post(spc, path=f"{FAIRPLAY}/{movie.kid_hex}",
                                             content_type="application/octet-stream")
            assert status == 400, label
            assert json.loads(body) == {"error": reason}, label
            assert_no_secret(body.decode(), movie, trailer)
        # Control: the good SPC is served.
        status, ckc, _ = await env.post(good, path=f"{FAIRPLAY}/{movie.kid_hex}")
        assert status == 200
        assert open_test_ckc(ckc, session_key).key == movie.key
        assert_no_secret(caplog_all.text, movie, trailer)


async def test_test_ksm_token_from_the_skd_uri(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
) -> None:
    """The token the origin wrote into ``skd://…?token=`` counts when nothing else carries one."""

    class Recording(PolicyDecisionPoint):
        def __init__(self) -> None:
            self.tokens: list[str | None] = []

        def decide(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            self.tokens.append(request.token)
            return super().decide(request, *args, **kwargs)

    recording = Recording()
    async with dev_ksm_env(settings, tmp_path, creds, recording) as env:
        key = await env.asset_key()
        spc = build_test_spc(creds.cert_der, key.kid_hex, os.urandom(16), os.urandom(16))
        body = json.dumps({"spc": b64(spc), "assetId": f"skd://{key.kid_hex}?token=skd-tok"})
        assert (await env.post(body, content_type="application/json"))[0] == 200
        assert (await env.post(body, content_type="application/json",
                               headers={"Authorization": "Bearer header-tok"}))[0] == 200
        assert recording.tokens == ["skd-tok", "header-tok"]


# --- bad requests -----------------------------------------------------------------------------


BAD_CONTENT_IDS = ["", "not-a-kid", "00112233", "skd://", "skd://host/path",
                   "skd://" + "ab" * 17, "g" * 32, "skd://x?KeyId=1&KeyId=2", "x" * 600]


@pytest.mark.parametrize("content_id", BAD_CONTENT_IDS)
async def test_malformed_content_id_is_400(external: ExternalEnv, content_id: str) -> None:
    async with external() as env:
        assert env.fake is not None
        await env.asset_key()
        body = json.dumps({"spc": b64(SPC), "assetId": content_id})
        status, answer, _ = await env.post(body, content_type="application/json")
        assert status == 400
        expected = "malformed content id" if content_id else "assetId must be a non-empty string"
        assert json.loads(answer) == {"error": expected}
        assert not env.fake.contacted


async def test_missing_and_unknown_content_ids(external: ExternalEnv) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key()
        status, answer, _ = await env.post(SPC)
        assert (status, json.loads(answer)) == (400, {"error": "content id is missing"})
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{uuid.uuid4()}")
        assert (status, json.loads(answer)) == (404, {"error": "unknown key id"})
        assert not env.fake.contacted
        assert_no_secret(answer.decode(), key)


MALFORMED_BODIES: list[tuple[str, str | None, bytes, str]] = [
    ("empty raw", "application/octet-stream", b"", "empty SPC"),
    ("form without spc", "application/x-www-form-urlencoded", b"assetId={kid}",
     "spc is missing"),
    ("form empty spc", "application/x-www-form-urlencoded", b"spc=&assetId={kid}",
     "spc is not base64"),
    ("form spc twice", "application/x-www-form-urlencoded", b"spc=AAAA&spc=AAAA&assetId={kid}",
     "spc given twice"),
    ("form not base64", "application/x-www-form-urlencoded", b"spc=%%%&assetId={kid}",
     "spc is not base64"),
    ("form bad offline", "application/x-www-form-urlencoded",
     b"spc=AAAA&assetId={kid}&offline=maybe", "offline must be true or false"),
    ("form ids disagree", "application/x-www-form-urlencoded",
     b"spc=AAAA&assetId={kid}&assetID=00000000000000000000000000000000",
     "assetId and assetID disagree"),
    ("form not ascii", "application/x-www-form-urlencoded", b"spc=AAAA\xff&assetId={kid}",
     "SPC request is not a form"),
    ("json not json", "application/json", b"{spc", "SPC request is not JSON"),
    ("json array", "application/json", b'["AAAA"]', "SPC request is not a JSON object"),
    ("json spc number", "application/json", b'{"spc": 1, "assetId": "{kid}"}',
     "spc must be a base64 string"),
    ("json duplicate", "application/json", b'{"spc": "AAAA", "spc": "AAAA"}',
     "SPC request is not JSON"),
    ("json assetId number", "application/json", b'{"spc": "AAAA", "assetId": 7}',
     "assetId must be a non-empty string"),
    ("json offline null", "application/json", b'{"spc": "AAAA", "assetId": "{kid}", '
     b'"offline": null}', "offline must be true or false"),
    ("json bad base64", "application/json", b'{"spc": "A", "assetId": "{kid}"}',
     "spc is not base64"),
    ("sniffed json broken", None, b"  {\"spc\": ", "SPC request is not JSON"),
]


@pytest.mark.parametrize(("label", "content_type", "template", "reason"), MALFORMED_BODIES,
                         ids=[m[0] for m in MALFORMED_BODIES])
async def test_malformed_requests_are_400(
    external: ExternalEnv, caplog_all: pytest.LogCaptureFixture,
    label: str, content_type: str | None, template: bytes, reason: str,
) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key()
        body = template.replace(b"{kid}", key.kid_hex.encode())
        status, answer, headers = await env.post(body, path=f"{FAIRPLAY}/{key.kid_hex}",
                                                 content_type=content_type)
        assert status == 400, label
        assert json.loads(answer) == {"error": reason}, label
        assert headers["Cache-Control"] == "no-store"
        assert not env.fake.contacted
        assert_no_secret(answer.decode() + caplog_all.text, key)


async def test_bad_offline_query_is_400(external: ExternalEnv) -> None:
    async with external() as env:
        key = await env.asset_key()
        status, answer, _ = await env.post(SPC, path=f"{FAIRPLAY}/{key.kid_hex}",
                                           params={"offline": "2"})
        assert (status, json.loads(answer)) == (400, {"error": "offline must be true or false"})


async def test_oversized_body_is_413(external: ExternalEnv) -> None:
    async with external() as env:
        assert env.fake is not None
        key = await env.asset_key()
        path = f"{FAIRPLAY}/{key.kid_hex}"
        at_limit = b"\x00\x00\x00\x01" + b"\xab" * (MAX_REQUEST_BYTES - 4)
        assert (await env.post(at_limit, path=path))[0] == 200  # control: the limit itself is fine
        status, answer, _ = await env.post(at_limit + b"\x00", path=path)
        assert (status, json.loads(answer)) == (413, {"error": "licence request too large"})

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, MAX_REQUEST_BYTES + 1, 4096):
                yield (at_limit + b"\x00")[start : start + 4096]

        async with env.session.post(env.url + path, data=chunks()) as resp:
            assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert resp.status == 413
        assert len(env.fake.requests) == 1


async def test_other_methods_are_405(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
) -> None:
    async with dev_ksm_env(settings, tmp_path, creds, policy) as env:
        async with env.session.get(env.url + FAIRPLAY) as resp:
            assert resp.status == 405
        async with env.session.put(env.url + CERTIFICATE) as resp:
            assert resp.status == 405


# --- configuration ----------------------------------------------------------------------------


def base_table(ksm: str = "external") -> dict[str, Any]:
    if ksm == "external":
        return {"certificate_file": "fps.cer", "ksm": "external",
                "ksm_url": "https://ksm.example/fps"}
    return {"certificate_file": "fps.cer", "ksm": "test", "test_private_key_file": "fps.key"}


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", {"ksm_ulr": "x"}, "unknown field 'ksm_ulr'"),
    ("no certificate", {"certificate_file": None}, "certificate_file must be a non-empty string"),
    ("missing certificate", {"certificate_file": "nope.cer"}, "certificate_file: cannot read"),
    ("certificate is a key", {"certificate_file": "fps.key"}, "is not a certificate"),
    ("bad ksm", {"ksm": "apple"}, 'ksm must be "external" or "test"'),
    ("no ksm", {"ksm": None}, "ksm must be a non-empty string"),
    ("no url", {"ksm_url": None}, "ksm_url must be a non-empty string"),
    ("ftp url", {"ksm_url": "ftp://ksm.example/"}, "ksm_url must be an http or https URL"),
    ("relative url", {"ksm_url": "/fps"}, "ksm_url must be an http or https URL"),
    ("url with credentials", {"ksm_url": "https://user:pw-9x@ksm.example/"},
     "ksm_url must not hold credentials"),
    ("bad port", {"ksm_url": "http://ksm.example:99999/"}, "ksm_url"),
    ("zero timeout", {"ksm_timeout_s": 0}, "ksm_timeout_s must be a number of seconds"),
    ("huge timeout", {"ksm_timeout_s": 3600}, "ksm_timeout_s must be a number of seconds"),
    ("bool timeout", {"ksm_timeout_s": True}, "ksm_timeout_s must be a number of seconds"),
    ("string timeout", {"ksm_timeout_s": "5"}, "ksm_timeout_s must be a number of seconds"),
    ("headers not a table", {"ksm_headers": "X-Api-Key: 1"}, "ksm_headers must be a table"),
    ("bad header name", {"ksm_headers": {"X Api": "1"}}, "ksm_headers: not a valid header name"),
    ("reserved header", {"ksm_headers": {"Content-Type": "text/plain"}},
     "ksm_headers.Content-Type: this header is set by origin"),
    ("header value with newline", {"ksm_headers": {"X-A": "a\r\nX-B: b"}},
     "ksm_headers.X-A: the value is not a valid header value"),
    ("header env missing", {"ksm_headers": {"X-Api-Key": {"env": "FPS_UNSET_VAR_42"}}},
     "ksm_headers.X-Api-Key: environment variable FPS_UNSET_VAR_42 is not set"),
    ("header spec unknown", {"ksm_headers": {"X-Api-Key": {"vault": "x"}}},
     'ksm_headers.X-Api-Key must be a string, {env = "VAR"} or {file = "path"}'),
    ("header file missing", {"ksm_headers": {"X-Api-Key": {"file": "nope.txt"}}},
     "ksm_headers.X-Api-Key: cannot read"),
]


@pytest.mark.parametrize(("label", "change", "message"), BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_external_config_names_the_field(
    settings: LicenseSettings, tmp_path: Path, creds: Credentials, label: str,
    change: dict[str, Any], message: str,
) -> None:
    write_files(tmp_path, creds)
    table = base_table() | change
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(ValueError, match=r"^licence config: \[fairplay\] ") as error:
        load_fairplay_config(with_table(settings, tmp_path, table), {})
    assert message in str(error.value), label
    assert "pw-9x" not in str(error.value)


def test_bad_test_ksm_config(
    settings: LicenseSettings, tmp_path: Path, creds: Credentials, other_creds: Credentials,
) -> None:
    write_files(tmp_path, creds)
    (tmp_path / "other.key").write_bytes(other_creds.key_pem)
    (tmp_path / "junk.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE "
                                        b"KEY-----\n")
    cases = {
        "other.key": "test_private_key_file does not match certificate_file",
        "junk.key": "not an unencrypted PEM or DER private key",
        "fps.cer": "not an unencrypted PEM or DER private key",
        "absent.key": "test_private_key_file: cannot read",
    }
    for name, message in cases.items():
        table = base_table("test") | {"test_private_key_file": name}
        with pytest.raises(ValueError) as error:
            load_fairplay_config(with_table(settings, tmp_path, table), {})
        assert message in str(error.value), name
    # Control: the matching key loads, from PEM and from DER.
    for pem in (True, False):
        write_files(tmp_path, creds, pem=pem)
        config = load_fairplay_config(with_table(settings, tmp_path, base_table("test")), {})
        assert config is not None and config.certificate.der == creds.cert_der


def test_header_secrets_load_but_never_show(
    settings: LicenseSettings, tmp_path: Path, creds: Credentials,
) -> None:
    write_files(tmp_path, creds)
    (tmp_path / "ksm.token").write_text("file-secret-1f4d\n")
    table = base_table() | {"ksm_timeout_s": 2.5, "ksm_headers": {
        "X-Api-Key": {"env": "FPS_KEY"}, "X-File": {"file": "ksm.token"}, "X-Plain": "p"}}
    config = load_fairplay_config(with_table(settings, tmp_path, table), {"FPS_KEY": KSM_SECRET})
    assert config is not None
    assert isinstance(config.ksm, ExternalKsmConfig)
    assert config.ksm.timeout_s == 2.5
    assert dict(config.ksm.headers) == {
        "X-Api-Key": KSM_SECRET, "X-File": "file-secret-1f4d", "X-Plain": "p"}
    for text in (repr(config), str(config)):
        assert KSM_SECRET not in text and "file-secret" not in text
    assert load_fairplay_config(settings, {}) is None  # no [fairplay] table: off


async def test_bad_config_fails_startup(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path, creds: Credentials,
) -> None:
    write_files(tmp_path, creds)
    bad = with_table(settings, tmp_path, base_table() | {"ksm_url": "gopher://x"})
    with pytest.raises(ValueError, match="ksm_url must be an http or https URL"):
        async with running_licence_app(bad, policy):
            pass


# --- through the origin -----------------------------------------------------------------------


async def test_fairplay_through_the_origin(tmp_path: Path, creds: Credentials) -> None:
    write_files(tmp_path, creds)
    config = tmp_path / "licence.toml"
    config.write_text('[fairplay]\ncertificate_file = "fps.cer"\nksm = "test"\n'
                      'test_private_key_file = "fps.key"\n')
    server = start_origin(DEMO.parent, tmp_path / "state", "--license-config", str(config))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base}/hls/demo/cbcs/video-360p/index.m3u8") as resp:
                assert resp.status == 200
                playlist = await resp.text()
            match = re.search(r'URI="(skd://([0-9a-f]{32})[^"]*)"', playlist)
            assert match is not None
            skd, kid_hex = match.group(1), match.group(2)
            async with session.get(f"{server.base}/license/aes128/{kid_hex}") as resp:
                key = await resp.read()
            async with session.get(f"{server.base}{CERTIFICATE}") as resp:
                assert resp.status == 200
                assert await resp.read() == creds.cert_der
            session_key = os.urandom(16)
            spc = build_test_spc(creds.cert_der, skd, session_key, os.urandom(16))
            async with session.post(
                f"{server.base}{FAIRPLAY}",
                data=f"spc={quote(b64(spc), safe='')}&assetId={quote(skd, safe='')}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Origin-Test-KSM"] == "not-apple-compatible"
                ckc = read_answer(RequestForm.FORM, await resp.read(), dict(resp.headers))
            opened = open_test_ckc(ckc, session_key)
            assert opened.key == key
            assert opened.iv == constant_iv(ContentKey(kid=bytes.fromhex(kid_hex), key=key))
    finally:
        assert server.stop() == 0
    assert key.hex() not in server.log_text()


# --- the pure modules -------------------------------------------------------------------------


def test_detect_form() -> None:
    assert detect_form(b"spc=AAAA", None) is RequestForm.FORM
    assert detect_form(b"assetId=x&spc=AAAA", "text/plain") is RequestForm.FORM
    assert detect_form(b' {"spc": "x"}', None) is RequestForm.JSON
    assert detect_form(b"{}", "application/vnd.example+json") is RequestForm.JSON
    assert detect_form(b"spc=AAAA", "application/octet-stream") is RequestForm.RAW
    assert detect_form(b"{", "application/octet-stream") is RequestForm.RAW
    assert detect_form(SPC, None) is RequestForm.RAW
    assert detect_form(b"spc=\x00", None) is RequestForm.RAW
    assert detect_form(b"xspc=AAAA", None) is RequestForm.RAW


def test_parse_content_id_forms() -> None:
    kid = uuid.uuid4()
    for text in (kid.hex, kid.hex.upper(), str(kid), f"skd://{kid.hex}", f"skd:{kid}",
                 f"skd://{kid.hex}?token=t", f"skd://h/p?KeyId={kid}", f"skd://h?keyId={kid.hex}"):
        assert parse_content_id(text) == kid.bytes, text
    for text in BAD_CONTENT_IDS:
        with pytest.raises(MalformedContentId):
            parse_content_id(text)
    assert skd_query(f"skd://{kid.hex}?token=abc&x=1") == {"token": "abc", "x": "1"}
    assert skd_query(f"{kid.hex}?token=abc") == {}
    assert skd_query(f"skd://{kid.hex}") == {}


def test_base64_spellings() -> None:
    spc = bytes(range(250))
    standard = base64.b64encode(spc).decode()
    urlsafe = base64.urlsafe_b64encode(spc).decode().rstrip("=")
    wrapped = "\r\n".join(standard[i : i + 64] for i in range(0, len(standard), 64))
    for text in (standard, urlsafe, wrapped):
        body = json.dumps({"spc": text}).encode()
        assert parse_spc_request(body, "application/json").spc == spc
    form = parse_spc_request(f"spc={standard}&offline=TRUE".encode(), None)
    assert (form.spc, form.form, form.offline, form.content_id) == (
        spc, RequestForm.FORM, True, None)


def test_build_ckc_response() -> None:
    ckc = os.urandom(100)
    raw = build_ckc_response(ckc, RequestForm.RAW)
    assert (raw.body, raw.content_type) == (ckc, "application/octet-stream")
    form = build_ckc_response(ckc, RequestForm.FORM)
    assert form.body == b"<ckc>" + base64.b64encode(ckc) + b"</ckc>"
    as_json = build_ckc_response(ckc, RequestForm.JSON)
    assert json.loads(as_json.body) == {"ckc": b64(ckc)}
    assert as_json.content_type == "application/json"


def test_ksm_wire_format_and_reprs() -> None:
    key = ContentKey(kid=os.urandom(16), key=os.urandom(16))
    iv = os.urandom(16)
    request = CkcRequest(spc=b"spc", content_id=key.kid_hex, asset="film", key=key, iv=iv,
                         license_type=LicenseType.PERSISTENT, lease_duration_s=60,
                         rental_duration_s=120)
    assert build_ksm_request(request) == {"fairplay-streaming-request": {
        "version": 1,
        "create-ckc": [{"id": 1, "spc": b64(b"spc"), "asset-info": [{
            "content-key": key.key.hex(), "content-iv": iv.hex(),
            "offline-hls": {"stream-id": key.kid_hex, "title-id": title_id("film").hex(),
                            "rental-duration": 120, "playback-duration": 60}}]}]}}
    assert_no_secret(repr(request) + str(request), key)
    with_token = dataclasses.replace(request, content_id=f"skd://{key.kid_hex}?token=tok-9q")
    parsed = parse_spc_request(json.dumps({"spc": "AAAA", "assetId": with_token.content_id})
                               .encode(), None)
    for text in (repr(with_token), repr(parsed)):
        assert "tok-9q" not in text
    private = load_private_key(make_credentials(1024).key_pem)
    assert isinstance(private, RsaPrivateKey)
    assert repr(private) == "RsaPrivateKey(bits=1024)"


def test_parse_ksm_response() -> None:
    ckc = os.urandom(40)

    def answer(item: dict[str, Any]) -> bytes:
        return json.dumps({"fairplay-streaming-response": {"create-ckc": [item]}}).encode()

    assert parse_ksm_response(answer({"id": 1, "status": 0, "ckc": b64(ckc)})) == ckc
    assert parse_ksm_response(answer({"id": "1", "status": "0", "ckc": b64(ckc)})) == ckc
    assert parse_ksm_response(answer({"id": 1, "ckc": b64(ckc)})) == ckc
    for bad, reason in [
        (answer({"id": 1, "status": -42601}), "FairPlay KSM refused the SPC (status -42601)"),
        (answer({"id": 1, "status": "-5", "ckc": b64(ckc)}),
         "FairPlay KSM refused the SPC (status -5)"),
        (answer({"id": 2, "status": 0, "ckc": b64(ckc)}), "FairPlay KSM sent a malformed answer"),
        (answer({"id": 1, "status": 0, "ckc": "%%"}), "FairPlay KSM sent a malformed answer"),
        (answer({"id": 1, "status": 0, "ckc": ""}), "FairPlay KSM sent a malformed answer"),
        (answer({"id": 1, "status": "zero", "ckc": b64(ckc)}),
         "FairPlay KSM sent a malformed answer"),
        (answer({"id": 1, "status": True, "ckc": b64(ckc)}),
         "FairPlay KSM sent a malformed answer"),
        (b"[]", "FairPlay KSM sent a malformed answer"),
        (b"\xff", "FairPlay KSM sent a malformed answer"),
    ]:
        with pytest.raises(KsmFailed) as error:
            parse_ksm_response(bad)
        assert error.value.status == 502
        assert error.value.detail == reason


@hyp_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), st.sampled_from(
    [None, "application/json", "application/x-www-form-urlencoded", "text/plain",
     "application/octet-stream"]))
def test_fuzz_spc_requests_raise_only_typed_errors(body: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_spc_request(body, content_type)
    except MalformedSpcRequest as exc:
        assert exc.status == 400 and len(exc.detail) < 60
        return
    assert parsed.spc
    if parsed.content_id is not None:
        with contextlib.suppress(MalformedContentId):
            parse_content_id(parsed.content_id)


@hyp_settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.sampled_from(
                     ["fairplay-streaming-response", "create-ckc", "id", "status", "ckc"]),
                     inner, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
))
def test_fuzz_ksm_answers_raise_only_ksm_failed(body: bytes) -> None:
    try:
        assert parse_ksm_response(body)
    except KsmFailed as exc:
        assert isinstance(exc, OriginError) and exc.status == 502


@hyp_settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_content_ids(text: str) -> None:
    try:
        assert len(parse_content_id(text)) == 16
    except MalformedContentId as exc:
        assert exc.status == 400
