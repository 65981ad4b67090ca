"""The co-hosted licence process is restarted when it dies; ``origin keys`` drives the keystore."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import ROOT, child_pids, start_origin

RECOVERY_DEADLINE = 30.0


async def get(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def test_killed_licence_process_is_restarted(media_copy: Path, tmp_path: Path) -> None:
    server = start_origin(media_copy, tmp_path / "state")
    try:
        status, body, _ = await get(f"{server.base}/hls/demo/aes128/video-360p/index.m3u8")
        assert status == 200
        kid = re.search(rb"/license/aes128/([0-9a-f]{32})", body).group(1).decode()  # type: ignore[union-attr]
        key_url = f"{server.base}/license/aes128/{kid}"
        status, key, _ = await get(key_url)
        assert status == 200 and len(key) == 16

        (licence_pid,) = child_pids(server.proc.pid)
        os.kill(licence_pid, signal.SIGKILL)

        # Until the supervisor has a new child up, key requests fail fast with 503;
        # clear delivery never stops.  Wait for recovery on the real condition.
        deadline = time.monotonic() + RECOVERY_DEADLINE
        statuses = []
        while True:
            started = time.monotonic()
            status, body, ctype = await get(key_url)
            assert time.monotonic() - started < 5, "key request did not fail fast"
            statuses.append(status)
            if status == 200:
                break
            assert status == 503 and ctype.startswith("application/json"), (status, body)
            clear, _, _ = await get(f"{server.base}/hls/demo/clear/video-360p/seg-00001.m4s")
            assert clear == 200
            assert time.monotonic() < deadline, f"licence module not back: {statuses[-5:]}"
            await asyncio.sleep(0.05)
        assert body == key  # the same key survived the crash
        assert child_pids(server.proc.pid) != [licence_pid]
    finally:
        assert server.stop() == 0
    assert "restarting" in server.log_text()


def origin_cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "origin", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


async def test_keys_cli_rotate_list_show(media_copy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    listed = origin_cli("keys", "list", state=state)
    assert listed.returncode != 0  # no keystore yet, and none is created by listing
    rotated = origin_cli("keys", "rotate", "demo", state=state)
    assert rotated.returncode == 0, rotated.stderr
    first = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                       rotated.stdout)
    assert len(first) == 1
    rotated = origin_cli("keys", "rotate", "demo", state=state)
    second = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", rotated.stdout)
    assert second and second != first

    server = start_origin(media_copy, state)
    try:
        status, body, _ = await get(f"{server.base}/hls/demo/aes128/master.m3u8")
        assert status == 200
        active = second[0].replace("-", "")
        assert f"/license/aes128/{active}".encode() in body
        # The old key still answers: content encrypted with it keeps playing.
        old_status, old_key, _ = await get(
            f"{server.base}/license/aes128/{first[0].replace('-', '')}")
        new_status, new_key, _ = await get(f"{server.base}/license/aes128/{active}")
        assert old_status == new_status == 200
        assert old_key != new_key
    finally:
        assert server.stop() == 0

    listed = origin_cli("keys", "list", state=state)
    assert listed.returncode == 0
    assert first[0] in listed.stdout and second[0] in listed.stdout
    shown = origin_cli("keys", "show", second[0], state=state)
    assert shown.returncode == 0 and second[0] in shown.stdout
    for out in (listed.stdout, shown.stdout, rotated.stdout):
        assert old_key.hex() not in out.lower() and new_key.hex() not in out.lower()


async def test_origin_uses_a_remote_licence_module(media_copy: Path, tmp_path: Path) -> None:
    """``origin license serve`` alone on TCP, and ``origin serve --license-url`` pointing at it."""
    from tests.conftest import free_port

    token = "remote-internal-token-0123456789"
    port = free_port()
    env = dict(os.environ, ORIGIN_LICENSE_TOKEN=token)
    licence = subprocess.Popen(
        [sys.executable, "-m", "origin", "license", "serve", "--port", str(port),
         "--state-dir", str(tmp_path / "licence-state")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert licence.stderr is not None
        for line in licence.stderr:  # readiness: its own "listening" log line
            if "listening" in line:
                break
        else:
            raise AssertionError("licence module did not start")
        base = f"http://127.0.0.1:{port}"
        server = start_origin(media_copy, tmp_path / "origin-state", "--license-url", base,
                              env={"ORIGIN_LICENSE_TOKEN": token})
        try:
            status, body, _ = await get(f"{server.base}/hls/demo/aes128/video-360p/index.m3u8")
            assert status == 200
            kid = re.search(rb"/license/aes128/([0-9a-f]{32})", body).group(1).decode()  # type: ignore[union-attr]
            via_origin = await get(f"{server.base}/license/aes128/{kid}")
            direct = await get(f"{base}/license/aes128/{kid}")
            assert via_origin[0] == direct[0] == 200
            assert via_origin[1] == direct[1] and len(direct[1]) == 16
            assert not (tmp_path / "origin-state" / "keys.sqlite").exists()
        finally:
            assert server.stop() == 0
        # A wrong internal token is refused: the origin answers 503, never a key.
        server = start_origin(media_copy, tmp_path / "origin-state2", "--license-url", base,
                              env={"ORIGIN_LICENSE_TOKEN": "wrong-token-wrong-token-wrong"})
        try:
            status, _, _ = await get(f"{server.base}/hls/demo/aes128/video-360p/seg-00001.m4s")
            assert status == 503
        finally:
            assert server.stop() == 0
    finally:
        licence.terminate()
        licence.wait(timeout=20)
        if licence.stderr is not None:
            licence.stderr.close()
