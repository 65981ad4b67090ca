"""The attack list, on every licence route: each token failure class yields 401/403 and no key.

One licence app with every licence service configured — JWT verification (HS256), FairPlay
through a fake external KSM, Widevine and PlayReady through a fake upstream — and a ``token``
policy on the asset.  For each route × each failure class the answer is 401 or 403, the body
holds no byte of the key in any spelling, and neither the KSM nor the upstream was contacted.
A valid token on each route succeeds (the positive control: the same requests can pass).
Tokens are minted with PyJWT, or forged by hand where PyJWT refuses to (``alg: none``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from origin.crypto.key import ContentKey
from origin.license.keystore import Keystore
from origin.license.policy import ContentKeyPolicy, Restriction
from origin.license.settings import LicenseSettings
from tests.tools.challenges import playready_challenge, widevine_pssh_request, wrmheader
from tests.tools.fairplay import FakeKsm, make_credentials
from tests.tools.licence import Licence, licence_app
from tests.tools.loopback import serve_app
from tests.tools.upstream import FakeUpstream

SECRET = "attack-matrix-hs256-secret-0123456789abcdef"
ISSUER, AUDIENCE = "https://issuer.test", "origin"
ROUTES = ["aes128", "clearkey", "fairplay", "widevine", "playready"]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(kid: bytes, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "asset": "movie",
            "key_id": kid.hex()}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256")


def alg_none(payload: dict[str, Any]) -> str:
    header = b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64u(json.dumps(payload).encode())}."


def rs256(payload: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return jwt.encode(payload, pem, algorithm="RS256")


def tampered(token: str) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["asset"] = "movie"
    payload["key_id"] = None
    forged = b64u(json.dumps({k: v for k, v in payload.items() if v is not None}).encode())
    return f"{head}.{forged}.{sig}"


def flipped_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    return f"{head}.{body}.{b64u(bytes(raw))}"


# label → (how to make the token from the kid, expected status)
ATTACKS: dict[str, tuple[Callable[[bytes], str | None], int]] = {
    "missing": (lambda kid: None, 401),
    "garbage": (lambda kid: "not.a.jwt", 401),
    "expired": (lambda kid: hs(claims(kid, exp=int(time.time()) - 300)), 401),
    "not yet valid": (lambda kid: hs(claims(kid, nbf=int(time.time()) + 300)), 401),
    "wrong aud": (lambda kid: hs(claims(kid, aud="someone-else")), 401),
    "wrong iss": (lambda kid: hs(claims(kid, iss="https://evil.test")), 401),
    "no exp": (lambda kid: hs(claims(kid, exp=None)), 401),
    "alg none": (lambda kid: alg_none(claims(kid)), 401),
    "RS256 to an HS256 verifier": (lambda kid: rs256(claims(kid)), 401),
    "tampered payload": (lambda kid: tampered(hs(claims(kid, asset="other"))), 401),
    "tampered signature": (lambda kid: flipped_signature(hs(claims(kid))), 401),
    "other secret": (lambda kid: jwt.encode(claims(kid), "x" * 40, algorithm="HS256"), 401),
    "wrong asset": (lambda kid: hs(claims(kid, asset="other", key_id=None)), 403),
    "wrong kid": (lambda kid: hs(claims(kid, key_id="00" * 16)), 403),
}


@dataclass
class Rig:
    licence: Licence
    key: ContentKey
    ksm: FakeKsm
    upstream: FakeUpstream

    def request(self, route: str) -> tuple[str, str, bytes, dict[str, str]]:
        """method, path, body, headers of a well-formed request for the asset's key."""
        kid = self.key.kid
        if route == "aes128":
            return "GET", f"/license/aes128/{kid.hex()}", b"", {}
        if route == "clearkey":
            return "POST", "/license/clearkey", json.dumps({"kids": [b64u(kid)]}).encode(), {}
        if route == "fairplay":
            body = json.dumps({"spc": base64.b64encode(b"S" * 96).decode(),
                               "assetId": kid.hex()}).encode()
            return "POST", "/license/fairplay", body, {"Content-Type": "application/json"}
        if route == "widevine":
            return "POST", "/license/widevine", widevine_pssh_request(kid), {}
        body = playready_challenge(wrmheader(kid, "4.0"))
        return "POST", "/license/playready", body, {"Content-Type": "text/xml; charset=utf-8"}

    async def send(self, route: str, token: str | None) -> tuple[int, bytes]:
        method, path, body, headers = self.request(route)
        if token is not None:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        async with self.licence.session.request(method, self.licence.url + path, data=body,
                                                headers=headers) as resp:
            return resp.status, await resp.read()

    @property
    def third_parties_contacted(self) -> int:
        return len(self.ksm.requests) + len(self.upstream.received)


@pytest.fixture
async def rig(settings: LicenseSettings, tmp_path: Any,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("ORIGIN_JWT_SECRET", SECRET)
    credentials = make_credentials()
    cert = tmp_path / "fairplay.cer"
    cert.write_bytes(credentials.cert_der)
    ksm, upstream = FakeKsm(), FakeUpstream()
    async with serve_app(ksm.app) as ksm_url, serve_app(upstream.app()) as upstream_url:
        upstream.url = upstream_url
        config = {
            "token": {"algorithm": "HS256", "issuer": ISSUER, "audience": AUDIENCE},
            "fairplay": {"certificate_file": str(cert), "ksm": "external",
                         "ksm_url": f"{ksm_url}/fps"},
            "widevine": {"url": f"{upstream_url}/ok"},
            "playready": {"url": f"{upstream_url}/ok"},
        }
        async with licence_app(settings, config) as licence:
            key = await licence.asset_key("movie")
            with Keystore.open(settings.db_path, settings.kek) as keystore:
                keystore.set_policy("movie", ContentKeyPolicy(Restriction.TOKEN))
            yield Rig(licence, key, ksm, upstream)


def key_spellings(key: ContentKey) -> list[bytes]:
    raw = key.key
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw),
            b64u(raw).encode()]


@pytest.mark.parametrize("route", ROUTES)
async def test_every_attack_is_refused_on_every_route(rig: Rig, route: str) -> None:
    for label, (make, status) in ATTACKS.items():
        got, body = await rig.send(route, make(rig.key.kid))
        assert got == status, f"{route} / {label}: {got} {body[:200]!r}"
        assert all(s not in body for s in key_spellings(rig.key)), f"{route} / {label}"
        assert "error" in json.loads(body), f"{route} / {label}"
    assert rig.third_parties_contacted == 0
    # The positive control: the same request with a good token passes.
    got, body = await rig.send(route, hs(claims(rig.key.kid)))
    assert got == 200, f"{route}: {got} {body[:200]!r}"
    assert rig.third_parties_contacted == (1 if route in ("fairplay", "widevine",
                                                          "playready") else 0)


@pytest.mark.parametrize("route", ROUTES)
async def test_replay_past_max_uses_is_refused(rig: Rig, route: str) -> None:
    token = hs(claims(rig.key.kid, max_uses=2, jti=f"replay-{route}"))
    assert (await rig.send(route, token))[0] == 200
    assert (await rig.send(route, token))[0] == 200
    contacted = rig.third_parties_contacted
    got, body = await rig.send(route, token)
    assert got == 403, body
    assert json.loads(body) == {"error": "token use limit reached"}
    assert all(s not in body for s in key_spellings(rig.key))
    assert rig.third_parties_contacted == contacted


async def test_401_names_the_scheme(rig: Rig) -> None:
    _, path, _, _ = rig.request("aes128")
    async with rig.licence.session.get(rig.licence.url + path) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert resp.headers["Cache-Control"] == "no-store"
