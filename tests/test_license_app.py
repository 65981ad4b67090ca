"""The licence module's aiohttp app on a real loopback port / Unix socket, and its CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from origin.license.app import build_license_app
from origin.license.cli import add_license_commands
from origin.license.keystore import Keystore, KeystoreError
from origin.license.policy import PolicyDecisionPoint
from origin.license.server import start_license_site
from origin.license.settings import LicenseSettings
from tests.tools.licence import (
    AUTH,
    TOKEN,
    BrokenPolicy,
    DenyingPolicy,
    RecordingPolicy,
    fetch_asset_key,
    running_licence_app,
)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    session: aiohttp.ClientSession
    settings: LicenseSettings

    async def asset_key(self, asset: str = "movie") -> tuple[str, str]:
        key = await fetch_asset_key(self.session, self.url, asset)
        return key.kid_hex, key.key.hex()


@pytest.fixture
async def server(
    settings: LicenseSettings, policy: PolicyDecisionPoint, caplog_all: pytest.LogCaptureFixture
) -> AsyncIterator[Server]:
    async with running_licence_app(settings, policy) as url, aiohttp.ClientSession() as session:
        yield Server(url=url, session=session, settings=settings)


async def _wait_for_log(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    for _ in range(100):
        if needle in caplog.text:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{needle!r} never logged")


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret.lower() not in text.lower()


# --- the AES-128 key route ------------------------------------------------------------------


async def test_aes128_key_matches_internal_api(server: Server) -> None:
    kid, key = await server.asset_key("movie")
    assert len(bytes.fromhex(kid)) == 16 and len(bytes.fromhex(key)) == 16
    for kid_text in (kid, kid.upper(), str(uuid.UUID(hex=kid))):
        async with server.session.get(f"{server.url}/license/aes128/{kid_text}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert resp.headers["Cache-Control"] == "no-store"
            assert await resp.read() == bytes.fromhex(key)


async def test_internal_asset_key_is_stable_and_per_asset(server: Server) -> None:
    first = await server.asset_key("movie")
    assert await server.asset_key("movie") == first
    other = await server.asset_key("trailer")
    assert other[0] != first[0] and other[1] != first[1]


async def test_internal_key_by_kid(server: Server) -> None:
    kid, key = await server.asset_key("movie")
    for kid_text in (kid, str(uuid.UUID(hex=kid))):
        async with server.session.get(
            f"{server.url}/internal/v1/keys/{kid_text}", headers=AUTH
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            assert await resp.json() == {"kid": kid, "key": key, "asset": "movie"}


async def test_internal_asset_key_headers(server: Server) -> None:
    async with server.session.get(
        f"{server.url}/internal/v1/assets/movie/key", headers=AUTH
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.content_type == "application/json"


MALFORMED_KIDS = [
    "nothex",
    "zz" * 16,
    "00" * 15,
    "00" * 17,
    "0" * 31 + "g",
    "00 112233445566778899aabbccddee ",  # parse_kid alone would return 15 bytes
    "0-0112233445566778899aabbccddeeff",  # dashes in the wrong places
]


@pytest.mark.parametrize("kid", MALFORMED_KIDS)
async def test_malformed_kid_is_400_json(server: Server, kid: str) -> None:
    _, key = await server.asset_key("movie")
    for path, headers in ((f"/license/aes128/{kid}", {}), (f"/internal/v1/keys/{kid}", AUTH)):
        async with server.session.get(server.url + path, headers=headers) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"].startswith("application/json")
            body = await resp.text()
        assert json.loads(body) == {"error": "malformed key id"}
        _assert_no_secret(body, key)


async def test_unknown_kid_is_404_json(server: Server) -> None:
    _, key = await server.asset_key("movie")
    unknown = os.urandom(16).hex()
    for path, headers in (
        (f"/license/aes128/{unknown}", {}),
        (f"/internal/v1/keys/{unknown}", AUTH),
    ):
        async with server.session.get(server.url + path, headers=headers) as resp:
            assert resp.status == 404
            body = await resp.text()
        assert json.loads(body) == {"error": "unknown key id"}
        _assert_no_secret(body, key)


async def test_bad_asset_name_is_400_json(server: Server) -> None:
    async with server.session.get(
        f"{server.url}/internal/v1/assets/.hidden/key", headers=AUTH
    ) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "invalid asset name"}


async def test_healthz(server: Server) -> None:
    async with server.session.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


# --- internal API authentication ----------------------------------------------------------------

BAD_AUTH = [
    {},
    {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
]


@pytest.mark.parametrize("headers", BAD_AUTH)
async def test_internal_api_requires_the_token(server: Server, headers: dict[str, str]) -> None:
    kid, key = await server.asset_key("movie")
    for path in (
        "/internal/v1/assets/movie/key",
        f"/internal/v1/keys/{kid}",
        "/internal/v1/assets/new-asset/key",
    ):
        async with server.session.get(server.url + path, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            body = await resp.text()
        assert json.loads(body) == {"error": "unauthorized"}
        _assert_no_secret(body, key, TOKEN)
    # A refused request must not have created a key for a new asset.
    with Keystore.open(server.settings.db_path, server.settings.kek) as store:
        assert store.records("new-asset") == []


async def test_internal_api_refusal_is_pinned(server: Server) -> None:
    """The whole 401 of the internal API (``origin.license.bearer.require_bearer``): its
    realm, no-store, a JSON body; the same request with the token is the control."""
    for path in ("/internal/v1/assets/movie/key", "/internal/v1/metrics"):
        async with server.session.get(server.url + path) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="origin-license"'
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
            assert await resp.text() == '{"error": "unauthorized"}'
        async with server.session.get(server.url + path, headers=AUTH) as resp:
            assert resp.status == 200


async def test_internal_token_in_query_does_not_authenticate(server: Server) -> None:
    async with server.session.get(
        f"{server.url}/internal/v1/assets/movie/key", params={"token": TOKEN}
    ) as resp:
        assert resp.status == 401


# --- policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DenyingPolicy()])
async def test_policy_refusal_is_403(server: Server) -> None:
    _, key = await server.asset_key("movie")
    kid, _ = await server.asset_key("movie")
    async with server.session.get(f"{server.url}/license/aes128/{kid}") as resp:
        assert resp.status == 403
        body = await resp.text()
    assert json.loads(body) == {"error": "token required"}
    _assert_no_secret(body, key)


@pytest.mark.parametrize("policy", [RecordingPolicy()])
async def test_policy_sees_asset_key_system_and_token(
    server: Server, policy: RecordingPolicy, caplog_all: pytest.LogCaptureFixture
) -> None:
    kid, _ = await server.asset_key("movie")
    url = f"{server.url}/license/aes128/{kid}"
    query_token = "player-query-token-7f3a9c"
    header_token = "player-header-token-51be0d"
    async with server.session.get(url) as resp:
        assert resp.status == 200
    async with server.session.get(url, params={"token": query_token}) as resp:
        assert resp.status == 200
    async with server.session.get(url, headers={"Authorization": f"Bearer {header_token}"}) as r:
        assert r.status == 200
    assert [r.token for r in policy.requests] == [None, query_token, header_token]
    assert {(r.kid.hex(), r.asset, r.key_system.value) for r in policy.requests} == {
        (kid, "movie", "aes128")
    }
    # The access log has the path but never the query string (where tokens travel).
    await _wait_for_log(caplog_all, f"/license/aes128/{kid}")
    await asyncio.sleep(0.05)
    access = [r.getMessage() for r in caplog_all.records if r.name == "aiohttp.access"]
    assert len(access) == 4
    _assert_no_secret("\n".join(access), query_token, header_token, TOKEN)
    _assert_no_secret(caplog_all.text, query_token, header_token, TOKEN)


@pytest.mark.parametrize("policy", [BrokenPolicy()])
async def test_unexpected_error_is_500_and_logged_without_secrets(
    server: Server, caplog_all: pytest.LogCaptureFixture
) -> None:
    kid, key = await server.asset_key("movie")
    token = "player-token-c0ffee-1234"
    async with server.session.get(
        f"{server.url}/license/aes128/{kid}", params={"token": token}
    ) as resp:
        assert resp.status == 500
        body = await resp.text()
    assert json.loads(body) == {"error": "internal error"}
    assert "unhandled RuntimeError" in caplog_all.text
    assert f"/license/aes128/{kid}" in caplog_all.text
    _assert_no_secret(body + caplog_all.text, key, token, TOKEN)


async def test_logs_never_contain_keys(
    server: Server, caplog_all: pytest.LogCaptureFixture
) -> None:
    kid, key = await server.asset_key("movie")
    async with server.session.get(
        f"{server.url}/license/aes128/{kid}", params={"token": "t0k3n-in-query-string"}
    ) as resp:
        assert await resp.read() == bytes.fromhex(key)
    await _wait_for_log(caplog_all, f"/license/aes128/{kid}")
    assert "internal/v1/assets/movie/key" in caplog_all.text
    _assert_no_secret(
        caplog_all.text, key, TOKEN, "t0k3n-in-query-string", server.settings.kek.hex()
    )


# --- startup, TCP and Unix-socket sites ----------------------------------------------------------


async def test_wrong_kek_fails_at_startup(settings: LicenseSettings) -> None:
    Keystore.open(settings.db_path, settings.kek).close()
    wrong = LicenseSettings(db_path=settings.db_path, kek=os.urandom(32), internal_token=TOKEN)
    runner = web.AppRunner(build_license_app(wrong))
    with pytest.raises(KeystoreError, match="KEK"):
        await runner.setup()
    await runner.cleanup()
    with pytest.raises(KeystoreError, match="KEK"):
        await start_license_site(build_license_app(wrong), host="127.0.0.1", port=0, unix_path=None)


async def test_start_license_site_tcp(settings: LicenseSettings) -> None:
    runner = await start_license_site(
        build_license_app(settings), host="127.0.0.1", port=0, unix_path=None
    )
    try:
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1" and port > 0
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/healthz") as resp,
        ):
            assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_start_license_site_rejects_both_listeners(settings: LicenseSettings) -> None:
    with pytest.raises(ValueError, match="not both"):
        await start_license_site(
            build_license_app(settings), host="127.0.0.1", port=None, unix_path="/nonexistent/sock"
        )


async def test_unix_socket_site(settings: LicenseSettings, tmp_path: Path) -> None:
    sock_path = tmp_path / "license.sock"
    sock_path.touch()
    with pytest.raises(ValueError, match="not a socket"):
        await start_license_site(
            build_license_app(settings), host=None, port=None, unix_path=str(sock_path)
        )
    sock_path.unlink()

    runner = await start_license_site(
        build_license_app(settings), host=None, port=None, unix_path=str(sock_path)
    )
    try:
        mode = sock_path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        connector = aiohttp.UnixConnector(path=str(sock_path))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get("http://license/healthz") as resp:
                assert resp.status == 200
            async with session.get(
                "http://license/internal/v1/assets/movie/key", headers=AUTH
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
            async with session.get(f"http://license/license/aes128/{body['kid']}") as resp:
                assert await resp.read() == bytes.fromhex(body["key"])
            async with session.get("http://license/internal/v1/assets/movie/key") as resp:
                assert resp.status == 401
    finally:
        await runner.cleanup()
    assert not sock_path.exists()


# --- CLI through a throwaway main parser -------------------------------------------------------


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="origin")
    sub = parser.add_subparsers(dest="command", required=True)
    add_license_commands(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, bytes]:
    monkeypatch.delenv("ORIGIN_KEK", raising=False)
    monkeypatch.delenv("ORIGIN_LICENSE_TOKEN", raising=False)
    kek = os.urandom(32)
    kek_file = tmp_path / "kek.hex"
    kek_file.write_text(kek.hex())
    return tmp_path / "state", kek_file, kek


def test_cli_keys_rotate_list_show(
    cli_env: tuple[Path, Path, bytes],
    capsys: pytest.CaptureFixture[str],
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    state_dir, kek_file, kek = cli_env
    opts = ["--state-dir", str(state_dir), "--kek-file", str(kek_file)]

    assert _main(["keys", "rotate", "movie", *opts]) == 0
    assert _main(["keys", "rotate", "movie", *opts]) == 0
    assert _main(["keys", "rotate", "trailer", *opts]) == 0
    with Keystore.open(state_dir / "keys.sqlite", kek) as store:
        records = store.records()
        keys = [store.get(r.kid) for r in records]
    assert [(r.asset, r.active) for r in records] == [
        ("movie", False),
        ("movie", True),
        ("trailer", True),
    ]
    rotate_out = capsys.readouterr().out

    assert _main(["keys", "list", *opts]) == 0
    list_out = capsys.readouterr().out
    lines = list_out.splitlines()
    assert lines[0].split() == ["kid", "asset", "created", "active"]
    assert [line.split()[0] for line in lines[1:]] == [r.kid_uuid for r in records]
    assert [line.split()[1:2] + line.split()[3:] for line in lines[1:]] == [
        ["movie", "no"],
        ["movie", "yes"],
        ["trailer", "yes"],
    ]

    assert _main(["keys", "list", "--asset", "trailer", *opts]) == 0
    filtered = capsys.readouterr().out
    assert records[2].kid_uuid in filtered and records[0].kid_uuid not in filtered

    assert _main(["keys", "show", records[0].kid_hex, *opts]) == 0
    show_out = capsys.readouterr().out
    assert records[0].kid_uuid in show_out and "movie" in show_out and " no" in show_out
    assert _main(["keys", "show", records[1].kid_uuid, *opts]) == 0
    show_out += capsys.readouterr().out

    everything = rotate_out + list_out + filtered + show_out + caplog_all.text
    for stored in keys:
        assert stored is not None
        _assert_no_secret(everything, stored.key.key.hex())
    _assert_no_secret(everything, kek.hex())


def test_cli_errors(cli_env: tuple[Path, Path, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    state_dir, kek_file, _ = cli_env
    opts = ["--state-dir", str(state_dir), "--kek-file", str(kek_file)]

    assert _main(["keys", "list", *opts]) == 1
    assert "no keystore" in capsys.readouterr().err
    assert not state_dir.exists()  # read-only commands create nothing

    assert _main(["keys", "rotate", "movie", *opts]) == 0
    capsys.readouterr()
    assert _main(["keys", "show", os.urandom(16).hex(), *opts]) == 1
    assert "no key with id" in capsys.readouterr().err
    assert _main(["keys", "show", "not-a-kid", *opts]) == 1
    assert "malformed key id" in capsys.readouterr().err
    assert _main(["keys", "rotate", "../etc", *opts]) == 1
    assert "invalid asset name" in capsys.readouterr().err

    other_kek = state_dir.parent / "other.hex"
    other_kek.write_text(os.urandom(32).hex())
    assert _main(["keys", "list", "--state-dir", str(state_dir), "--kek-file", str(other_kek)]) == 1
    assert "KEK" in capsys.readouterr().err


def test_cli_serve_requires_token(
    cli_env: tuple[Path, Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir, kek_file, _ = cli_env
    assert (
        _main(["license", "serve", "--state-dir", str(state_dir), "--kek-file", str(kek_file)]) == 1
    )
    assert "ORIGIN_LICENSE_TOKEN must be set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _main(["license", "serve", "--port", "1", "--socket", "/tmp/x.sock"])
    capsys.readouterr()


_SERVE_SCRIPT = """
import argparse, sys
from origin.license.cli import add_license_commands
parser = argparse.ArgumentParser(prog="origin")
add_license_commands(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


async def test_cli_license_serve_runs_until_sigterm(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    sock_path = tmp_path / "serve.sock"
    env = {k: v for k, v in os.environ.items() if k != "ORIGIN_KEK"}
    env["ORIGIN_LICENSE_TOKEN"] = TOKEN
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVE_SCRIPT,
        "license",
        "serve",
        "--socket",
        str(sock_path),
        "--state-dir",
        str(state_dir),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(500):
            if sock_path.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        assert sock_path.exists(), "server did not start"
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
        connector = aiohttp.UnixConnector(path=str(sock_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://license/internal/v1/assets/movie/key", headers=AUTH) as resp,
        ):
            assert resp.status == 200
            key = (await resp.json())["key"]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert not sock_path.exists()
    assert (state_dir / "kek").exists() and (state_dir / "keys.sqlite").exists()
    _assert_no_secret((stdout + stderr).decode(), key, TOKEN)
