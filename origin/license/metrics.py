"""The licence module's Prometheus metrics: licence decisions by key system, result, reason.

Rules:

- One plain ``CollectorRegistry`` per licence app: the licence module is a single
  process, never prometheus_client's multiprocess mode, and its metrics never mix
  with the origin's default registry.  The origin reads them through the internal
  API (``GET /internal/v1/metrics``) and appends them to its ``/metrics``.
- ``origin_license_decisions_total{key_system,result,reason}``: ``key_system`` is a
  ``KeySystem`` value, ``result`` a ``DecisionResult``, ``reason`` the short fixed text
  of the decision or of the typed refusal (``"a token is required"``, ``"token
  expired"``, ``"open policy"`` …) — never a token, a key, a key id or a query —
  cut to ``MAX_REASON`` characters.
- ``count_decision`` has one caller, ``origin.license.audit.DecisionRecorder.record``,
  which writes the decision's audit line with it: the counter and the audit log never
  disagree.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, generate_latest

MAX_REASON = 64


class DecisionResult(enum.Enum):
    GRANTED = "granted"
    REFUSED = "refused"  # 401 / 403: the policy or the token said no
    ERROR = "error"  # the decision could not be made (e.g. token checks not configured)


class LicenseMetrics:
    """The licence app's metrics and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._decisions = Counter(
            "origin_license_decisions_total",
            "Licence and key requests decided, by key system, result and reason",
            ["key_system", "result", "reason"],
            registry=self.registry,
        )
        # The label children already made: reasons are short fixed texts, so this stays
        # as small as the metric itself.
        self._children: dict[tuple[str, DecisionResult, str], Counter] = {}

    def __repr__(self) -> str:
        return "LicenseMetrics()"

    def count_decision(self, key_system: str, result: DecisionResult, reason: str) -> None:
        labels = (key_system, result, reason)
        child = self._children.get(labels)
        if child is None:
            child = self._decisions.labels(key_system, result.value, reason[:MAX_REASON])
            self._children[labels] = child
        child.inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
