"""FairPlay Streaming routes of the licence module, and their ``[fairplay]`` configuration.

Routes (``setup_fairplay``):

- ``GET /license/fairplay/certificate``: the application certificate, DER
  (``application/pkix-cert``, RFC 2585), cacheable for a day with a strong ETag;
  it is public by design (players fetch it before any licence request).
- ``POST /license/fairplay`` and ``POST /license/fairplay/{content_id}``: SPC →
  CKC, in the request's own envelope (``origin.license.fairplay``).  The content
  id comes from the body's ``assetId``/``assetID``, else the path, else the
  query's ``assetId``/``contentId``; ``offline`` in the body or the query asks
  for a persistent licence.  The player's token is the usual one
  (``presented_token``), else the ``token`` the origin put in the ``skd://`` URI.
  Then, in this order: the key is looked up (404 if unknown), the request is
  authorised (401/403/503) — before the KSM sees anything — and the KSM gets
  the SPC, the key, the cbcs constant IV and the decision's licence type and
  durations.  Always ``Cache-Control: no-store``.

Without a ``[fairplay]`` table FairPlay is off and every route answers 404.
The table (checked when the app starts; a bad one fails startup with a
``ValueError`` naming the field, never a secret)::

    [fairplay]
    certificate_file = "fairplay.cer"    # PEM or DER, relative to the config file
    ksm = "external"                     # or "test": development only, NOT Apple-compatible
    ksm_url = "https://ksm.internal/fps" # external: http(s), no credentials in it
    ksm_timeout_s = 5                    # external: seconds, 0 < t <= 60 (default 5)
    test_private_key_file = "fps.key"    # test: the certificate's RSA private key

    [fairplay.ksm_headers]               # external: extra request headers
    X-Api-Key = { env = "FPS_KSM_KEY" }  # a secret, from the environment…
    X-Client-Cert = { file = "ksm.tok" } # …or from a file
    X-Tenant = "acme"                    # inline values are for non-secrets only
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from origin.crypto.iv import derive_iv
from origin.crypto.rsa import (
    CertificateError,
    PrivateKeyError,
    RsaPrivateKey,
    certificate_der,
    load_private_key,
)
from origin.errors import BadRequest, NotFound
from origin.license.app_state import NO_STORE, SETTINGS_KEY, run_blocking
from origin.license.authorization import presented_token
from origin.license.fairplay import (
    MAX_REQUEST_BYTES,
    QUERY_CONTENT_ID_FIELDS,
    build_ckc_response,
    parse_content_id,
    parse_offline_flag,
    parse_spc_request,
    skd_query,
)
from origin.license.ksm import CkcRequest, ExternalKsm, Ksm, TestKsm
from origin.license.policy import KeyRequest, KeySystem, LicenseType
from origin.license.request_authorization import authorize, player_token, stored_key
from origin.license.request_body import read_body
from origin.license.settings import LicenseSettings

log = logging.getLogger(__name__)

SECTION = "fairplay"
CERTIFICATE_TYPE = "application/pkix-cert"
CERTIFICATE_CACHE_CONTROL = "public, max-age=86400"
DEFAULT_KSM_TIMEOUT_S = 5.0
MAX_KSM_TIMEOUT_S = 60.0
MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_CONFIG_FILE_BYTES = 1024 * 1024

_FIELDS = frozenset(
    {"certificate_file", "ksm", "ksm_url", "ksm_timeout_s", "ksm_headers",
     "test_private_key_file"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection"}
)


class KsmKind(enum.Enum):
    EXTERNAL = "external"
    TEST = "test"


@dataclass(frozen=True)
class ApplicationCertificate:
    """The FairPlay application certificate as served: DER bytes and their strong ETag."""

    der: bytes = field(repr=False)
    etag: str

    @classmethod
    def from_der(cls, der: bytes) -> ApplicationCertificate:
        return cls(der=der, etag=f'"{hashlib.sha256(der).hexdigest()[:32]}"')


@dataclass(frozen=True)
class ExternalKsmConfig:
    url: str
    timeout_s: float = DEFAULT_KSM_TIMEOUT_S
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TestKsmConfig:
    __test__ = False  # not a pytest class

    private_key: RsaPrivateKey


@dataclass(frozen=True)
class FairPlayConfig:
    certificate: ApplicationCertificate
    ksm: ExternalKsmConfig | TestKsmConfig


@dataclass(frozen=True)
class FairPlay:
    """FairPlay as the running app has it: the certificate and the KSM."""

    certificate: ApplicationCertificate
    ksm: Ksm


FAIRPLAY_KEY = web.AppKey("license_fairplay", FairPlay)


def setup_fairplay(app: web.Application) -> None:
    """Add the FairPlay routes; the ``[fairplay]`` table is read when the app starts."""
    app.cleanup_ctx.append(_fairplay_context)
    app.router.add_get("/license/fairplay/certificate", fairplay_certificate)
    app.router.add_post("/license/fairplay", fairplay_license)
    app.router.add_post("/license/fairplay/{content_id}", fairplay_license)


# --- configuration ------------------------------------------------------------------------------


def load_fairplay_config(
    settings: LicenseSettings, env: Mapping[str, str]
) -> FairPlayConfig | None:
    """The ``[fairplay]`` table, checked, with its files read; ``None`` if absent.  Blocking.

    ``ValueError`` names the bad field (and a file's path), never a secret value.
    """
    table = settings.section(SECTION)
    if table is None:
        return None
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        _config_error(f"unknown field {unknown[0]!r}")
    certificate_path = settings.resolve(_string(table, "certificate_file"))
    try:
        der = certificate_der(_read_file(certificate_path, "certificate_file"))
    except CertificateError as exc:
        _config_error(f"certificate_file {certificate_path} is not a certificate: {exc}")
    kind_text = _string(table, "ksm")
    try:
        kind = KsmKind(kind_text)
    except ValueError:
        _config_error('ksm must be "external" or "test"')
    ksm: ExternalKsmConfig | TestKsmConfig
    if kind is KsmKind.EXTERNAL:
        ksm = ExternalKsmConfig(
            url=_ksm_url(_string(table, "ksm_url")),
            timeout_s=_timeout(table.get("ksm_timeout_s", DEFAULT_KSM_TIMEOUT_S)),
            headers=_ksm_headers(table.get("ksm_headers", {}), settings, env),
        )
    else:
        key_path = settings.resolve(_string(table, "test_private_key_file"))
        try:
            private_key = load_private_key(_read_file(key_path, "test_private_key_file"))
        except PrivateKeyError as exc:
            _config_error(f"test_private_key_file {key_path}: {exc}")
        if not private_key.matches_certificate(der):
            _config_error("test_private_key_file does not match certificate_file")
        ksm = TestKsmConfig(private_key=private_key)
    return FairPlayConfig(certificate=ApplicationCertificate.from_der(der), ksm=ksm)


def _string(table: Mapping[str, Any], name: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value:
        _config_error(f"{name} must be a non-empty string")
    return value


def _read_file(path: Path, name: str, limit: int = MAX_CONFIG_FILE_BYTES) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        _config_error(f"{name}: cannot read {path}: {exc.strerror}")
    if len(data) > limit:
        _config_error(f"{name}: {path} is larger than {limit} bytes")
    return data


def _ksm_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        _config_error("ksm_url is not a URL")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _config_error("ksm_url must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        _config_error("ksm_url must not hold credentials (use ksm_headers with env)")
    if parts.fragment or (port is not None and not 0 < port < 65536):
        _config_error("ksm_url must be an http or https URL")
    return url


def _timeout(value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value <= MAX_KSM_TIMEOUT_S):
        _config_error(f"ksm_timeout_s must be a number of seconds, above 0 and at most "
                      f"{MAX_KSM_TIMEOUT_S:g}")
    return float(value)


def _ksm_headers(
    value: object, settings: LicenseSettings, env: Mapping[str, str]
) -> dict[str, str]:
    if not isinstance(value, Mapping):
        _config_error("ksm_headers must be a table")
    headers: dict[str, str] = {}
    for name, spec in value.items():
        where = f"ksm_headers.{name}" if _HEADER_NAME.fullmatch(str(name)) else "ksm_headers"
        if not isinstance(name, str) or _HEADER_NAME.fullmatch(name) is None:
            _config_error(f"{where}: not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            _config_error(f"{where}: this header is set by origin")
        if any(existing.lower() == name.lower() for existing in headers):
            _config_error(f"{where}: given twice")
        header_value = _header_value(spec, where, settings, env)
        if _HEADER_VALUE.fullmatch(header_value) is None:
            _config_error(f"{where}: the value is not a valid header value")
        headers[name] = header_value
    return headers


def _header_value(
    spec: object, where: str, settings: LicenseSettings, env: Mapping[str, str]
) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and set(spec) == {"env"} and isinstance(spec["env"], str):
        variable = spec["env"]
        secret = env.get(variable)
        if not secret:
            _config_error(f"{where}: environment variable {variable} is not set")
        return secret
    if isinstance(spec, Mapping) and set(spec) == {"file"} and isinstance(spec["file"], str):
        path = settings.resolve(spec["file"])
        raw = _read_file(path, where, MAX_SECRET_FILE_BYTES)
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            _config_error(f"{where}: {path} is not ASCII text")
    _config_error(f'{where} must be a string, {{env = "VAR"}} or {{file = "path"}}')


def _config_error(detail: str) -> NoReturn:
    raise ValueError(f"licence config: [{SECTION}] {detail}") from None


async def _fairplay_context(app: web.Application) -> AsyncIterator[None]:
    """Read ``[fairplay]``, build the KSM (one shared client session for an external one)."""
    config = await run_blocking(load_fairplay_config, app[SETTINGS_KEY], dict(os.environ))
    session: aiohttp.ClientSession | None = None
    if config is not None:
        ksm: Ksm
        if isinstance(config.ksm, ExternalKsmConfig):
            session = aiohttp.ClientSession()
            ksm = ExternalKsm(session, config.ksm.url, timeout_s=config.ksm.timeout_s,
                              headers=config.ksm.headers)
            log.info("FairPlay: external KSM %r", ksm)
        else:
            ksm = TestKsm(config.ksm.private_key)
            log.warning(
                "FairPlay: the TEST KSM is enabled. It is NOT Apple-compatible and for "
                "development only: no Apple device can use its CKCs"
            )
        app[FAIRPLAY_KEY] = FairPlay(certificate=config.certificate, ksm=ksm)
    try:
        yield
    finally:
        if session is not None:
            await session.close()


# --- routes -------------------------------------------------------------------------------------


async def fairplay_certificate(request: web.Request) -> web.Response:
    """The application certificate (DER), cacheable, with a strong ETag."""
    fairplay = _fairplay(request)
    certificate = fairplay.certificate
    headers = {
        hdrs.CACHE_CONTROL: CERTIFICATE_CACHE_CONTROL,
        hdrs.ETAG: certificate.etag,
        **fairplay.ksm.response_headers,
    }
    if _etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), certificate.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=certificate.der, content_type=CERTIFICATE_TYPE, headers=headers)


async def fairplay_license(request: web.Request) -> web.Response:
    """SPC → CKC: parse, look the key up, authorise, then (only then) ask the KSM."""
    fairplay = _fairplay(request)
    spc_request = parse_spc_request(
        await read_body(request, MAX_REQUEST_BYTES), request.headers.get(hdrs.CONTENT_TYPE)
    )
    content_id = spc_request.content_id or request.match_info.get("content_id")
    if content_id is None:
        content_id = next(
            (request.query[name] for name in QUERY_CONTENT_ID_FIELDS if name in request.query),
            None,
        )
    if content_id is None:
        raise BadRequest("content id is missing")
    kid = parse_content_id(content_id)
    offline = spc_request.offline or (
        "offline" in request.query and parse_offline_flag(request.query["offline"])
    )
    stored = await stored_key(request, kid)
    if stored is None:
        raise NotFound("unknown key id")
    license_type = LicenseType.PERSISTENT if offline else LicenseType.STREAMING
    # A token the origin wrote into the skd:// URI counts when the request carries none.
    token = player_token(request) or presented_token({}, skd_query(content_id))
    decision = await authorize(
        request,
        [KeyRequest(kid, stored.record.asset, KeySystem.FAIRPLAY, token, license_type)],
    )
    ckc = await fairplay.ksm.create_ckc(
        CkcRequest(
            spc=spc_request.spc,
            content_id=content_id,
            asset=stored.record.asset,
            key=stored.key,
            # The cbcs constant IV the origin encrypts with (origin.packaging.drm.constant_iv).
            iv=derive_iv(kid, "cbcs", "constant-iv"),
            license_type=decision.license_type,
            lease_duration_s=decision.license_duration_s,
            rental_duration_s=decision.rental_duration_s,
        )
    )
    response = build_ckc_response(ckc, spc_request.form)
    headers = CIMultiDict(NO_STORE)
    headers[hdrs.CONTENT_TYPE] = response.content_type
    headers.update(fairplay.ksm.response_headers)
    return web.Response(body=response.body, headers=headers)


def _fairplay(request: web.Request) -> FairPlay:
    fairplay = request.app.get(FAIRPLAY_KEY)
    if fairplay is None:
        raise NotFound("FairPlay is not configured")
    return fairplay


def _etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` (RFC 9110 §13.1.2): ``*`` or a list, compared weakly."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    candidates = (tag.strip() for tag in header.split(","))
    return any(tag.removeprefix("W/") == etag for tag in candidates)
