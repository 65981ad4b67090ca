"""The test player page at ``/``, loaded and played in real Chromium, with a screenshot kept.

The page's own Shaka Player (served by the origin from the npm package in
``web/``) plays the demo as DASH cenc through the ClearKey licence route; the
check is the page's own view: playback past 3 s for 5 s, frames and audio
decoded, no player error, the licence request in its log, and its DRM
configuration shown.  The screenshot lands in ``test-artifacts/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.conftest import ROOT, RunningOrigin
from tests.tools.browser import BrowserDriver, browser_driver, missing_setup

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserDriver]:
    missing = missing_setup()
    assert not missing, f"run `make browser-deps` first; missing: {missing}"
    with browser_driver(tmp_path_factory.mktemp("page") / "driver.log") as driver:
        yield driver


@pytest.mark.parametrize(("fmt", "scheme", "url"), [
    ("dash", "cenc", "/dash/demo/cenc/manifest.mpd"),
    ("hls", "aes128", "/hls/demo/aes128/master.m3u8"),
])
def test_player_page_plays_and_shows_its_licence_log(
    browser: BrowserDriver, origin_server: RunningOrigin, fmt: str, scheme: str, url: str
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"player-page-{fmt}-{scheme}.png"
    shot.unlink(missing_ok=True)
    page = f"{origin_server.base}/?" + urlencode({"play": url, "format": fmt, "scheme": scheme})
    result = browser.play(page, deadline=60, min_time=3.0, min_wall=5.0, screenshot=shot)
    state = result.state
    assert state is not None, result.report()
    assert not result.timed_out, result.report()
    assert state["errors"] == [], result.report()
    assert state["currentTime"] > 3 and state["frames"] > 0 and state["audioDecodedBytes"] > 0
    assert state["catalogRows"] >= 3  # the catalog: a row per manifest
    assert state["licenceLogLines"] >= 1
    wanted = "/license/clearkey" if scheme == "cenc" else "/license/aes128/"
    assert any(wanted in r["uri"] for r in state["licenceRequests"]), result.report()
    if scheme == "cenc":
        assert json.loads(state["drmConfig"])["drm"]["servers"]["org.w3.clearkey"].endswith(
            "/license/clearkey")
    assert shot.is_file() and shot.stat().st_size > 10_000
