"""FairPlay Streaming's HTTP envelope: SPC requests in, CKC responses out (SPECS §6).

Pure: bytes in, values out; no I/O.  The KSM (``origin.license.ksm``) turns the
SPC into a CKC; this module only knows how players wrap them.

Request forms, told apart by ``Content-Type`` (parameters ignored):

- ``application/x-www-form-urlencoded``: ``spc=<base64>`` with optional
  ``assetId`` (or ``assetID``) and ``offline`` fields (Apple's Safari example,
  Azure Media Services, Verimatrix, Shaka Player's Verimatrix transform);
- ``application/json`` (or ``…+json``): ``{"spc": "<base64>", "assetId": "…",
  "offline": true}`` (``assetID`` accepted too);
- ``application/octet-stream``: the SPC bytes as they are (EZDRM, Conax,
  ExpressPlay, Mux, hls.js's default);
- no or any other content type: a body starting with ``{`` is JSON, an ASCII
  body with an ``spc=`` field is a form, anything else is a raw SPC.  A real SPC
  starts with its big-endian version number (``00 00 00 01`` …), so it never
  looks like either.

The response uses the form of the request (``build_ckc_response``):

- raw → the CKC bytes, ``application/octet-stream``;
- form → ``<ckc>base64</ckc>`` as ``application/xml``.  Apple documents this
  wrapper, and every public player that meets it (Apple's Safari FPS example,
  Shaka Player's ``commonFairPlayResponse``, video.js ``contrib-eme``) reads the
  body as text and strips the tags without looking at the type, so the type is
  only for humans and proxies.  RFC 7303 makes ``text/xml`` and
  ``application/xml`` equivalent; ``application/xml`` says "not for reading";
- JSON → ``{"ckc": "<base64>"}``, ``application/json``.

Base64 decoding accepts the standard and URL-safe alphabets, with or without
padding, and line breaks.  Players that do not percent-encode a form value
send the ``+`` of base64 as is, which form decoding reads as a space; base64
never contains a space, so a space in ``spc`` is read back as ``+``.

Content ids (``parse_content_id``): the origin writes ``skd://<32 hex kid>``
key URIs (``origin.packaging.drm``), with the player's token appended as a query
when the playlist request had one, and players send the URI or what follows
``skd://`` as the content id.  Accepted: 32 hex digits or a UUID, bare or after
``skd://`` or ``skd:``, with any query, or the ``KeyId``/``keyId`` query
parameter of an ``skd://`` URI.  Anything else (a base64 Conax id, a path) is
malformed: keys are looked up by id.  ``skd_query`` gives the query, so a
native player that only passes the URI along still presents its token.

Errors are typed: ``MalformedSpcRequest`` and ``MalformedContentId`` (400);
their details are short and never echo the request.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from origin.crypto.key import parse_kid
from origin.errors import BadRequest
from origin.license.strict_json import load_json

MAX_REQUEST_BYTES = 64 * 1024
MAX_CONTENT_ID_CHARS = 512
MAX_FORM_FIELDS = 16

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
RAW_TYPE = "application/octet-stream"
XML_TYPE = "application/xml"

ASSET_ID_FIELDS = ("assetId", "assetID")
QUERY_CONTENT_ID_FIELDS = ("assetId", "contentId")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SKD = re.compile(r"skd:(?://)?", re.IGNORECASE)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")
_KNOWN_FIELDS = frozenset({"spc", "offline", "assetId", "assetID"})


class MalformedSpcRequest(BadRequest):
    """An SPC request whose envelope cannot be read (400)."""

    reason = "malformed SPC request"


class MalformedContentId(BadRequest):
    """A content id that names no key id (400)."""

    reason = "malformed content id"


class RequestForm(enum.Enum):
    """How the player wrapped its SPC, and so how the CKC goes back."""

    RAW = "raw"
    FORM = "form"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class SpcRequest:
    """A parsed SPC request: the SPC, the body's content id if any, the form, offline.

    The content id stays out of the repr: an ``skd://`` URI may carry the player's token.
    """

    spc: bytes = field(repr=False)
    content_id: str | None = field(repr=False)
    form: RequestForm
    offline: bool = False


@dataclass(frozen=True, slots=True)
class CkcResponse:
    """The HTTP body and content type answering an ``SpcRequest``."""

    body: bytes = field(repr=False)
    content_type: str


def parse_spc_request(body: bytes, content_type: str | None) -> SpcRequest:
    """Parse an SPC request body of any supported form (module rules)."""
    if len(body) > MAX_REQUEST_BYTES:
        _malformed("SPC request too large")
    form = detect_form(body, content_type)
    if form is RequestForm.FORM:
        return _parse_form(body)
    if form is RequestForm.JSON:
        return _parse_json(body)
    if not body:
        _malformed("empty SPC")
    return SpcRequest(spc=body, content_id=None, form=RequestForm.RAW)


def detect_form(body: bytes, content_type: str | None) -> RequestForm:
    """The request form, by ``Content-Type`` first and by the body's shape otherwise."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == FORM_TYPE:
        return RequestForm.FORM
    if mime == JSON_TYPE or (mime.startswith("application/") and mime.endswith("+json")):
        return RequestForm.JSON
    if mime == RAW_TYPE:
        return RequestForm.RAW
    if body.lstrip(b" \t\r\n").startswith(b"{"):
        return RequestForm.JSON
    if _looks_like_form(body):
        return RequestForm.FORM
    return RequestForm.RAW


