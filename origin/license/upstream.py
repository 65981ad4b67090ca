"""Upstream Widevine/PlayReady licence servers: their configuration and the client.

Configuration, one table per key system in the licence configuration file
(``[widevine]``, ``[playready]``); a key system without a table has no upstream::

    [widevine]
    url = "https://licence.example.com/widevine"   # required, http or https
    timeout_s = 10                                # connect and total; default 10, at most 60
    headers = { "X-Api-Key" = { env = "WV_API_KEY" }, "X-Tenant" = "demo" }
    query = { provider = "demo" }                 # static query parameters, appended
    kaltura_partner_id = 1234                     # optional Kaltura-style identity ...
    kaltura_secret_env = "KALTURA_UDRM_SECRET"    # ... and its signing secret

A header value is a string, ``{ env = "VAR" }`` or ``{ file = "path" }`` (relative to the
configuration file; surrounding whitespace stripped): secrets never sit in the file
itself.  The Kaltura secret likewise comes from ``kaltura_secret_env`` or
``kaltura_secret_file``.  Every field is checked when the app starts; a bad one is a
``ValueError`` that names the field, never a secret value.

Kaltura identity (checked against Kaltura's public code: ``DrmLicenseUtils::
createCustomData``/``signDataWithKey`` in kaltura/server and ``flavorCustomData`` in
kaltura/embed-services, which build the query of ``udrm.kaltura.com`` licence URLs):

- ``custom_data`` = base64 of the JSON object ``{"ca_system": "OVP", "user_token":
  <the caller's token or "">, "account_id": <partner id>, "content_id": <asset>,
  "files": ""}``;
- ``signature`` = base64 of SHA-1(secret ‖ *the JSON bytes*) — Kaltura signs the JSON
  itself, not its base64 form;
- both percent-encoded as PHP's ``rawurlencode`` does (``+``, ``/`` and ``=`` too).

The request to the upstream carries only what is configured plus the challenge's
content type (and, for PlayReady, the player's ``SOAPAction``): never the player's
``Authorization``, cookies or query.  The session keeps no cookies and follows no
redirect.  Answers: 2xx → the body, unchanged, with its content type; any other status
→ ``UpstreamRefused`` (502, the upstream body is dropped); an answer over
``MAX_ANSWER_BYTES`` → 502; connection refused or unresolvable → 503; connect or total
time-out → **504** (a gateway time-out: the upstream, not this module, is slow).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs
from yarl import URL

from origin.errors import DependencyUnavailable, NotFound, OriginError
from origin.license.policy import KeySystem

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 60.0
MAX_ANSWER_BYTES = 1 << 20
KALTURA_CA_SYSTEM = "OVP"

UPSTREAM_SECTIONS: Mapping[KeySystem, str] = {
    KeySystem.WIDEVINE: "widevine",
    KeySystem.PLAYREADY: "playready",
}

_FIELDS = frozenset({"url", "timeout_s", "headers", "query", "kaltura_partner_id",
                     "kaltura_secret_env", "kaltura_secret_file"})
_KALTURA_PARAMS = frozenset({"custom_data", "signature"})
# Set by the proxy itself, or framing that aiohttp owns (RFC 9110 §7.6.1, §8.3, §8.6).
_RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "transfer-encoding", "host", "connection",
    "keep-alive", "te", "trailer", "upgrade", "expect", "soapaction",
})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


# --- errors ----------------------------------------------------------------------------------


class UpstreamNotConfigured(NotFound):
    def __init__(self, key_system: KeySystem) -> None:
        super().__init__(f"{key_system.value} licence server is not configured")


class UpstreamError(OriginError):
    """The upstream licence server failed; the detail names the key system only."""

    status = 502
    reason = "licence server failed"


class UpstreamRefused(UpstreamError):
    """The upstream answered with a status other than 2xx (502; its body is not passed on)."""

    def __init__(self, key_system: KeySystem, upstream_status: int) -> None:
        super().__init__(f"{key_system.value} licence server answered {upstream_status}")
        self.upstream_status = upstream_status


class UpstreamAnswerTooLarge(UpstreamError):
    def __init__(self, key_system: KeySystem) -> None:
        super().__init__(f"{key_system.value} licence server answer too large")


class UpstreamBroken(UpstreamError):
    """The connection broke before a complete answer arrived (502)."""

    def __init__(self, key_system: KeySystem) -> None:
        super().__init__(f"{key_system.value} licence server connection failed")


class UpstreamUnreachable(DependencyUnavailable):
    """No connection could be made (503)."""

    def __init__(self, key_system: KeySystem) -> None:
        super().__init__(f"{key_system.value} licence server unreachable")


class UpstreamTimeout(OriginError):
    """Connect or total time-out (504 Gateway Timeout)."""

    status = 504
    reason = "licence server timed out"

    def __init__(self, key_system: KeySystem) -> None:
        super().__init__(f"{key_system.value} licence server timed out")


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KalturaIdentity:
    """The Kaltura partner id and its signing secret (never in a repr)."""

    partner_id: int
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class UpstreamConfig:
    """One key system's upstream licence server, validated."""

    key_system: KeySystem
    url: str = field(repr=False)  # normalised (percent-encoded), no user info, no fragment
    timeout_s: float = DEFAULT_TIMEOUT_S
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    kaltura: KalturaIdentity | None = None


