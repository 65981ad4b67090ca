"""Bearer tokens that open the licence module's own APIs (internal and admin).

Rules: the token comes from ``Authorization: Bearer <token>`` only (never the query);
it is compared with the expected one in constant time (``hmac.compare_digest``); a
missing or wrong token is ``Unauthorized`` — 401 with ``WWW-Authenticate: Bearer
realm="<realm>"`` and ``Cache-Control: no-store`` from the licence app's one error
middleware.  Neither token ever appears in an error or a log line.
"""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from origin.errors import Unauthorized


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def require_bearer(request: web.Request, expected: str, *, realm: str, detail: str) -> None:
    """Raise ``Unauthorized(detail, realm=realm)`` unless the request's bearer token is
    ``expected`` (compared in constant time)."""
    presented = bearer_token(request)
    if presented is None or not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    ):
        raise Unauthorized(detail, realm=realm)
