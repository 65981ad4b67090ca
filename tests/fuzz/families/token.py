"""Player tokens: where a request's token comes from (``presented_token``, Kaltura's
``custom_data``), and JWT verification (``JwtVerifier.verify``).

``verify_signed`` signs whatever header and claims JSON the fuzzer writes with the
configured HS256 secret, so the claim checks behind the signature are fuzzed too,
not only the framing in front of it.  Typed error: ``TokenRejected`` (the
module's documented one); ``presented_token`` raises nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from origin.license.authorization import presented_token
from origin.license.token import (
    JwtVerifier,
    PublicKey,
    TokenAlgorithm,
    TokenRejected,
    TokenSettings,
    mint_token,
)
from tests.fuzz.core import Target, json_starts

NOW = 1_700_000_000.0
SECRET = b"fuzz-secret-fuzz-secret-fuzz-secret!"
KID = bytes(range(16))
HS256 = TokenSettings(TokenAlgorithm.HS256, "https://issuer.example", "origin", secret=SECRET)


@cache
def _es256() -> tuple[TokenSettings, tuple[bytes, ...]]:
    private = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    keys = tuple(PublicKey(f"k{i}", key.public_key()) for i, key in enumerate(private))
    pems = tuple(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()) for key in private)
    return TokenSettings(TokenAlgorithm.ES256, "https://issuer.example", "origin",
                         public_keys=keys), pems


def b64u(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _check(verified_expiry: int) -> None:
    assert verified_expiry >= NOW - HS256.leeway_s


def run_verify_hs256(raw: bytes) -> None:
    _check(JwtVerifier(HS256).verify(_text(raw), now=NOW).expires_at)


def run_verify_signed(raw: bytes) -> None:
    """``header JSON \\0 claims JSON``, signed with the HS256 secret."""
    header, _, claims = raw.partition(b"\0")
    signing_input = b64u(header) + b"." + b64u(claims)
    signature = hmac.new(SECRET, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + b64u(signature)).decode("ascii")
    _check(JwtVerifier(HS256).verify(token, now=NOW).expires_at)


def run_verify_es256(raw: bytes) -> None:
    settings, _ = _es256()
    _check(JwtVerifier(settings).verify(_text(raw), now=NOW).expires_at)


def run_presented_token(raw: bytes) -> None:
    """Lines: ``Authorization``, ``token``, ``ks``, ``custom_data``, then a JSON document the
    target sends as base64 ``custom_data`` when that line is empty (empty lines: absent)."""
    lines = _text(raw).split("\n")
    headers = {"Authorization": lines[0]} if lines[0] else {}
    query = {name: value for name, value in zip(("token", "ks", "custom_data"), lines[1:],
                                                strict=False) if value}
    if "custom_data" not in query and len(lines) > 4:
        document = lines[4].encode("utf-8", "surrogateescape")
        query["custom_data"] = base64.b64encode(document).decode("ascii")
    token = presented_token(headers, query)
    assert token is None or (isinstance(token, str) and token)


def _hs256_tokens() -> list[str]:
    return [mint_token(HS256, asset=["demo"], now=NOW),
            mint_token(HS256, key_ids=[KID], offline=True, max_uses=3, jti="j-1", now=NOW,
                       not_before=NOW - 10),
            mint_token(HS256, asset=["demo", "other"], key_ids=[KID, bytes(16)], now=NOW)]


def _signed_seeds() -> list[bytes]:
    out = []
    for token in _hs256_tokens():
        header, claims, _ = token.encode().split(b".")
        out.append(base64.urlsafe_b64decode(header + b"==") + b"\0"
                   + base64.urlsafe_b64decode(claims + b"=="))
    azure = {"iss": HS256.issuer, "aud": [HS256.audience], "exp": NOW + 60,
             "urn:microsoft:azure:mediaservices:contentkeyidentifier": str(KID.hex())}
    out.append(b'{"alg":"HS256","typ":"JWT"}\0' + json.dumps(azure).encode())
    return out


def _es256_seeds() -> list[bytes]:
    settings, pems = _es256()
    return [mint_token(settings, signing_key=pem, key_id=f"k{i}", asset=["demo"],
                       now=NOW).encode() for i, pem in enumerate(pems)]


def _presented_seeds() -> list[bytes]:
    token = _hs256_tokens()[0]
    custom = base64.b64encode(json.dumps({"user_token": token, "ca_system": "x"}).encode())
    custom_url = base64.urlsafe_b64encode(json.dumps({"user_token": "t"}).encode()).rstrip(b"=")
    return [f"Bearer {token}".encode(), b"\n" + token.encode(), b"\n\nks-value",
            b"\n\n\n" + custom, b"Basic abc\n\n\n" + custom_url,
            b'\n\n\n\n{"user_token":"t","ca":[{"a":[1]}]}', b"\n\n\n\n[[]]"]



TARGETS: tuple[Target, ...] = (
    Target("verify_hs256", run_verify_hs256, (TokenRejected,),
           lambda: [t.encode() for t in _hs256_tokens()],
           lambda d: [0] + [i + 1 for i, b in enumerate(d) if b == 0x2E]),
    Target("verify_signed", run_verify_signed, (TokenRejected,), _signed_seeds, json_starts),
    Target("verify_es256", run_verify_es256, (TokenRejected,), _es256_seeds,
           lambda d: [0] + [i + 1 for i, b in enumerate(d) if b == 0x2E]),
    Target("presented_token", run_presented_token, (), _presented_seeds, json_starts),
)
