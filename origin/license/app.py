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

The app's state lives under the typed keys of ``origin.license.app_state``; the keystore
is opened in a ``cleanup_ctx`` and every call to it runs in the default executor
(``run_blocking``).  Keys by id and policies are read through its ``KeyCache``
(``origin.license.key_cache``), which holds them while the keystore file is unchanged
(its one check, on the loop, reads SQLite's ``PRAGMA data_version``).  The internal
API's token is checked by ``origin.license.bearer``; the licence routes authorise
through ``origin.license.request_authorization``.  Serve the app
with ``access_log_class=LicenseAccessLogger`` (as ``origin.license.server`` does) so
query-string tokens stay out of the access log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from origin.crypto.key import ContentKey
from origin.errors import NotFound
from origin.license import clearkey
from origin.license.admin import setup_admin
from origin.license.app_state import (
    AUTHORIZER_KEY,
    DECISIONS_KEY,
    KEY_CACHE_KEY,
    KEYSTORE_KEY,
    METRICS_KEY,
    NO_STORE,
    POLICY_KEY,
    SETTINGS_KEY,
    VERIFIER_KEY,
    run_blocking,
)
from origin.license.audit import DecisionRecorder
from origin.license.authorization import Authorizer, TokenVerifierBox
from origin.license.bearer import require_bearer
from origin.license.fairplay_routes import setup_fairplay
from origin.license.key_cache import DataVersion, KeyCache
from origin.license.keystore import Keystore, StoredKey
from origin.license.kid import parse_kid_strict
from origin.license.metrics import LicenseMetrics
from origin.license.middleware import error_middleware
from origin.license.policy import KeyRequest, KeySystem, LicenseType, PolicyDecisionPoint
from origin.license.request_authorization import (
    authorize,
    authorize_kids,
    player_token,
    stored_key,
)
from origin.license.request_body import read_body
from origin.license.settings import LicenseSettings
from origin.license.token_setup import setup_token_verification
from origin.license.upstream_routes import setup_upstreams

INTERNAL_REALM = "origin-license"


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
    setup_token_verification(app)
    setup_admin(app)
    setup_fairplay(app)
    setup_upstreams(app)
    return app


async def _keystore_context(app: web.Application) -> AsyncIterator[None]:
    """Open the keystore (in the executor) for the app's lifetime; fails startup on a bad KEK."""
    settings = app[SETTINGS_KEY]
    keystore = await run_blocking(Keystore.open, settings.db_path, settings.kek)
    try:
        versions = await run_blocking(DataVersion.open, settings.db_path)
    except BaseException:
        await run_blocking(keystore.close)
        raise
    app[KEYSTORE_KEY] = keystore
    app[KEY_CACHE_KEY] = KeyCache(keystore, versions)
    app[AUTHORIZER_KEY] = Authorizer(keystore, app[VERIFIER_KEY], pdp=app[POLICY_KEY])
    try:
        yield
    finally:
        versions.close()
        await run_blocking(keystore.close)


async def aes128_key(request: web.Request) -> web.Response:
    """The AES-128 key (16 raw bytes) for an HLS key URI, if the policy allows it."""
    kid = _kid_param(request)
    stored = await stored_key(request, kid)
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
        await read_body(request, clearkey.MAX_REQUEST_BYTES)
    )
    license_type = (
        LicenseType.PERSISTENT
        if license_request.session_type is clearkey.SessionType.PERSISTENT_LICENSE
        else LicenseType.STREAMING
    )
    keys = await authorize_kids(request, license_request.kids, KeySystem.CLEARKEY, license_type)
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
    stored: StoredKey | None = await stored_key(request, kid)
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


def _kid_param(request: web.Request) -> bytes:
    return parse_kid_strict(request.match_info["kid"])


def _require_internal_token(request: web.Request) -> None:
    """Raise 401 unless the request carries the internal token (constant-time compare)."""
    require_bearer(request, request.app[SETTINGS_KEY].internal_token,
                   realm=INTERNAL_REALM, detail="unauthorized")


def _key_json(key: ContentKey) -> dict[str, str]:
    return {"kid": key.kid_hex, "key": key.key.hex()}
