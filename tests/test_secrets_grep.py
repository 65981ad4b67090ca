"""Secrets never leak: one full run of a real ``origin serve``, then grep everything it wrote.

The run: ``origin serve --workers 2 --audit-log …`` with a token policy on the demo asset
(HS256 JWTs), FairPlay with the test KSM, Widevine and PlayReady proxied to a fake
upstream licence server on loopback, an admin token and a metrics token.  It exercises
every scheme's playlists and segments (HLS and DASH), every licence route, bad tokens of
several kinds in every place a token travels, the admin API, ``/metrics``, errors (400,
401, 403, 404, 416, 502 broken media) and the CLI (``keys list/show/export/backup``,
``token mint``, ``policy show``).

The secrets: every content key in the keystore at the end (read with the KEK, and
checked against the internal API), every token used (player JWTs — minted here and by
``origin token mint`` — the admin token, the metrics token, the internal token, read
from the licence process's environment), the JWT secret, the KEK, the upstream API key.
Each is searched in every spelling — raw bytes, hex lower/upper, base64 and base64url
(padded, unpadded, and at the three byte alignments it can take inside a longer
encoding), URL-encoded, and a JWT's signature alone — in: the origin's stdout and
stderr (workers' and licence module's included), the audit log, every file under the
state dir while it runs and after it stopped (bar the keystore and the KEK file, which
hold keys by design and must be 0600), every HTTP error body and every response header,
``/metrics``, ``repr()``/``str()`` of the settings objects, and every CLI output (bar the
token ``token mint`` prints by design).  The exported CPIX file and the backup hold keys
by design: they must be 0600.  Nothing may be found.

The grep can fail: a negative control plants secrets in a scratch log, in each spelling,
and must see every one caught; and the same needles find the keys and tokens where they
are meant to be (a key route's answer, a playlist written for ``?token=``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import jwt
import pytest
from aiohttp import web

from origin.config import CacheSettings, LicenseEndpoint, OriginSettings, TlsFiles
from origin.crypto.key import ContentKey
from origin.http.metrics import MetricsConfig
from origin.license.audit import DecisionRecorder
from origin.license.keystore import Keystore
from origin.license.metrics import LicenseMetrics
from origin.license.policy import KeyRequest, KeySystem
from origin.license.settings import LicenseSettings, load_kek, load_license_config
from origin.license.token import JwtVerifier, parse_token_settings
from origin.supervisor import LicenseProcess
from origin.worker import WorkerSpec
from origin.workers import PoolPlan
from tests.conftest import DEMO, ROOT, RunningOrigin, child_pids, start_origin
from tests.test_license_upstream import (
    SOAP_ACTION,
    playready_challenge,
    widevine_pssh_request,
    wrmheader,
)
from tests.tools.fairplay import build_test_spc, make_credentials

ISSUER = "https://issuer.secrets.test"
AUDIENCE = "secrets-players"
CLI_TIMEOUT = 120.0
UPSTREAM_LICENCE = b"\x08\x02\x12\x10upstream-licence"
NEEDLE_MIN = 12  # no needle shorter than this (all secrets are ≥ 16 bytes)


# --- the grep -------------------------------------------------------------------------------


def _b64_spellings(data: bytes) -> set[bytes]:
    """Base64 and base64url of ``data``: whole (padded and not) and, for each of the three
    byte alignments it can have inside a longer encoding, the characters that depend on
    ``data`` alone."""
    found: set[bytes] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data)
        found |= {whole, whole.rstrip(b"=")}
        for shift in range(3):
            encoded = encode(b"\0" * shift + data)
            head = 4 if shift else 0
            tail = 4 if (shift + len(data)) % 3 else 0
            found.add(encoded[head:len(encoded) - tail])
    return found


def spellings(secret: bytes, *, text: bool) -> dict[str, bytes]:
    """Every spelling of ``secret`` the grep looks for, by kind."""
    forms: dict[str, bytes] = {"raw": secret, "hex": secret.hex().encode(),
                               "HEX": secret.hex().upper().encode()}
    for index, form in enumerate(sorted(_b64_spellings(secret))):
        forms[f"base64#{index}"] = form
    if text:
        value = secret.decode()
        forms["url-encoded"] = quote(value, safe="").encode()
        forms["form-encoded"] = quote_plus(value).encode()
        if value.count(".") == 2:  # a JWT: its signature alone is enough to forge nothing,
            forms["jwt-signature"] = value.rsplit(".", 1)[1].encode()  # but still a leak
    return {kind: form for kind, form in forms.items() if len(form) >= NEEDLE_MIN}


@dataclass
class SecretSet:
    """The run's secrets and their spellings."""

    needles: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def add_bytes(self, label: str, secret: bytes) -> None:
        self.needles[label] = spellings(secret, text=False)

    def add_text(self, label: str, secret: str) -> None:
        self.needles[label] = spellings(secret.encode(), text=True)

    def find(self, blob: bytes) -> list[tuple[str, str]]:
        """(secret label, spelling kind) of every secret spelling in ``blob``."""
        return [(label, kind) for label, forms in self.needles.items()
                for kind, form in forms.items() if form in blob]