def load_upstream_configs(
    config: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    resolve: Callable[[str], Path],
) -> dict[KeySystem, UpstreamConfig]:
    """Every configured upstream, from the licence config's tables.  Blocking (secret files).

    ``resolve`` turns a path from the file into an absolute one
    (``LicenseSettings.resolve``).  ``ValueError`` names the bad field.
    """
    found: dict[KeySystem, UpstreamConfig] = {}
    for key_system, section in UPSTREAM_SECTIONS.items():
        table = config.get(section)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ValueError(f"licence config: [{section}] must be a table")
        found[key_system] = parse_upstream_config(key_system, table, env=env, resolve=resolve)
    return found


def parse_upstream_config(
    key_system: KeySystem,
    table: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    resolve: Callable[[str], Path],
) -> UpstreamConfig:
    """One ``[widevine]``/``[playready]`` table (module docstring).  Blocking (secret files)."""
    where = f"licence config: [{UPSTREAM_SECTIONS[key_system]}]"
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ValueError(f"{where} has an unknown field {unknown[0]!r}")
    kaltura = _kaltura(table, where, env, resolve)
    query = _query(table.get("query", {}), where)
    if kaltura is not None and any(name in _KALTURA_PARAMS for name, _ in query):
        raise ValueError(f"{where} query: custom_data and signature are set by the Kaltura "
                         "identity")
    return UpstreamConfig(
        key_system=key_system,
        url=_url(table.get("url"), where),
        timeout_s=_timeout(table.get("timeout_s", DEFAULT_TIMEOUT_S), where),
        headers=_headers(table.get("headers", {}), where, env, resolve),
        query=query,
        kaltura=kaltura,
    )


def _url(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} url is required (an http or https URL)")
    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise ValueError(f"{where} url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{where} url must be an http or https URL with a host")
    if url.user is not None or url.password is not None:
        raise ValueError(f"{where} url must not carry credentials (use headers with env)")
    if url.fragment:
        raise ValueError(f"{where} url must not have a fragment")
    return str(url)


def _timeout(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"{where} timeout_s must be a number of seconds, above 0 and at most "
                         f"{MAX_TIMEOUT_S:g}")
    return float(value)


def _headers(value: object, where: str, env: Mapping[str, str],
             resolve: Callable[[str], Path]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} headers must be a table")
    headers: list[tuple[str, str]] = []
    for name, raw in value.items():
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise ValueError(f"{where} headers: {name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{where} headers: {name} is set by the proxy")
        label = f"{where} headers.{name}"
        text = raw if isinstance(raw, str) else _secret(raw, label, env, resolve)
        if _FIELD_VALUE.fullmatch(text) is None:
            raise ValueError(f"{label} holds characters not allowed in a header")
        headers.append((name, text))
    return tuple(headers)


def _query(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} query must be a table")
    query: list[tuple[str, str]] = []
    for name, raw in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where} query: parameter names must be non-empty strings")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError(f"{where} query.{name} must be a string or an integer")
        query.append((name, str(raw)))
    return tuple(query)


def _kaltura(table: Mapping[str, Any], where: str, env: Mapping[str, str],
             resolve: Callable[[str], Path]) -> KalturaIdentity | None:
    partner = table.get("kaltura_partner_id")
    sources = {k: table[k] for k in ("kaltura_secret_env", "kaltura_secret_file") if k in table}
    if partner is None:
        if sources:
            raise ValueError(f"{where} {next(iter(sources))} needs kaltura_partner_id")
        return None
    if isinstance(partner, bool) or not isinstance(partner, int) or partner <= 0:
        raise ValueError(f"{where} kaltura_partner_id must be a positive integer")
    if len(sources) != 1:
        raise ValueError(f"{where} kaltura_partner_id needs exactly one of kaltura_secret_env "
                         "or kaltura_secret_file")
    (name, source), = sources.items()
    ref = {"env": source} if name == "kaltura_secret_env" else {"file": source}
    secret = _secret(ref, f"{where} {name}", env, resolve)
    return KalturaIdentity(partner, secret.encode("utf-8"))


