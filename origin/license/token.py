"""Player tokens (JWT): configuration, verification and minting.

Rules (RFC 7519 JWT, RFC 7515 JWS, RFC 7517 JWK, RFC 8725 JWT best practices):

- The algorithm is fixed by the ``[token]`` table (``HS256``, ``RS256`` or
  ``ES256``) and never taken from the token: the header's ``alg`` must equal it,
  so ``alg: none`` and HS/RS confusion fail before any key is used
  (RFC 8725 §2.1, §3.1).  Keys are typed by the configured algorithm: an HS256
  secret is bytes, RS256/ES256 keys are public key objects, never strings an
  HMAC could use.
- HS256: the secret comes from ``ORIGIN_JWT_SECRET``, else from ``secret_file``;
  at least 32 bytes (RFC 7518 §3.2: a key as long as the hash).
  RS256/ES256: ``public_key_file`` (PEM) or ``jwks_file`` (a JWK Set); in a set,
  keys for another algorithm are ignored and the header's ``kid`` picks one
  key when several remain (RFC 7515 §4.1.4).
- ``crit`` (and with it ``b64``) is refused: no JWS extension is understood
  (RFC 7515 §4.1.11).  Only the compact form with three segments is read.
- ``exp``, ``iss`` and ``aud`` are required; ``nbf`` and ``iat`` are checked when
  present; ``leeway_s`` applies to every time check (RFC 7519 §4.1.4–6).
- Claims are read only after the signature verified.  What the token grants
  (``Entitlement``): ``asset`` (a name or a list), ``key_id`` (32 hex digits or a
  UUID, or a list) merged with Azure Media Services'
  ``urn:microsoft:azure:mediaservices:contentkeyidentifier`` (a key id GUID);
  at least one of them must be present.  ``offline`` (bool) is the offline
  entitlement, ``max_uses`` (positive int) the replay limit, ``jti`` the
  token's id for the replay counter.  ``sub`` (a string up to 256 characters) is
  kept as ``VerifiedToken.subject`` for the audit log only; it grants nothing.
- Every failure is ``TokenRejected`` with a short reason naming the failure
  class; a reason never contains the token, a claim value or a key.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from origin.crypto.key import parse_kid
from origin.license.policy import Entitlement
from origin.license.strict_json import load_json

SECRET_ENV = "ORIGIN_JWT_SECRET"  # noqa: S105 - the name of the variable, not a secret
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
DEFAULT_LEEWAY_S = 30
MAX_LEEWAY_S = 300
MAX_JTI_CHARS = 256
MAX_ASSET_CHARS = 128
MAX_SUBJECT_CHARS = 256
AZURE_KID_CLAIM = "urn:microsoft:azure:mediaservices:contentkeyidentifier"
# NumericDate values beyond this are not dates (RFC 7519 §2); 2^53 keeps floats exact.
_MAX_NUMERIC_DATE = 2**53

_TABLE_FIELDS = frozenset(
    {"algorithm", "issuer", "audience", "leeway_s", "secret_file", "public_key_file",
     "jwks_file"}
)


class TokenRejected(Exception):
    """The token does not verify; ``reason`` is short and safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and time/audience/issuer claims checked out."""

    token_id: str  # the jti claim, else a digest of the whole token
    expires_at: int  # exp, seconds since the epoch
    entitlement: Entitlement
    max_uses: int | None
    subject: str | None = None  # the sub claim, for the audit log (never used to decide)


class TokenAlgorithm(enum.Enum):
    """The JWS algorithms a deployment may configure (RFC 7518 §3.1)."""

    HS256 = "HS256"
    RS256 = "RS256"
    ES256 = "ES256"

    @property
    def asymmetric(self) -> bool:
        return self is not TokenAlgorithm.HS256


# The JWK key type (and curve) each asymmetric algorithm needs (RFC 7518 §6).
_KEY_TYPES: dict[TokenAlgorithm, tuple[str, str | None]] = {
    TokenAlgorithm.RS256: ("RSA", None),
    TokenAlgorithm.ES256: ("EC", "P-256"),
}


@dataclass(frozen=True)
class PublicKey:
    """One verification key: a public key object PyJWT prepared, and its JWK ``kid``."""

    kid: str | None
    key: Any


@dataclass(frozen=True)
class TokenSettings:
    """The ``[token]`` table, with its keys loaded.  The secret never shows in a repr."""

    algorithm: TokenAlgorithm
    issuer: str
    audience: str
    leeway_s: int = DEFAULT_LEEWAY_S
    secret: bytes | None = field(default=None, repr=False)
    public_keys: tuple[PublicKey, ...] = ()


class TokenConfigError(ValueError):
    """The ``[token]`` table is unusable; the message names the field, never a secret."""


def parse_token_settings(
    table: Mapping[str, Any], *, env: Mapping[str, str], resolve: Callable[[str], Path]
) -> TokenSettings:
    """The ``[token]`` table as ``TokenSettings``; reads the key files.  Blocking.

    ``resolve`` turns a path written in the configuration into a real path.
    Raises ``TokenConfigError`` (a ``ValueError``) naming the bad field.
    """
    if "secret" in table:
        raise TokenConfigError(
            f"licence config: token.secret must not be written in the file; use {SECRET_ENV}"
            " or token.secret_file"
        )
    unknown = sorted(set(table) - _TABLE_FIELDS)
    if unknown:
        raise TokenConfigError(f"licence config: unknown field token.{unknown[0]}")
    algorithm = _algorithm_field(table.get("algorithm"))
    issuer = _text_field(table, "issuer")
    audience = _text_field(table, "audience")
    leeway = table.get("leeway_s", DEFAULT_LEEWAY_S)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= MAX_LEEWAY_S:
        raise TokenConfigError(
            f"licence config: token.leeway_s must be a whole number of seconds, 0 to {MAX_LEEWAY_S}"
        )
    if algorithm.asymmetric:
        if "secret_file" in table:
            raise TokenConfigError(
                f"licence config: token.secret_file is not used with {algorithm.value}"
            )
        keys = _load_public_keys(table, algorithm, resolve)
        return TokenSettings(algorithm, issuer, audience, leeway, public_keys=keys)
    for name in ("public_key_file", "jwks_file"):
        if name in table:
            raise TokenConfigError(f"licence config: token.{name} is not used with HS256")
    return TokenSettings(
        algorithm, issuer, audience, leeway, secret=_load_secret(table, env, resolve)
    )


def _algorithm_field(value: object) -> TokenAlgorithm:
    names = ", ".join(a.value for a in TokenAlgorithm)
    if not isinstance(value, str):
        raise TokenConfigError(f"licence config: token.algorithm is required (one of {names})")
    try:
        return TokenAlgorithm(value)
    except ValueError:
        raise TokenConfigError(f"licence config: token.algorithm must be one of {names}") from None


def _text_field(table: Mapping[str, Any], name: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value:
        raise TokenConfigError(f"licence config: token.{name} is required (a non-empty string)")
    return value


def _path_field(table: Mapping[str, Any], name: str, resolve: Callable[[str], Path]) -> Path:
    value = table.get(name)
    if not isinstance(value, str) or not value:
        raise TokenConfigError(f"licence config: token.{name} must be a file name")
    return resolve(value)


def _read_file(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TokenConfigError(f"cannot read token.{name} {path}: {exc.strerror}") from None


def _load_secret(
    table: Mapping[str, Any], env: Mapping[str, str], resolve: Callable[[str], Path]
) -> bytes:
    """The HS256 secret: ``ORIGIN_JWT_SECRET``, else ``secret_file`` (text, stripped)."""
    from_env = env.get(SECRET_ENV)
    if from_env:
        secret, source = from_env.strip().encode("utf-8"), SECRET_ENV
    elif "secret_file" in table:
        raw = _read_file(_path_field(table, "secret_file", resolve), "secret_file")
        secret, source = raw.strip(), "token.secret_file"
    else:
        raise TokenConfigError(
            f"licence config: HS256 needs the secret in {SECRET_ENV} or token.secret_file"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenConfigError(f"{source} must hold at least {MIN_SECRET_BYTES} bytes")
    try:
        # PyJWT refuses PEM/SSH/DER-looking HMAC secrets (the HS/RS confusion guard).
        jwt.get_algorithm_by_name("HS256").prepare_key(secret)
    except jwt.InvalidKeyError:
        raise TokenConfigError(f"{source} looks like an asymmetric key, not a secret") from None
    return secret


def _load_public_keys(
    table: Mapping[str, Any], algorithm: TokenAlgorithm, resolve: Callable[[str], Path]
) -> tuple[PublicKey, ...]:
    has_pem, has_jwks = "public_key_file" in table, "jwks_file" in table
    if has_pem == has_jwks:
        raise TokenConfigError(
            f"licence config: {algorithm.value} needs exactly one of token.public_key_file"
            " and token.jwks_file"
        )
    if has_pem:
        raw = _read_file(_path_field(table, "public_key_file", resolve), "public_key_file")
        return (PublicKey(None, _pem_public_key(raw, algorithm)),)
    raw = _read_file(_path_field(table, "jwks_file", resolve), "jwks_file")
    return _jwks_public_keys(raw, algorithm)


def _pem_public_key(raw: bytes, algorithm: TokenAlgorithm) -> Any:
    what = f"token.public_key_file must hold a PEM {_KEY_TYPES[algorithm][0]} public key"
    if not raw.lstrip().startswith(b"-----BEGIN"):
        raise TokenConfigError(what)
    alg = jwt.get_algorithm_by_name(algorithm.value)
    try:
        key = alg.prepare_key(raw)
        jwk = alg.to_jwk(key, as_dict=True)
    except (jwt.InvalidKeyError, TypeError, ValueError):
        raise TokenConfigError(what) from None
    _check_public_jwk(jwk, algorithm, what)
    if alg.check_key_length(key) is not None:
        raise TokenConfigError("token.public_key_file: the key is too short")
    return key


def _jwks_public_keys(raw: bytes, algorithm: TokenAlgorithm) -> tuple[PublicKey, ...]:
    """The keys of a JWK Set usable with ``algorithm`` (others are skipped)."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenConfigError("token.jwks_file is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TokenConfigError('token.jwks_file must be a JWK Set: {"keys": [...]}')
    kty, crv = _KEY_TYPES[algorithm]
    found: list[PublicKey] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenConfigError(f"token.jwks_file: key {index} is not a JSON object")
        if entry.get("kty") != kty or (crv is not None and entry.get("crv") != crv):
            continue  # a key for another algorithm
        if entry.get("alg", algorithm.value) != algorithm.value or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenConfigError(f"token.jwks_file: key {index} has a kid that is not a string")
        what = f"token.jwks_file: key {index} is not a valid {kty} public key"
        _check_public_jwk(entry, algorithm, what)
        try:
            key = jwt.PyJWK(entry, algorithm=algorithm.value).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
            raise TokenConfigError(what) from None
        if jwt.get_algorithm_by_name(algorithm.value).check_key_length(key) is not None:
            raise TokenConfigError(f"token.jwks_file: key {index} is too short")
        found.append(PublicKey(kid, key))
    if not found:
        raise TokenConfigError(f"token.jwks_file has no {algorithm.value} signing key")
    kids = [k.kid for k in found]
    if len(found) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise TokenConfigError("token.jwks_file: with several keys, each needs its own kid")
    return tuple(found)