def grep(corpus: Iterable[tuple[str, bytes]], found_in: SecretSet) -> list[str]:
    """``where: secret (spelling)`` for every hit in the corpus."""
    return [f"{where}: {label} ({kind})" for where, blob in corpus
            for label, kind in found_in.find(blob)]


def test_grep_catches_planted_secrets(tmp_path: Path) -> None:
    """Negative control: every spelling planted in a scratch log is caught; a clean log
    is clean."""
    key = os.urandom(16)
    token = jwt.encode({"sub": "x", "exp": 2_000_000_000}, secrets.token_bytes(32),
                       algorithm="HS256")
    found_in = SecretSet()
    found_in.add_bytes("content key", key)
    found_in.add_text("player token", token)
    scratch = tmp_path / "scratch.log"
    clean = b"2024-01-01 INFO origin: GET /license/aes128/<kid> 200\n"
    scratch.write_bytes(clean)
    assert grep([("scratch", scratch.read_bytes())], found_in) == []
    plants = {
        "raw": b"key=" + key,
        "hex": f"key {key.hex()}".encode(),
        "HEX": f"KEY={key.hex().upper()}".encode(),
        "base64": b"k:" + base64.b64encode(key),
        "base64url, unpadded": b"k=" + base64.urlsafe_b64encode(key).rstrip(b"="),
        # inside a longer base64 blob, at each alignment
        "blob+1": base64.b64encode(b"x" + key + b"yyyy"),
        "blob+2": base64.urlsafe_b64encode(b"xy" + key + b"z"),
        "token": f"GET /license/aes128/k?token={token}".encode(),
        "url-encoded token": f"ks={quote(token + '==', safe='')}".encode(),
        "signature only": b"sig " + token.rsplit(".", 1)[1].encode(),
        "custom_data": base64.b64encode(json.dumps({"user_token": token}).encode()),
    }
    for name, line in plants.items():
        scratch.write_bytes(clean + line + b"\n")
        assert grep([("scratch", scratch.read_bytes())], found_in), name


# --- the fake upstream licence server -------------------------------------------------------


@dataclass
class FakeUpstream:
    """Widevine/PlayReady upstream on loopback: answers a licence, records what it got."""

    received: list[bytes] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{system}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.read())
        return web.Response(body=UPSTREAM_LICENCE, content_type="application/octet-stream")


@contextlib.asynccontextmanager
async def serve_upstream(fake: FakeUpstream) -> AsyncIterator[str]:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# --- the run --------------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Client:
    """Every request of the run, through one session; every answer is kept."""

    base: str
    session: aiohttp.ClientSession
    exchanges: list[Exchange] = field(default_factory=list)

    async def call(self, method: str, path: str, *, expect: int | None = None,
                   **kwargs: Any) -> Exchange:
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            body = await resp.read()
            exchange = Exchange(method, path.split("?")[0], resp.status,
                                list(resp.headers.items()), body)
        self.exchanges.append(exchange)
        if expect is not None:
            assert resp.status == expect, (method, path, resp.status, body[:200])
        return exchange


@dataclass(frozen=True)
class Tokens:
    secret: str
    admin: str
    metrics: str
    upstream_key: str


def mint(secret: str, asset: str = "demo", *, ttl: int = 600, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl,
                       "asset": asset, **claims}, secret, algorithm="HS256")


