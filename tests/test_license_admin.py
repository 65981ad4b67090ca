"""The licence module's admin API on a real loopback port, and the ``policy`` and
``token mint`` commands run as subprocesses (``python -m origin``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm
from multidict import CIMultiDictProxy

from origin.crypto.key import ContentKey
from origin.license.keystore import Keystore
from origin.license.policy import ContentKeyPolicy, PolicyDecisionPoint, Restriction
from origin.license.settings import LicenseSettings
from origin.license.token import (
    SECRET_ENV,
    JwtVerifier,
    TokenRejected,
    parse_token_settings,
)
from tests.tools.licence import AUTH, TOKEN, fetch_asset_key, running_licence_app

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "admin-token-" + os.urandom(12).hex()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEK_HEX = os.urandom(32).hex()


@pytest.fixture
def settings(tmp_path: Path) -> LicenseSettings:
    return LicenseSettings(db_path=tmp_path / "keys.sqlite", kek=os.urandom(32),
                           internal_token=TOKEN, admin_token=ADMIN_TOKEN)


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = ADMIN,
                   data: bytes | None = None) -> tuple[int, Any, CIMultiDictProxy[str]]:
        async with self.session.request(method, self.url + path, headers=headers,
                                        data=data) as resp:
            text = await resp.text()
            assert resp.headers["Cache-Control"] == "no-store", (method, path)
            return resp.status, json.loads(text), resp.headers

    async def content_key(self, asset: str) -> ContentKey:
        return await fetch_asset_key(self.session, self.url, asset)


@pytest.fixture
async def api(settings: LicenseSettings, policy: PolicyDecisionPoint,
              caplog_all: pytest.LogCaptureFixture) -> AsyncIterator[Api]:
    async with running_licence_app(settings, policy) as url, aiohttp.ClientSession() as session:
        yield Api(url, session)
    assert ADMIN_TOKEN not in caplog_all.text and TOKEN not in caplog_all.text


ROUTES = [
    ("GET", "/admin/v1/policies"),
    ("GET", "/admin/v1/policies/movie"),
    ("PUT", "/admin/v1/policies/movie"),
    ("DELETE", "/admin/v1/policies/movie"),
    ("GET", "/admin/v1/assets/movie/keys"),
    ("POST", "/admin/v1/assets/movie/keys/rotate"),
]
POLICY_BODY = json.dumps({"restriction": "token", "persistent": True}).encode()


def key_forms(key: ContentKey) -> list[str]:
    return [key.key.hex(), base64.urlsafe_b64encode(key.key).decode().rstrip("="),
            base64.b64encode(key.key).decode().rstrip("=")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_the_admin_token(api: Api, settings: LicenseSettings,
                                                 method: str, path: str) -> None:
    wrong_tokens: list[dict[str, str] | None] = [
        None,
        {"Authorization": "Bearer " + ADMIN_TOKEN[:-1] + "x"},
        {"Authorization": ADMIN_TOKEN},  # no scheme
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        AUTH,  # the internal token opens nothing here
    ]
    for headers in wrong_tokens:
        status, body, resp_headers = await api.call(method, path, headers=headers,
                                                    data=POLICY_BODY)
        assert (status, body) == (401, {"error": "admin token required"}), headers
        assert resp_headers["WWW-Authenticate"] == 'Bearer realm="origin-admin"'
    # Nothing changed: no policy stored, no key made.
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        assert keystore.policies() == {} and keystore.records() == []
    # Control: the admin token works on the same route.
    status, _, _ = await api.call(method, path, data=POLICY_BODY)
    assert status in (200, 404)  # DELETE of a policy never stored is 404


async def test_admin_token_does_not_open_the_internal_api(api: Api) -> None:
    async with api.session.get(f"{api.url}/internal/v1/assets/movie/key",
                               headers=ADMIN) as resp:
        assert resp.status == 401
        assert ADMIN_TOKEN not in await resp.text()
    await api.content_key("movie")  # control: the internal token does


async def test_admin_api_disabled_without_a_token(
    tmp_path: Path, policy: PolicyDecisionPoint
) -> None:
    disabled = LicenseSettings(db_path=tmp_path / "k.sqlite", kek=os.urandom(32),
                               internal_token=TOKEN)
    async with running_licence_app(disabled, policy) as url, aiohttp.ClientSession() as session:
        api = Api(url, session)
        for method, path in ROUTES:
            for headers in (ADMIN, AUTH, None):
                status, body, _ = await api.call(method, path, headers=headers,
                                                 data=POLICY_BODY)
                assert (status, body) == (
                    403, {"error": "admin API disabled (set ORIGIN_ADMIN_TOKEN)"})


async def test_same_admin_and_internal_token_fails_startup(
    tmp_path: Path, policy: PolicyDecisionPoint
) -> None:
    same = LicenseSettings(db_path=tmp_path / "k.sqlite", kek=os.urandom(32),
                           internal_token=TOKEN, admin_token=TOKEN)
    with pytest.raises(ValueError) as info:
        async with running_licence_app(same, policy):
            pass
    assert "ORIGIN_ADMIN_TOKEN" in str(info.value) and TOKEN not in str(info.value)


DEFAULT = {"restriction": "open", "persistent": False, "license_duration_s": None,
           "rental_duration_s": None}


async def test_policy_crud_round_trip(api: Api, settings: LicenseSettings) -> None:
    status, body, _ = await api.call("GET", "/admin/v1/policies/movie")
    assert (status, body) == (200, {"asset": "movie", "stored": False, "policy": DEFAULT})
    assert (await api.call("GET", "/admin/v1/policies"))[:2] == (200, {"policies": {}})

    stored = {"restriction": "token", "persistent": True, "license_duration_s": 3600,
              "rental_duration_s": 86400}
    status, body, _ = await api.call("PUT", "/admin/v1/policies/movie",
                                     data=json.dumps(stored).encode())
    assert (status, body) == (200, {"asset": "movie", "stored": True, "policy": stored})
    # Fields left out take their defaults.
    status, body, _ = await api.call("PUT", "/admin/v1/policies/trailer",
                                     data=b'{"persistent": true}')
    assert (status, body["policy"]) == (200, {**DEFAULT, "persistent": True})

    status, body, _ = await api.call("GET", "/admin/v1/policies/movie")
    assert (status, body) == (200, {"asset": "movie", "stored": True, "policy": stored})
    status, body, _ = await api.call("GET", "/admin/v1/policies")
    assert (status, body) == (200, {"policies": {
        "movie": stored, "trailer": {**DEFAULT, "persistent": True}}})
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        assert keystore.policy("movie") == ContentKeyPolicy(Restriction.TOKEN, True, 3600, 86400)

    # The stored policy rules the licence routes: movie now needs a token.
    key = await api.content_key("movie")
    async with api.session.get(f"{api.url}/license/aes128/{key.kid_hex}") as resp:
        assert resp.status == 401

    status, body, _ = await api.call("DELETE", "/admin/v1/policies/movie")
    assert (status, body) == (200, {"asset": "movie", "deleted": True})
    status, body, _ = await api.call("DELETE", "/admin/v1/policies/movie")
    assert (status, body) == (404, {"error": "no policy stored for this asset"})
    status, body, _ = await api.call("GET", "/admin/v1/policies/movie")
    assert (status, body) == (200, {"asset": "movie", "stored": False, "policy": DEFAULT})
    async with api.session.get(f"{api.url}/license/aes128/{key.kid_hex}") as resp:
        assert resp.status == 200 and await resp.read() == key.key


BAD_POLICIES: list[tuple[bytes, str]] = [
    (b'{"restriction": "closed"}', "restriction must be 'open' or 'token'"),
    (b'{"persistent": "yes"}', "persistent must be true or false"),
    (b'{"license_duration_s": 0}', "license_duration_s must be a whole number of seconds"),
    (b'{"rental_duration_s": 1.5}', "rental_duration_s must be a whole number of seconds"),
    (b'{"rental_duration_s": true}', "rental_duration_s must be a whole number of seconds"),
    (b'{"license_duration_s": 999999999999}', "license_duration_s must be a whole number"),
    (b'{"bogus": 1}', "unknown policy field 'bogus'"),
    (b'["token"]', "body must be a JSON object"),
    (b"restriction=token", "body must be a JSON object"),
    (b"", "body must be a JSON object"),
    (b'{"persistent": true, "persistent": false}', "body must be a JSON object"),
    (b'{"license_duration_s": NaN}', "body must be a JSON object"),
    (b'{"restriction": "open"}\xff', "body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_POLICIES)
async def test_bad_policy_is_400_naming_the_field(api: Api, settings: LicenseSettings,
                                                   body: bytes, message: str) -> None:
    status, answer, _ = await api.call("PUT", "/admin/v1/policies/movie", data=body)
    assert status == 400
    assert answer["error"].startswith(message)
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        assert keystore.policies() == {}


async def test_bad_asset_names_and_big_bodies(api: Api) -> None:
    for path in ("/admin/v1/policies/bad%20name", "/admin/v1/policies/.hidden",
                 "/admin/v1/assets/" + "a" * 200 + "/keys"):
        status, body, _ = await api.call("GET", path)
        assert (status, body) == (400, {"error": "invalid asset name"})
    big = json.dumps({"restriction": "open", "pad": " " * (64 * 1024)}).encode()
    status, body, _ = await api.call("PUT", "/admin/v1/policies/movie", data=big)
    assert (status, body) == (413, {"error": "request body too large"})
    # Just under the cap is read (and refused for its unknown field, not its size).
    under = b'{"x": "' + b" " * (64 * 1024 - 11) + b'"}'
    assert len(under) <= 64 * 1024
    status, body, _ = await api.call("PUT", "/admin/v1/policies/movie", data=under)
    assert (status, body) == (400, {"error": "unknown policy field 'x'"})


async def test_key_records_and_rotation_never_show_key_bytes(api: Api) -> None:
    status, body, _ = await api.call("GET", "/admin/v1/assets/movie/keys")
    assert (status, body) == (200, {"asset": "movie", "keys": []})
    first = await api.content_key("movie")
    status, body, _ = await api.call("GET", "/admin/v1/assets/movie/keys")
    assert status == 200
    [record] = body["keys"]
    assert set(record) == {"kid", "kid_uuid", "asset", "created_at", "active"}
    assert (record["kid"], record["asset"], record["active"]) == (first.kid_hex, "movie", True)

    status, rotated, _ = await api.call("POST", "/admin/v1/assets/movie/keys/rotate")
    assert status == 200 and rotated["key"]["active"] is True
    assert rotated["key"]["kid"] != first.kid_hex
    second = await api.content_key("movie")
    assert second.kid_hex == rotated["key"]["kid"] and second.key != first.key
    status, body, _ = await api.call("GET", "/admin/v1/assets/movie/keys")
    assert [(r["kid"], r["active"]) for r in body["keys"]] == [
        (first.kid_hex, False), (second.kid_hex, True)]
    text = json.dumps(body) + json.dumps(rotated)
    for key in (first, second):
        for form in key_forms(key):
            assert form not in text
    # Other assets are not touched.
    status, body, _ = await api.call("GET", "/admin/v1/assets/trailer/keys")
    assert body["keys"] == []


async def test_other_methods_are_405(api: Api) -> None:
    async with api.session.post(api.url + "/admin/v1/policies/movie", headers=ADMIN) as resp:
        assert resp.status == 405
    async with api.session.get(api.url + "/admin/v1/assets/movie/keys/rotate",
                               headers=ADMIN) as resp:
        assert resp.status == 405


# --- the CLI, as subprocesses --------------------------------------------------------------------


def origin(*args: str | Path,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("ORIGIN_KEK", SECRET_ENV)}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "origin", *map(str, args)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60, check=False)


def policy_cli(state: Path, *args: str, kek: str = KEK_HEX) -> subprocess.CompletedProcess[str]:
    return origin("policy", *args, "--state-dir", state, env={"ORIGIN_KEK": kek})


def test_policy_commands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    missing = policy_cli(state, "show", "movie")
    assert missing.returncode == 1 and "no keystore" in missing.stderr

    done = policy_cli(state, "set", "movie", "--restriction", "token", "--persistent",
                      "--license-duration", "3600")
    assert done.returncode == 0, done.stderr
    expected = {"restriction": "token", "persistent": True, "license_duration_s": 3600,
                "rental_duration_s": None}
    assert json.loads(done.stdout) == {"asset": "movie", "stored": True, "policy": expected}

    shown = policy_cli(state, "show", "movie")
    assert json.loads(shown.stdout) == {"asset": "movie", "stored": True, "policy": expected}
    default = policy_cli(state, "show", "trailer")
    assert json.loads(default.stdout) == {"asset": "trailer", "stored": False,
                                          "policy": DEFAULT}
    # Unnamed fields keep their value; 0 removes a duration.
    changed = policy_cli(state, "set", "movie", "--no-persistent", "--license-duration", "0",
                         "--rental-duration", "600")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["policy"] == {
        "restriction": "token", "persistent": False, "license_duration_s": None,
        "rental_duration_s": 600}
    with Keystore.open(state / "keys.sqlite", bytes.fromhex(KEK_HEX)) as keystore:
        assert keystore.policy("movie") == ContentKeyPolicy(Restriction.TOKEN, False, None, 600)

    listed = policy_cli(state, "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["asset", "restriction", "persistent", "licence_s", "rental_s"]
    assert lines[1].split() == ["movie", "token", "no", "-", "600"]
    assert len(lines) == 2

    bad = policy_cli(state, "set", "movie", "--license-duration", "-5")
    assert bad.returncode == 1 and "license_duration_s" in bad.stderr
    bad_name = policy_cli(state, "set", "bad name")
    assert bad_name.returncode == 1 and "invalid asset name" in bad_name.stderr
    bad_choice = policy_cli(state, "set", "movie", "--restriction", "closed")
    assert bad_choice.returncode == 2
    wrong_kek = policy_cli(state, "list", kek=os.urandom(32).hex())
    assert wrong_kek.returncode == 1 and "KEK" in wrong_kek.stderr

    deleted = policy_cli(state, "delete", "movie")
    assert deleted.returncode == 0, deleted.stderr
    again = policy_cli(state, "delete", "movie")
    assert again.returncode == 1 and "no policy stored" in again.stderr
    assert policy_cli(state, "list").stdout.splitlines()[1:] == []


def _pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _verifier(config: Path, env: dict[str, str] | None = None) -> JwtVerifier:
    table = tomllib.loads(config.read_text())["token"]
    return JwtVerifier(parse_token_settings(table, env=env or {},
                                            resolve=lambda p: config.parent / p))


def test_token_mint_hs256(tmp_path: Path) -> None:
    secret = "cli-secret-" + os.urandom(16).hex()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "jwt.secret").write_text(secret + "\n")
    config = tmp_path / "conf" / "license.toml"
    config.write_text('[token]\nalgorithm = "HS256"\nissuer = "https://iss.example"\n'
                      'audience = "players"\nsecret_file = "jwt.secret"\n')
    kid = os.urandom(16)
    minted = origin("token", "mint", "--license-config", config, "--asset", "movie",
                    "--asset", "trailer", "--key-id", kid.hex(), "--offline", "--max-uses", "3",
                    "--ttl", "120", "--jti", "order-7")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert secret not in minted.stdout + minted.stderr
    verified = _verifier(config).verify(token, now=time.time())
    assert verified.token_id == "order-7" and verified.max_uses == 3
    assert verified.entitlement.assets == frozenset({"movie", "trailer"})
    assert verified.entitlement.kids == frozenset({kid})
    assert verified.entitlement.offline
    assert time.time() + 100 < verified.expires_at <= time.time() + 121
    # Negative control: another secret does not verify it; nor does a later clock.
    with pytest.raises(TokenRejected, match="token signature invalid"):
        _verifier(config, {SECRET_ENV: "x" * 40}).verify(token, now=time.time())
    with pytest.raises(TokenRejected, match="token expired"):
        _verifier(config).verify(token, now=time.time() + 200)

    # The environment secret wins over the file, as for verification.
    env_secret = "env-secret-" + os.urandom(16).hex()
    by_env = origin("token", "mint", "--license-config", config, "--asset", "movie",
                    env={SECRET_ENV: env_secret})
    assert by_env.returncode == 0, by_env.stderr
    _verifier(config, {SECRET_ENV: env_secret}).verify(by_env.stdout.strip(), now=time.time())
    with pytest.raises(TokenRejected):
        _verifier(config).verify(by_env.stdout.strip(), now=time.time())

    unbound = origin("token", "mint", "--license-config", config)
    assert unbound.returncode == 1 and "asset or key id" in unbound.stderr
    bad_kid = origin("token", "mint", "--license-config", config, "--key-id", "nope")
    assert bad_kid.returncode == 1 and "malformed key id" in bad_kid.stderr
    with_key = origin("token", "mint", "--license-config", config, "--asset", "movie",
                      "--private-key-file", config)
    assert with_key.returncode == 1 and "configured secret" in with_key.stderr
    short = origin("token", "mint", "--license-config", config, "--asset", "movie",
                   env={SECRET_ENV: "short-one"})
    assert short.returncode == 1 and SECRET_ENV in short.stderr
    assert "short-one" not in short.stderr
    for result in (unbound, bad_kid, with_key, short):
        assert secret not in result.stdout + result.stderr


def test_token_mint_rs256_needs_the_matching_private_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "public.pem").write_bytes(_pem_public(key))
    (tmp_path / "private.pem").write_bytes(_pem_private(key))
    (tmp_path / "other.pem").write_bytes(_pem_private(other))
    config = tmp_path / "license.toml"
    config.write_text('[token]\nalgorithm = "RS256"\nissuer = "iss"\naudience = "aud"\n'
                      'public_key_file = "public.pem"\n')
    minted = origin("token", "mint", "--license-config", config, "--asset", "movie",
                    "--private-key-file", tmp_path / "private.pem")
    assert minted.returncode == 0, minted.stderr
    verified = _verifier(config).verify(minted.stdout.strip(), now=time.time())
    assert verified.entitlement.assets == frozenset({"movie"})

    mismatched = origin("token", "mint", "--license-config", config, "--asset", "movie",
                        "--private-key-file", tmp_path / "other.pem")
    assert mismatched.returncode == 1 and "does not verify" in mismatched.stderr
    assert mismatched.stdout == ""
    no_key = origin("token", "mint", "--license-config", config, "--asset", "movie")
    assert no_key.returncode == 1 and "private key" in no_key.stderr
    missing = origin("token", "mint", "--license-config", config, "--asset", "movie",
                     "--private-key-file", tmp_path / "absent.pem")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    no_table = tmp_path / "empty.toml"
    no_table.write_text("")
    empty = origin("token", "mint", "--license-config", no_table, "--asset", "movie")
    assert empty.returncode == 1 and "[token]" in empty.stderr


def test_token_mint_es256_with_a_jwks_and_kid(tmp_path: Path) -> None:
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("k1", "k2")}
    jwks = {"keys": [ECAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": name}
                     for name, k in keys.items()]}
    (tmp_path / "keys.jwks").write_text(json.dumps(jwks))
    (tmp_path / "k2.pem").write_bytes(_pem_private(keys["k2"]))
    config = tmp_path / "license.toml"
    config.write_text('[token]\nalgorithm = "ES256"\nissuer = "iss"\naudience = "aud"\n'
                      'jwks_file = "keys.jwks"\n')
    minted = origin("token", "mint", "--license-config", config, "--key-id",
                    "00112233-4455-6677-8899-aabbccddeeff", "--private-key-file",
                    tmp_path / "k2.pem", "--kid", "k2")
    assert minted.returncode == 0, minted.stderr
    verified = _verifier(config).verify(minted.stdout.strip(), now=time.time())
    assert verified.entitlement.kids == {bytes.fromhex("00112233445566778899aabbccddeeff")}
    wrong_kid = origin("token", "mint", "--license-config", config, "--asset", "movie",
                       "--private-key-file", tmp_path / "k2.pem", "--kid", "k1")
    assert wrong_kid.returncode == 1 and "token signature invalid" in wrong_kid.stderr
    no_kid = origin("token", "mint", "--license-config", config, "--asset", "movie",
                    "--private-key-file", tmp_path / "k2.pem")
    assert no_kid.returncode == 1 and "token signing key unknown" in no_kid.stderr
