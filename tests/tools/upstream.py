"""Fake upstream licence servers (Widevine/PlayReady) for the licence module's proxy tests.

``FakeUpstream`` is a real aiohttp app (serve it with ``tests.tools.loopback.serve_app``
and set its ``url``) that records every request it receives and answers by its path:
``/ok`` (``LICENCE``, with headers the proxy must drop), ``/forbidden`` and ``/error``
(``UPSTREAM_SECRET_BODY``, which must never reach a player), ``/redirect``, ``/hang``
(until ``release`` is set; ``hanging`` is set on arrival), ``/huge``, ``/exact`` and
``/huge-chunked`` (around ``MAX_ANSWER_BYTES``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDictProxy, MultiDictProxy

from origin.license.upstream import MAX_ANSWER_BYTES

LICENCE = b"\x08\x02\x12\x10licence-bytes-\x00\xff" + os.urandom(64)
UPSTREAM_SECRET_BODY = b"upstream-internal-detail-do-not-leak"


@dataclass
class Received:
    path: str
    body: bytes
    headers: CIMultiDictProxy[str]
    query: MultiDictProxy[str]
    raw_query: str
    peer_port: int


@dataclass
class FakeUpstream:
    """Licence servers on loopback: ``/ok``, ``/forbidden``, ``/error``, ``/hang``, …"""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{mode}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.received.append(Received(
            request.path, await request.read(), CIMultiDictProxy(request.headers.copy()),
            MultiDictProxy(request.query.copy()), request.rel_url.raw_query_string,
            peer[1] if peer else -1,
        ))
        mode = request.match_info["mode"]
        if mode == "ok":
            return web.Response(body=LICENCE, content_type="application/x-test-licence",
                                headers={"Set-Cookie": "upstream=1", "X-Upstream": "yes"})
        if mode == "forbidden":
            return web.Response(status=403, body=UPSTREAM_SECRET_BODY)
        if mode == "error":
            return web.Response(status=500, body=UPSTREAM_SECRET_BODY)
        if mode == "redirect":
            raise web.HTTPFound(location=self.url + "/ok")
        if mode == "hang":
            self.hanging.set()
            await self.release.wait()
            return web.Response(body=b"too late")
        if mode in ("huge", "exact"):
            size = MAX_ANSWER_BYTES + (1 if mode == "huge" else 0)
            return web.Response(body=b"L" * size)
        if mode == "huge-chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(MAX_ANSWER_BYTES // 65536 + 2):
                await response.write(b"L" * 65536)
            await response.write_eof()
            return response
        raise web.HTTPNotFound()