def write_config(folder: Path, upstream: str) -> Path:
    creds = make_credentials()
    (folder / "fps.cer").write_bytes(creds.cert_der)
    (folder / "fps.key").write_bytes(creds.key_pem)
    (folder / "fps.key").chmod(0o600)
    config = folder / "license.toml"
    config.write_text(
        f'[token]\nalgorithm = "HS256"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n\n'
        '[fairplay]\ncertificate_file = "fps.cer"\nksm = "test"\n'
        'test_private_key_file = "fps.key"\n\n'
        f'[widevine]\nurl = "{upstream}/widevine"\n'
        'headers = { "X-Api-Key" = { env = "SECRETS_TEST_UPSTREAM_KEY" } }\n\n'
        f'[playready]\nurl = "{upstream}/playready"\n'
        'headers = { "X-Api-Key" = { env = "SECRETS_TEST_UPSTREAM_KEY" } }\n'
    )
    return config


def make_media(root: Path) -> Path:
    """The demo asset, and ``broken``: the demo with a truncated CMAF segment (502)."""
    shutil.copytree(DEMO, root / "demo")
    shutil.copytree(DEMO, root / "broken")
    segment = root / "broken" / "video-360p" / "seg-00002.m4s"
    segment.write_bytes(segment.read_bytes()[:1000])
    return root


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def exercise(client: Client, tokens: Tokens, cli_token: str, cert_der: bytes
                   ) -> dict[str, Any]:
    """The whole workload; returns what the checks need."""
    good = mint(tokens.secret, sub="viewer-1", jti=secrets.token_hex(8))
    offline_good = mint(tokens.secret, offline=True)
    admin = {"Authorization": f"Bearer {tokens.admin}"}

    # The admin API (through the origin): the demo asset needs a token from here on.
    await client.call("PUT", "/admin/v1/policies/demo", expect=200, headers=admin,
                      json={"restriction": "token", "persistent": False})
    await client.call("GET", "/admin/v1/policies", expect=200, headers=admin)
    await client.call("GET", "/admin/v1/policies/demo", expect=200, headers=admin)
    await client.call("GET", "/admin/v1/assets/demo/keys", expect=200, headers=admin)
    await client.call("POST", "/admin/v1/assets/broken/keys/rotate", expect=200,
                      headers=admin)
    await client.call("GET", "/admin/v1/policies", expect=401,
                      headers={"Authorization": f"Bearer {tokens.admin[::-1]}"})
    await client.call("GET", "/admin/v1/policies", expect=401)
    await client.call("PUT", "/admin/v1/policies/demo", expect=400, headers=admin,
                      json={"restriction": "token", "secret": tokens.admin})

    # Every scheme's playlists and segments, HLS and DASH, with the token in the URL.
    query = {"token": good}
    playlists: dict[str, bytes] = {}
    for scheme, master, rendition, segment in (
        ("clear", "master.m3u8", "video-360p", "seg-00001.m4s"),
        ("aes128", "master.m3u8", "video-360p", "seg-00001.m4s"),
        ("aes128", "master-ts.m3u8", "ts-360p", "seg-00001.ts"),
        ("sample-aes", "master-ts.m3u8", "ts-360p", "seg-00001.ts"),
        ("cbcs", "master.m3u8", "video-360p", "seg-00001.m4s"),
        ("cenc", "master.m3u8", "audio-en", "seg-00001.m4s"),
    ):
        base = f"/hls/demo/{scheme}"
        await client.call("GET", f"{base}/{master}", expect=200, params=query)
        media = await client.call("GET", f"{base}/{rendition}/index.m3u8", expect=200,
                                  params=query)
        playlists[f"{scheme}/{rendition}"] = media.body
        if segment.endswith(".m4s"):
            await client.call("GET", f"{base}/{rendition}/init.mp4", expect=200)
        await client.call("GET", f"{base}/{rendition}/{segment}", expect=200)
    for scheme in ("clear", "cenc", "cbcs"):
        await client.call("GET", f"/dash/demo/{scheme}/manifest.mpd", expect=200, params=query)
        await client.call("GET", f"/dash/demo/{scheme}/video-360p/seg-00002.m4s", expect=200)
    await client.call("GET", "/api/assets", expect=200)
    playback = await client.call("GET", "/api/assets/demo/playback", expect=200,
                                 headers={"Authorization": f"Bearer {good}"})
    kid_hex = json.loads(playback.body)["key_systems"][0]["key_url"].split("/")[-1][:32]
    kid = bytes.fromhex(kid_hex)

    # Every licence route, granted: the token in each place a player puts it.
    key = (await client.call("GET", f"/license/aes128/{kid_hex}", expect=200,
                             params={"token": good})).body
    await client.call("GET", f"/license/aes128/{kid_hex}", expect=200,
                      headers={"Authorization": f"Bearer {cli_token}"})
    await client.call("GET", f"/license/aes128/{kid_hex}", expect=200, params={"ks": good})
    await client.call("POST", "/license/clearkey", expect=200, params={"token": good},
                      json={"kids": [b64url(kid)], "type": "temporary"})
    await client.call("POST", "/license/clearkey", expect=200, params={"token": offline_good},
                      json={"kids": [b64url(kid)], "type": "temporary"})
    await client.call("GET", "/license/fairplay/certificate", expect=200)
    skd = f"skd://{kid_hex}?token={quote(good, safe='')}"
    # The SPC names the key (skd://kid); the form's assetId is the whole skd:// URI the
    # playlist wrote, token included (what Safari sends).
    spc = build_test_spc(cert_der, f"skd://{kid_hex}", os.urandom(16), os.urandom(16))
    await client.call("POST", "/license/fairplay", expect=200,
                      data=f"spc={quote(base64.b64encode(spc).decode(), safe='')}"
                           f"&assetId={quote(skd, safe='')}",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    await client.call("POST", f"/license/fairplay/{kid_hex}", expect=200,
                      params={"token": good}, data=spc,
                      headers={"Content-Type": "application/octet-stream"})
    await client.call("POST", "/license/widevine", expect=200, params={"token": good},
                      data=widevine_pssh_request(kid))
    custom_data = base64.b64encode(json.dumps({"user_token": good}).encode()).decode()
    await client.call("POST", "/license/widevine", expect=200,
                      params={"custom_data": custom_data}, data=widevine_pssh_request(kid))
    await client.call("POST", "/license/playready", expect=200,
                      headers={"Authorization": f"Bearer {good}", "SOAPAction": SOAP_ACTION,
                               "Content-Type": "text/xml; charset=utf-8"},
                      data=playready_challenge(wrmheader(kid, "4.0")))

    # Bad tokens of several kinds, on every route (401 does not verify, 403 does not cover).
    expired = mint(tokens.secret, ttl=-600)
    forged = mint(secrets.token_urlsafe(32))
    other_asset = mint(tokens.secret, "another-asset", sub="viewer-2")
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600,
                           "asset": "demo"}, None, algorithm="none")
    wrong_audience = mint(tokens.secret, aud="someone-else")
    bad = {expired: 401, forged: 401, unsigned: 401, wrong_audience: 401,
           "garbage-token-" + secrets.token_hex(16): 401, other_asset: 403}
    for token, status in bad.items():
        await client.call("GET", f"/license/aes128/{kid_hex}", expect=status,
                          params={"token": token})
        await client.call("POST", "/license/clearkey", expect=status,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"kids": [b64url(kid)]})
        await client.call("POST", "/license/widevine", expect=status, params={"ks": token},
                          data=widevine_pssh_request(kid))
    await client.call("GET", f"/license/aes128/{kid_hex}", expect=401)
    too_long = good + "x" * 9000  # past the request-line limit: aiohttp's own 400
    bad[too_long] = 400
    assert (await client.call("GET", f"/license/aes128/{kid_hex}",
                              params={"token": too_long})).status >= 400
    assert (await client.call("GET", f"/license/aes128/{kid_hex}",
                              headers={"Authorization": f"Bearer {too_long}"})).status >= 400
    await client.call("POST", "/license/playready", expect=401,
                      headers={"SOAPAction": SOAP_ACTION, "Content-Type": "text/xml"},
                      data=playready_challenge(wrmheader(kid, "4.0")))
    await client.call("POST", "/license/fairplay", expect=401,
                      data=json.dumps({"spc": base64.b64encode(spc).decode(),
                                       "assetId": f"skd://{kid_hex}?token={expired}"}),
                      headers={"Content-Type": "application/json"})
    await client.call("POST", "/license/clearkey", expect=403, params={"token": good},
                      json={"kids": [b64url(kid)], "type": "persistent-license"})

    # Errors: 400, 404, 416, 502; a token in a request that fails otherwise.
    await client.call("GET", "/license/aes128/not-a-kid", expect=400, params={"token": good})
    await client.call("GET", f"/license/aes128/{os.urandom(16).hex()}", expect=404,
                      params={"token": good})
    await client.call("POST", "/license/clearkey", expect=400, params={"token": good},
                      data=b'{"kids": "' + key + b'"}')
    await client.call("POST", "/license/widevine", expect=400, params={"token": good},
                      data=b"\xff" * 40)
    await client.call("GET", "/hls/nowhere/aes128/master.m3u8", expect=404,
                      params={"token": good})
    await client.call("GET", "/hls/demo/aes128/nothing.m3u8", expect=404, params={"token": good})
    await client.call("GET", "/hls/demo/aes128/master.m3u8", expect=400,
                      params={"token": good, "max_bitrate": "lots"})
    await client.call("GET", "/hls/demo/aes128/video-360p/seg-00001.m4s", expect=416,
                      headers={"Range": "bytes=99999999-"})
    await client.call("GET", "/hls/broken/cbcs/video-360p/seg-00002.m4s", expect=502,
                      params={"token": good})
    await client.call("GET", "/internal/v1/assets/demo/key", expect=404,
                      headers={"Authorization": f"Bearer {good}"})

    # /metrics: open with its token only.
    await client.call("GET", "/metrics", expect=401)
    await client.call("GET", "/metrics", expect=401, params={"token": tokens.metrics})
    await client.call("GET", "/metrics", expect=401,
                      headers={"Authorization": f"Bearer {good}"})
    metrics = await client.call("GET", "/metrics", expect=200,
                                headers={"Authorization": f"Bearer {tokens.metrics}"})
    return {"tokens": [good, offline_good, *bad], "key": key, "kid": kid,
            "playlists": playlists, "metrics": metrics.body}


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "origin", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=CLI_TIMEOUT, check=False,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, (argv, done.stderr)
    return done


