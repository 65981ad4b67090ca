"""What a request may look like before any route sees it.

Rules:

- ``GET`` and ``HEAD`` carry no body (RFC 9110 §9.3.1: content there has no defined
  meaning, and a cache or proxy in front may frame it differently than we do): one
  with a ``Content-Length`` over 0 or a ``Transfer-Encoding`` is a 400, before any
  route reads a file or the licence module is asked.  aiohttp drains (for at most its
  ``lingering_time``) or drops the body it did not read.

The front door middleware (``origin.http.middleware``) calls ``refuse_body_without_meaning``
inside its error handling: it raises ``BadRequest``.
"""

from __future__ import annotations

from aiohttp import web

from origin.errors import BadRequest

BODILESS_METHODS = frozenset({"GET", "HEAD"})


def refuse_body_without_meaning(request: web.Request) -> None:
    """Raise ``BadRequest`` for a ``GET``/``HEAD`` that carries a body (module rules)."""
    if request.method in BODILESS_METHODS and request.body_exists:
        raise BadRequest(f"a {request.method} request carries no body")
