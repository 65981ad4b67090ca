"""``GET /metrics``: the origin's metrics (every worker's), then the licence module's.

Rules:

- ``/metrics`` is on the public port.  With a token configured (``--metrics-token``)
  it needs ``Authorization: Bearer <token>`` (constant-time compare; never the query
  string, which would put the token in URLs); operators should also keep it off the
  public path (CDN, firewall).
- The licence module's text comes from its internal API with the internal token
  (``KeyClient.license_metrics``).  When it cannot answer, the origin's own metrics
  still answer 200 and ``origin_license_metrics_up`` is 0.
- Rendering reads the workers' files: it runs in the executor.
"""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import hdrs, web

from origin.errors import DependencyUnavailable, Unauthorized
from origin.http.hls_routes import KEYS
from origin.http.metrics import METRICS_CONFIG, render_metrics

# The text format generate_latest writes (the licence module's text appended is the same).
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_REALM = "origin-metrics"


def _license_up(up: bool) -> bytes:
    return (
        "# HELP origin_license_metrics_up Whether the licence module's metrics could be read\n"
        "# TYPE origin_license_metrics_up gauge\n"
        f"origin_license_metrics_up {1 if up else 0}\n"
    ).encode()


def _require_token(request: web.Request, expected: str) -> None:
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    presented = value.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8")):
        raise Unauthorized("metrics token required", realm=METRICS_REALM)


async def serve_metrics(request: web.Request) -> web.Response:
    """Every worker's metrics, then the licence module's, in the Prometheus text format."""
    config = request.app[METRICS_CONFIG]
    if config.token:
        _require_token(request, config.token)
    loop = asyncio.get_running_loop()
    own = await loop.run_in_executor(None, render_metrics, config.multiprocess_dir)
    try:
        licence = (await request.app[KEYS].license_metrics()).encode()
    except DependencyUnavailable:
        licence = b""
    body = b"".join((own, licence, _license_up(bool(licence))))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: TEXT_CONTENT_TYPE,
                                            hdrs.CACHE_CONTROL: "no-store"})
