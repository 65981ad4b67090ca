"""Nothing outside the media root is ever opened or stat-ed.

Two probes, because each sees what the other cannot:
- the whole server runs under ``strace -f -y``: no file syscall may name an
  outside path, and no file descriptor may refer to an outside file (``-y``
  prints the file an fd really is, so an open that follows a link is caught),
  except ``readlink`` on a link inside the root — reading a link's text is how
  the scan learns that its target is outside, without touching it;
- strace shows arguments, not where the kernel's path walk ends, so a
  ``stat`` that follows a link is invisible to it: the scan is also run in
  process with ``os.stat``/``os.lstat``/``open``/``os.scandir`` recorded and
  each path resolved.
"""

from __future__ import annotations

import builtins
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from origin.packaging import catalog as catalog_module
from origin.packaging.catalog import scan_catalog
from tests.conftest import child_pids, raw_get, start_origin
from tests.test_http_safety import TRAVERSALS

SECRET = b"TOP-SECRET"


def plant_links(tmp_path: Path, media_copy: Path) -> Path:
    """Links inside the root that lead outside it, every way; returns the outside folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    shutil.copytree(media_copy / "demo", outside / "asset")
    demo = media_copy / "demo"
    os.symlink(outside / "secret.txt", demo / "abs-link.ts")
    os.symlink("../../outside/secret.txt", demo / "rel-link.ts")
    os.symlink(outside, demo / "dir-link")
    os.symlink(outside / "asset", media_copy / "evil")
    # A chain: an inside link pointing at another inside link that leaves.
    os.symlink("abs-link.ts", demo / "chain.ts")
    os.symlink("video-360p/../../../outside/secret.txt", demo / "dotdot-link.ts")
    return outside


def test_scan_never_follows_a_path_outside_the_root(
    tmp_path: Path, media_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = str(plant_links(tmp_path, media_copy))
    touched: list[tuple[str, str]] = []

    def record(name: str, real: Callable[..., Any], follows: bool) -> Callable[..., Any]:
        def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, (str, os.PathLike)):
                text = os.fspath(path)
                follow = follows and kwargs.get("follow_symlinks", True)
                where = os.path.realpath(text) if follow else os.path.abspath(text)
                touched.append((name, where))
            return real(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "stat", record("stat", os.stat, True))
    monkeypatch.setattr(os, "lstat", record("lstat", os.lstat, False))
    monkeypatch.setattr(os, "scandir", record("scandir", os.scandir, True))
    monkeypatch.setattr(catalog_module, "open", record("open", builtins.open, True),
                        raising=False)
    catalog = scan_catalog(str(media_copy))
    assert "demo" in catalog.assets and "evil" not in catalog.assets
    assert not any(rel.startswith(("abs-link", "rel-link", "chain", "dir-link", "dotdot"))
                   for rel in catalog.assets["demo"].files)
    bad = [(name, where) for name, where in touched
           if where == outside or where.startswith(outside + os.sep)]
    assert not bad, bad
    assert any(name == "lstat" for name, _ in touched)  # the probe saw the walk


def test_no_syscall_touches_paths_outside_the_root(tmp_path: Path, media_copy: Path) -> None:
    outside = plant_links(tmp_path, media_copy)

    trace = tmp_path / "trace.txt"
    server = start_origin(media_copy, tmp_path / "state",
                          wrapper=("strace", "-f", "-qq", "-y", "-e",
                                   "trace=%file,readlink,readlinkat", "-o", str(trace)))
    try:
        extra = [b"/hls/demo/clear/abs-link.ts", b"/hls/demo/clear/rel-link.ts",
                 b"/hls/demo/clear/chain.ts", b"/hls/demo/clear/dir-link/secret.txt",
                 b"/hls/evil/clear/master.m3u8", b"/hls/demo/aes128/chain.ts",
                 b"/hls/fresh/clear/master.m3u8"]  # a miss: forces a rescan under trace
        for target in [*TRAVERSALS, *extra]:
            status, body = raw_get(server.port, target)
            assert status in (400, 404), target
            assert SECRET not in body
        status, _ = raw_get(server.port, b"/hls/demo/aes128/video-360p/seg-00001.m4s")
        assert status == 200
    finally:
        (origin_pid,) = child_pids(server.proc.pid)
        os.kill(origin_pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        server.stop()

    outside_text = str(outside)
    offending = []
    for line in trace.read_text().splitlines():
        if outside_text not in line:
            continue
        call = line.split(None, 1)[1] if line[:1].isdigit() else line
        if call.startswith(("readlink(", "readlinkat(")):
            # The link itself must be inside the root; only its text names the outside.
            assert str(media_copy) in call.split(",")[0 if call.startswith("readlink(") else 1]
            continue
        offending.append(line)
    assert not offending, "\n".join(offending[:20])
    # The trace really recorded the server's file activity (a non-empty, working probe).
    text = trace.read_text()
    assert "seg-00001.m4s" in text
    assert "readlink" in text


def test_strace_probe_can_see_an_outside_open(tmp_path: Path) -> None:
    """The check above would catch a real outside access: strace records one here."""
    target = tmp_path / "outside-file"
    target.write_bytes(SECRET)
    trace = tmp_path / "t.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace),
                    "cat", str(target)], check=True, capture_output=True)
    assert str(target) in trace.read_text()
