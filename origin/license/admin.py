"""The licence module's admin API: content key policies and key records.

Routes (all ``Authorization: Bearer <admin token>``, ``ORIGIN_ADMIN_TOKEN``):

- ``GET /admin/v1/policies``: every stored policy, by asset.
- ``GET /admin/v1/policies/{asset}``: the asset's policy; ``"stored": false`` when
  the asset has none and the default applies.
- ``PUT /admin/v1/policies/{asset}``: store a policy (the ``ContentKeyPolicy.to_json``
  shape, checked by ``parse_policy``; 400 names the bad field).
- ``DELETE /admin/v1/policies/{asset}``: drop it (404 if none was stored).
- ``GET /admin/v1/assets/{asset}/keys``: key records, never key bytes.
- ``POST /admin/v1/assets/{asset}/keys/rotate``: a new active key; its record.

Rules: no admin token configured → 403 on every route (the API is off); a missing
or wrong token → 401 with ``WWW-Authenticate`` (compared in constant time).  The
internal API's token is a different secret and opens nothing here; startup fails
if both are set to the same value.  Bodies are capped at 64 KiB; every response
is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from origin.errors import BadRequest, Forbidden, NotFound, OriginError
from origin.license.app_state import KEYSTORE_KEY, NO_STORE, SETTINGS_KEY, run_blocking
from origin.license.bearer import require_bearer
from origin.license.clearkey import LicenseRequestTooLarge
from origin.license.keystore import KeyRecord, Keystore, validate_asset
from origin.license.policy import ContentKeyPolicy, parse_policy
from origin.license.request_body import read_body
from origin.license.strict_json import load_json

ADMIN_REALM = "origin-admin"
MAX_BODY_BYTES = 64 * 1024


class AdminRequestTooLarge(OriginError):
    status = 413
    reason = "request body too large"


def setup_admin(app: web.Application) -> None:
    """Add the admin routes; the app refuses to start if admin and internal tokens match."""
    app.cleanup_ctx.append(_check_tokens)
    app.router.add_get("/admin/v1/policies", list_policies)
    app.router.add_get("/admin/v1/policies/{asset}", get_policy)
    app.router.add_put("/admin/v1/policies/{asset}", put_policy)
    app.router.add_delete("/admin/v1/policies/{asset}", delete_policy)
    app.router.add_get("/admin/v1/assets/{asset}/keys", list_keys)
    app.router.add_post("/admin/v1/assets/{asset}/keys/rotate", rotate_key)


async def _check_tokens(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    if settings.admin_token is not None and hmac.compare_digest(
        settings.admin_token.encode("utf-8"), settings.internal_token.encode("utf-8")
    ):
        raise ValueError("ORIGIN_ADMIN_TOKEN must differ from ORIGIN_LICENSE_TOKEN")
    yield


def require_admin(request: web.Request) -> None:
    """403 if the admin API is off, 401 unless the request carries the admin token."""
    expected = request.app[SETTINGS_KEY].admin_token
    if expected is None:
        raise Forbidden("admin API disabled (set ORIGIN_ADMIN_TOKEN)")
    require_bearer(request, expected, realm=ADMIN_REALM, detail="admin token required")


def _asset(request: web.Request) -> str:
    return validate_asset(request.match_info["asset"])


async def list_policies(request: web.Request) -> web.Response:
    require_admin(request)
    policies = await run_blocking(request.app[KEYSTORE_KEY].policies)
    body = {"policies": {asset: policy.to_json() for asset, policy in policies.items()}}
    return web.json_response(body, headers=NO_STORE)


async def get_policy(request: web.Request) -> web.Response:
    require_admin(request)
    asset = _asset(request)
    policy, stored = await run_blocking(_policy_state, request.app[KEYSTORE_KEY], asset)
    return web.json_response(_policy_json(asset, policy, stored=stored), headers=NO_STORE)


async def put_policy(request: web.Request) -> web.Response:
    require_admin(request)
    asset = _asset(request)
    policy = parse_policy(_json_object(await _admin_body(request)))
    await run_blocking(request.app[KEYSTORE_KEY].set_policy, asset, policy)
    return web.json_response(_policy_json(asset, policy, stored=True), headers=NO_STORE)


async def delete_policy(request: web.Request) -> web.Response:
    require_admin(request)
    asset = _asset(request)
    if not await run_blocking(request.app[KEYSTORE_KEY].delete_policy, asset):
        raise NotFound("no policy stored for this asset")
    return web.json_response({"asset": asset, "deleted": True}, headers=NO_STORE)


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    asset = _asset(request)
    records = await run_blocking(request.app[KEYSTORE_KEY].records, asset)
    body = {"asset": asset, "keys": [record_json(r) for r in records]}
    return web.json_response(body, headers=NO_STORE)


async def rotate_key(request: web.Request) -> web.Response:
    require_admin(request)
    asset = _asset(request)
    record = await run_blocking(request.app[KEYSTORE_KEY].rotate, asset)
    return web.json_response({"asset": asset, "key": record_json(record)}, headers=NO_STORE)


def _policy_state(keystore: Keystore, asset: str) -> tuple[ContentKeyPolicy, bool]:
    """The asset's policy and whether it is stored (else the default).  Blocking."""
    stored = keystore.policies().get(asset)
    return (stored, True) if stored is not None else (keystore.policy(asset), False)


def _policy_json(asset: str, policy: ContentKeyPolicy, *, stored: bool) -> dict[str, Any]:
    return {"asset": asset, "stored": stored, "policy": policy.to_json()}


def record_json(record: KeyRecord) -> dict[str, Any]:
    """A key record for the API: ids, asset, creation time, state; never the key."""
    return {
        "kid": record.kid_hex,
        "kid_uuid": record.kid_uuid,
        "asset": record.asset,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "active": record.active,
    }


async def _admin_body(request: web.Request) -> bytes:
    try:
        return await read_body(request, MAX_BODY_BYTES)
    except LicenseRequestTooLarge:
        raise AdminRequestTooLarge() from None


def _json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body (strict JSON: ``load_json``); 400 otherwise."""
    try:
        data = load_json(body)
    except ValueError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data
