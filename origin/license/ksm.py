"""Key Security Modules: what turns a FairPlay SPC into a CKC.

The routes (``origin.license.fairplay_routes``) authorise the request first, then
hand a ``CkcRequest`` — the SPC, the content key, its IV and the decision's
licence terms — to the configured ``Ksm``.

``ExternalKsm`` (production).  Apple licenses its KSM (the FairPlay Streaming
Server SDK) to content owners only, so it runs as a separate service that
speaks the SDK reference server's JSON (checked against the SDK 5/26 reference
code: ``fairplay-streaming-request`` → ``create-ckc`` → ``asset-info``).  One
HTTP ``POST`` to ``ksm_url``, ``Content-Type: application/json``::

    {"fairplay-streaming-request": {
        "version": 1,
        "create-ckc": [{
            "id": 1,
            "spc": "<base64 SPC>",
            "asset-info": [{
                "content-key": "<32 hex>",
                "content-iv": "<32 hex>",
                "lease-duration": <s>,             # streaming, if the policy has one
                "offline-hls": {                   # persistent licences only
                    "stream-id": "<32 hex kid>",
                    "title-id": "<32 hex: SHA-256(asset name)[:16]>",
                    "rental-duration": <s>,        # if the policy has one
                    "playback-duration": <s>       # the policy's licence duration
                }
            }]
        }]
    }}

and the answer, ``200`` with::

    {"fairplay-streaming-response": {"create-ckc": [
        {"id": 1, "status": 0, "hu": "<hex>", "ckc": "<base64 CKC>"}]}}

Key and IV are hex, as the SDK parses them (an item-level ``ck`` is ignored by
the SDK).  ``offline-hls`` present is what makes the SDK issue a persistable
(offline) key; without it the key is for streaming.  The IV is the cbcs
constant IV the origin encrypts with (``origin.packaging.drm.constant_iv``).
``status`` is the SDK's ``FPSStatus`` (0 = no error).

Failures: the KSM unreachable or past ``timeout_s`` → ``KsmUnavailable`` (503);
an HTTP status other than 200, a redirect, a non-zero ``status``, or an answer
that is not this JSON → ``KsmFailed`` (502), naming the HTTP or FPS status but
never quoting the KSM's body.  Answers above ``MAX_KSM_RESPONSE_BYTES`` are
refused.

``TestKsm`` — FOR DEVELOPMENT ONLY, NOT APPLE-COMPATIBLE: no Apple device can
use its CKCs, and its responses carry ``X-Origin-Test-KSM:
not-apple-compatible``.  It lets a test client (not a player) prove the whole
path with a certificate and private key of its own.  Wire format (integers
big-endian):

- test SPC: ``"ORIGIN-TEST-SPC1"`` (16 bytes) · u16 n · content id (n bytes of
  UTF-8, 1..200: what followed ``skd://``) · u16 m · RSA-OAEP-SHA-256 (MGF1
  SHA-256, no label) of ``session key (16) ‖ nonce (16)`` under the application
  certificate's public key (m = the modulus size);
- test CKC: ``"ORIGIN-TEST-CKC1"`` (16) · nonce (16, from the SPC) · u16 w · AES
  key wrap (RFC 3394) under the session key of ``content key (16) ‖ IV (16)``
  (w = 40) · u16 t · the licence terms as UTF-8 JSON ``{"content-id": …, "kid":
  hex, "license-type": "streaming"|"persistent", "lease-duration": s|null,
  "rental-duration": s|null, "playback-duration": s|null}`` (same mapping as the
  external KSM's fields).

A test SPC that does not parse, does not decrypt under the configured private
key, or names another key id than the request → ``MalformedTestSpc`` (400).
The content key never leaves in clear.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

import aiohttp

from origin.crypto.key import ContentKey
from origin.crypto.keywrap import wrap_key
from origin.crypto.rsa import OaepDecryptError, RsaPrivateKey
from origin.errors import BadRequest, DependencyUnavailable, OriginError
from origin.license.fairplay import MalformedContentId, parse_content_id
from origin.license.policy import LicenseType

log = logging.getLogger(__name__)

MAX_KSM_RESPONSE_BYTES = 1024 * 1024
OPERATION_ID = 1
TEST_KSM_HEADER = "X-Origin-Test-KSM"
TEST_KSM_HEADER_VALUE = "not-apple-compatible"
TEST_SPC_MAGIC = b"ORIGIN-TEST-SPC1"
TEST_CKC_MAGIC = b"ORIGIN-TEST-CKC1"
SESSION_KEY_SIZE = 16
NONCE_SIZE = 16
MAX_TEST_CONTENT_ID_BYTES = 200

_STATUS_TEXT = re.compile(r"-?[0-9]{1,10}")
_U16 = struct.Struct(">H")


class KsmUnavailable(DependencyUnavailable):
    """The KSM cannot be reached or did not answer in time (503)."""

    reason = "FairPlay KSM is unavailable"


class KsmFailed(OriginError):
    """The KSM answered with an error or with something that is not a CKC (502)."""

    status = 502
    reason = "FairPlay KSM failed"


class MalformedTestSpc(BadRequest):
    """A test SPC the test KSM cannot use (400)."""

    reason = "malformed test SPC"


@dataclass(frozen=True)
class CkcRequest:
    """What a KSM needs for one CKC; ``ContentKey`` keeps the key out of the repr, and the
    content id stays out too (an ``skd://`` URI may carry the player's token)."""

    spc: bytes = field(repr=False)
    content_id: str = field(repr=False)
    asset: str
    key: ContentKey
    iv: bytes = field(repr=False)
    license_type: LicenseType = LicenseType.STREAMING
    lease_duration_s: int | None = None
    rental_duration_s: int | None = None


class Ksm(Protocol):
    """Turns an authorised SPC into a CKC."""

    @property
    def response_headers(self) -> Mapping[str, str]:
        """Headers every CKC response from this KSM carries."""
        ...

    async def create_ckc(self, request: CkcRequest) -> bytes:
        """The CKC answering ``request.spc``, or ``OriginError`` (400/502/503)."""
        ...


# --- external KSM -------------------------------------------------------------------------------


def build_ksm_request(request: CkcRequest) -> dict[str, Any]:
    """The SDK reference server's ``create-ckc`` request for one SPC (module docstring)."""
    asset_info: dict[str, Any] = {
        "content-key": request.key.key.hex(),
        "content-iv": request.iv.hex(),
    }
    if request.license_type is LicenseType.PERSISTENT:
        offline: dict[str, Any] = {
            "stream-id": request.key.kid_hex,
            "title-id": title_id(request.asset).hex(),
        }
        if request.rental_duration_s is not None:
            offline["rental-duration"] = request.rental_duration_s
        if request.lease_duration_s is not None:
            offline["playback-duration"] = request.lease_duration_s
        asset_info["offline-hls"] = offline
    elif request.lease_duration_s is not None:
        asset_info["lease-duration"] = request.lease_duration_s
    operation = {
        "id": OPERATION_ID,
        "spc": base64.b64encode(request.spc).decode("ascii"),
        "asset-info": [asset_info],
    }
    return {"fairplay-streaming-request": {"version": 1, "create-ckc": [operation]}}


def parse_ksm_response(body: bytes) -> bytes:
    """The CKC of operation 1 in the SDK reference server's answer; ``KsmFailed`` otherwise."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        _ksm_garbage()
    response = message.get("fairplay-streaming-response") if isinstance(message, dict) else None
    operations = response.get("create-ckc") if isinstance(response, dict) else None
    if not isinstance(operations, list):
        _ksm_garbage()
    item = next((op for op in operations if isinstance(op, dict) and _is_our_id(op.get("id"))),
                None)
    if item is None:
        _ksm_garbage()
    status = _fps_status(item.get("status", 0))
    if status != 0:
        raise KsmFailed(f"FairPlay KSM refused the SPC (status {status})")
    ckc_text = item.get("ckc")
    if not isinstance(ckc_text, str) or not ckc_text:
        _ksm_garbage()
    try:
        ckc = base64.b64decode(ckc_text, validate=True)
    except (binascii.Error, ValueError):
        _ksm_garbage()
    if not ckc:
        _ksm_garbage()
    return ckc


def title_id(asset: str) -> bytes:
    """The FPS ``title-id`` of an asset: the same for all its streams, 16 bytes."""
    return hashlib.sha256(asset.encode("utf-8")).digest()[:16]


class ExternalKsm:
    """A KSM service reached over HTTP (module docstring).  Shares the app's client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._url = url
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        parts = urlsplit(self._url)
        return f"ExternalKsm(url='{parts.scheme}://{parts.hostname}', timeout_s={self._timeout_s})"

    @property
    def response_headers(self) -> Mapping[str, str]:
        return {}

    async def create_ckc(self, request: CkcRequest) -> bytes:
        payload = json.dumps(build_ksm_request(request), separators=(",", ":")).encode("ascii")
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.post(
                    self._url, data=payload, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    body = await _read_limited(resp, MAX_KSM_RESPONSE_BYTES)
        except TimeoutError:
            log.warning("FairPlay KSM did not answer within %.3g s", self._timeout_s)
            raise KsmUnavailable("FairPlay KSM timed out") from None
        except aiohttp.ClientConnectionError as exc:
            log.warning("FairPlay KSM unreachable: %s", type(exc).__name__)
            raise KsmUnavailable("FairPlay KSM is unreachable") from None
        except aiohttp.ClientError as exc:
            log.warning("FairPlay KSM sent a broken HTTP answer: %s", type(exc).__name__)
            _ksm_garbage()
        if status != 200:
            log.warning("FairPlay KSM answered HTTP %d", status)
            raise KsmFailed(f"FairPlay KSM answered HTTP {status}")
        return parse_ksm_response(body)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    while chunk := await resp.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise KsmFailed("FairPlay KSM answer too large")
    return bytes(body)


def _is_our_id(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value == OPERATION_ID) or (
        isinstance(value, str) and value.strip() == str(OPERATION_ID)
    )


def _fps_status(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**32:
        return value
    if isinstance(value, str) and _STATUS_TEXT.fullmatch(value.strip()):
        return int(value)
    _ksm_garbage()


def _ksm_garbage() -> NoReturn:
    raise KsmFailed("FairPlay KSM sent a malformed answer") from None


# --- test KSM (development only, NOT Apple-compatible) -------------------------------------------


@dataclass(frozen=True)
class TestSpc:
    """A parsed test SPC (module docstring); the session key stays out of the repr."""

    __test__ = False  # not a pytest class

    content_id: str = field(repr=False)
    session_key: bytes = field(repr=False)
    nonce: bytes


def parse_test_spc(spc: bytes, private_key: RsaPrivateKey) -> TestSpc:
    """Parse and decrypt a test SPC; ``MalformedTestSpc`` if it cannot be used.  Blocking."""
    if not spc.startswith(TEST_SPC_MAGIC):
        raise MalformedTestSpc("not a test SPC (this KSM is for development only)")
    offset = len(TEST_SPC_MAGIC)
    raw_id, offset = _read_u16_prefixed(spc, offset)
    wrapped, offset = _read_u16_prefixed(spc, offset)
    if offset != len(spc) or not 0 < len(raw_id) <= MAX_TEST_CONTENT_ID_BYTES:
        raise MalformedTestSpc()
    try:
        content_id = raw_id.decode("utf-8")
        secret = private_key.oaep_decrypt(wrapped)
    except UnicodeDecodeError:
        raise MalformedTestSpc() from None
    except OaepDecryptError:
        raise MalformedTestSpc("test SPC is not for this certificate") from None
    if len(secret) != SESSION_KEY_SIZE + NONCE_SIZE:
        raise MalformedTestSpc()
    return TestSpc(content_id, secret[:SESSION_KEY_SIZE], secret[SESSION_KEY_SIZE:])


def build_test_ckc(spc: TestSpc, request: CkcRequest) -> bytes:
    """The test CKC for a parsed test SPC (module docstring)."""
    wrapped = wrap_key(spc.session_key, request.key.key + request.iv)
    terms = json.dumps(licence_terms(request), separators=(",", ":")).encode("utf-8")
    return b"".join(
        (TEST_CKC_MAGIC, spc.nonce, _U16.pack(len(wrapped)), wrapped, _U16.pack(len(terms)), terms)
    )


def licence_terms(request: CkcRequest) -> dict[str, Any]:
    """The licence terms a test CKC carries (the external KSM's mapping)."""
    persistent = request.license_type is LicenseType.PERSISTENT
    return {
        "content-id": request.content_id,
        "kid": request.key.kid_hex,
        "license-type": request.license_type.value,
        "lease-duration": None if persistent else request.lease_duration_s,
        "rental-duration": request.rental_duration_s if persistent else None,
        "playback-duration": request.lease_duration_s if persistent else None,
    }


class TestKsm:
    """The development KSM (module docstring).  NOT Apple-compatible."""

    __test__ = False  # not a pytest class

    def __init__(self, private_key: RsaPrivateKey) -> None:
        self._private_key = private_key

    def __repr__(self) -> str:
        return "TestKsm(not-apple-compatible)"

    @property
    def response_headers(self) -> Mapping[str, str]:
        return {TEST_KSM_HEADER: TEST_KSM_HEADER_VALUE}

    async def create_ckc(self, request: CkcRequest) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._create_ckc, request)

    def _create_ckc(self, request: CkcRequest) -> bytes:
        spc = parse_test_spc(request.spc, self._private_key)
        try:
            kid = parse_content_id(spc.content_id)
        except MalformedContentId:
            raise MalformedTestSpc("test SPC has a malformed content id") from None
        if kid != request.key.kid:
            raise MalformedTestSpc("test SPC is for another key")
        return build_test_ckc(spc, request)


def _read_u16_prefixed(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + _U16.size > len(data):
        raise MalformedTestSpc()
    (length,) = _U16.unpack_from(data, offset)
    start = offset + _U16.size
    if start + length > len(data):
        raise MalformedTestSpc()
    return data[start : start + length], start + length
