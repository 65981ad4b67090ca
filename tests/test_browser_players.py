"""Real players in real Chromium play origin's streams with keys from origin's licence routes.

The Debian ``chromium`` runs headless under playwright-core (``tests/browser/driver.mjs``,
one browser for the module, a fresh context per run).  The harness page and the player
libraries (Shaka Player, hls.js, dash.js from ``tests/browser/node_modules``) come from a
separate loopback server, so every request to origin is cross-origin: CORS is exercised for
real, preflights included.  A run passes when, within its deadline, the player has played
for ≥ 5 s of wall time, the media clock is past 3 s, video frames and audio were decoded
(Chromium's own decoder counters), no player or media-element error was raised, and the
licence or key route was contacted successfully — seen by the page (Resource Timing, with
the HTTP status) and by origin (its access log).

Negative controls play the same streams through a tampering proxy that forwards everything
to origin but answers ``POST /license/clearkey`` with a well-formed JWK set holding wrong
keys and ``/license/aes128/…`` with wrong bytes: the harness must report failure.  The same
proxy with tampering off plays, so the failures are the keys' doing.

Shaka Player reaches Clear Key in HLS only through an ``identity`` key (its HLS parser does
not map ``org.w3.clearkey``); origin writes one under cenc by default and under cbcs when the
manifest is asked with ``key_systems=identity`` (by default it would break hls.js there).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import RunningOrigin
from tests.tools.browser import (
    BackgroundApp,
    BrowserDriver,
    PlayResult,
    ProxyControl,
    browser_driver,
    harness_app,
    harness_url,
    installed_version,
    missing_setup,
    pinned_versions,
    playback_problems,
    tampering_proxy,
)

PASS_DEADLINE = 45.0  # seconds; a good run is decided after ~6 s
FAIL_DEADLINE = 15.0  # more than a good run needs, and longer than the 12 s asset


@dataclass(frozen=True)
class Case:
    player: str      # shaka | hlsjs | dashjs
    fmt: str         # hls | dash
    scheme: str      # aes128 | cbcs | cenc
    playlist: str = "master.m3u8"

    @property
    def path(self) -> str:
        if self.fmt == "dash":
            return f"/dash/demo/{self.scheme}/manifest.mpd"
        if self.shaka_hls_identity and self.scheme == "cbcs":
            # Shaka Player reaches Clear Key in HLS only through an identity key, which origin
            # writes under cbcs on request (it would break hls.js there by default).
            return f"/hls/demo/{self.scheme}/{self.playlist}?key_systems=identity"
        return f"/hls/demo/{self.scheme}/{self.playlist}"

    @property
    def shaka_hls_identity(self) -> bool:
        return (self.player, self.fmt) == ("shaka", "hls") and self.scheme in ("cbcs", "cenc")

    @property
    def drm(self) -> str:
        # aes128: the player fetches the HLS key URI itself (AES-128, and SAMPLE-AES MPEG-TS,
        # which hls.js decrypts in software).
        return "aes128" if self.scheme in ("aes128", "sample-aes") else "clearkey"

    def licence_path(self) -> str:
        if self.drm == "aes128" or self.shaka_hls_identity:
            # Shaka reaches Clear Key in HLS through the identity key: the key route.
            return "/license/aes128/"
        return "/license/clearkey"

    def __str__(self) -> str:
        suffix = "-ts" if self.playlist == "master-ts.m3u8" else ""
        return f"{self.player}-{self.fmt}-{self.scheme}{suffix}"


PLAYS = [
    Case("shaka", "dash", "cenc"),
    Case("shaka", "dash", "cbcs"),
    Case("shaka", "hls", "cbcs"),
    Case("shaka", "hls", "cenc"),
    Case("shaka", "hls", "aes128"),
    Case("hlsjs", "hls", "aes128"),
    Case("hlsjs", "hls", "aes128", "master-ts.m3u8"),
    Case("hlsjs", "hls", "sample-aes", "master-ts.m3u8"),
    Case("hlsjs", "hls", "cbcs"),
    Case("hlsjs", "hls", "cenc"),
    Case("dashjs", "dash", "cenc"),
    Case("dashjs", "dash", "cbcs"),
]

TAMPERED = [
    Case("shaka", "dash", "cenc"),
    Case("shaka", "dash", "cbcs"),
    Case("shaka", "hls", "cbcs"),
    Case("shaka", "hls", "aes128"),
    Case("hlsjs", "hls", "aes128"),
    Case("hlsjs", "hls", "aes128", "master-ts.m3u8"),
    Case("hlsjs", "hls", "sample-aes", "master-ts.m3u8"),
    Case("hlsjs", "hls", "cbcs"),
    Case("hlsjs", "hls", "cenc"),
    Case("dashjs", "dash", "cenc"),
    Case("dashjs", "dash", "cbcs"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserDriver]:
    missing = missing_setup()
    assert not missing, f"run `make browser-deps` first; missing: {missing}"
    for package, version in pinned_versions().items():
        assert installed_version(package) == version, f"{package}: run `make browser-deps`"
    with browser_driver(tmp_path_factory.mktemp("browser") / "driver.log") as driver:
        yield driver


@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    with BackgroundApp(harness_app) as app:
        yield app.base


@pytest.fixture(scope="module")
def proxy(origin_server: RunningOrigin) -> Iterator[tuple[str, ProxyControl]]:
    control = ProxyControl()
    with BackgroundApp(tampering_proxy(origin_server.base, control)) as app:
        yield app.base, control


def play(browser: BrowserDriver, harness: str, base: str, case: Case, deadline: float
         ) -> PlayResult:
    licence = f"{base}/license/clearkey" if case.drm == "clearkey" else ""
    page = harness_url(harness, player=case.player, url=base + case.path, drm=case.drm,
                       license_url=licence)
    return browser.play(page, deadline=deadline)


def origin_licence_hits(origin: RunningOrigin, case: Case) -> int:
    """Successful licence/key requests in origin's access log (its own lines, which name the
    client address; the co-hosted licence module's lines don't)."""
    method = "GET" if case.licence_path().startswith("/license/aes128/") else "POST"
    pattern = re.compile(r'127\.0\.0\.1 "' + method + " " + re.escape(case.licence_path())
                         + r'[^"]*" 200 ')
    return len(pattern.findall(origin.log_text()))


@pytest.mark.parametrize("case", PLAYS, ids=str)
def test_player_plays_with_keys_from_origin(browser: BrowserDriver, harness: str,
                                            origin_server: RunningOrigin, case: Case) -> None:
    before = origin_licence_hits(origin_server, case)
    result = play(browser, harness, origin_server.base, case, PASS_DEADLINE)
    problems = playback_problems(result, origin_server.base + case.licence_path())
    assert not problems, f"{case}: {problems}\n{result.report()}"
    assert origin_licence_hits(origin_server, case) > before, "origin logged no licence request"


@pytest.mark.parametrize("case", TAMPERED, ids=str)
def test_player_fails_with_wrong_keys(browser: BrowserDriver, harness: str,
                                      proxy: tuple[str, ProxyControl], case: Case) -> None:
    """Wrong keys must fail the checks."""
    base, control = proxy
    control.tamper = True
    served = control.wrong_keys_served
    result = play(browser, harness, base, case, FAIL_DEADLINE)
    assert control.wrong_keys_served > served, f"the proxy served no wrong key\n{result.report()}"
    problems = playback_problems(result, base + case.licence_path())
    assert problems, f"{case} passed every check with wrong keys\n{result.report()}"


@pytest.mark.parametrize("case", [Case("hlsjs", "hls", "aes128"), Case("shaka", "dash", "cenc"),
                                  Case("dashjs", "dash", "cenc")], ids=str)
def test_tampering_proxy_is_faithful_when_not_tampering(
        browser: BrowserDriver, harness: str, proxy: tuple[str, ProxyControl], case: Case) -> None:
    """Through the same proxy with the real key and licence passed on, playback works: the
    negative controls fail because of the keys, not because of the proxy."""
    base, control = proxy
    control.tamper = False
    served = control.wrong_keys_served
    try:
        result = play(browser, harness, base, case, PASS_DEADLINE)
    finally:
        control.tamper = True
    assert control.wrong_keys_served == served
    problems = playback_problems(result, base + case.licence_path())
    assert not problems, f"{case} through the proxy: {problems}\n{result.report()}"
