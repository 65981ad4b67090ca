"""The licence module's own aiohttp application.

Routes:

- ``GET /license/aes128/{kid}``: the raw 16-byte AES-128 key for HLS players (proxied to
  by the origin); every request passes ``PolicyDecisionPoint.decide``.
- ``POST /license/clearkey``: a W3C EME Clear Key licence (JWK set) for the kids of an
  EME licence request (wire format in ``origin.license.clearkey``); every requested kid
  passes ``PolicyDecisionPoint.decide``; all or nothing (unknown kid → 404, any refusal
  → 403).
- ``GET /internal/v1/assets/{asset}/key``, ``GET /internal/v1/keys/{kid}``: the internal
  API the origin's ``KeyClient`` uses; ``Authorization: Bearer <internal token>``.
  The origin proxies ``/license/…`` only, so these are not reachable through it.
- ``GET /internal/v1/metrics``: this module's Prometheus metrics (licence decisions by
  key system, result and reason; ``origin.license.metrics``), internal token required;
  the origin appends them to its ``/metrics``.  ``authorize`` records every decision
  (counted and written to the ``origin.audit`` log: ``origin.license.audit``).
- ``GET /healthz``.

The keystore is opened in a ``cleanup_ctx`` and every call to it runs in the default
executor.  Serve the app with ``access_log_class=LicenseAccessLogger`` (as
``origin.license.server`` does) so query-string tokens stay out of the access log.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import AsyncIterator, Callable
from typing import ParamSpec, TypeVar

from aiohttp import hdrs, web

from origin.crypto.key import ContentKey
from origin.errors import Forbidden, NotFound, OriginError, Unauthorized
from origin.license import clearkey
from origin.license.audit import DecisionRecorder, Requester, describe_decision, requester_of
from origin.license.authorization import Authorizer, TokenVerifierBox, presented_token
from origin.license.keystore import Keystore, StoredKey
from origin.license.kid import parse_kid_strict
from origin.license.metrics import DecisionResult, LicenseMetrics
from origin.license.middleware import error_middleware
from origin.license.policy import (
    Decision,
    KeyRequest,
    KeySystem,
    LicenseType,
    PolicyDecisionPoint,
)
from origin.license.settings import LicenseSettings

P = ParamSpec("P")
T = TypeVar("T")

SETTINGS_KEY = web.AppKey("license_settings", LicenseSettings)
KEYSTORE_KEY = web.AppKey("license_keystore", Keystore)
POLICY_KEY = web.AppKey("license_policy", PolicyDecisionPoint)
AUTHORIZER_KEY = web.AppKey("license_authorizer", Authorizer)
VERIFIER_KEY = web.AppKey("license_token_verifier", TokenVerifierBox)
METRICS_KEY = web.AppKey("license_metrics", LicenseMetrics)
DECISIONS_KEY = web.AppKey("license_decisions", DecisionRecorder)

NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}


def build_license_app(
    settings: LicenseSettings, *, policy: PolicyDecisionPoint | None = None
) -> web.Application:
    """Build the licence app.  Nothing is opened until the app starts (``cleanup_ctx``)."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS_KEY] = settings
    app[POLICY_KEY] = policy if policy is not None else PolicyDecisionPoint()
    app[VERIFIER_KEY] = TokenVerifierBox()
    app[METRICS_KEY] = LicenseMetrics()
    app[DECISIONS_KEY] = DecisionRecorder(app[METRICS_KEY])
    app.cleanup_ctx.append(_keystore_context)
    app.router.add_get("/license/aes128/{kid}", aes128_key)
    app.router.add_post("/license/clearkey", clearkey_license)
    app.router.add_get("/internal/v1/assets/{asset}/key", internal_asset_key)
    app.router.add_get("/internal/v1/keys/{kid}", internal_key)
    app.router.add_get("/internal/v1/assets/{asset}/playback", internal_playback)
    app.router.add_get("/internal/v1/metrics", internal_metrics)
    app.router.add_get("/healthz", healthz)
    # Imported here: these modules use this one's app keys (an import cycle otherwise).
    from origin.license.admin import setup_admin
    from origin.license.fairplay_routes import setup_fairplay
    from origin.license.token_setup import setup_token_verification
    from origin.license.upstream_routes import setup_upstreams

    setup_token_verification(app)
    setup_admin(app)
    setup_fairplay(app)
    setup_upstreams(app)
    return app


async def _keystore_context(app: web.Application) -> AsyncIterator[None]:
    """Open the keystore (in the executor) for the app's lifetime; fails startup on a bad KEK."""
    settings = app[SETTINGS_KEY]
    keystore = await run_blocking(Keystore.open, settings.db_path, settings.kek)
    app[KEYSTORE_KEY] = keystore
    app[AUTHORIZER_KEY] = Authorizer(keystore, app[VERIFIER_KEY], pdp=app[POLICY_KEY])
    try:
        yield
    finally:
        await run_blocking(keystore.close)


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking call (SQLite, files) in the loop's default executor."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))


async def aes128_key(request: web.Request) -> web.Response:
    """The AES-128 key (16 raw bytes) for an HLS key URI, if the policy allows it."""
    kid = _kid_param(request)
    stored = await run_blocking(request.app[KEYSTORE_KEY].get, kid)
    if stored is None:
        raise NotFound("unknown key id")
    await authorize(
        request,
        [KeyRequest(kid, stored.record.asset, KeySystem.AES128, player_token(request))],
    )
    return web.Response(
        body=stored.key.key, content_type="application/octet-stream", headers=NO_STORE
    )


