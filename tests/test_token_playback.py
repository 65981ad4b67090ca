"""Real clients play token-protected streams with nothing but the token in the manifest URL.

One origin (its own media copy and state) runs with a licence configuration that verifies
HS256 JWTs, and the asset's content key policy is switched to ``token`` through the admin
API, reached through the origin.  Tokens are minted with PyJWT, not with our own code.

- ffmpeg plays the AES-128 HLS stream frame-exact against the clear one, given only
  ``master.m3u8?token=…``: the origin copies the token into the media playlist URIs and the
  key URIs.  Without a token, with a token for another asset, or an expired one, ffmpeg
  cannot get the key and fails.
- Shaka Player in Chromium plays the DASH cenc stream through Clear Key with no licence URL
  configured — it takes the MPD's ``dashif:Laurl``, where the origin wrote the token — and
  fails without one (the licence route answers 401).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import jwt
import pytest

from tests.conftest import ROOT, RunningOrigin, start_origin
from tests.tools.browser import (
    BackgroundApp,
    BrowserDriver,
    browser_driver,
    harness_app,
    harness_url,
    missing_setup,
    playback_problems,
)

SECRET = "token-playback-test-secret-0123456789abcdef"
ADMIN = "admin-token-for-tests-0123456789"
ISSUER = "https://issuer.origin.test"
AUDIENCE = "origin-players"
PASS_DEADLINE = 45.0
FAIL_DEADLINE = 15.0


def mint(asset: str = "demo", *, ttl: int = 600, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl, "asset": asset,
               **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def token_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    tmp = tmp_path_factory.mktemp("token-origin")
    media = tmp / "media"
    shutil.copytree(ROOT / "media", media)
    config = tmp / "license.toml"
    config.write_text(
        f'[token]\nalgorithm = "HS256"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
    )
    origin = start_origin(media, tmp / "state", "--license-config", str(config),
                          env={"ORIGIN_JWT_SECRET": SECRET, "ORIGIN_ADMIN_TOKEN": ADMIN})
    try:
        asyncio.run(_set_token_policy(origin.base))
        yield origin
    finally:
        origin.stop()


async def _set_token_policy(base: str) -> None:
    async with aiohttp.ClientSession() as session, session.put(f"{base}/admin/v1/policies/demo",
                           json={"restriction": "token"},
                           headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200, await resp.text()


async def framemd5(url: str) -> tuple[int, list[str], str]:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url,
        "-map", "0", "-f", "framemd5", "-",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    frames = [ln for ln in out.decode().splitlines() if ln and not ln.startswith("#")]
    return proc.returncode or 0, frames, err.decode()


@pytest.mark.ffmpeg
async def test_ffmpeg_plays_with_only_the_token_in_the_manifest_url(
    token_origin: RunningOrigin
) -> None:
    base = token_origin.base
    rc, clear, err = await framemd5(f"{base}/hls/demo/clear/master-ts.m3u8")
    assert rc == 0, err
    assert len(clear) > 200
    rc, protected, err = await framemd5(f"{base}/hls/demo/aes128/master-ts.m3u8?token={mint()}")
    assert rc == 0, err
    assert protected == clear


@pytest.mark.ffmpeg
@pytest.mark.parametrize("query", [
    "",
    "?token=" + "not-a-jwt",
    "?token={other_asset}",
    "?token={expired}",
])
async def test_ffmpeg_fails_without_a_good_token(token_origin: RunningOrigin, query: str,
                                                 ) -> None:
    query = query.format(other_asset=mint("another-asset"), expired=mint(ttl=-120))
    rc, frames, err = await framemd5(f"{token_origin.base}/hls/demo/aes128/master-ts.m3u8{query}")
    # ffmpeg gets no key (401/403 from the key route) and stops with an error.
    assert rc != 0 or not frames, err
    assert "Unable to open key file" in err


async def test_key_route_statuses(token_origin: RunningOrigin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{token_origin.base}/api/assets/demo/playback") as resp:
            ctx = await resp.json()
        assert ctx["token_required"] is True
        key_url = next(s["key_url"] for s in ctx["key_systems"] if s["name"] == "aes128")
        for token, status in [(None, 401), ("garbage", 401), (mint("other"), 403),
                              (mint(), 200)]:
            params = {"token": token} if token else {}
            async with session.get(key_url, params=params) as resp:
                assert resp.status == status, await resp.text()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserDriver]:
    missing = missing_setup()
    assert not missing, f"run `make browser-deps` first; missing: {missing}"
    with browser_driver(tmp_path_factory.mktemp("browser") / "driver.log") as driver:
        yield driver


@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    with BackgroundApp(harness_app) as app:
        yield app.base


def test_shaka_plays_token_protected_clearkey_from_the_mpd_alone(
    token_origin: RunningOrigin, browser: BrowserDriver, harness: str
) -> None:
    base = token_origin.base
    url = f"{base}/dash/demo/cenc/manifest.mpd?token={mint()}"
    result = browser.play(harness_url(harness, player="shaka", url=url, drm="clearkey"),
                          deadline=PASS_DEADLINE)
    problems = playback_problems(result, base + "/license/clearkey?token=")
    assert not problems, f"{problems}\n{result.report()}"


@pytest.mark.parametrize("query", ["", "?token={other_asset}"])
def test_shaka_fails_without_a_good_token(token_origin: RunningOrigin, browser: BrowserDriver,
                                          harness: str, query: str) -> None:
    base = token_origin.base
    url = f"{base}/dash/demo/cenc/manifest.mpd" + query.format(other_asset=mint("other"))
    result = browser.play(harness_url(harness, player="shaka", url=url, drm="clearkey"),
                          deadline=FAIL_DEADLINE)
    assert playback_problems(result, base + "/license/clearkey"), result.report()
    statuses = {r.get("status") for r in (result.state or {}).get("licenceResources", [])}
    assert statuses & {401, 403}, result.report()

