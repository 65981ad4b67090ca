"""Player-token verification for the licence app: the ``[token]`` table → the app's verifier.

Without a ``[token]`` table the verifier stays unconfigured, and assets whose
policy is ``token`` answer 503 (``origin.license.authorization``).  A bad table
fails startup with a ``ValueError`` naming the field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from origin.license.app_state import SETTINGS_KEY, VERIFIER_KEY, run_blocking
from origin.license.token import JwtVerifier, parse_token_settings

log = logging.getLogger(__name__)


def setup_token_verification(app: web.Application) -> None:
    """Configure the app's token verifier when it starts (after the keystore opens)."""
    app.cleanup_ctx.append(_token_context)


async def _token_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    box = app[VERIFIER_KEY]
    table = settings.section("token")
    if table is not None:
        token_settings = await run_blocking(
            parse_token_settings, table, env=dict(os.environ), resolve=settings.resolve
        )
        box.verifier = JwtVerifier(token_settings)
        log.info(
            "player tokens: %s, issuer %r, audience %r",
            token_settings.algorithm.value,
            token_settings.issuer,
            token_settings.audience,
        )
    try:
        yield
    finally:
        box.verifier = None