def _check_public_jwk(jwk: Mapping[str, Any], algorithm: TokenAlgorithm, what: str) -> None:
    kty, crv = _KEY_TYPES[algorithm]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise TokenConfigError(what)
    if "d" in jwk:  # a private key where only the public one belongs
        raise TokenConfigError(what)


class JwtVerifier:
    """Verifies player tokens against ``TokenSettings``.  Pure CPU; thread-safe."""

    def __init__(self, settings: TokenSettings) -> None:
        if settings.algorithm.asymmetric and not settings.public_keys:
            raise ValueError(f"{settings.algorithm.value} needs a public key")
        if not settings.algorithm.asymmetric and settings.secret is None:
            raise ValueError("HS256 needs a secret")
        self._settings = settings
        self._jws = jwt.PyJWS(options={"enforce_minimum_key_length": True})

    def __repr__(self) -> str:
        return f"JwtVerifier(algorithm={self._settings.algorithm.value})"

    @property
    def settings(self) -> TokenSettings:
        return self._settings

    def verify(self, token: str, *, now: float) -> VerifiedToken:
        """Check ``token`` at time ``now``; ``TokenRejected`` with a safe reason otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("token too long")
        if not token.isascii() or token.count(".") != 2:
            raise TokenRejected("malformed token")
        header = self._header(token)
        key = self._select_key(header)
        try:
            decoded = self._jws.decode_complete(
                token, key=key, algorithms=[self._settings.algorithm.value]
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("token signature invalid") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("token algorithm not allowed") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        claims = _claims_object(decoded["payload"])
        return self._check_claims(claims, token, now)

    def _header(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        if header.get("alg") != self._settings.algorithm.value:
            raise TokenRejected("token algorithm not allowed")
        if "crit" in header or "b64" in header:
            raise TokenRejected("malformed token")
        return header

    def _select_key(self, header: Mapping[str, Any]) -> Any:
        settings = self._settings
        if not settings.algorithm.asymmetric:
            return settings.secret
        keys = settings.public_keys
        kid = header.get("kid")
        if len(keys) == 1 and (kid is None or keys[0].kid in (None, kid)):
            return keys[0].key
        for candidate in keys:
            if kid is not None and candidate.kid == kid:
                return candidate.key
        raise TokenRejected("token signing key unknown")

    def _check_claims(self, claims: Mapping[str, Any], token: str, now: float) -> VerifiedToken:
        settings = self._settings
        for name in ("exp", "iss", "aud"):
            if name not in claims:
                raise TokenRejected(f"token missing {name} claim")
        leeway = settings.leeway_s
        exp = _numeric_date(claims["exp"])
        if exp <= now - leeway:
            raise TokenRejected("token expired")
        if "nbf" in claims and _numeric_date(claims["nbf"]) > now + leeway:
            raise TokenRejected("token not yet valid")
        if "iat" in claims and _numeric_date(claims["iat"]) > now + leeway:
            raise TokenRejected("token issued in the future")
        if not isinstance(claims["iss"], str):
            raise TokenRejected("malformed token")
        if claims["iss"] != settings.issuer:
            raise TokenRejected("token issuer mismatch")
        if settings.audience not in _string_list(claims["aud"]):
            raise TokenRejected("token audience mismatch")
        jti = claims.get("jti")
        if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS):
            raise TokenRejected("malformed token")
        return VerifiedToken(
            token_id=jti if jti is not None else hashlib.sha256(token.encode()).hexdigest(),
            expires_at=math.floor(exp),
            entitlement=_entitlement(claims),
            max_uses=_max_uses(claims.get("max_uses")),
            subject=_subject(claims.get("sub")),
        )


def _subject(value: object) -> str | None:
    """The ``sub`` claim when it is a string of sensible length, else ``None`` (it only
    names the caller in the audit log; it grants nothing)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_SUBJECT_CHARS:
        return value
    return None