async def clearkey_license(request: web.Request) -> web.Response:
    """A Clear Key licence for every kid of the request, or an error and no key at all."""
    license_request = clearkey.parse_license_request(
        await _read_body(request, clearkey.MAX_REQUEST_BYTES)
    )
    found = await run_blocking(_get_keys, request.app[KEYSTORE_KEY], license_request.kids)
    if any(stored is None for stored in found):
        raise NotFound("unknown key id")
    keys = [stored for stored in found if stored is not None]
    token = player_token(request)
    license_type = (
        LicenseType.PERSISTENT
        if license_request.session_type is clearkey.SessionType.PERSISTENT_LICENSE
        else LicenseType.STREAMING
    )
    await authorize(
        request,
        [
            KeyRequest(s.key.kid, s.record.asset, KeySystem.CLEARKEY, token, license_type)
            for s in keys
        ],
    )
    licence = clearkey.build_license([s.key for s in keys], license_request.session_type)
    return web.Response(
        body=licence.to_json(), content_type=clearkey.CONTENT_TYPE, headers=NO_STORE
    )


async def internal_asset_key(request: web.Request) -> web.Response:
    """The key the origin encrypts an asset with; created on first use.  Internal API."""
    _require_internal_token(request)
    key = await run_blocking(request.app[KEYSTORE_KEY].active_key, request.match_info["asset"])
    return web.json_response(_key_json(key), headers=NO_STORE)


async def internal_key(request: web.Request) -> web.Response:
    """A key by id, with its asset.  Internal API."""
    _require_internal_token(request)
    kid = _kid_param(request)
    stored: StoredKey | None = await run_blocking(request.app[KEYSTORE_KEY].get, kid)
    if stored is None:
        raise NotFound("unknown key id")
    body = _key_json(stored.key) | {"asset": stored.record.asset}
    return web.json_response(body, headers=NO_STORE)


async def internal_playback(request: web.Request) -> web.Response:
    """What a player needs to know about an asset's licences: its key ids, its policy, and
    which licence services are configured.  Creates the asset's key on first use, like
    ``internal_asset_key``; never returns key bytes.  Internal API."""
    _require_internal_token(request)
    asset = request.match_info["asset"]
    keystore = request.app[KEYSTORE_KEY]
    key = await run_blocking(keystore.active_key, asset)
    policy = await run_blocking(keystore.policy, asset)
    settings = request.app[SETTINGS_KEY]
    configured = {
        name: settings.config.get(name) is not None for name in ("fairplay", "widevine",
                                                                  "playready")
    }
    body = {"kid": key.kid_hex, "policy": policy.to_json(), "configured": configured}
    return web.json_response(body, headers=NO_STORE)


async def internal_metrics(request: web.Request) -> web.Response:
    """This module's metrics in the Prometheus text format.  Internal API."""
    _require_internal_token(request)
    return web.Response(
        body=request.app[METRICS_KEY].render(),
        headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4; charset=utf-8", **NO_STORE},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or ``LicenseRequestTooLarge`` once it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise clearkey.LicenseRequestTooLarge()
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise clearkey.LicenseRequestTooLarge()
    return bytes(body)


def _get_keys(keystore: Keystore, kids: tuple[bytes, ...]) -> list[StoredKey | None]:
    """Look several keys up in one executor job."""
    return [keystore.get(kid) for kid in kids]


def _kid_param(request: web.Request) -> bytes:
    return parse_kid_strict(request.match_info["kid"])


def player_token(request: web.Request) -> str | None:
    """The token the player presented (``origin.license.authorization.presented_token``)."""
    return presented_token(request.headers, request.query)


async def authorize(request: web.Request, key_requests: list[KeyRequest]) -> Decision:
    """Run the ``Authorizer`` (in the executor); raises 401/403/503, else the decision.

    Every decision is recorded once, in the same executor job (``DecisionRecorder``):
    counted (``origin.license.metrics``) and written to the audit log
    (``origin.license.audit``) with its short fixed reason, before the response leaves.
    """
    return await run_blocking(
        _decide_and_record,
        request.app[AUTHORIZER_KEY],
        request.app[DECISIONS_KEY],
        key_requests,
        requester_of(request),
    )


def _decide_and_record(authorizer: Authorizer, recorder: DecisionRecorder,
                       key_requests: list[KeyRequest], requester: Requester) -> Decision:
    """Decide and record the decision (blocking: SQLite, the audit file)."""
    try:
        verdict = authorizer.settle(key_requests)
    except OriginError as exc:
        recorder.record(describe_decision(key_requests, requester, DecisionResult.ERROR,
                                          exc.detail, None))
        raise
    except Exception:
        recorder.record(describe_decision(key_requests, requester, DecisionResult.ERROR,
                                          OriginError.reason, None))
        raise
    if verdict.refusal is not None:
        refused = isinstance(verdict.refusal, (Unauthorized, Forbidden))
        result = DecisionResult.REFUSED if refused else DecisionResult.ERROR
        recorder.record(describe_decision(key_requests, requester, result,
                                          verdict.refusal.detail, verdict.token))
        raise verdict.refusal
    decision = verdict.outcome()
    recorder.record(describe_decision(key_requests, requester, DecisionResult.GRANTED,
                                      decision.reason, verdict.token))
    return decision


def _require_internal_token(request: web.Request) -> None:
    """Raise 401 unless the request carries the internal token (constant-time compare)."""
    presented = bearer_token(request)
    expected = request.app[SETTINGS_KEY].internal_token
    if presented is None or not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    ):
        raise web.HTTPUnauthorized(
            text='{"error": "unauthorized"}',
            content_type="application/json",
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="origin-license"', **NO_STORE},
        )


def _key_json(key: ContentKey) -> dict[str, str]:
    return {"kid": key.kid_hex, "key": key.key.hex()}
