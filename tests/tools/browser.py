"""Real players in real Chromium: the pieces ``tests/test_browser_players.py`` puts together.

- :class:`BackgroundApp` runs an aiohttp application on a loopback port in its own thread
  (own event loop), so plain synchronous tests and module-scoped fixtures can use it.
- :func:`harness_app` serves the harness page and the three player libraries from
  ``tests/browser/node_modules`` — on its own port, so every request the players make to
  origin is cross-origin and origin's CORS is exercised for real.
- :func:`tampering_proxy` forwards everything to origin but answers licence and key requests
  with wrong keys: the negative control.
- :class:`BrowserDriver` talks JSON lines to ``tests/browser/driver.mjs`` (node +
  playwright-core driving ``/usr/bin/chromium``); one browser per test module.
- :func:`playback_problems` is the verdict: everything a run must show to count as played.

Nothing here sleeps to synchronise: servers report their port once bound, the driver
reports readiness on stdout, and the page is polled by the driver with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
NODE_MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")

# What the harness page may load: its own two files and one build of each player.
HARNESS_FILES = {
    "/harness.html": BROWSER_DIR / "harness.html",
    "/harness.js": BROWSER_DIR / "harness.js",
    "/lib/shaka-player.compiled.js":
        NODE_MODULES / "shaka-player" / "dist" / "shaka-player.compiled.js",
    "/lib/hls.min.js": NODE_MODULES / "hls.js" / "dist" / "hls.min.js",
    "/lib/dash.all.min.js": NODE_MODULES / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js",
}

# Pass criteria (the brief's): ≥ MIN_WALL s of wall time since playback started, the media
# clock past MIN_MEDIA_TIME, video frames and audio bytes decoded, no error, licence contacted.
MIN_MEDIA_TIME = 3.0
MIN_WALL = 5.0

WRONG_AES128_KEY = bytes.fromhex("42" * 16)


def missing_setup() -> list[str]:
    """What ``make browser-deps`` would install; an empty list when everything is there."""
    missing = [str(p) for p in HARNESS_FILES.values() if not p.is_file()]
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        missing.append(str(NODE_MODULES / "playwright-core"))
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    if shutil.which("node") is None:
        missing.append("node")
    return missing


def pinned_versions() -> dict[str, str]:
    """The exact versions ``tests/browser/package.json`` pins."""
    data = json.loads((BROWSER_DIR / "package.json").read_text())
    return dict(data["dependencies"])


def installed_version(package: str) -> str:
    data = json.loads((NODE_MODULES / package / "package.json").read_text())
    return str(data["version"])


class BackgroundApp:
    """An aiohttp application served on 127.0.0.1:<free port> from a thread of its own."""

    def __init__(self, factory: Callable[[], web.Application]) -> None:
        self._factory = factory
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base = ""

    def __enter__(self) -> BackgroundApp:
        self._thread.start()
        got = self._ready.get(timeout=30)
        if isinstance(got, BaseException):
            raise got
        self.base = got
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            runner = web.AppRunner(self._factory(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException as exc:
            self._ready.put(exc)
            raise
        port = runner.addresses[0][1]
        self._ready.put(f"http://127.0.0.1:{port}")
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


def harness_app() -> web.Application:
    """The harness page and the player libraries, nothing else."""

    async def serve(request: web.Request) -> web.StreamResponse:
        path = HARNESS_FILES.get(request.path)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    return app


# Response headers a proxy must not copy (hop-by-hop, or re-computed by aiohttp).
_DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
         "server", "date"}


@dataclass
class ProxyControl:
    """Switches the tampering proxy and counts what it answered itself (written by the proxy's
    thread, read by the test's; plain attribute updates under the GIL)."""

    tamper: bool = True
    wrong_keys_served: int = 0
    clearkey_kids: list[str] = field(default_factory=list)
    aes128_paths: list[str] = field(default_factory=list)


def wrong_key_for(kid: bytes) -> bytes:
    """A wrong content key, different for every key id."""
    return hashlib.sha256(b"wrong key " + kid).digest()[:16]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tampering_proxy(upstream: str, control: ProxyControl) -> Callable[[], web.Application]:
    """An app factory: forwards every request to ``upstream`` (origin) — with the proxy's own
    ``Host``, so absolute URLs origin writes point back at the proxy — except, while
    ``control.tamper`` is set:

    - ``POST /license/clearkey``: a well-formed EME Clear Key licence (JWK set) for exactly
      the key ids asked for, holding WRONG keys;
    - ``GET /license/aes128/{kid}``: 16 wrong bytes.
    """

    cors = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if control.tamper and (path == "/license/clearkey" or path.startswith("/license/aes128/")):
            if request.method == "OPTIONS":
                allow = {"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                         "Access-Control-Allow-Headers":
                             request.headers.get("Access-Control-Request-Headers", "*")}
                return web.Response(status=204, headers={**cors, **allow})
            if path.startswith("/license/aes128/"):
                control.aes128_paths.append(path)
                control.wrong_keys_served += 1
                return web.Response(body=WRONG_AES128_KEY, headers=cors,
                                    content_type="application/octet-stream")
            message = json.loads(await request.read())
            kids = [b64url_decode(k) for k in message.get("kids", [])]
            body = {"keys": [{"kty": "oct", "kid": b64url(kid), "k": b64url(wrong_key_for(kid))}
                             for kid in kids], "type": "temporary"}
            control.clearkey_kids += [k.hex() for k in kids]
            control.wrong_keys_served += len(kids)
            return web.json_response(body, headers=cors)
        drop = {"host", "connection", "content-length", "accept-encoding", "transfer-encoding"}
        forward = {k: v for k, v in request.headers.items() if k.lower() not in drop}
        forward["Host"] = request.host
        async with request.app[SESSION].request(
                request.method, upstream + request.rel_url.raw_path_qs, headers=forward,
                data=await request.read(), allow_redirects=False) as resp:
            body = await resp.read()
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROP}
        return web.Response(status=resp.status, body=body, headers=headers)

    async def session_ctx(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[SESSION].close()

    def factory() -> web.Application:
        app = web.Application()
        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    return factory


SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


@dataclass
class PlayResult:
    """One harness run: the page's final snapshot and what the browser said meanwhile."""

    timed_out: bool
    elapsed: float
    state: dict[str, Any] | None
    console: list[str]
    failed_requests: list[dict[str, str]]

    def report(self) -> str:
        """Everything worth reading when a check fails."""
        return json.dumps({"timedOut": self.timed_out, "elapsed": self.elapsed,
                           "state": self.state, "console": self.console[-40:],
                           "failedRequests": self.failed_requests[-20:]}, indent=1)


class BrowserDriver:
    """``node tests/browser/driver.mjs``: one Chromium, one fresh context per :meth:`play`."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.browser_version = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        log_file = log_path.open("w")
        self.proc = subprocess.Popen(
            ["node", str(BROWSER_DIR / "driver.mjs")], cwd=BROWSER_DIR,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
        )
        log_file.close()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        first = self._next(60)
        if not first.get("ready"):
            self.close()
            raise RuntimeError(f"browser driver failed: {first}\n{self.log_path.read_text()}")
        self.browser_version = str(first.get("browser", ""))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"browser driver silent for {timeout:.0f} s\n"
                               + self.log_path.read_text()) from None
        if line is None:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"browser driver exited ({self.proc.returncode})\n"
                               + self.log_path.read_text())
        result: dict[str, Any] = json.loads(line)
        return result

    def play(self, page: str, *, deadline: float, min_time: float = MIN_MEDIA_TIME,
             min_wall: float = MIN_WALL, screenshot: Path | None = None) -> PlayResult:
        assert self.proc.stdin is not None
        job: dict[str, object] = {"id": page, "page": page, "minTime": min_time,
                                  "minWall": min_wall, "deadline": deadline}
        if screenshot is not None:
            job["screenshot"] = str(screenshot)
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer = self._next(deadline + 60)
        if "fatal" in answer:
            raise RuntimeError(f"browser driver died: {answer['fatal']}")
        return PlayResult(bool(answer["timedOut"]), float(answer["elapsed"]), answer["state"],
                          list(answer["console"]), list(answer["failedRequests"]))

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._pump.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def browser_driver(log_path: Path) -> Iterator[BrowserDriver]:
    driver = BrowserDriver(log_path)
    try:
        yield driver
    finally:
        driver.close()


def harness_url(harness: str, *, player: str, url: str, drm: str, license_url: str = "") -> str:
    query = {"player": player, "url": url, "drm": drm}
    if license_url:
        query["license"] = license_url
    return f"{harness}/harness.html?{urlencode(query)}"


def playback_problems(result: PlayResult, licence_prefix: str | None) -> list[str]:
    """Why a run does not count as played; empty when it passed every check.

    ``licence_prefix``: a URL prefix at least one successful (HTTP 200) licence or key request
    must have gone to; ``None`` for clear content.
    """
    s = result.state
    if s is None:
        return ["the harness page never reported any state"]
    problems = []
    if result.timed_out:
        problems.append("deadline passed before the checks were met")
    if s["errors"]:
        problems.append(f"player errors: {s['errors']}")
    if s["mediaError"]:
        problems.append(f"media element error: {s['mediaError']}")
    if s["playingAt"] is None:
        problems.append("never started playing")
    elif s["wall"] - s["playingAt"] < MIN_WALL:
        problems.append(f"played {s['wall'] - s['playingAt']:.1f} s of wall time (< {MIN_WALL})")
    if not s["currentTime"] > MIN_MEDIA_TIME:
        problems.append(f"currentTime {s['currentTime']:.2f} ≤ {MIN_MEDIA_TIME}")
    if not s["totalVideoFrames"] > 0:
        problems.append("no video frame decoded")
    if not (s["audioDecodedBytes"] or 0) > 0:
        problems.append("no audio decoded")
    if licence_prefix is not None:
        hits = [r for r in s["licenceResources"]
                if r["url"].startswith(licence_prefix) and r["status"] == 200]
        if not hits:
            problems.append(f"no successful request to {licence_prefix} "
                            f"(saw {s['licenceResources']})")
    return problems
