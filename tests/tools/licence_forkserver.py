"""A fork server for the licence module: ``python -m tests.tools.licence_forkserver``.

``python -m origin license serve`` takes about 0.8 s to start, nearly all of it imports;
the kill test starts it hundreds of times.  This process imports what that command
needs and builds the ``origin`` argument parser once, then forks one child per start;
the child does what ``origin.cli.main`` does (parse, configure logging, run the
command's handler), so it runs the very same licence module code in its own process,
started in tens of milliseconds.

Protocol, one JSON object per line; requests on stdin, answers on stdout:

- ``{"op": "spawn", "argv": [...], "env": {...}, "stdout": F, "stderr": F,
  "write_behind": false}`` → ``{"pid": N}``; all but ``argv`` optional
- ``{"op": "reap", "pid": N}`` → ``{"pid": N, "returncode": R}`` once the child has
  ended (``-9``: killed by SIGKILL), like ``subprocess.Popen.returncode``
- end of input: remaining children are killed and reaped, then the server exits.

Children inherit the environment (``env`` sets variables, ``null`` removes one) and
stderr (their logs, the readiness line); their stdin is ``/dev/null`` and their stdout
goes to stderr, so stdout carries only answers.  ``stdout`` / ``stderr`` name files
that take the child's output instead (a command's output, for a test to read).

``write_behind: true`` makes the child a deliberately broken licence module, for
negative controls: a new asset's key is handed out at once and committed only
``WRITE_BEHIND_S`` later (a write-behind cache), so a kill in between loses a key
that was handed out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sqlite3
import sys
import threading
import traceback
import uuid
from pathlib import Path
from typing import Any

import uvloop

import origin.cli
import origin.keys_cpix
import origin.license.admin
import origin.license.app
import origin.license.fairplay_routes
import origin.license.server
import origin.license.token_setup
import origin.license.upstream_routes
from origin.crypto.key import KEY_SIZE, ContentKey
from origin.license.keystore import Keystore, validate_asset
from origin.license.settings import LicenseSettings

WRITE_BEHIND_S = 0.5
_PRELOADED = (origin.keys_cpix, origin.license.admin, origin.license.fairplay_routes,
              origin.license.server, origin.license.token_setup,
              origin.license.upstream_routes, uvloop)


class WriteBehindKeystore(Keystore):
    """BROKEN ON PURPOSE: ``active_key`` returns a new key before it is committed."""

    def __init__(self, path: Path, kek: bytes, conn: sqlite3.Connection) -> None:
        super().__init__(path, kek, conn)
        self.pending: dict[str, ContentKey] = {}
        self.pending_lock = threading.Lock()

    def active_key(self, asset: str) -> ContentKey:
        validate_asset(asset)
        with self.pending_lock:
            if asset in self.pending:
                return self.pending[asset]
            active = [r for r in self.records(asset) if r.active]
            if active:
                stored = self.get(active[0].kid)
                assert stored is not None
                return stored.key
            key = ContentKey(kid=uuid.uuid4().bytes, key=os.urandom(KEY_SIZE))
            self.pending[asset] = key
        timer = threading.Timer(WRITE_BEHIND_S, self._commit_later, (asset, key))
        timer.daemon = True
        timer.start()
        return key

    def _commit_later(self, asset: str, key: ContentKey) -> None:
        self.import_key(key, asset, active=True)
        with self.pending_lock:
            self.pending.pop(asset, None)


def _run_child(parser: argparse.ArgumentParser, request: dict[str, Any]) -> None:
    """In the forked child: become ``origin <argv>``; never returns."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        for fd, name in ((1, request.get("stdout")), (2, request.get("stderr"))):
            if name is not None:
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(out, fd)
                os.close(out)
        for variable, value in (request.get("env") or {}).items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        write_behind = bool(request.get("write_behind"))
        argv = [str(arg) for arg in request["argv"]]
        if write_behind:
            origin.license.app.Keystore = WriteBehindKeystore  # type: ignore[misc]
        args = parser.parse_args(argv)  # what origin.cli.main does, parser prebuilt
        origin.cli.configure_logging(getattr(args, "log_level", "info"))
        code = args.func(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def warm_up() -> argparse.ArgumentParser:
    """Do once, before any fork, what every child would otherwise redo: build the
    command-line parser (returned) and a licence app (compiled regular expressions,
    route tables).  Nothing is started: no thread, no loop, no file."""
    settings = LicenseSettings(db_path=Path(os.devnull), kek=bytes(32),
                               internal_token="warm-up-token-0123456789")
    origin.license.app.build_license_app(settings)
    return origin.cli.build_parser()


def serve() -> None:
    """Answer requests from stdin until it ends."""
    parser = warm_up()
    gc.freeze()  # children's collections skip the shared heap: fewer copy-on-write faults
    children: set[int] = set()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(parser, request)
            children.add(pid)
            answer: dict[str, int] = {"pid": pid}
        elif request["op"] == "reap":
            pid = int(request["pid"])
            _, status = os.waitpid(pid, 0)
            children.discard(pid)
            answer = {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}
        else:
            raise ValueError(f"unknown op {request['op']!r}")
        print(json.dumps(answer), flush=True)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    serve()
