"""The origin's ``GET /metrics`` read around a load run: cache lookups and encrypted bytes.

Rules:

- One scrape is one GET of ``/metrics`` on loopback with a time-out; a server
  without the route (or an unparsable answer) gives None, recorded as such.
- Only counters named in ``COUNTERS`` are kept, keyed ``name{label="v",…}``
  with labels sorted; a run's figure is the difference of two scrapes.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = (
    "origin_cache_lookups_total",
    "origin_bytes_encrypted_total",
    "origin_http_requests_total",
)
TIMEOUT = 5.0


def sample_key(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_counters(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                values[sample_key(sample.name, sample.labels)] = float(sample.value)
    return values


def scrape(base: str) -> dict[str, float] | None:
    """The counters now, or None when the server has no usable ``/metrics``."""
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=TIMEOUT) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError, UnicodeDecodeError):
        return None
    try:
        return parse_counters(text)
    except ValueError:
        return None


def difference(before: dict[str, float] | None,
               after: dict[str, float] | None) -> dict[str, float] | None:
    """``after - before`` for every counter that moved."""
    if before is None or after is None:
        return None
    moved = {key: value - before.get(key, 0.0) for key, value in after.items()}
    return {key: value for key, value in moved.items() if value}


def cache_hit_ratios(delta: dict[str, float] | None,
                     kind: str = "segment") -> dict[str, float] | None:
    """Per cache tier, hits ÷ lookups of ``kind`` in a difference; None without lookups."""
    if not delta:
        return None
    hits: dict[str, float] = {}
    lookups: dict[str, float] = {}
    for key, value in delta.items():
        if not key.startswith("origin_cache_lookups_total{") or f'kind="{kind}"' not in key:
            continue
        tier = key.split('tier="', 1)[1].split('"', 1)[0] if 'tier="' in key else "-"
        lookups[tier] = lookups.get(tier, 0.0) + value
        hits[tier] = hits.get(tier, 0.0) + (value if 'result="hit"' in key else 0.0)
    return {tier: hits[tier] / count for tier, count in lookups.items() if count} or None
