"""The soak run's load generator: aiohttp on loopback, closed loop to measure, open loop to soak.

Rules:

- One ``aiohttp.ClientSession`` with a bounded connection pool (``TCPConnector``
  limit); bodies are read to the end and only counted; targets are sent as written
  (``yarl.URL(..., encoded=True)``).  Only loopback base URLs are accepted.
- Time-outs are the server's: connecting (``CONNECT_TIMEOUT``) and waiting for bytes
  on a socket (``READ_TIMEOUT``); waiting for a free connection of the pool is the
  client's own queue, bounded by ``max_in_flight`` and counted in the latency, not
  an error.  Requests still unanswered ``drain_seconds`` after the last one was due
  are cancelled and counted as client errors ("cancelled at drain").
- Closed loop (``closed_loop``): N coroutines, each sending its next request as soon
  as the previous one is answered, for a fixed time — the capacity of the mix.
- Open loop (``open_loop``): request i is due at ``start + i / rate`` whatever
  happened before (a fixed arrival schedule); the dispatcher wakes every ``TICK``
  and starts every request that is due.  Latency is counted from the *due* time,
  so a stalled server or a full pool shows up in it (no coordinated omission);
  the service time (from the actual send) is kept beside it.  At most
  ``max_in_flight`` requests are outstanding; a dispatcher that falls behind
  counts the late starts.
- ``Tally`` accumulates outcomes (one for the whole phase, one per report window);
  a response is counted in the window it completes in.  A 5xx is always wrong;
  a 4xx is right only for a bad request; a bad request must get a 4xx.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from soak_mix import SoakRequest
from yarl import URL

LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")
TICK = 0.002  # seconds between two dispatcher wake-ups in the open loop
READ_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
CANCELLED = "cancelled at drain"
MS = 1000.0


class SoakLoadError(RuntimeError):
    """The load generator was pointed somewhere it must not go."""


def percentile(values: array[float] | Sequence[float], q: float) -> float | None:
    if len(values) == 0:
        return None
    return float(np.percentile(np.frombuffer(values, dtype=np.float64)
                               if isinstance(values, array) else np.asarray(values), q))


@dataclass
class Tally:
    """Outcomes of a phase or a window: counts, statuses and latencies (seconds)."""

    started: float
    requests: int = 0
    bytes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # client-side: time-outs, resets
    five_xx: int = 0
    bad_sent: int = 0
    bad_4xx: int = 0
    bad_not_4xx: int = 0  # a bad request answered 2xx/3xx/5xx
    unexpected_4xx: int = 0  # a good request answered 4xx
    unexpected_other: int = 0  # a good request answered another wrong non-5xx status
    late_starts: int = 0
    wrong: Counter[str] = field(default_factory=Counter)  # "kind status" of every wrong answer
    latency: array[float] = field(default_factory=lambda: array("d"))
    service: array[float] = field(default_factory=lambda: array("d"))
    by_kind: dict[str, array[float]] = field(default_factory=dict)
    kind_statuses: Counter[str] = field(default_factory=Counter)  # "kind status"

    def record(self, request: SoakRequest, status: int | None, error: str | None,
               latency: float, service: float, size: int) -> None:
        self.requests += 1
        self.bytes += size
        self.bad_sent += request.bad
        self.latency.append(latency)
        self.service.append(service)
        self.by_kind.setdefault(request.kind, array("d")).append(latency)
        self.kind_statuses[f"{request.kind} {status if status is not None else error}"] += 1
        if status is None:
            self.errors[error or "error"] += 1
            return
        self.statuses[status] += 1
        if status >= 500:
            self.five_xx += 1
        if request.bad:
            if 400 <= status < 500:
                self.bad_4xx += 1
            else:
                self.bad_not_4xx += 1
        elif 400 <= status < 500:
            self.unexpected_4xx += 1
        elif status not in request.expected and status < 500:
            self.unexpected_other += 1
        if not request.is_right(status):
            self.wrong[f"{request.kind} {request.method} {request.target} → {status}"] += 1

    def summary(self, ended: float) -> dict[str, Any]:
        seconds = max(ended - self.started, 1e-9)
        four_xx = sum(n for s, n in self.statuses.items() if 400 <= s < 500)

        def ms(values: array[float], q: float) -> float | None:
            found = percentile(values, q)
            return None if found is None else round(found * MS, 3)

        return {
            "seconds": round(seconds, 3), "requests": self.requests,
            "rps": round(self.requests / seconds, 1), "mbps": round(self.bytes / seconds / 1e6, 2),
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "five_xx": self.five_xx, "four_xx": four_xx, "bad_sent": self.bad_sent,
            "bad_4xx": self.bad_4xx, "bad_not_4xx": self.bad_not_4xx,
            "unexpected_4xx": self.unexpected_4xx, "unexpected_other": self.unexpected_other,
            "client_errors": sum(self.errors.values()), "client_error_kinds": dict(self.errors),
            "late_starts": self.late_starts,
            "latency_ms": {"p50": ms(self.latency, 50), "p90": ms(self.latency, 90),
                           "p99": ms(self.latency, 99), "p999": ms(self.latency, 99.9),
                           "max": ms(self.latency, 100)},
            "service_ms": {"p50": ms(self.service, 50), "p99": ms(self.service, 99)},
            "wrong": dict(self.wrong.most_common(20)),
        }

    def kinds(self) -> dict[str, dict[str, Any]]:
        """Per kind: requests, statuses and latency percentiles."""
        found: dict[str, dict[str, Any]] = {}
        for kind, values in sorted(self.by_kind.items()):
            statuses = {key.split(" ", 1)[1]: n for key, n in self.kind_statuses.items()
                        if key.split(" ", 1)[0] == kind}
            p50, p99 = percentile(values, 50), percentile(values, 99)
            found[kind] = {"requests": len(values), "statuses": statuses,
                           "p50_ms": None if p50 is None else round(p50 * MS, 3),
                           "p99_ms": None if p99 is None else round(p99 * MS, 3)}
        return found


Sink = Callable[[SoakRequest, int | None, str | None, float, float, int], None]


class LoadClient:
    """``async with LoadClient(base, pool) as client:`` — probe, closed loop, open loop."""

    def __init__(self, base: str, pool: int) -> None:
        if not base.startswith(LOOPBACK):
            raise SoakLoadError(f"refusing a load run against a non-loopback URL: {base}")
        self.base = base
        self.pool = pool
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        connector = aiohttp.TCPConnector(limit=self.pool, limit_per_host=self.pool)
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=CONNECT_TIMEOUT,
                                        sock_read=READ_TIMEOUT)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use LoadClient in async with"
        return self._session

    async def send(self, request: SoakRequest) -> tuple[int, str | None, int]:
        """One request: status, ETag, body bytes read (raises on client errors)."""
        url = URL(self.base + request.target, encoded=True)
        async with self.session.request(request.method, url, headers=dict(request.headers),
                                        data=request.body, allow_redirects=False) as response:
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
            return response.status, response.headers.get("ETag"), size

    async def fetch(self, target: str) -> tuple[int, bytes]:
        url = URL(self.base + target, encoded=True)
        async with self.session.get(url) as response:
            return response.status, await response.read()

    async def timed(self, request: SoakRequest, due: float, sink: Sink) -> None:
        """Send one request and report it to ``sink`` with latency from ``due``."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        size = 0
        try:
            status, _, size = await self.send(request)
        except asyncio.CancelledError:
            done = time.perf_counter()
            sink(request, None, CANCELLED, done - due, done - started, size)
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as failure:
            error = type(failure).__name__
        done = time.perf_counter()
        sink(request, status, error, done - due, done - started, size)

    async def closed_loop(self, sequence: Sequence[SoakRequest], connections: int,
                          seconds: float, sink: Sink, offset: int = 0) -> int:
        """``connections`` coroutines back to back for ``seconds``; requests sent."""
        deadline = time.perf_counter() + seconds
        counter = iter(range(offset, 1 << 62))

        async def one_connection() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                await self.timed(sequence[i % len(sequence)], time.perf_counter(), sink)

        await asyncio.gather(*(one_connection() for _ in range(connections)))
        return next(counter) - offset

    async def open_loop(self, sequence: Sequence[SoakRequest], rate: float, seconds: float,
                        sink: Sink, max_in_flight: int, on_late: Callable[[], None],
                        drain_seconds: float) -> dict[str, Any]:
        """Requests due at ``start + i / rate`` for ``seconds``, then wait for the stragglers."""
        start = time.perf_counter()
        total = int(rate * seconds)
        slots = asyncio.Semaphore(max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        peak = 0

        async def run(request: SoakRequest, due: float) -> None:
            try:
                await self.timed(request, due, sink)
            finally:
                slots.release()

        i = 0
        while i < total:
            now = time.perf_counter()
            due_now = min(total, int((now - start) * rate) + 1)
            while i < due_now:
                due = start + i / rate
                if slots.locked():
                    on_late()
                await slots.acquire()
                task = asyncio.create_task(run(sequence[i % len(sequence)], due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            peak = max(peak, len(tasks))
            if i < total:
                next_due = start + i / rate
                await asyncio.sleep(max(TICK, next_due - time.perf_counter()))
        dispatched = time.perf_counter()
        stragglers = 0
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=drain_seconds)
            stragglers = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return {"scheduled": total, "dispatch_seconds": round(dispatched - start, 3),
                "drain_seconds": round(time.perf_counter() - dispatched, 3),
                "peak_in_flight": peak, "cancelled_at_drain": stragglers}
