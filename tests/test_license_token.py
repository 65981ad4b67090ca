"""Player tokens (JWT): the verifier for every failure class and success case, the
``[token]`` table, and token-restricted assets through the real licence app on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from origin.crypto.key import ContentKey
from origin.license.keystore import Keystore
from origin.license.policy import ContentKeyPolicy, PolicyDecisionPoint, Restriction
from origin.license.settings import LicenseSettings
from origin.license.token import (
    AZURE_KID_CLAIM,
    SECRET_ENV,
    JwtVerifier,
    PublicKey,
    TokenAlgorithm,
    TokenRejected,
    TokenSettings,
    VerifiedToken,
    mint_token,
    parse_token_settings,
)
from tests.tools.licence import AUTH, TOKEN, fetch_asset_key, running_licence_app

ISS = "https://issuer.example"
AUD = "origin-test"
NOW = 1_700_000_000.0
SECRET = b"hs256-test-secret-" + os.urandom(16).hex().encode()
OTHER_SECRET = b"another-secret-of-enough-length-" + os.urandom(8).hex().encode()


# --- keys and token forging ---------------------------------------------------------------------


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ec_other: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec_other=ec.generate_private_key(ec.SECP256R1()),
    )


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], payload: bytes | dict[str, Any],
          sign: Callable[[bytes], bytes] | None) -> str:
    """A compact JWS built by hand, for tokens PyJWT would refuse to make."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(body)}".encode()
    signature = sign(signing_input) if sign is not None else b""
    return f"{signing_input.decode()}.{b64u(signature)}"


