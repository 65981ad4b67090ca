"""The processes of a running ``origin serve``, seen from /proc, and waiting on conditions.

- ``cmdline`` and ``gone`` read /proc: a process that has exited — no /proc entry any
  more, or a zombie — is gone (its sockets are closed).
- ``worker_pids`` and ``licence_pids``: the server's live children by role (``origin
  worker`` processes; the co-hosted ``origin license serve``).
- ``refuses_connections``: whether nothing listens on a loopback port any more.
- ``wait_until``: poll a real condition (a plain or an async check) until it holds, and
  fail the test at the deadline.  Nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import RunningOrigin, child_pids

DEADLINE = 30.0
POLL_SECONDS = 0.02


def cmdline(pid: int) -> list[bytes]:
    """A process's command line, split at NULs; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def gone(pid: int) -> bool:
    """Whether a process has exited (its sockets closed): no longer in /proc, or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state == "Z"


def _live_children(server: RunningOrigin, role: Callable[[list[bytes]], bool]) -> set[int]:
    return {pid for pid in child_pids(server.proc.pid) if role(cmdline(pid)) and not gone(pid)}


def worker_pids(server: RunningOrigin) -> set[int]:
    """The server's live children running ``origin worker``."""
    return _live_children(server, lambda args: b"worker" in args)


def licence_pids(server: RunningOrigin) -> set[int]:
    """The server's live children running ``origin license serve`` (workers run ``worker``)."""
    return _live_children(server, lambda args: b"license" in args
                          and args[args.index(b"license") + 1:][:1] == [b"serve"])


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


async def wait_until(check: Callable[[], bool | Awaitable[bool]], what: str,
                     deadline: float = DEADLINE) -> None:
    """Poll a real condition until it holds; fail at the deadline."""
    end = time.monotonic() + deadline
    while not await _holds(check):
        assert time.monotonic() < end, f"timed out waiting until {what}"
        await asyncio.sleep(POLL_SECONDS)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    if inspect.isawaitable(result):
        return bool(await result)
    return bool(result)
