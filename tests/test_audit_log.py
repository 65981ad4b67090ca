"""The audit log of licence decisions (``origin.license.audit``).

The real licence app (``running_licence_app``) with HS256 player tokens and an audit file
attached: a grant, every refusal class (401 without a token, 401 for each way a token
fails to verify, 403 for a token that does not cover the request) and an error (503:
token checks not configured) each write exactly one JSON line with the fields the module
promises, and the decision counters agree with the lines.  Requests stopped before the
policy — 404 unknown key id, 400 malformed — write none (they are not decisions).  No
line ever holds a token or a key.  Then a real ``origin serve --audit-log`` writes the
file (0600) through its proxy, with the player's address and request id.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from origin.crypto.key import ContentKey
from origin.license.audit import (
    AUDIT_LOGGER,
    attach_audit_file,
    detach_audit_file,
    open_audit_file,
    requester_of,
)
from origin.license.keystore import Keystore
from origin.license.policy import ContentKeyPolicy, PolicyDecisionPoint, Restriction
from origin.license.settings import LicenseSettings
from tests.conftest import DEMO, ROOT, start_origin
from tests.tools.licence import AUTH, running_licence_app

SECRET = "audit-test-jwt-secret-0123456789abcdef"
ISSUER = "https://issuer.audit.test"
AUDIENCE = "audit-players"
FIELDS = {"time", "client", "key_system", "assets", "kids", "license_type", "result", "reason",
          "subject", "token_hash", "request_id"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def mint(asset: str = "movie", *, secret: str = SECRET, ttl: int = 600,
         **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl, "asset": asset,
               **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def expected_hash(token_id: str) -> str:
    return hashlib.sha256(token_id.encode()).hexdigest()[:16]


def hash_of_unverified(token: str) -> str:
    return expected_hash(hashlib.sha256(token.encode()).hexdigest())


@dataclass
class Audited:
    url: str
    session: aiohttp.ClientSession
    audit_file: Path
    settings: LicenseSettings
    seen: int = 0

    async def key(self, asset: str) -> ContentKey:
        async with self.session.get(f"{self.url}/internal/v1/assets/{asset}/key",
                                    headers=AUTH) as resp:
            assert resp.status == 200
            body = await resp.json()
        return ContentKey(kid=bytes.fromhex(body["kid"]), key=bytes.fromhex(body["key"]))

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes]:
        async with self.session.get(self.url + path, **kwargs) as resp:
            return resp.status, await resp.read()

    async def post(self, path: str, body: object, **kwargs: Any) -> tuple[int, bytes]:
        async with self.session.post(self.url + path, data=json.dumps(body), **kwargs) as resp:
            return resp.status, await resp.read()

    def new_lines(self) -> list[dict[str, Any]]:
        """The audit lines written since the last call (the line is written before the
        response is sent, so no waiting is needed)."""
        lines = self.audit_file.read_text().splitlines()
        fresh, self.seen = lines[self.seen:], len(lines)
        return [json.loads(line) for line in fresh]

    def one_line(self) -> dict[str, Any]:
        lines = self.new_lines()
        assert len(lines) == 1, lines
        line = lines[0]
        assert set(line) == FIELDS
        assert TIME.fullmatch(line["time"]), line["time"]
        return line

    async def decisions(self) -> dict[tuple[str, str, str], float]:
        async with self.session.get(f"{self.url}/internal/v1/metrics", headers=AUTH) as resp:
            text = await resp.text()
        found: dict[tuple[str, str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "origin_license_decisions_total":
                    labels = sample.labels
                    found[labels["key_system"], labels["result"], labels["reason"]] = \
                        sample.value
        return found


@contextlib.contextmanager
def audit_file(path: Path) -> Iterator[Path]:
    handler = attach_audit_file(path)
    try:
        yield path
    finally:
        detach_audit_file(handler)


@contextlib.asynccontextmanager
async def audited_app(settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
                      *, tokens: bool = True) -> AsyncIterator[Audited]:
    config = {"token": {"algorithm": "HS256", "issuer": ISSUER, "audience": AUDIENCE}}
    configured = dataclasses.replace(settings, config=config if tokens else {})
    with audit_file(tmp_path / "audit.log") as path:
        async with running_licence_app(configured, policy) as url, \
                aiohttp.ClientSession() as session:
            yield Audited(url, session, path, configured)


def set_policy(settings: LicenseSettings, asset: str, policy: ContentKeyPolicy) -> None:
    with Keystore.open(settings.db_path, settings.kek) as keystore:
        keystore.set_policy(asset, policy)


def assert_no_secrets(text: str, keys: list[ContentKey], tokens: list[str]) -> None:
    for key in keys:
        for form in (key.key.hex(), key.key.hex().upper(), base64.b64encode(key.key).decode(),
                     base64.urlsafe_b64encode(key.key).decode().rstrip("=")):
            assert form not in text
    for token in tokens:
        assert token not in text
        if token.count(".") == 2:
            assert token.split(".")[2] not in text  # not even the signature part


@pytest.fixture(autouse=True)
def jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORIGIN_JWT_SECRET", SECRET)


async def test_every_decision_class_writes_one_line(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
) -> None:
    async with audited_app(settings, policy, tmp_path) as app:
        free, movie = await app.key("free"), await app.key("movie")
        set_policy(app.settings, "movie", ContentKeyPolicy(restriction=Restriction.TOKEN))
        assert app.new_lines() == []  # the internal API decides nothing

        # A grant under the open policy: no token, nothing to hash.
        status, body = await app.get(f"/license/aes128/{free.kid_hex}")
        assert status == 200 and body == free.key
        line = app.one_line()
        assert line | {"time": "-"} == {
            "time": "-", "client": "127.0.0.1", "key_system": "aes128", "assets": ["free"],
            "kids": [free.kid_hex], "license_type": "streaming", "result": "granted",
            "reason": "open policy", "subject": None, "token_hash": None, "request_id": None}

        # A grant under the token policy: the subject and the jti's hash; the player's
        # address from X-Forwarded-For (the peer is loopback), the request id.
        good = mint(sub="viewer-42", jti="jti-good-1")
        status, body = await app.get(
            f"/license/aes128/{movie.kid_hex}", params={"token": good},
            headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9",
                     "X-Request-Id": "cdn-req:7f3a.1"})
        assert status == 200 and body == movie.key
        line = app.one_line()
        assert (line["result"], line["reason"]) == ("granted", "token policy")
        assert (line["subject"], line["token_hash"]) == ("viewer-42", expected_hash("jti-good-1"))
        assert (line["client"], line["request_id"]) == ("203.0.113.9", "cdn-req:7f3a.1")

        # 401: no token; then tokens that do not verify, each with its fixed reason and
        # the hash of the token it could not read (never the token).
        status, _ = await app.get(f"/license/aes128/{movie.kid_hex}")
        assert status == 401
        line = app.one_line()
        assert (line["result"], line["reason"], line["token_hash"]) == (
            "refused", "a token is required", None)
        bad_tokens = {
            "not-a-jwt": "malformed token",
            mint(secret="another-secret-of-enough-length-0123456789"): "token signature invalid",
            mint(ttl=-300): "token expired",
            mint(aud="someone-else", sub="intruder"): "token audience mismatch",
        }
        for token, reason in bad_tokens.items():
            status, _ = await app.get(f"/license/aes128/{movie.kid_hex}",
                                      headers={"Authorization": f"Bearer {token}"})
            assert status == 401
            line = app.one_line()
            assert (line["result"], line["reason"]) == ("refused", reason)
            assert line["subject"] is None  # a claim of a token that did not verify: unread
            assert line["token_hash"] == hash_of_unverified(token)

        # 403: a valid token that does not cover the request — who it was is known.
        other = mint("another-asset", sub="viewer-43", jti="jti-other")
        status, _ = await app.get(f"/license/aes128/{movie.kid_hex}", params={"token": other})
        assert status == 403
        line = app.one_line()
        assert (line["result"], line["reason"], line["subject"], line["token_hash"]) == (
            "refused", "token is not valid for this asset", "viewer-43",
            expected_hash("jti-other"))
        status, _ = await app.post("/license/clearkey", {
            "kids": [base64.urlsafe_b64encode(movie.kid).decode().rstrip("=")],
            "type": "persistent-license"}, params={"token": good})
        assert status == 403
        line = app.one_line()
        assert (line["key_system"], line["license_type"], line["reason"]) == (
            "clearkey", "persistent", "token does not allow offline playback")

        # One decision over several keys (Clear Key, all or nothing): one line, every kid.
        status, _ = await app.post("/license/clearkey", {"kids": [
            base64.urlsafe_b64encode(k.kid).decode().rstrip("=") for k in (free, movie)]},
            params={"token": good})
        assert status == 200
        line = app.one_line()
        assert (line["assets"], line["kids"]) == (["free", "movie"],
                                                 [free.kid_hex, movie.kid_hex])

        # Not decisions: an unknown key id (404), a malformed one or a malformed body (400).
        assert (await app.get(f"/license/aes128/{os.urandom(16).hex()}"))[0] == 404
        assert (await app.get("/license/aes128/not-a-kid"))[0] == 400
        assert (await app.post("/license/clearkey", {"kids": "nope"}))[0] == 400
        assert app.new_lines() == []

        # The counters and the lines agree: one function records into both.
        counted = await app.decisions()
        lines = [json.loads(x) for x in app.audit_file.read_text().splitlines()]
        by_label: dict[tuple[str, str, str], float] = {}
        for item in lines:
            label = (item["key_system"], item["result"], item["reason"])
            by_label[label] = by_label.get(label, 0) + 1
        assert counted == by_label
        text = app.audit_file.read_text()
        assert_no_secrets(text, [free, movie], [good, other, *bad_tokens])
        assert stat.S_IMODE(app.audit_file.stat().st_mode) == 0o600


async def test_undecidable_request_is_an_error_line(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
) -> None:
    async with audited_app(settings, policy, tmp_path, tokens=False) as app:
        movie = await app.key("movie")
        set_policy(app.settings, "movie", ContentKeyPolicy(restriction=Restriction.TOKEN))
        status, _ = await app.get(f"/license/aes128/{movie.kid_hex}", params={"token": mint()})
        assert status == 503
        line = app.one_line()
        assert (line["result"], line["reason"]) == ("error", "token verification is not "
                                                    "configured")


async def test_unreadable_policy_is_an_error_line(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
) -> None:
    """A stored policy that does not parse: 500, and still one ``error`` line and count
    (the control: the same asset with its policy repaired is granted)."""
    async with audited_app(settings, policy, tmp_path) as app:
        movie = await app.key("movie")
        set_policy(app.settings, "movie", ContentKeyPolicy())
        with sqlite3.connect(app.settings.db_path) as db:
            db.execute("UPDATE policies SET policy = '{\"restriction\": 7}'")
        for _ in range(2):
            status, body = await app.get(f"/license/aes128/{movie.kid_hex}")
            assert (status, json.loads(body)) == (500, {"error": "internal error"})
            line = app.one_line()
            assert (line["result"], line["reason"]) == ("error", "internal error")
        assert (await app.decisions())["aes128", "error", "internal error"] == 2
        set_policy(app.settings, "movie", ContentKeyPolicy())
        assert (await app.get(f"/license/aes128/{movie.kid_hex}"))[0] == 200
        assert app.one_line()["result"] == "granted"


async def test_lines_reach_the_audit_logger(
    settings: LicenseSettings, policy: PolicyDecisionPoint, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger=AUDIT_LOGGER)
    async with audited_app(settings, policy, tmp_path) as app:
        key = await app.key("free")
        assert (await app.get(f"/license/aes128/{key.kid_hex}"))[0] == 200
        line = app.one_line()
    records = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [json.loads(r.getMessage()) for r in records] == [line]


def fake_transport(peer: object, family: socket.AddressFamily | None) -> Any:
    class Sock:
        def __init__(self, family: socket.AddressFamily) -> None:
            self.family = family

    class Transport:
        def get_extra_info(self, name: str, default: object = None) -> object:
            if name == "peername":
                return peer
            if name == "socket":
                return Sock(family) if family is not None else None
            return default

        def is_closing(self) -> bool:
            return False

    return Transport()


@pytest.mark.parametrize(("peer", "family", "headers", "client", "request_id"), [
    # Loopback and Unix-socket peers are the origin's proxy: its X-Forwarded-For counts,
    # the last address of the last header (what the proxy wrote after a player's own).
    (("127.0.0.1", 5), socket.AF_INET, [("X-Forwarded-For", "192.0.2.1")], "192.0.2.1", None),
    ("", socket.AF_UNIX, [("x-forwarded-for", "6.6.6.6"), ("X-Forwarded-For", "192.0.2.2")],
     "192.0.2.2", None),
    (("::1", 5, 0, 0), socket.AF_INET6, [("X-Forwarded-For", "1.1.1.1, 2001:db8::1")],
     "2001:db8::1", None),
    # Anyone else: the header is a claim, not a fact.
    (("198.51.100.3", 5), socket.AF_INET, [("X-Forwarded-For", "192.0.2.1")], "198.51.100.3",
     None),
    # Not an address: ignored.
    (("127.0.0.1", 5), socket.AF_INET, [("X-Forwarded-For", "<script>")], "127.0.0.1", None),
    # Request ids: a sane one is kept; anything else is dropped, never copied.
    (("127.0.0.1", 5), socket.AF_INET, [("X-Request-Id", "abc-123_x.y:z")], "127.0.0.1",
     "abc-123_x.y:z"),
    (("127.0.0.1", 5), socket.AF_INET, [("X-Request-Id", "has space")], "127.0.0.1", None),
    (("127.0.0.1", 5), socket.AF_INET, [("X-Request-Id", "x" * 129)], "127.0.0.1", None),
])
def test_requester_trusts_forwarded_for_only_from_a_private_peer(
    peer: object, family: socket.AddressFamily, headers: list[tuple[str, str]],
    client: str, request_id: str | None,
) -> None:
    request = make_mocked_request("GET", "/license/aes128/x", headers=CIMultiDict(headers),
                                  transport=fake_transport(peer, family))
    requester = requester_of(request)
    assert (requester.client, requester.request_id) == (client, request_id)


def test_audit_file_is_private_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"earlier": true}\n')
    path.chmod(0o644)
    os.close(open_audit_file(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # narrowed
    with audit_file(path):
        logging.getLogger(AUDIT_LOGGER).info("%s", '{"later": true}')
    assert path.read_text() == '{"earlier": true}\n{"later": true}\n'
    with pytest.raises(OSError):
        open_audit_file(tmp_path)  # a folder is no audit file


async def test_origin_serve_writes_the_audit_file(tmp_path: Path) -> None:
    audit = tmp_path / "logs" / "audit.log"
    audit.parent.mkdir()
    server = start_origin(DEMO.parent, tmp_path / "state", "--audit-log", str(audit))
    try:
        assert stat.S_IMODE(audit.stat().st_mode) == 0o600  # created before any decision
        assert audit.read_text() == ""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base}/hls/demo/aes128/video-360p/index.m3u8"
                                   ) as resp:
                playlist = await resp.text()
            match = re.search(r"/license/aes128/([0-9a-f]{32})", playlist)
            assert match is not None
            kid = match.group(1)
            # A player's own X-Forwarded-For, in either spelling, does not pass for its
            # address: the proxy's value comes last.
            for spoof in ({"X-Forwarded-For": "6.6.6.6"}, {"x-forwarded-for": "6.6.6.6"}):
                async with session.get(f"{server.base}/license/aes128/{kid}",
                                       headers={**spoof, "X-Request-Id": "edge-1"}) as resp:
                    assert resp.status == 200
                    key = await resp.read()
            async with session.get(f"{server.base}/license/aes128/{os.urandom(16).hex()}"
                                   ) as resp:
                assert resp.status == 404  # not a decision
        lines = [json.loads(x) for x in audit.read_text().splitlines()]
        assert len(lines) == 2
        for line in lines:
            assert (line["client"], line["request_id"], line["kids"], line["result"]) == (
                "127.0.0.1", "edge-1", [kid], "granted")
        assert key.hex() not in audit.read_text()
    finally:
        assert server.stop() == 0
    # The same lines went to the process log, through the origin.audit logger.
    assert server.log_text().count("origin.audit: {") == 2


def test_audit_log_needs_the_cohosted_licence_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "origin", "serve", "--port", "0", "--state-dir",
         str(tmp_path / "state"), "--license-url", "http://127.0.0.1:9",
         "--audit-log", str(tmp_path / "audit.log")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={**os.environ, "ORIGIN_LICENSE_TOKEN": "x" * 32})
    assert done.returncode == 2
    assert "--audit-log needs the co-hosted licence module" in done.stderr
    assert not (tmp_path / "audit.log").exists()