def _secret(ref: object, label: str, env: Mapping[str, str],
            resolve: Callable[[str], Path]) -> str:
    """A secret named by ``{ env = "VAR" }`` or ``{ file = "path" }``; never echoed."""
    if not isinstance(ref, Mapping) or len(ref) != 1 or not set(ref) <= {"env", "file"}:
        raise ValueError(f"{label} must be a string, {{ env = \"VAR\" }} or "
                         "{ file = \"path\" }")
    (kind, name), = ref.items()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{label}: {kind} must be a non-empty string")
    if kind == "env":
        value = env.get(name)
        if not value:
            raise ValueError(f"{label}: environment variable {name} is not set")
        return value
    path = resolve(name)
    try:
        text = path.read_text("utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{label}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{label}: {path} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"{label}: {path} is empty")
    return text


# --- the request to the upstream ------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamRequest:
    """What goes to the upstream: URL (with query), headers and the unchanged challenge."""

    url: str = field(repr=False)  # already percent-encoded
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class UpstreamAnswer:
    body: bytes = field(repr=False)
    content_type: str


def kaltura_query(identity: KalturaIdentity, *, user_token: str | None,
                  content_id: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """``custom_data`` and ``signature`` (not yet URL-encoded), as Kaltura computes them."""
    inner = json.dumps(
        {
            "ca_system": KALTURA_CA_SYSTEM,
            "user_token": user_token or "",
            "account_id": identity.partner_id,
            "content_id": content_id,
            "files": "",
        },
        separators=(",", ":"),
    ).encode("utf-8")
    # SHA-1 is Kaltura's wire format (signDataWithKey), not a choice made here.
    digest = hashlib.sha1(identity.secret + inner).digest()  # noqa: S324
    return (
        ("custom_data", base64.b64encode(inner).decode("ascii")),
        ("signature", base64.b64encode(digest).decode("ascii")),
    )


def build_upstream_request(
    config: UpstreamConfig,
    body: bytes,
    *,
    content_type: str,
    soap_action: str | None = None,
    user_token: str | None = None,
    content_id: str = "",
) -> UpstreamRequest:
    """The upstream request for a challenge: configured URL, query and headers only."""
    params = list(config.query)
    if config.kaltura is not None:
        params += kaltura_query(config.kaltura, user_token=user_token, content_id=content_id)
    url = config.url
    if params:
        encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        url += ("&" if "?" in url else "?") + encoded
    headers = [*config.headers, (hdrs.CONTENT_TYPE, content_type)]
    if soap_action is not None:
        headers.append(("SOAPAction", soap_action))
    return UpstreamRequest(url=url, headers=tuple(headers), body=body)


# --- the client ------------------------------------------------------------------------------


def make_upstream_session() -> aiohttp.ClientSession:
    """The app's one keep-alive session to upstream licence servers: no cookies, no proxy env."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


class UpstreamClient:
    """Sends challenges to upstream licence servers over one shared session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def __repr__(self) -> str:
        return "UpstreamClient()"

    async def exchange(self, config: UpstreamConfig, request: UpstreamRequest,
                       *, default_content_type: str) -> UpstreamAnswer:
        """POST the challenge; the answer or a typed ``UpstreamError``/503/504 (module rules)."""
        key_system = config.key_system
        timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.timeout_s)
        try:
            async with self._session.post(
                URL(request.url, encoded=True),
                data=request.body,
                headers=list(request.headers),
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status < 300:
                    raise UpstreamRefused(key_system, response.status)
                if response.content_length is not None \
                        and response.content_length > MAX_ANSWER_BYTES:
                    raise UpstreamAnswerTooLarge(key_system)
                body = await _read_capped(response, key_system)
                content_type = response.headers.get(hdrs.CONTENT_TYPE, default_content_type)
        except TimeoutError:
            raise UpstreamTimeout(key_system) from None
        except aiohttp.ClientConnectorError:
            raise UpstreamUnreachable(key_system) from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamBroken(key_system) from None
        return UpstreamAnswer(body=body, content_type=content_type)


async def _read_capped(response: aiohttp.ClientResponse, key_system: KeySystem) -> bytes:
    body = bytearray()
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise UpstreamAnswerTooLarge(key_system)
    return bytes(body)
