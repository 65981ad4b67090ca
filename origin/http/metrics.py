"""The origin's Prometheus metrics: what each is, how requests fill them, how they render.

Labels never carry a token, a key, a query string or a raw path: routes are the
route's template (``/hls/{asset}/{scheme}/{tail}``; ``unmatched`` when no route
matched), schemes come from the ``Scheme`` enum (``none`` on routes without one,
``unknown`` for any other text), statuses are numbers.  The front door middleware
(``origin.http.middleware``) stamps each request's start (``stamp_request``) and
``count_response`` (called from the app's one ``on_response_prepare`` hook) counts it
once its status is known.  Every request is counted, none sampled: the labelled
children of ``REQUESTS`` and ``LATENCY`` are bound once per (route, scheme, status)
and kept (a bounded set: templates, the ``Scheme`` values, the statuses the origin
answers), so a request costs one counter increment and one histogram observation.

Workers and prometheus_client's multiprocess mode: prometheus_client chooses how
metric values are stored when ``prometheus_client`` is first imported, from the
``PROMETHEUS_MULTIPROC_DIR`` environment variable.  With ``--workers N > 1`` the
parent (``origin.workers``) puts that variable in each worker's environment when it
executes it, so it is there before this module — or anything else — imports
prometheus_client; the parent never sets it in its own environment (the licence
module, its other child, keeps a plain registry).  ``check_value_mode`` refuses to
build an app whose values would not reach the shared directory.  ``render_metrics``
then merges every worker's files (``MultiProcessCollector``); with one process it
renders the default registry.  It reads files: run it in the executor.
``origin.http.metrics_routes`` serves the result at ``/metrics``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from origin.packaging.scheme import Scheme

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
NO_SCHEME = "none"
UNKNOWN_SCHEME = "unknown"
_SCHEMES = frozenset(s.value for s in Scheme)

REQUESTS = Counter(
    "origin_http_requests_total", "HTTP requests answered", ["route", "scheme", "status"]
)
LATENCY = Histogram(
    "origin_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response is prepared or the body is sent)",
    ["route", "scheme"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BYTES_ENCRYPTED = Counter(
    "origin_bytes_encrypted_total", "Segment bytes encrypted on request", ["scheme"]
)
CACHE_LOOKUPS = Counter(
    "origin_cache_lookups_total",
    "Cache lookups for protected segments and rewritten manifests",
    ["kind", "tier", "result"],  # kind: segment|manifest; tier: memory|disk; result: hit|miss
)

REQUEST_STARTED = web.RequestKey("metrics_request_started", float)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """How ``/metrics`` answers: its bearer token ("" = open) and the workers' shared
    multiprocess directory (``None``: a single process, the default registry)."""

    token: str = field(default="", repr=False)
    multiprocess_dir: Path | None = None


METRICS_CONFIG: web.AppKey[MetricsConfig] = web.AppKey("metrics_config", MetricsConfig)


def check_value_mode(config: MetricsConfig) -> None:
    """Raise ``RuntimeError`` if workers' values would not land in their shared directory:
    prometheus_client was imported before ``PROMETHEUS_MULTIPROC_DIR`` was set, or it
    names another directory (see the module docstring)."""
    if config.multiprocess_dir is None:
        return
    if prometheus_values.ValueClass is prometheus_values.MutexValue:
        raise RuntimeError(f"prometheus_client was imported without {MULTIPROC_ENV}")
    if os.environ.get(MULTIPROC_ENV) != str(config.multiprocess_dir):
        raise RuntimeError(f"{MULTIPROC_ENV} does not name the workers' metrics directory")


def route_labels(request: web.Request) -> tuple[str, str]:
    """The ``route`` and ``scheme`` labels of a request: a template and a known scheme."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED_ROUTE
    scheme = request.match_info.get("scheme")
    if scheme is None:
        return route, NO_SCHEME
    return route, scheme if scheme in _SCHEMES else UNKNOWN_SCHEME


_RequestChildren = tuple[Counter, Histogram]
_BOUND: dict[tuple[str, str, int], _RequestChildren] = {}


def _children(route: str, scheme: str, status: int) -> _RequestChildren:
    """``REQUESTS`` and ``LATENCY`` bound to these labels, bound once (module docstring)."""
    found = _BOUND.get((route, scheme, status))
    if found is None:
        found = _BOUND[route, scheme, status] = (REQUESTS.labels(route, scheme, str(status)),
                                                 LATENCY.labels(route, scheme))
    return found


def stamp_request(request: web.Request) -> None:
    """Note when ``request`` started (the front door middleware calls it first)."""
    request[REQUEST_STARTED] = time.perf_counter()


def count_response(request: web.Request, response: web.StreamResponse) -> None:
    """Count the request and observe its latency, now that its response is being prepared
    (called from the app's ``on_response_prepare`` hook)."""
    started = request.get(REQUEST_STARTED)
    if started is None:  # never passed the middleware (aiohttp's own early errors)
        return
    route, scheme = route_labels(request)
    requests, latency = _children(route, scheme, response.status)
    requests.inc()
    latency.observe(time.perf_counter() - started)


def render_metrics(multiprocess_dir: Path | None) -> bytes:
    """The origin's own metrics in the text format.  Blocking (reads every worker's
    files): run it in the executor."""
    if multiprocess_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry)