def internal_token(origin: RunningOrigin) -> str:
    """The co-hosted licence module's internal token: random per run, in its environment."""
    for pid in child_pids(origin.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"license" in cmdline and b"serve" in cmdline:
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                name, _, value = entry.partition(b"=")
                if name == b"ORIGIN_LICENSE_TOKEN":
                    return value.decode()
    raise AssertionError("no licence module process")


def files_under(folder: Path, *, skip: set[Path]) -> list[tuple[str, bytes]]:
    """Every regular file below ``folder`` (sockets, FIFOs skipped), minus ``skip``."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path in skip or not path.is_file() or path.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError):  # a worker's file may go meanwhile
            found.append((str(path.relative_to(folder)), path.read_bytes()))
    return found


def setting_reprs(tokens: Tokens, state: Path, config: Path, internal: str, kek: bytes,
                  keys: list[ContentKey], player_token: str) -> list[tuple[str, bytes]]:
    """``repr`` and ``str`` of every settings object the run builds, with its secrets."""
    table = load_license_config(config)
    token_settings = parse_token_settings(table["token"], env={"ORIGIN_JWT_SECRET":
                                                               tokens.secret},
                                          resolve=lambda p: (config.parent / p).resolve())
    verifier = JwtVerifier(token_settings)
    endpoint = LicenseEndpoint("http://license", internal, str(state / "license.sock"))
    settings = OriginSettings(media_root=state, license=endpoint,
                              cache=CacheSettings(),
                              tls=TlsFiles(state / "cert.pem", state / "key.pem"))
    metrics = MetricsConfig(token=tokens.metrics, multiprocess_dir=state)
    objects: list[object] = [
        settings, endpoint, metrics,
        LicenseSettings(db_path=state / "keys.sqlite", kek=kek, internal_token=internal,
                        admin_token=tokens.admin, config=table, config_dir=config.parent),
        token_settings, verifier, verifier.verify(player_token, now=time.time()),
        PoolPlan(2, "127.0.0.1", 0, settings, state, 10.0, metrics_token=tokens.metrics),
        WorkerSpec(0, "127.0.0.1", 0, settings, metrics, 10.0),
        LicenseProcess(socket_path=state / "l.sock", state_dir=state, kek_file=None,
                       token=internal, license_config=config),
        DecisionRecorder(LicenseMetrics()),
        *keys,
        *(KeyRequest(k.kid, "demo", KeySystem.AES128, player_token) for k in keys),
    ]
    return [(f"repr({type(o).__name__})", f"{o!r}\n{o!s}".encode()) for o in objects]


async def test_nothing_the_run_wrote_holds_a_secret(tmp_path: Path) -> None:
    tokens = Tokens(secret=secrets.token_urlsafe(32), admin=secrets.token_urlsafe(24),
                    metrics=secrets.token_urlsafe(24), upstream_key=secrets.token_urlsafe(24))
    media = make_media(tmp_path / "media")
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    audit = tmp_path / "audit" / "audit.log"
    audit.parent.mkdir()
    env = {"ORIGIN_JWT_SECRET": tokens.secret, "ORIGIN_ADMIN_TOKEN": tokens.admin,
           "ORIGIN_METRICS_TOKEN": tokens.metrics,
           "SECRETS_TEST_UPSTREAM_KEY": tokens.upstream_key}
    store = ["--state-dir", str(state)]
    skip = {state / "keys.sqlite", state / "kek"}
    upstream = FakeUpstream()
    corpus: list[tuple[str, bytes]] = []
    async with serve_upstream(upstream) as upstream_url:
        config = write_config(tmp_path, upstream_url)
        cert_der = (tmp_path / "fps.cer").read_bytes()
        origin = start_origin(media, state, "--license-config", str(config),
                              "--audit-log", str(audit), env=env, workers=2)
        try:
            internal = internal_token(origin)
            minted = run_cli("token", "mint", "--license-config", str(config), "--asset",
                             "demo", "--ttl", "600", env=env)
            cli_token = minted.stdout.strip()
            assert cli_token.count(".") == 2 and minted.stdout == cli_token + "\n"
            corpus.append(("token mint stderr", minted.stderr.encode()))
            async with aiohttp.ClientSession() as session:
                client = Client(origin.base, session)
                seen = await exercise(client, tokens, cli_token, cert_der)
            assert len(upstream.received) >= 3  # Widevine and PlayReady reached upstream
            kid_hex = seen["kid"].hex()
            for argv in (["keys", "list", *store], ["keys", "show", kid_hex, *store],
                         ["keys", "export", "--asset", "demo", "--output",
                          str(out / "demo.cpix.xml"), *store],
                         ["keys", "backup", str(out / "backup.sqlite"), *store],
                         ["policy", "show", "demo", *store], ["policy", "list", *store]):
                done = run_cli(*argv)
                corpus.append((f"origin {' '.join(argv[:2])}", (done.stdout + done.stderr
                                                                ).encode()))
            # Every key, read with the KEK, agrees with the internal API's answer.
            kek = load_kek(env={}, kek_file=None, state_dir=state)
            with Keystore.open(state / "keys.sqlite", kek) as keystore:
                keys = [stored.key for record in keystore.records()
                        if (stored := keystore.get(record.kid)) is not None]
            connector = aiohttp.UnixConnector(path=str(next(state.glob("license-*.sock"))))
            async with aiohttp.ClientSession(connector=connector) as internal_api:
                for stored_key in keys:
                    async with internal_api.get(
                        f"http://license/internal/v1/keys/{stored_key.kid_hex}",
                        headers={"Authorization": f"Bearer {internal}"}) as resp:
                        assert resp.status == 200
                        assert bytes.fromhex((await resp.json())["key"]) == stored_key.key
            corpus += [(f"state (running) {name}", blob)
                       for name, blob in files_under(state, skip=skip)]
        finally:
            assert origin.stop() == 0
    corpus += [(f"state {name}", blob) for name, blob in files_under(state, skip=skip)]
    corpus.append(("origin stdout", "".join(origin.lines).encode()))
    corpus.append(("audit log", audit.read_bytes()))
    corpus += [(f"{e.method} {e.path} -> {e.status} body", e.body)
               for e in client.exchanges if e.status >= 400]
    corpus += [(f"{e.method} {e.path} -> {e.status} headers",
                "\n".join(f"{k}: {v}" for k, v in e.headers).encode())
               for e in client.exchanges]
    corpus.append(("/metrics", seen["metrics"]))
    corpus += setting_reprs(tokens, state, config, internal, kek, keys, cli_token)

    found_in = SecretSet()
    for stored_key in keys:
        found_in.add_bytes(f"content key {stored_key.kid_hex}", stored_key.key)
    for index, token in enumerate([*seen["tokens"], cli_token]):
        found_in.add_text(f"player token #{index}", token)
    found_in.add_text("admin token", tokens.admin)
    found_in.add_text("metrics token", tokens.metrics)
    found_in.add_text("internal token", internal)
    found_in.add_text("JWT secret", tokens.secret)
    found_in.add_text("upstream API key", tokens.upstream_key)
    found_in.add_bytes("KEK", kek)

    # The grep is not vacuous: the corpus is the real run, and the needles find the
    # secrets where they belong — the key in the key route's answer, the token in the
    # playlist written for ?token=.
    statuses = {e.status for e in client.exchanges}
    assert {200, 400, 401, 403, 404, 416, 502} <= statuses
    log = origin.log_text()
    assert "origin.audit: {" in log and "aiohttp.access" in log
    assert b"origin_license_decisions_total" in seen["metrics"]
    assert seen["key"] in {k.key for k in keys}
    assert ("content key " + seen["kid"].hex(), "raw") in found_in.find(seen["key"])
    assert any(label == "player token #0" for label, _ in
               found_in.find(seen["playlists"]["aes128/video-360p"]))
    audited = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {(a["key_system"], a["result"]) for a in audited} >= {
        ("aes128", "granted"), ("clearkey", "granted"), ("fairplay", "granted"),
        ("widevine", "granted"), ("playready", "granted"), ("aes128", "refused"),
        ("clearkey", "refused"), ("fairplay", "refused"), ("widevine", "refused"),
        ("playready", "refused")}

    leaks = grep(corpus, found_in)
    assert not leaks, "\n".join(leaks)

    # What holds keys by design is private.
    for path in (audit, state / "kek", state / "keys.sqlite", out / "demo.cpix.xml",
                 out / "backup.sqlite"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert found_in.find((out / "demo.cpix.xml").read_bytes())  # the CPIX has the keys


# --- KEK and keystore stay out of the repository --------------------------------------------


_SECRET_FILE = re.compile(r"(^|/)(kek([._-][^/]*)?|[^/]*\.kek|[^/]*\.sqlite(-wal|-shm)?"
                          r"|[^/]*\.sqlite\.bak-[^/]*)$", re.IGNORECASE)


def secret_like_files(paths: Iterable[str]) -> list[str]:
    """Paths that look like a KEK, a keystore or the state dir."""
    return [p for p in paths if _SECRET_FILE.search(p) or p.startswith("var/")]


def test_repository_holds_no_kek_or_keystore() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT,
                            check=True, timeout=60).stdout.decode().split("\0")
    assert len(listed) > 100  # the walk sees the repository
    assert secret_like_files(listed) == []
    # Control: the matcher does flag such names.
    assert secret_like_files(["var/kek", "x/keys.sqlite", "backup.sqlite-wal", "prod.kek",
                              "kek", "media/demo/master.m3u8"]) == [
        "var/kek", "x/keys.sqlite", "backup.sqlite-wal", "prod.kek", "kek"]


@pytest.mark.parametrize(("path", "ignored"), [
    ("var/keys.sqlite", True), ("var/kek", True), ("var/license.toml", True),
    ("origin/cli.py", False),  # control: git check-ignore can say no
])
def test_gitignore_covers_the_state_dir(path: str, ignored: bool) -> None:
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT,
                          timeout=60, check=False)
    assert done.returncode == (0 if ignored else 1)
    assert any(line.strip() in ("var/", "/var/", "var")
               for line in (ROOT / ".gitignore").read_text().splitlines())
