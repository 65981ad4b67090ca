"""W3C EME Clear Key (``org.w3.clearkey``): the licence request parser and licence builder.

Pure: bytes in, values out; no I/O.  The app (``origin.license.app``) reads the
request body, looks the keys up and asks the policy; this module only knows the
wire format:

- request (the CDM's ``message``, UTF-8 JSON)::

      {"kids": ["<b64url kid>", ...], "type": "temporary" | "persistent-license"}

- licence (fed to ``MediaKeySession.update()``), a JWK set::

      {"keys": [{"kty": "oct", "k": "<b64url key>", "kid": "<b64url kid>"}, ...],
       "type": "<the requested type>"}

Ids and keys are base64url.  On input, padding (``=``) is accepted but the encoding
must be canonical (unused trailing bits zero); on output there is never padding.

Decisions:

- ``type`` is optional and defaults to ``temporary``.  A persistent-license *release*
  message (``{"kids": [...]}`` with no ``type``) is indistinguishable from a temporary
  request, so it is treated as one: the reply is a licence, not a release ack.
- Members other than ``kids`` and ``type`` (and ``alg`` etc.) are ignored, for forward
  compatibility; a member given twice is rejected.
- ``kids`` must be a non-empty list of at most ``MAX_KIDS`` strings; a kid given more
  than once is answered once (order of first appearance is kept).
- Errors are typed (``MalformedLicenseRequest`` → 400, ``LicenseRequestTooLarge`` →
  413), short, and never echo the request; nothing here ever holds key bytes in a repr.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from origin.crypto.key import KID_SIZE, ContentKey
from origin.errors import BadRequest, OriginError
from origin.license.strict_json import load_json

KEY_SYSTEM = "org.w3.clearkey"
MAX_REQUEST_BYTES = 64 * 1024
MAX_KIDS = 64
CONTENT_TYPE = "application/json"

# 16 bytes → 22 base64 characters, plus "==" when padded.
_B64URL_16 = re.compile(r"[A-Za-z0-9_-]{22}(?:==)?")


class ClearKeyRequestError(OriginError):
    """A Clear Key licence request that cannot be served as sent."""


class MalformedLicenseRequest(ClearKeyRequestError, BadRequest):
    """Not valid JSON, wrong member types, a bad kid or an unknown ``type`` (400)."""

    status = 400
    reason = "malformed licence request"


class LicenseRequestTooLarge(ClearKeyRequestError):
    """The request body is larger than ``MAX_REQUEST_BYTES`` (413)."""

    status = 413
    reason = "licence request too large"


class SessionType(enum.Enum):
    """The EME ``MediaKeySessionType`` a licence is requested for."""

    TEMPORARY = "temporary"
    PERSISTENT_LICENSE = "persistent-license"


@dataclass(frozen=True, slots=True)
class LicenseRequest:
    """A parsed Clear Key licence request: the key ids (16 bytes each, no duplicates)."""

    kids: tuple[bytes, ...]
    session_type: SessionType = SessionType.TEMPORARY


@dataclass(frozen=True, slots=True)
class ClearKeyLicense:
    """A Clear Key licence (JWK set); ``ContentKey`` keeps the keys out of the repr."""

    keys: tuple[ContentKey, ...]
    session_type: SessionType = SessionType.TEMPORARY

    def to_json(self) -> bytes:
        """The licence as compact UTF-8 JSON, ready for ``MediaKeySession.update()``."""
        body = {
            "keys": [
                {"kty": "oct", "k": b64url_encode(key.key), "kid": b64url_encode(key.kid)}
                for key in self.keys
            ],
            "type": self.session_type.value,
        }
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as EME Clear Key requires."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_kid(text: str) -> bytes:
    """A 16-byte key id from canonical base64url (padded or not); ``MalformedLicenseRequest``."""
    if _B64URL_16.fullmatch(text) is None:
        _malformed("malformed kid")
    unpadded = text.rstrip("=")
    try:
        kid = base64.urlsafe_b64decode(unpadded + "==")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern rules this out
        _malformed("malformed kid")
    if len(kid) != KID_SIZE or b64url_encode(kid) != unpadded:
        _malformed("malformed kid")
    return kid


def parse_license_request(body: bytes) -> LicenseRequest:
    """Parse the EME Clear Key licence request message.

    Raises ``LicenseRequestTooLarge`` or ``MalformedLicenseRequest`` and nothing else.
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise LicenseRequestTooLarge()
    try:
        message = load_json(body)
    except ValueError:
        _malformed("licence request is not JSON")
    if not isinstance(message, dict):
        _malformed("licence request is not a JSON object")
    return LicenseRequest(
        kids=_parse_kids(message.get("kids")),
        session_type=_parse_type(message.get("type", SessionType.TEMPORARY.value)),
    )


def build_license(
    keys: Sequence[ContentKey], session_type: SessionType = SessionType.TEMPORARY
) -> ClearKeyLicense:
    """The licence answering a request, keys in the order they were requested."""
    return ClearKeyLicense(keys=tuple(keys), session_type=session_type)


def _parse_kids(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        _malformed("kids must be a list")
    if not value:
        _malformed("kids must not be empty")
    if len(value) > MAX_KIDS:
        _malformed(f"at most {MAX_KIDS} kids per request")
    kids: dict[bytes, None] = {}
    for item in value:
        if not isinstance(item, str):
            _malformed("kids must be strings")
        kids[decode_kid(item)] = None
    return tuple(kids)


def _parse_type(value: object) -> SessionType:
    if isinstance(value, str):
        for session_type in SessionType:
            if session_type.value == value:
                return session_type
    _malformed("unsupported session type")


def _malformed(detail: str) -> NoReturn:
    raise MalformedLicenseRequest(detail) from None