def hmac_signer(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims at ``NOW`` bound to asset ``movie``; a ``None`` value drops a claim."""
    base: dict[str, Any] = {"iss": ISS, "aud": AUD, "exp": NOW + 600, "iat": NOW,
                            "asset": "movie"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs_settings(secret: bytes = SECRET, leeway_s: int = 30) -> TokenSettings:
    return TokenSettings(TokenAlgorithm.HS256, ISS, AUD, leeway_s, secret=secret)


def rs_settings(keys: Keys) -> TokenSettings:
    loaded = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem_public(keys.rsa))
    return TokenSettings(TokenAlgorithm.RS256, ISS, AUD, public_keys=(PublicKey(None, loaded),))


def es_settings(keys: Keys) -> TokenSettings:
    loaded = ECAlgorithm(ECAlgorithm.SHA256).prepare_key(pem_public(keys.ec))
    return TokenSettings(TokenAlgorithm.ES256, ISS, AUD, public_keys=(PublicKey(None, loaded),))


def hs(payload: dict[str, Any], secret: bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def verify_hs(token: str, now: float = NOW) -> VerifiedToken:
    return JwtVerifier(hs_settings()).verify(token, now=now)


def rejected(verifier: JwtVerifier, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token, now=now)
    reason = info.value.reason
    assert reason == str(info.value)
    assert token not in reason and len(reason) < 60
    for secret in (SECRET, OTHER_SECRET):
        assert secret.decode() not in reason
    return reason


# --- every failure class of the verifier ---------------------------------------------------------

HS_FAILURES: list[tuple[str, Callable[[], str], str]] = [
    ("missing exp", lambda: hs(claims(exp=None)), "token missing exp claim"),
    ("missing aud", lambda: hs(claims(aud=None)), "token missing aud claim"),
    ("missing iss", lambda: hs(claims(iss=None)), "token missing iss claim"),
    ("expired past the leeway", lambda: hs(claims(exp=NOW - 31)), "token expired"),
    ("expired exactly at the leeway", lambda: hs(claims(exp=NOW - 30)), "token expired"),
    ("nbf in the future", lambda: hs(claims(nbf=NOW + 31)), "token not yet valid"),
    ("iat in the future", lambda: hs(claims(iat=NOW + 31)), "token issued in the future"),
    ("wrong aud", lambda: hs(claims(aud="someone-else")), "token audience mismatch"),
    ("aud list without ours", lambda: hs(claims(aud=["a", "b"])), "token audience mismatch"),
    ("wrong iss", lambda: hs(claims(iss="https://evil.example")), "token issuer mismatch"),
    ("alg none", lambda: forge({"alg": "none", "typ": "JWT"}, claims(), None),
     "token algorithm not allowed"),
    ("alg None spelled otherwise", lambda: forge({"alg": "None"}, claims(), None),
     "token algorithm not allowed"),
    ("no alg", lambda: forge({"typ": "JWT"}, claims(), hmac_signer(SECRET)),
     "token algorithm not allowed"),
    ("HS512 header", lambda: forge(
        {"alg": "HS512"}, claims(), lambda d: hmac.new(SECRET, d, hashlib.sha512).digest()),
     "token algorithm not allowed"),
    ("signed with another secret", lambda: hs(claims(), OTHER_SECRET), "token signature invalid"),
    ("tampered payload", lambda: _swap_payload(hs(claims()), claims(asset="trailer")),
     "token signature invalid"),
    ("tampered signature", lambda: _flip_signature(hs(claims())), "token signature invalid"),
    ("empty signature", lambda: hs(claims()).rsplit(".", 1)[0] + ".", "token signature invalid"),
    ("truncated: no signature segment", lambda: hs(claims()).rsplit(".", 1)[0],
     "malformed token"),
    ("truncated mid-payload", lambda: hs(claims())[:40], "malformed token"),
    ("four segments", lambda: hs(claims()) + ".AAAA", "malformed token"),
    ("not base64", lambda: "!!!.???.***", "malformed token"),
    ("header not json", lambda: f"{b64u(b'nope')}.{b64u(b'{}')}.{b64u(b'sig')}",
     "malformed token"),
    ("non-ascii", lambda: hs(claims()) + "é", "malformed token"),
    ("crit header", lambda: hs(claims(), crit=["exp"]), "malformed token"),
    ("payload not an object", lambda: forge({"alg": "HS256"}, b"[1, 2]", hmac_signer(SECRET)),
     "malformed token"),
    ("duplicate claim", lambda: forge(
        {"alg": "HS256"},
        b'{"iss": "%s", "aud": "%s", "exp": %d, "asset": "movie", "asset": "trailer"}'
        % (ISS.encode(), AUD.encode(), NOW + 600),
        hmac_signer(SECRET)), "malformed token"),
    ("NaN claim", lambda: forge(
        {"alg": "HS256"},
        b'{"iss": "%s", "aud": "%s", "exp": NaN, "asset": "movie"}' % (ISS.encode(),
                                                                      AUD.encode()),
        hmac_signer(SECRET)), "malformed token"),
    ("exp a string", lambda: hs(claims(exp="tomorrow")), "malformed token"),
    ("exp a bool", lambda: hs(claims(exp=True)), "malformed token"),
    ("nbf a string", lambda: hs(claims(nbf="now")), "malformed token"),
    ("iat a list", lambda: hs(claims(iat=[NOW])), "malformed token"),
    ("iss a number", lambda: forge({"alg": "HS256"}, claims(iss=7), hmac_signer(SECRET)),
     "malformed token"),
    ("aud a number", lambda: hs(claims(aud=7)), "malformed token"),
    ("aud an empty list", lambda: hs(claims(aud=[])), "malformed token"),
    ("asset a number", lambda: hs(claims(asset=7)), "malformed token"),
    ("asset an empty list", lambda: hs(claims(asset=[])), "malformed token"),
    ("asset list with a number", lambda: hs(claims(asset=["movie", 3])), "malformed token"),
    ("key_id not a key id", lambda: hs(claims(key_id="xyz")), "malformed token"),
    ("key_id list with junk", lambda: hs(claims(key_id=[uuid.uuid4().hex, "0x1"])),
     "malformed token"),
    ("azure claim a number", lambda: hs(claims(**{AZURE_KID_CLAIM: 7})), "malformed token"),
    ("azure claim not a guid", lambda: hs(claims(**{AZURE_KID_CLAIM: "guid"})),
     "malformed token"),
    ("offline a string", lambda: hs(claims(offline="yes")), "malformed token"),
    ("max_uses zero", lambda: hs(claims(max_uses=0)), "malformed token"),
    ("max_uses negative", lambda: hs(claims(max_uses=-1)), "malformed token"),
    ("max_uses a bool", lambda: hs(claims(max_uses=True)), "malformed token"),
    ("max_uses a string", lambda: hs(claims(max_uses="3")), "malformed token"),
    ("jti a number", lambda: hs(claims(jti=5)), "malformed token"),
    ("jti empty", lambda: hs(claims(jti="")), "malformed token"),
    ("unbound", lambda: hs(claims(asset=None)), "token not bound to an asset or key"),
    ("too long", lambda: hs(claims(asset=[f"a{i}" for i in range(1500)])), "token too long"),
]


def _swap_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64u(json.dumps(payload).encode())}.{signature}"


def _flip_signature(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{b64u(bytes(raw))}"


@pytest.mark.parametrize(("label", "make", "reason"), HS_FAILURES,
                         ids=[f[0] for f in HS_FAILURES])
def test_hs256_failure_classes(label: str, make: Callable[[], str], reason: str) -> None:
    assert rejected(JwtVerifier(hs_settings()), make()) == reason, label


def test_time_checks_honour_the_leeway() -> None:
    # Negative controls of the failure table: just inside the leeway passes.
    verify_hs(hs(claims(exp=NOW - 29)))
    verify_hs(hs(claims(nbf=NOW + 29, iat=NOW + 29)))
    strict = JwtVerifier(hs_settings(leeway_s=0))
    assert rejected(strict, hs(claims(exp=NOW))) == "token expired"
    strict.verify(hs(claims(exp=NOW + 1, nbf=NOW, iat=NOW)), now=NOW)
    # The verifier uses the time it is given, not the wall clock.
    token = hs(claims(exp=NOW + 600))
    assert rejected(JwtVerifier(hs_settings()), token, now=NOW + 700) == "token expired"


def test_hs256_success_and_claims() -> None:
    kid_a, kid_b, azure = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    token = hs(claims(asset=["movie", "trailer"], key_id=[kid_a.hex, str(kid_b)],
                      offline=True, max_uses=3, jti="order-42",
                      **{AZURE_KID_CLAIM: str(azure)}))
    verified = verify_hs(token)
    assert verified.token_id == "order-42"
    assert verified.expires_at == int(NOW + 600)
    assert verified.max_uses == 3
    assert verified.entitlement.assets == frozenset({"movie", "trailer"})
    assert verified.entitlement.kids == frozenset({kid_a.bytes, kid_b.bytes, azure.bytes})
    assert verified.entitlement.offline is True
    assert token not in repr(verified)


def test_defaults_without_optional_claims() -> None:
    token = hs(claims(aud=["other", AUD], exp=NOW + 600.75))
    verified = verify_hs(token)
    assert verified.token_id == hashlib.sha256(token.encode()).hexdigest()
    assert verified.expires_at == int(NOW + 600)
    assert verified.max_uses is None
    assert verified.entitlement.assets == frozenset({"movie"})
    assert verified.entitlement.kids is None  # not restricted by key
    assert verified.entitlement.offline is False


def test_azure_content_key_identifier_alone_binds_the_token() -> None:
    kid = uuid.uuid4()
    verified = verify_hs(hs(claims(asset=None, **{AZURE_KID_CLAIM: str(kid)})))
    assert verified.entitlement.kids == frozenset({kid.bytes})
    assert verified.entitlement.assets is None


def test_key_id_alone_binds_the_token() -> None:
    kid = uuid.uuid4()
    verified = verify_hs(hs(claims(asset=None, key_id=kid.hex)))
    assert verified.entitlement.kids == frozenset({kid.bytes})


# --- algorithm confusion and asymmetric keys ----------------------------------------------------


def test_rs256_pem_success_and_tampering(keys: Keys) -> None:
    verifier = JwtVerifier(rs_settings(keys))
    token = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256")
    assert verifier.verify(token, now=NOW).entitlement.assets == frozenset({"movie"})
    other = jwt.encode(claims(), pem_private(keys.rsa_other), algorithm="RS256")
    assert rejected(verifier, other) == "token signature invalid"
    assert rejected(verifier, _flip_signature(token)) == "token signature invalid"
    assert rejected(verifier, _swap_payload(token, claims(asset="x"))) == "token signature invalid"


def test_hs_rs_confusion_both_directions(keys: Keys) -> None:
    public_pem = pem_public(keys.rsa)
    # HS256 "signed" with the RSA public key PEM as the HMAC secret, to an RS256 verifier.
    confused = forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_signer(public_pem))
    assert rejected(JwtVerifier(rs_settings(keys)), confused) == "token algorithm not allowed"
    # The same trick with the header claiming RS256 fails the RSA signature check.
    disguised = forge({"alg": "RS256", "typ": "JWT"}, claims(), hmac_signer(public_pem))
    assert rejected(JwtVerifier(rs_settings(keys)), disguised) == "token signature invalid"
    # An HS256 verifier refuses an RS256 token, even one whose "secret" is that PEM.
    rs_token = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256")
    assert rejected(JwtVerifier(hs_settings()), rs_token) == "token algorithm not allowed"
    assert rejected(JwtVerifier(hs_settings(secret=public_pem)), rs_token) == (
        "token algorithm not allowed"
    )


def test_es256_refuses_an_rs256_token(keys: Keys) -> None:
    verifier = JwtVerifier(es_settings(keys))
    rs_token = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256")
    assert rejected(verifier, rs_token) == "token algorithm not allowed"
    es_token = jwt.encode(claims(), pem_private(keys.ec), algorithm="ES256")
    assert verifier.verify(es_token, now=NOW).entitlement.assets == frozenset({"movie"})
    other = jwt.encode(claims(), pem_private(keys.ec_other), algorithm="ES256")
    assert rejected(verifier, other) == "token signature invalid"


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None,
         **extra: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def _settings_from(tmp_path: Path, table: dict[str, Any],
                   env: dict[str, str] | None = None) -> TokenSettings:
    return parse_token_settings(table, env=env or {}, resolve=lambda p: tmp_path / p)


def test_jwks_several_keys_select_by_kid(tmp_path: Path, keys: Keys) -> None:
    jwks = {"keys": [_jwk(keys.rsa, "a"), _jwk(keys.rsa_other, "b"), _jwk(keys.ec, "e")]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    settings = _settings_from(tmp_path, {"algorithm": "RS256", "issuer": ISS, "audience": AUD,
                                         "jwks_file": "jwks.json"})
    assert [k.kid for k in settings.public_keys] == ["a", "b"]  # the EC key is skipped
    verifier = JwtVerifier(settings)
    for kid, private in (("a", keys.rsa), ("b", keys.rsa_other)):
        token = jwt.encode(claims(), pem_private(private), algorithm="RS256",
                           headers={"kid": kid})
        assert verifier.verify(token, now=NOW).entitlement.assets == frozenset({"movie"})
    # The kid picks the key: key b's signature under kid a does not verify.
    wrong = jwt.encode(claims(), pem_private(keys.rsa_other), algorithm="RS256",
                       headers={"kid": "a"})
    assert rejected(verifier, wrong) == "token signature invalid"
    unknown = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256",
                         headers={"kid": "zzz"})
    assert rejected(verifier, unknown) == "token signing key unknown"
    no_kid = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256")
    assert rejected(verifier, no_kid) == "token signing key unknown"
    ec_kid = jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256", headers={"kid": "e"})
    assert rejected(verifier, ec_kid) == "token signing key unknown"


def test_jwks_es256_and_a_single_key(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys.rsa, "r"),
                                                             _jwk(keys.ec, "only")]}))
    settings = _settings_from(tmp_path, {"algorithm": "ES256", "issuer": ISS, "audience": AUD,
                                         "jwks_file": "jwks.json"})
    verifier = JwtVerifier(settings)
    with_kid = jwt.encode(claims(), pem_private(keys.ec), algorithm="ES256",
                          headers={"kid": "only"})
    without_kid = jwt.encode(claims(), pem_private(keys.ec), algorithm="ES256")
    verifier.verify(with_kid, now=NOW)
    verifier.verify(without_kid, now=NOW)
    other = jwt.encode(claims(), pem_private(keys.ec_other), algorithm="ES256")
    assert rejected(verifier, other) == "token signature invalid"


def test_mint_token_round_trips(keys: Keys) -> None:
    kid = uuid.uuid4().bytes
    token = mint_token(hs_settings(), asset=["movie"], key_ids=[kid], offline=True, max_uses=2,
                       ttl_s=60, not_before=NOW - 5, jti="j-1", now=NOW)
    verified = verify_hs(token)
    assert verified == VerifiedToken("j-1", int(NOW + 60), verified.entitlement, 2)
    assert verified.entitlement.kids == frozenset({kid})
    assert verified.entitlement.offline
    assert rejected(JwtVerifier(hs_settings()), token, now=NOW + 91) == "token expired"
    assert rejected(JwtVerifier(hs_settings(OTHER_SECRET)), token) == "token signature invalid"
    rs = mint_token(rs_settings(keys), signing_key=pem_private(keys.rsa), asset=["a", "b"],
                    now=NOW)
    assert JwtVerifier(rs_settings(keys)).verify(rs, now=NOW).entitlement.assets == {"a", "b"}
    es = mint_token(es_settings(keys), signing_key=pem_private(keys.ec), asset=["a"], now=NOW)
    JwtVerifier(es_settings(keys)).verify(es, now=NOW)
    with pytest.raises(ValueError, match="asset or key id"):
        mint_token(hs_settings(), now=NOW)
    with pytest.raises(ValueError, match="private key"):
        mint_token(rs_settings(keys), asset=["a"], now=NOW)
    with pytest.raises(ValueError, match="RSA private key"):
        mint_token(rs_settings(keys), signing_key=pem_private(keys.ec), asset=["a"], now=NOW)
    with pytest.raises(ValueError, match="RSA private key"):
        mint_token(rs_settings(keys), signing_key=pem_public(keys.rsa), asset=["a"], now=NOW)


# --- the [token] table ---------------------------------------------------------------------------


def test_settings_hs256_secret_from_env_or_file(tmp_path: Path) -> None:
    table = {"algorithm": "HS256", "issuer": ISS, "audience": AUD}
    from_env = _settings_from(tmp_path, table, {SECRET_ENV: SECRET.decode()})
    assert from_env.secret == SECRET and from_env.leeway_s == 30
    assert SECRET.decode() not in repr(from_env)
    (tmp_path / "jwt-secret").write_bytes(b"\n " + OTHER_SECRET + b"\n")
    from_file = _settings_from(tmp_path, {**table, "secret_file": "jwt-secret", "leeway_s": 0})
    assert from_file.secret == OTHER_SECRET and from_file.leeway_s == 0
    token = hs(claims(), OTHER_SECRET)
    JwtVerifier(from_file).verify(token, now=NOW)
    assert rejected(JwtVerifier(from_env), token) == "token signature invalid"


def test_settings_asymmetric_pem(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "rsa.pem").write_bytes(pem_public(keys.rsa))
    (tmp_path / "ec.pem").write_bytes(pem_public(keys.ec))
    rs = _settings_from(tmp_path, {"algorithm": "RS256", "issuer": ISS, "audience": AUD,
                                   "public_key_file": "rsa.pem"})
    es = _settings_from(tmp_path, {"algorithm": "ES256", "issuer": ISS, "audience": AUD,
                                   "public_key_file": "ec.pem"})
    JwtVerifier(rs).verify(jwt.encode(claims(), pem_private(keys.rsa), algorithm="RS256"),
                           now=NOW)
    JwtVerifier(es).verify(jwt.encode(claims(), pem_private(keys.ec), algorithm="ES256"),
                           now=NOW)


BASE = {"issuer": ISS, "audience": AUD}
BAD_TABLES: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("no algorithm", {**BASE}, {}, "token.algorithm"),
    ("alg none", {**BASE, "algorithm": "none"}, {}, "token.algorithm"),
    ("HS512", {**BASE, "algorithm": "HS512"}, {}, "token.algorithm"),
    ("no issuer", {"algorithm": "HS256", "audience": AUD}, {SECRET_ENV: SECRET.decode()},
     "token.issuer"),
    ("empty audience", {**BASE, "algorithm": "HS256", "audience": ""},
     {SECRET_ENV: SECRET.decode()}, "token.audience"),
    ("leeway too big", {**BASE, "algorithm": "HS256", "leeway_s": 301},
     {SECRET_ENV: SECRET.decode()}, "token.leeway_s"),
    ("leeway negative", {**BASE, "algorithm": "HS256", "leeway_s": -1},
     {SECRET_ENV: SECRET.decode()}, "token.leeway_s"),
    ("unknown field", {**BASE, "algorithm": "HS256", "algorithms": ["HS256"]},
     {SECRET_ENV: SECRET.decode()}, "token.algorithms"),
    ("inline secret", {**BASE, "algorithm": "HS256", "secret": SECRET.decode()}, {},
     "token.secret"),
    ("no secret", {**BASE, "algorithm": "HS256"}, {}, SECRET_ENV),
    ("short secret", {**BASE, "algorithm": "HS256"}, {SECRET_ENV: "short-secret-123"},
     SECRET_ENV),
    ("secret file missing", {**BASE, "algorithm": "HS256", "secret_file": "nope"}, {},
     "token.secret_file"),
    ("short secret file", {**BASE, "algorithm": "HS256", "secret_file": "short"}, {},
     "token.secret_file"),
    ("PEM as HMAC secret", {**BASE, "algorithm": "HS256", "secret_file": "rsa.pem"}, {},
     "token.secret_file"),
    ("HS256 with a public key", {**BASE, "algorithm": "HS256", "public_key_file": "rsa.pem"},
     {SECRET_ENV: SECRET.decode()}, "token.public_key_file"),
    ("RS256 without a key", {**BASE, "algorithm": "RS256"}, {}, "token.public_key_file"),
    ("RS256 with both", {**BASE, "algorithm": "RS256", "public_key_file": "rsa.pem",
                         "jwks_file": "jwks.json"}, {}, "token.jwks_file"),
    ("RS256 with a secret file", {**BASE, "algorithm": "RS256", "secret_file": "short",
                                  "public_key_file": "rsa.pem"}, {}, "token.secret_file"),
    ("RS256 with an EC key", {**BASE, "algorithm": "RS256", "public_key_file": "ec.pem"}, {},
     "token.public_key_file"),
    ("ES256 with an RSA key", {**BASE, "algorithm": "ES256", "public_key_file": "rsa.pem"}, {},
     "token.public_key_file"),
    ("private key as public", {**BASE, "algorithm": "RS256", "public_key_file": "private.pem"},
     {}, "token.public_key_file"),
    ("short RSA key", {**BASE, "algorithm": "RS256", "public_key_file": "rsa1024.pem"}, {},
     "token.public_key_file"),
    ("not a PEM", {**BASE, "algorithm": "RS256", "public_key_file": "short"}, {},
     "token.public_key_file"),
    ("JWKS without a fitting key", {**BASE, "algorithm": "ES256", "jwks_file": "jwks.json"}, {},
     "token.jwks_file"),
    ("JWKS not JSON", {**BASE, "algorithm": "RS256", "jwks_file": "short"}, {},
     "token.jwks_file"),
    ("JWKS with a private key", {**BASE, "algorithm": "RS256", "jwks_file": "private.jwks"}, {},
     "token.jwks_file"),
    ("JWKS keys without kids", {**BASE, "algorithm": "RS256", "jwks_file": "nokids.jwks"}, {},
     "token.jwks_file"),
]


@pytest.mark.parametrize(("label", "table", "env", "field_name"), BAD_TABLES,
                         ids=[t[0] for t in BAD_TABLES])
def test_bad_token_tables_name_the_field(tmp_path: Path, keys: Keys, label: str,
                                         table: dict[str, Any], env: dict[str, str],
                                         field_name: str) -> None:
    (tmp_path / "short").write_text("short-secret-123\n")
    (tmp_path / "rsa.pem").write_bytes(pem_public(keys.rsa))
    (tmp_path / "ec.pem").write_bytes(pem_public(keys.ec))
    (tmp_path / "private.pem").write_bytes(pem_private(keys.rsa))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "rsa1024.pem").write_bytes(pem_public(small))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [_jwk(keys.rsa, "r")]}))
    private_jwk = RSAAlgorithm.to_jwk(keys.rsa, as_dict=True)
    (tmp_path / "private.jwks").write_text(json.dumps({"keys": [private_jwk]}))
    (tmp_path / "nokids.jwks").write_text(json.dumps({"keys": [_jwk(keys.rsa, None),
                                                               _jwk(keys.rsa_other, None)]}))
    with pytest.raises(ValueError) as info:
        _settings_from(tmp_path, table, env)
    message = str(info.value)
    assert field_name in message, label
    for secret in (SECRET.decode(), "short-secret-123"):
        assert secret not in message


# --- through the running licence app ------------------------------------------------------------

APP_SECRET = "app-hs256-secret-" + os.urandom(16).hex()
APP_TOKEN_TABLE = {"algorithm": "HS256", "issuer": ISS, "audience": AUD}
APP_TOKENS = TokenSettings(TokenAlgorithm.HS256, ISS, AUD, secret=APP_SECRET.encode())
CLEARKEY = "/license/clearkey"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LicenseSettings:
    monkeypatch.setenv(SECRET_ENV, APP_SECRET)
    return LicenseSettings(
        db_path=tmp_path / "keys.sqlite",
        kek=os.urandom(32),
        internal_token=TOKEN,
        config={"token": APP_TOKEN_TABLE},
        config_dir=tmp_path,
    )


@dataclass
class App:
    url: str
    session: aiohttp.ClientSession
    movie: ContentKey  # token policy, persistent allowed
    trailer: ContentKey  # token policy, streaming only
    extras: ContentKey  # open (default) policy
    tokens: list[str]  # every token sent, for the leak check
    bodies: list[str]  # every refusal body

    def mint(self, **kwargs: Any) -> str:
        token = mint_token(APP_TOKENS, **kwargs)
        self.tokens.append(token)
        return token

    async def aes128(self, key: ContentKey, *, headers: dict[str, str] | None = None,
                     params: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        async with self.session.get(f"{self.url}/license/aes128/{key.kid_hex}",
                                    headers=headers, params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                self.bodies.append(body.decode())
            return resp.status, body, resp.headers.get("WWW-Authenticate", "")

    async def clearkey(self, *keys: ContentKey, type_: str = "temporary",
                       headers: dict[str, str] | None = None,
                       params: dict[str, str] | None = None) -> tuple[int, str, str]:
        message = {"kids": [b64u(k.kid) for k in keys], "type": type_}
        async with self.session.post(self.url + CLEARKEY, json=message, headers=headers,
                                     params=params) as resp:
            text = await resp.text()
            if resp.status != 200:
                self.bodies.append(text)
            return resp.status, text, resp.headers.get("WWW-Authenticate", "")


@pytest.fixture
async def app(settings: LicenseSettings, policy: PolicyDecisionPoint,
              caplog_all: pytest.LogCaptureFixture) -> AsyncIterator[App]:
    async with running_licence_app(settings, policy) as url, aiohttp.ClientSession() as session:
        found = [await fetch_asset_key(session, url, asset)
                 for asset in ("movie", "trailer", "extras")]
        with Keystore.open(settings.db_path, settings.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(Restriction.TOKEN, persistent=True))
            keystore.set_policy("trailer", ContentKeyPolicy(Restriction.TOKEN))
        state = App(url, session, found[0], found[1], found[2], [], [])
        yield state
        leak_check(state, caplog_all.text)


def key_forms(key: ContentKey) -> list[str]:
    return [key.key.hex(), b64u(key.key), base64.b64encode(key.key).decode().rstrip("="),
            key.key.decode("latin-1")]


def leak_check(state: App, log_text: str) -> None:
    """No key byte in any form, and no token, in any refusal body or in the logs."""
    assert state.bodies, "the test made no refusal to check"
    texts = [*state.bodies, log_text]
    for text in texts:
        for key in (state.movie, state.trailer, state.extras):
            for form in key_forms(key):
                assert form.lower() not in text.lower()
        for token in state.tokens:
            assert token not in text
            signature = token.rsplit(".", 1)[-1]
            assert len(signature) < 16 or signature not in text  # not even the signature
        assert APP_SECRET not in text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def custom_data(token: str) -> str:
    return base64.b64encode(json.dumps({"user_token": token, "ca_system": "OVP"}).encode()
                            ).decode()


async def test_no_token_is_401_with_www_authenticate(app: App) -> None:
    status, body, challenge = await app.aes128(app.movie)
    assert (status, json.loads(body)) == (401, {"error": "a token is required"})
    assert challenge == 'Bearer realm="origin-license"'
    status, text, challenge = await app.clearkey(app.movie)
    assert (status, json.loads(text)) == (401, {"error": "a token is required"})
    assert challenge == 'Bearer realm="origin-license"'
    # Control: the open asset needs no token, and the token asset works with one.
    status, body, _ = await app.aes128(app.extras)
    assert (status, body) == (200, app.extras.key)
    status, body, _ = await app.aes128(app.movie, headers=bearer(app.mint(asset=["movie"])))
    assert (status, body) == (200, app.movie.key)


def _bad_tokens(app: App) -> list[tuple[str, str]]:
    now = time.time()
    good = {"iss": ISS, "aud": AUD, "iat": int(now), "exp": int(now) + 600, "asset": "movie"}

    def signed(secret: str = APP_SECRET, **changes: Any) -> str:
        payload = {k: v for k, v in {**good, **changes}.items() if v is not None}
        return jwt.encode(payload, secret.encode(), algorithm="HS256")

    cases = [
        (signed(exp=int(now) - 600), "token expired"),
        (signed(nbf=int(now) + 600), "token not yet valid"),
        (signed(iat=int(now) + 600), "token issued in the future"),
        (signed(aud="someone-else"), "token audience mismatch"),
        (signed(iss="https://evil.example"), "token issuer mismatch"),
        (signed(exp=None), "token missing exp claim"),
        (signed(secret=OTHER_SECRET.decode()), "token signature invalid"),
        (_flip_signature(signed()), "token signature invalid"),
        (forge({"alg": "none"}, good, None), "token algorithm not allowed"),
        (forge({"alg": "HS384"}, good,
               lambda d: hmac.new(APP_SECRET.encode(), d, hashlib.sha384).digest()),
         "token algorithm not allowed"),
        (signed().rsplit(".", 1)[0], "malformed token"),
        (signed(max_uses="many"), "malformed token"),
        (signed(asset=None), "token not bound to an asset or key"),
    ]
    app.tokens += [token for token, _ in cases]
    return cases


async def test_every_bad_token_class_is_401(app: App) -> None:
    for token, reason in _bad_tokens(app):
        status, body, challenge = await app.aes128(app.movie, headers=bearer(token))
        assert (status, json.loads(body)) == (401, {"error": reason}), reason
        assert challenge == 'Bearer realm="origin-license"'
        status, text, challenge = await app.clearkey(app.movie, params={"token": token})
        assert (status, json.loads(text)) == (401, {"error": reason}), reason
        assert challenge == 'Bearer realm="origin-license"'


async def test_valid_token_from_every_source(app: App) -> None:
    token = app.mint(asset=["movie", "trailer"])
    sources: list[tuple[dict[str, str] | None, dict[str, str] | None]] = [
        (bearer(token), None),
        (None, {"token": token}),
        (None, {"ks": token}),
        (None, {"custom_data": custom_data(token)}),
    ]
    for headers, params in sources:
        status, body, _ = await app.aes128(app.movie, headers=headers, params=params)
        assert (status, body) == (200, app.movie.key)
        status, text, _ = await app.clearkey(app.movie, app.trailer, headers=headers,
                                             params=params)
        assert status == 200
        keys = json.loads(text)["keys"]
        assert keys == [{"kty": "oct", "k": b64u(k.key), "kid": b64u(k.kid)}
                        for k in (app.movie, app.trailer)]
    # Negative controls: the same sources with a token for another secret are refused.
    forged = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60,
                         "asset": "movie"}, OTHER_SECRET, algorithm="HS256")
    app.tokens.append(forged)
    for params in ({"token": forged}, {"ks": forged}, {"custom_data": custom_data(forged)}):
        status, _, _ = await app.aes128(app.movie, params=params)
        assert status == 401


async def test_token_bound_by_key_id_and_azure_claim(app: App) -> None:
    by_kid = app.mint(key_ids=[app.movie.kid])
    assert (await app.aes128(app.movie, headers=bearer(by_kid)))[:2] == (200, app.movie.key)
    azure = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60,
                        AZURE_KID_CLAIM: app.movie.kid_uuid}, APP_SECRET.encode(),
                       algorithm="HS256")
    app.tokens.append(azure)
    assert (await app.aes128(app.movie, params={"token": azure}))[:2] == (200, app.movie.key)
    # Bound to movie's key only: trailer's key is refused.
    status, body, _ = await app.aes128(app.trailer, headers=bearer(by_kid))
    assert (status, json.loads(body)) == (403, {"error": "token is not valid for this key"})
    status, body, _ = await app.aes128(app.trailer, params={"token": azure})
    assert (status, json.loads(body)) == (403, {"error": "token is not valid for this key"})
    status, text, _ = await app.clearkey(app.movie, app.trailer, headers=bearer(by_kid))
    assert (status, json.loads(text)) == (403, {"error": "token is not valid for this key"})


async def test_wrong_asset_is_403(app: App) -> None:
    token = app.mint(asset=["trailer"])
    status, body, _ = await app.aes128(app.movie, headers=bearer(token))
    assert (status, json.loads(body)) == (403, {"error": "token is not valid for this asset"})
    status, text, _ = await app.clearkey(app.trailer, app.movie, headers=bearer(token))
    assert (status, json.loads(text)) == (403, {"error": "token is not valid for this asset"})
    assert (await app.aes128(app.trailer, headers=bearer(token)))[:2] == (200, app.trailer.key)


async def test_persistent_licence_needs_the_offline_entitlement(app: App) -> None:
    streaming = app.mint(asset=["movie"])
    status, text, _ = await app.clearkey(app.movie, type_="persistent-license",
                                         headers=bearer(streaming))
    assert (status, json.loads(text)) == (403, {"error": "token does not allow offline playback"})
    offline = app.mint(asset=["movie", "trailer"], offline=True)
    status, text, _ = await app.clearkey(app.movie, type_="persistent-license",
                                         headers=bearer(offline))
    assert status == 200 and json.loads(text)["type"] == "persistent-license"
    assert json.loads(text)["keys"][0]["k"] == b64u(app.movie.key)
    # The policy still rules: trailer is streaming only, whatever the token says.
    status, text, _ = await app.clearkey(app.trailer, type_="persistent-license",
                                         headers=bearer(offline))
    assert (status, json.loads(text)) == (
        403, {"error": "persistent licences are not allowed for this asset"})


async def test_replay_past_max_uses_is_403(app: App) -> None:
    token = app.mint(asset=["movie"], max_uses=2, jti=uuid.uuid4().hex)
    for _ in range(2):
        assert (await app.aes128(app.movie, headers=bearer(token)))[:2] == (200, app.movie.key)
    status, body, _ = await app.aes128(app.movie, headers=bearer(token))
    assert (status, json.loads(body)) == (403, {"error": "token use limit reached"})
    status, text, _ = await app.clearkey(app.movie, params={"token": token})
    assert (status, json.loads(text)) == (403, {"error": "token use limit reached"})
    # Without a jti the count is per token; a fresh token has its own count.
    clearkey_token = app.mint(asset=["movie"], max_uses=1)
    assert (await app.clearkey(app.movie, headers=bearer(clearkey_token)))[0] == 200
    status, text, _ = await app.clearkey(app.movie, headers=bearer(clearkey_token))
    assert (status, json.loads(text)) == (403, {"error": "token use limit reached"})
    # Refusals for other reasons do not use the token up.
    third = app.mint(asset=["movie"], max_uses=1, jti=uuid.uuid4().hex)
    assert (await app.aes128(app.trailer, headers=bearer(third)))[0] == 403
    assert (await app.aes128(app.movie, headers=bearer(third)))[:2] == (200, app.movie.key)


async def test_token_policy_without_token_config_is_503(
    tmp_path: Path, policy: PolicyDecisionPoint, caplog_all: pytest.LogCaptureFixture
) -> None:
    bare = LicenseSettings(db_path=tmp_path / "bare.sqlite", kek=os.urandom(32),
                           internal_token=TOKEN)
    async with running_licence_app(bare, policy) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/internal/v1/assets/movie/key", headers=AUTH) as resp:
            kid = (await resp.json())["kid"]
        with Keystore.open(bare.db_path, bare.kek) as keystore:
            keystore.set_policy("movie", ContentKeyPolicy(Restriction.TOKEN))
        token = mint_token(APP_TOKENS, asset=["movie"])
        async with session.get(f"{url}/license/aes128/{kid}", headers=bearer(token)) as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": "token verification is not configured"}
    assert token not in caplog_all.text


@pytest.mark.parametrize(
    ("table", "env_secret", "field_name"),
    [
        ({"algorithm": "none", "issuer": ISS, "audience": AUD}, APP_SECRET, "token.algorithm"),
        (APP_TOKEN_TABLE, "too-short-secret", SECRET_ENV),
        ({**APP_TOKEN_TABLE, "public_key_file": "x.pem"}, APP_SECRET, "token.public_key_file"),
    ],
)
async def test_bad_token_table_fails_startup(
    tmp_path: Path, policy: PolicyDecisionPoint, monkeypatch: pytest.MonkeyPatch,
    table: dict[str, Any], env_secret: str, field_name: str,
) -> None:
    monkeypatch.setenv(SECRET_ENV, env_secret)
    bad = LicenseSettings(db_path=tmp_path / "k.sqlite", kek=os.urandom(32),
                          internal_token=TOKEN, config={"token": table}, config_dir=tmp_path)
    with pytest.raises(ValueError) as info:
        async with running_licence_app(bad, policy):
            pass
    assert field_name in str(info.value)
    assert env_secret not in str(info.value)
