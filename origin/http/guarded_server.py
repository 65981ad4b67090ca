"""The aiohttp server a public port needs: slow request heads cut off, short error bodies.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but has no time
limit on reading a request head: a client sending one header byte a second holds a
connection (and its memory) for as long as it likes.  ``GuardedRunner`` is an
``AppRunner`` whose connections are ``HeadTimedHandler``s.

Rules:

- A request head must be complete ``header_timeout`` seconds after its first byte
  arrived; a new connection's clock starts when it opens.  Otherwise the connection
  is closed, with no response (there is no request to answer).  Between requests the
  clock is off: an idle keep-alive connection is closed after ``keepalive_timeout``,
  and a request body is the route's business (the licence proxy's ``body_timeout``;
  aiohttp drains an unread body for at most ``lingering_time`` before closing).
- A request aiohttp cannot parse (a line over 8 KiB, more than 128 headers, bad bytes,
  a bad ``Content-Length``, ``Content-Length`` with ``Transfer-Encoding``) is answered
  ``{"error": "malformed request"}`` with ``Cache-Control: no-store``; aiohttp's own
  body quotes the request line back, and its log line is redacted by
  ``origin.log_redaction``.
- Everything runs on the loop; a timer per connection, armed and cancelled in O(1).

This relies on two attributes of aiohttp's ``RequestHandler`` (3.14): ``_request_count``
(requests parsed on the connection) and ``_messages`` (parsed, not yet handled);
``tests/test_hostile.py`` fails if they stop meaning that.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

log = logging.getLogger("origin.http")

MALFORMED = "malformed request"


class HeadTimedHandler(web.RequestHandler):
    """One connection: aiohttp's handler plus the request-head deadline (module rules)."""

    __slots__ = ("_body", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the last request parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        # aiohttp itself calls data_received(b"") when it resumes reading: not a request byte.
        if data and self._head_timer is None and (self._body is None or self._body.is_eof()):
            self._start_head_clock()  # the first byte of the next request head
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a head (or a parse error) came out whole
            self._stop_head_clock()
            if self._messages:
                self._body = self._messages[-1][1]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_clock()
        self._body = None
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if output began
        reason = MALFORMED if status == 400 else HTTPStatus(status).phrase.lower()
        response = web.json_response({"error": reason}, status=status,
                                     headers={"Cache-Control": "no-store"})
        response.force_close()
        return response

    def _start_head_clock(self) -> None:
        if self._head_timeout > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_overdue)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        log.debug("closing a connection: request head not complete in %.0fs",
                  self._head_timeout)
        self.force_close()


class GuardedServer(web.Server):
    """aiohttp's ``Server`` making ``HeadTimedHandler``s."""

    head_timeout: float

    @classmethod
    def adopt(cls, server: web.Server, head_timeout: float) -> GuardedServer:
        """This class over ``server``'s state (what ``AppRunner`` built for the app)."""
        guarded = cls.__new__(cls)
        guarded.__dict__.update(vars(server))
        guarded.head_timeout = head_timeout
        return guarded

    def __call__(self) -> web.RequestHandler:
        return HeadTimedHandler(self, loop=self._loop, head_timeout=self.head_timeout,
                                **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``AppRunner`` whose connections must send each request head within
    ``head_timeout`` seconds (0: no limit)."""

    __slots__ = ("_head_timeout",)

    def __init__(self, app: web.Application, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout = head_timeout

    async def _make_server(self) -> web.Server:
        return GuardedServer.adopt(await super()._make_server(), self._head_timeout)