def _claims_object(payload: bytes) -> dict[str, Any]:
    """The JWT claims set: a JSON object without duplicate members (RFC 7519 §4)."""
    try:
        claims = load_json(payload)
    except ValueError:
        raise TokenRejected("malformed token") from None
    if not isinstance(claims, dict):
        raise TokenRejected("malformed token")
    return claims


def _numeric_date(value: object) -> float:
    """A NumericDate (RFC 7519 §2): seconds since the epoch, integer or not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("malformed token")
    # The range first: math.isfinite(int) overflows past 1e308 (nan and inf fail it too).
    if not 0 <= value < _MAX_NUMERIC_DATE or not math.isfinite(value):
        raise TokenRejected("malformed token")
    return float(value)


def _string_list(value: object) -> list[str]:
    """A claim that is a string or a non-empty list of strings (``aud``, ``asset``, ``key_id``)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise TokenRejected("malformed token")
    if not all(isinstance(item, str) and item for item in items):
        raise TokenRejected("malformed token")
    return items


def _entitlement(claims: Mapping[str, Any]) -> Entitlement:
    assets: frozenset[str] | None = None
    if "asset" in claims:
        names = _string_list(claims["asset"])
        if any(len(name) > MAX_ASSET_CHARS for name in names):
            raise TokenRejected("malformed token")
        assets = frozenset(names)
    kid_texts: list[str] = []
    if "key_id" in claims:
        kid_texts += _string_list(claims["key_id"])
    if AZURE_KID_CLAIM in claims:
        azure = claims[AZURE_KID_CLAIM]
        if not isinstance(azure, str):
            raise TokenRejected("malformed token")
        kid_texts.append(azure)
    kids: frozenset[bytes] | None = None
    if kid_texts:
        try:
            kids = frozenset(parse_kid(text) for text in kid_texts)
        except ValueError:
            raise TokenRejected("malformed token") from None
    if assets is None and kids is None:
        raise TokenRejected("token not bound to an asset or key")
    offline = claims.get("offline", False)
    if not isinstance(offline, bool):
        raise TokenRejected("malformed token")
    return Entitlement(assets=assets, kids=kids, offline=offline)


