"""Per-client token buckets on the licence routes (``/license/…``).

Rules:

- One bucket per client address: it holds at most ``burst`` tokens and refills at
  ``rate`` tokens a second; each request takes one.  A request that finds less than
  one is refused with 429, ``Retry-After`` (whole seconds until a token is back, at
  least 1) and ``{"error": "too many licence requests"}``; a refused request takes
  nothing, so retrying early does not push the wait further out.
- The client address is the TCP peer.  With ``trust_forwarded`` (the origin sits
  behind a proxy or CDN that appends the address it saw) it is the last
  ``X-Forwarded-For`` entry, when that is an IP address; otherwise still the peer.
  Without it, ``X-Forwarded-For`` is ignored: clients choose what it says.
- Memory is bounded: at most ``max_clients`` buckets, the least recently seen client
  forgotten first (it comes back with a full bucket).
- Per process: every serving process (each ``--workers`` worker) keeps its own
  buckets, and the kernel spreads connections over workers, so a client can get up
  to N × ``rate`` from N workers.
- Bookkeeping only, on the loop: O(1) per request, monotonic clock; ``rate`` 0
  (``--license-rate 0``) installs no middleware at all.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from origin.config import ClientLimits
from origin.errors import TooManyRequests
from origin.http.middleware import Handler

MAX_CLIENTS = 100_000
LICENSE_PREFIX = "/license/"


class ClientBuckets:
    """Token buckets by client address, at most ``max_clients`` of them (LRU)."""

    __slots__ = ("_buckets", "_burst", "_clock", "_max_clients", "_rate")

    def __init__(self, rate: float, burst: int, *, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # [tokens, stamp]

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"ClientBuckets({len(self._buckets)} clients, {self._rate:g}/s, " \
               f"burst {self._burst:g})"

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when it had one, else the seconds until it will."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = [self._burst, now]
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket[0] = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self._rate


def client_address(request: web.Request, *, trust_forwarded: bool) -> str:
    """Whom a request counts against (module rules)."""
    if trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
    return request.remote or "-"


def license_rate_limit(limits: ClientLimits) -> Middleware | None:
    """The middleware limiting ``/license/…`` per client, or None when ``license_rate`` is 0.

    Place it inside ``error_middleware``: it raises ``TooManyRequests``."""
    if limits.license_rate <= 0:
        return None
    buckets = ClientBuckets(limits.license_rate, limits.license_burst)
    trust = limits.trust_forwarded

    @web.middleware
    async def limit_license_rate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(LICENSE_PREFIX):
            wait = buckets.take(client_address(request, trust_forwarded=trust))
            if wait > 0:
                raise TooManyRequests("too many licence requests",
                                      retry_after=max(1, math.ceil(wait)))
        return await handler(request)

    return limit_license_rate
