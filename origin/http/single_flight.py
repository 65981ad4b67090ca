"""Single flight: concurrent requests for the same missing result share one production.

Rules:
- the first caller for a key starts the production as its own task; later
  callers for that key await the same task, so the work runs once;
- a caller that goes away (cancelled) does not cancel the production: the
  others still get it (each waits through ``asyncio.shield``);
- a failure reaches every waiter and is forgotten with the flight: nothing is
  remembered, the next request tries again;
- the flight ends when the production does; storing the result somewhere is
  the production's own job, done before it returns.
One event loop owns a ``SingleFlight`` (no locks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}
        self._tasks: set[asyncio.Task[T]] = set()  # strong references until done

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, produce: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``produce()``'s result, shared with every concurrent caller for ``key``."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(produce())
            self._flights[key] = flight
            self._tasks.add(flight)
            flight.add_done_callback(lambda done: self._land(key, done))
        return await asyncio.shield(flight)

    def _land(self, key: str, done: asyncio.Task[T]) -> None:
        self._tasks.discard(done)
        if self._flights.get(key) is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # retrieved here: waiters that left must not leave it unseen

    async def drain(self) -> None:
        """Wait for the productions still running (application shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
