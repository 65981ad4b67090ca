"""``POST /license/widevine`` and ``POST /license/playready``: the upstream licence proxy.

Rules, in the order a request meets them:

1. No upstream configured for the key system → 404 "<system> licence server is not
   configured".
2. The body (at most ``MAX_CHALLENGE_BYTES``, else 413) is parsed for what it asks
   (``origin.license.challenge``); unreadable → 400, no key id → 400.
3. A Widevine service-certificate request carries no key: it goes upstream as it is.
4. Otherwise every kid must be in the keystore (else 404 "unknown key id") and the whole
   request passes ``authorize`` — token, policy, replay counter — before anything is sent
   upstream (401/403/503 otherwise).  Licence type: Widevine's own ``license_type``
   (OFFLINE and AUTOMATIC count as persistent); a PlayReady challenge has no standard
   signal, so ``?offline=1`` on the request asks for a persistent licence.
5. The challenge goes upstream unchanged (``origin.license.upstream``), with only the
   configured headers/query, the challenge's content type and, for PlayReady, the
   player's ``SOAPAction``.  A 2xx answer comes back as 200 with its body and content
   type, ``Cache-Control: no-store``; any other upstream status → 502
   ``{"error": "<system> licence server answered <status>", "upstream_status": <status>}``
   (the upstream body is never passed on); connection refused → 503; time-out → 504;
   an answer over 1 MiB → 502.

The Kaltura ``content_id`` is the asset of the first kid asked for (empty for a
certificate request).  Configuration is loaded and checked when the app starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from origin.errors import BadRequest, OriginError
from origin.license.app_state import NO_STORE, SETTINGS_KEY, run_blocking
from origin.license.challenge import (
    MAX_CHALLENGE_BYTES,
    WidevineLicenseType,
    WidevineMessageType,
    parse_playready_challenge,
    parse_widevine_challenge,
)
from origin.license.policy import KeySystem, LicenseType
from origin.license.request_authorization import authorize_kids, player_token
from origin.license.request_body import read_body
from origin.license.upstream import (
    UpstreamClient,
    UpstreamConfig,
    UpstreamNotConfigured,
    UpstreamRefused,
    build_upstream_request,
    load_upstream_configs,
    make_upstream_session,
)

log = logging.getLogger(__name__)

WIDEVINE_CONTENT_TYPE = "application/octet-stream"
PLAYREADY_CONTENT_TYPE = "text/xml; charset=utf-8"
_OFFLINE_VALUES = {"1": True, "true": True, "0": False, "false": False, "": False}


@dataclass(frozen=True)
class Upstreams:
    """The app's configured upstreams and the client that reaches them."""

    configs: Mapping[KeySystem, UpstreamConfig]
    client: UpstreamClient


UPSTREAMS_KEY = web.AppKey("license_upstreams", Upstreams)


def setup_upstreams(app: web.Application) -> None:
    """Add the Widevine/PlayReady proxy routes and the context that loads their config."""
    app.cleanup_ctx.append(_upstreams_context)
    app.router.add_post("/license/widevine", widevine_license)
    app.router.add_post("/license/playready", playready_license)


async def _upstreams_context(app: web.Application) -> AsyncIterator[None]:
    """Validate ``[widevine]``/``[playready]`` (fails startup) and open the shared session."""
    settings = app[SETTINGS_KEY]
    configs = await run_blocking(
        load_upstream_configs, settings.config, env=dict(os.environ), resolve=settings.resolve
    )
    session = make_upstream_session()
    app[UPSTREAMS_KEY] = Upstreams(configs, UpstreamClient(session))
    try:
        yield
    finally:
        await session.close()


async def widevine_license(request: web.Request) -> web.Response:
    """Proxy a Widevine ``SignedMessage`` once its kids pass the policy (module rules)."""
    config = _config(request, KeySystem.WIDEVINE)
    body = await read_body(request, MAX_CHALLENGE_BYTES)
    challenge = parse_widevine_challenge(body)
    asset = ""
    if challenge.message_type is WidevineMessageType.LICENSE_REQUEST:
        persistent = challenge.license_type is not WidevineLicenseType.STREAMING
        asset = await _authorize_kids(request, challenge.kids, KeySystem.WIDEVINE, persistent)
    return await _proxy(request, config, body, WIDEVINE_CONTENT_TYPE, asset)


async def playready_license(request: web.Request) -> web.Response:
    """Proxy a PlayReady ``AcquireLicense`` challenge once its kids pass the policy."""
    config = _config(request, KeySystem.PLAYREADY)
    persistent = _offline_param(request)
    body = await read_body(request, MAX_CHALLENGE_BYTES)
    challenge = parse_playready_challenge(body)
    asset = await _authorize_kids(request, challenge.kids, KeySystem.PLAYREADY, persistent)
    return await _proxy(request, config, body, PLAYREADY_CONTENT_TYPE, asset,
                        soap_action=request.headers.get("SOAPAction"))


def _config(request: web.Request, key_system: KeySystem) -> UpstreamConfig:
    config = request.app[UPSTREAMS_KEY].configs.get(key_system)
    if config is None:
        raise UpstreamNotConfigured(key_system)
    return config


def _offline_param(request: web.Request) -> bool:
    value = _OFFLINE_VALUES.get(request.query.get("offline", "").lower())
    if value is None:
        raise BadRequest("offline must be 0 or 1")
    return value


async def _authorize_kids(request: web.Request, kids: tuple[bytes, ...],
                          key_system: KeySystem, persistent: bool) -> str:
    """Look every kid up and authorise them all (``authorize_kids``); the asset of the
    first kid."""
    license_type = LicenseType.PERSISTENT if persistent else LicenseType.STREAMING
    keys = await authorize_kids(request, kids, key_system, license_type)
    return keys[0].record.asset


async def _proxy(request: web.Request, config: UpstreamConfig, body: bytes,
                 content_type: str, asset: str, *,
                 soap_action: str | None = None) -> web.Response:
    upstream_request = build_upstream_request(
        config, body, content_type=content_type, soap_action=soap_action,
        user_token=player_token(request), content_id=asset,
    )
    try:
        answer = await request.app[UPSTREAMS_KEY].client.exchange(
            config, upstream_request, default_content_type=content_type
        )
    except UpstreamRefused as exc:
        log.warning("%s", exc.detail)
        # The one error whose body says more than {"error": ...}: the upstream status.
        return web.json_response(
            {"error": exc.detail, "upstream_status": exc.upstream_status},
            status=exc.status, headers=NO_STORE,
        )
    except OriginError as exc:
        log.warning("%s", exc.detail)  # names the key system and the failure, nothing else
        raise
    response = web.Response(body=answer.body, headers=NO_STORE)
    response.headers[hdrs.CONTENT_TYPE] = answer.content_type
    return response
