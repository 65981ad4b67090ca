"""Shared fixtures and helpers for the licence module's own tests (a pytest plugin:
tests/conftest.py).

``settings`` and ``policy`` are fixtures so a test can override either
(``@pytest.mark.parametrize("policy", [...])``); :func:`running_licence_app`
serves the real app on a free loopback port with the query-free access log, and
:func:`licence_app` does the same with a licence config table and yields a
:class:`Licence` client.  :func:`fetch_asset_key` asks the internal API for an
asset's key (creating it), the way the origin's ``KeyClient`` does.
``DenyingPolicy``, ``RecordingPolicy`` and ``BrokenPolicy`` are policy doubles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from origin.crypto.key import ContentKey
from origin.license.access_log import LicenseAccessLogger
from origin.license.app import build_license_app
from origin.license.keystore import Keystore
from origin.license.policy import (
    DEFAULT_POLICY,
    ContentKeyPolicy,
    Decision,
    Entitlement,
    KeyRequest,
    PolicyDecisionPoint,
)
from origin.license.settings import LicenseSettings
from tests.tools.loopback import serve_app

TOKEN = "internal-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path) -> LicenseSettings:
    return LicenseSettings(
        db_path=tmp_path / "keys.sqlite", kek=os.urandom(32), internal_token=TOKEN
    )


@pytest.fixture
def policy() -> PolicyDecisionPoint:
    return PolicyDecisionPoint()


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@contextlib.asynccontextmanager
async def running_licence_app(settings: LicenseSettings,
                              policy: PolicyDecisionPoint) -> AsyncIterator[str]:
    """The licence app on 127.0.0.1 (a free port); yields its base URL."""
    app = build_license_app(settings, policy=policy)
    async with serve_app(app, access_log_class=LicenseAccessLogger) as url:
        yield url


async def fetch_asset_key(session: aiohttp.ClientSession, url: str,
                          asset: str = "movie") -> ContentKey:
    """The asset's key from the internal API (created on first use); asserts a 200."""
    async with session.get(f"{url}/internal/v1/assets/{asset}/key", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    return ContentKey(kid=bytes.fromhex(body["kid"]), key=bytes.fromhex(body["key"]))


@dataclass
class LicenceClient:
    """A client session on a running licence app."""

    url: str
    session: aiohttp.ClientSession

    async def asset_key(self, asset: str = "movie") -> ContentKey:
        return await fetch_asset_key(self.session, self.url, asset)


@dataclass
class Licence(LicenceClient):
    """A client of a licence app started by :func:`licence_app`, with the app and its settings."""

    app: web.Application
    settings: LicenseSettings

    def set_policy(self, asset: str, policy: ContentKeyPolicy) -> None:
        with Keystore.open(self.settings.db_path, self.settings.kek) as keystore:
            keystore.set_policy(asset, policy)

    async def post(self, path: str, body: bytes, *, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None
                   ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        async with self.session.post(self.url + path, data=body, headers=headers,
                                     params=params) as resp:
            return resp.status, await resp.read(), resp.headers

    async def healthy(self) -> bool:
        async with self.session.get(self.url + "/healthz") as resp:
            return resp.status == 200 and await resp.text() == "ok"


@contextlib.asynccontextmanager
async def licence_app(settings: LicenseSettings, config: dict[str, Any],
                      policy: PolicyDecisionPoint | None = None) -> AsyncIterator[Licence]:
    """The licence app with ``config`` as its licence config, on loopback; a client of it."""
    settings = dataclasses.replace(settings, config=config)
    app = build_license_app(settings, policy=policy or PolicyDecisionPoint())
    async with serve_app(app, access_log_class=LicenseAccessLogger) as url, \
            aiohttp.ClientSession() as session:
        yield Licence(url, session, app, settings)


class DenyingPolicy(PolicyDecisionPoint):
    """Refuses every request ("token required")."""

    def decide(self, request: KeyRequest, policy: ContentKeyPolicy = DEFAULT_POLICY,
               entitlement: Entitlement | None = None) -> Decision:
        return Decision(allowed=False, reason="token required")


class RecordingPolicy(PolicyDecisionPoint):
    """The default policy, remembering every request it was asked about."""

    def __init__(self) -> None:
        self.requests: list[KeyRequest] = []

    def decide(self, request: KeyRequest, policy: ContentKeyPolicy = DEFAULT_POLICY,
               entitlement: Entitlement | None = None) -> Decision:
        self.requests.append(request)
        return super().decide(request, policy, entitlement)


class BrokenPolicy(PolicyDecisionPoint):
    """A policy with a bug: raises, with the request's token in the message (which must
    never reach a log or a body)."""

    def decide(self, request: KeyRequest, policy: ContentKeyPolicy = DEFAULT_POLICY,
               entitlement: Entitlement | None = None) -> Decision:
        raise RuntimeError(f"bug while holding token {request.token}")
