"""Shared fixtures for the licence module's own tests (a pytest plugin: tests/conftest.py).

``settings`` and ``policy`` are fixtures so a test can override either
(``@pytest.mark.parametrize("policy", [...])``); :func:`running_licence_app`
serves the real app on a free loopback port with the query-free access log.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from origin.license.access_log import LicenseAccessLogger
from origin.license.app import build_license_app
from origin.license.policy import PolicyDecisionPoint
from origin.license.settings import LicenseSettings

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
    runner = web.AppRunner(build_license_app(settings, policy=policy),
                           access_log_class=LicenseAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