def parse_offline_flag(value: object) -> bool:
    """An ``offline`` flag: JSON true/false, or ``true``/``false``/``1``/``0``/``yes``/``no``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    _malformed("offline must be true or false")


def parse_content_id(text: str) -> bytes:
    """The 16-byte key id a FairPlay content id names (module rules)."""
    if not isinstance(text, str) or not text or len(text) > MAX_CONTENT_ID_CHARS:
        _bad_content_id()
    candidate = text
    scheme = _SKD.match(text)
    if scheme is not None:
        rest = text[scheme.end():]
        host, question, query = rest.partition("?")
        candidate = host.rstrip("/")
        if question:
            pairs = parse_qsl(query, keep_blank_values=True)
            ids = [value for name, value in pairs if name in ("KeyId", "keyId")]
            if len(ids) > 1:
                _bad_content_id()
            if ids:
                candidate = ids[0]
    try:
        return parse_kid(candidate)
    except ValueError:
        _bad_content_id()


def skd_query(content_id: str) -> dict[str, str]:
    """The query of an ``skd://`` content id (the origin appends the player's token there)."""
    if len(content_id) > MAX_CONTENT_ID_CHARS or _SKD.match(content_id) is None:
        return {}
    _, question, query = content_id.partition("?")
    if not question:
        return {}
    return dict(parse_qsl(query, keep_blank_values=False, max_num_fields=MAX_FORM_FIELDS))


def build_ckc_response(ckc: bytes, form: RequestForm) -> CkcResponse:
    """The CKC in the form the request used (module rules)."""
    if form is RequestForm.RAW:
        return CkcResponse(body=ckc, content_type=RAW_TYPE)
    encoded = base64.b64encode(ckc)
    if form is RequestForm.FORM:
        return CkcResponse(body=b"<ckc>" + encoded + b"</ckc>", content_type=XML_TYPE)
    body = json.dumps({"ckc": encoded.decode("ascii")}, separators=(",", ":"))
    return CkcResponse(body=body.encode("ascii"), content_type=JSON_TYPE)


def decode_base64(text: str) -> bytes:
    """Base64, standard or URL-safe alphabet, padding optional, line breaks ignored."""
    compact = text.replace("\r", "").replace("\n", "")
    if not compact or _B64_CHARS.fullmatch(compact) is None:
        _malformed("spc is not base64")
    unpadded = compact.rstrip("=")
    if not unpadded or len(unpadded) % 4 == 1:  # padding alone would be an empty SPC
        _malformed("spc is not base64")
    standard = unpadded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        _malformed("spc is not base64")


def _looks_like_form(body: bytes) -> bool:
    if _PRINTABLE_ASCII.fullmatch(body.rstrip(b"\r\n")) is None:
        return False
    return any(part.split(b"=", 1)[0] == b"spc" for part in body.split(b"&"))


def _parse_form(body: bytes) -> SpcRequest:
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text.strip(),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        _malformed("SPC request is not a form")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            _malformed(f"{name} given twice" if name in _KNOWN_FIELDS else "field given twice")
        fields[name] = value
    spc_text = fields.get("spc")
    if spc_text is None:
        _malformed("spc is missing")
    offline = parse_offline_flag(fields["offline"]) if "offline" in fields else False
    return SpcRequest(
        spc=decode_base64(spc_text.replace(" ", "+")),
        content_id=_asset_id(fields),
        form=RequestForm.FORM,
        offline=offline,
    )


def _parse_json(body: bytes) -> SpcRequest:
    try:
        message = load_json(body)
    except ValueError:
        _malformed("SPC request is not JSON")
    if not isinstance(message, dict):
        _malformed("SPC request is not a JSON object")
    spc_text = message.get("spc")
    if not isinstance(spc_text, str):
        _malformed("spc must be a base64 string")
    offline = parse_offline_flag(message["offline"]) if "offline" in message else False
    return SpcRequest(
        spc=decode_base64(spc_text),
        content_id=_asset_id(message),
        form=RequestForm.JSON,
        offline=offline,
    )


def _asset_id(fields: Mapping[str, Any]) -> str | None:
    """The body's content id: ``assetId`` or ``assetID``; both must agree if both are given."""
    values = [fields[name] for name in ASSET_ID_FIELDS if name in fields]
    if not values:
        return None
    if any(not isinstance(value, str) or not value for value in values):
        _malformed("assetId must be a non-empty string")
    if len(set(values)) > 1:
        _malformed("assetId and assetID disagree")
    value: str = values[0]
    return value


def _malformed(detail: str) -> NoReturn:
    raise MalformedSpcRequest(detail) from None


def _bad_content_id() -> NoReturn:
    raise MalformedContentId() from None