def _max_uses(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TokenRejected("malformed token")
    return value


def mint_token(
    settings: TokenSettings,
    *,
    signing_key: str | bytes | None = None,
    key_id: str | None = None,
    asset: Sequence[str] = (),
    key_ids: Sequence[bytes] = (),
    offline: bool = False,
    max_uses: int | None = None,
    ttl_s: int = 3600,
    not_before: float | None = None,
    jti: str | None = None,
    now: float | None = None,
) -> str:
    """A token the verifier of ``settings`` accepts (tests, ``origin token mint``).

    HS256 signs with the configured secret; RS256/ES256 need ``signing_key``, the
    PEM private key, and ``key_id`` names it in the header when the verifier has
    a JWK Set.  ``ValueError`` if the request cannot make a valid token.
    """
    if not asset and not key_ids:
        raise ValueError("a token needs at least one asset or key id")
    if ttl_s < 1:
        raise ValueError("the token lifetime must be at least one second")
    if max_uses is not None and max_uses < 1:
        raise ValueError("max uses must be a positive number")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": math.floor(issued),
        "exp": math.floor(issued) + ttl_s,
    }
    if not_before is not None:
        claims["nbf"] = math.floor(not_before)
    if jti is not None:
        claims["jti"] = jti
    if asset:
        claims["asset"] = asset[0] if len(asset) == 1 else list(asset)
    if key_ids:
        texts = [str(uuid.UUID(bytes=kid)) for kid in key_ids]
        claims["key_id"] = texts[0] if len(texts) == 1 else texts
    if offline:
        claims["offline"] = True
    if max_uses is not None:
        claims["max_uses"] = max_uses
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(
        claims, _signing_key(settings, signing_key), algorithm=settings.algorithm.value,
        headers=headers,
    )


def _signing_key(settings: TokenSettings, signing_key: str | bytes | None) -> Any:
    algorithm = settings.algorithm
    if not algorithm.asymmetric:
        if signing_key is not None:
            raise ValueError("HS256 tokens are signed with the configured secret")
        if settings.secret is None:
            raise ValueError("HS256 needs a secret")
        return settings.secret
    if signing_key is None:
        raise ValueError(f"{algorithm.value} needs a private key to sign with")
    alg = jwt.get_algorithm_by_name(algorithm.value)
    kty, crv = _KEY_TYPES[algorithm]
    what = f"the signing key must be a PEM {kty} private key"
    try:
        key = alg.prepare_key(signing_key)
        jwk = alg.to_jwk(key, as_dict=True)
    except (jwt.InvalidKeyError, TypeError, ValueError):
        raise ValueError(what) from None
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv) or "d" not in jwk:
        raise ValueError(what)
    return key
