"""``GET /metrics``: Prometheus text, summed over the workers, plus the licence module's.

One origin with two workers (``--metrics-token``), a licence configuration verifying
HS256 player tokens, and the demo asset under a ``token`` policy.  The exposition is
read with prometheus_client's own parser; counts are compared as differences before
and after what each test sends.

- request counts per route template equal what the test sent, and both workers
  served some of them (each worker's counter file is in the shared directory);
- the latency histogram has cumulative buckets ending in ``+Inf`` = ``_count``;
- licence decisions are counted by key system, result and fixed reason;
- no token, key byte, raw path or query text reaches any label — while the very
  requests that carried them are counted (the control);
- ``--metrics-token`` is enforced; with the licence module out of reach the origin's
  own metrics still answer.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, RunningOrigin, child_pids, free_port, start_origin

SECRET = "metrics-test-jwt-secret-0123456789abcdef"
ADMIN = "admin-token-for-metrics-0123456789"
METRICS_TOKEN = "metrics-bearer-token-0123456789"
ISSUER = "https://issuer.metrics.test"
AUDIENCE = "origin-metrics-test"
CANARY = "CanaryTok3nXq7"
AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
REQUESTS = "origin_http_requests_total"
LATENCY = "origin_http_request_duration_seconds"
DECISIONS = "origin_license_decisions_total"


def mint(asset: str = "demo", secret: str = SECRET, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "asset": asset,
               **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrigin]:
    tmp = tmp_path_factory.mktemp("metrics-origin")
    media = tmp / "media"
    shutil.copytree(ROOT / "media", media)
    config = tmp / "license.toml"
    config.write_text(
        f'[token]\nalgorithm = "HS256"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n')
    server = start_origin(media, tmp / "state", "--license-config", str(config),
                          "--metrics-token", METRICS_TOKEN, workers=2,
                          env={"ORIGIN_JWT_SECRET": SECRET, "ORIGIN_ADMIN_TOKEN": ADMIN})
    try:
        asyncio.run(_set_token_policy(server.base))
        yield server
    finally:
        assert server.stop() == 0


async def _set_token_policy(base: str) -> None:
    async with aiohttp.ClientSession() as session, session.put(
            f"{base}/admin/v1/policies/demo", json={"restriction": "token"},
            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200, await resp.text()


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes,
                                                                            dict[str, str]]:
    """One request on a fresh connection (so the kernel picks a worker each time)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def scrape(base: str) -> str:
    status, body, headers = await fetch(f"{base}/metrics", AUTH)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(text)
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


async def aes128_kid(base: str) -> str:
    status, body, _ = await fetch(f"{base}/hls/demo/aes128/video-360p/index.m3u8")
    assert status == 200
    match = re.search(rb"/license/aes128/([0-9a-f]{32})", body)
    assert match is not None
    return match.group(1).decode()


async def test_request_counts_are_summed_over_the_workers(origin: RunningOrigin) -> None:
    before = await scrape(origin.base)
    by_worker: Counter[int] = Counter()
    for _ in range(40):
        status, _, headers = await fetch(f"{origin.base}/healthz")
        assert status == 200
        by_worker[int(headers["X-Origin-Worker"])] += 1
    segment = f"{origin.base}/hls/demo/clear/video-360p/seg-00001.m4s"
    for _ in range(15):
        assert (await fetch(segment))[0] == 200
    after = await scrape(origin.base)

    assert len(by_worker) == 2, by_worker  # both workers answered …
    health = {"route": "/healthz", "scheme": "none", "status": "200"}
    assert value(after, REQUESTS, **health) - value(before, REQUESTS, **health) == 40
    clear = {"route": "/hls/{asset}/{scheme}/{tail}", "scheme": "clear", "status": "200"}
    assert value(after, REQUESTS, **clear) - value(before, REQUESTS, **clear) == 15
    # … and each has its own counter file in the parent's private directory.
    workers = set(by_worker)
    (metrics_dir,) = origin.state_dir.glob(f"metrics-{origin.proc.pid}")
    files = {int(m.group(1)) for p in metrics_dir.iterdir()
             if (m := re.fullmatch(r"counter_(\d+)\.db", p.name))}
    assert workers <= files
    assert workers <= set(child_pids(origin.proc.pid))


async def test_latency_histogram_has_buckets(origin: RunningOrigin) -> None:
    for _ in range(5):
        assert (await fetch(f"{origin.base}/hls/demo/cbcs/video-360p/seg-00002.m4s"))[0] == 200
    text = await scrape(origin.base)
    labels = {"route": "/hls/{asset}/{scheme}/{tail}", "scheme": "cbcs"}
    buckets = sorted(
        ((float(lab["le"]), v) for n, lab, v in samples(text)
         if n == f"{LATENCY}_bucket" and all(lab.get(k) == w for k, w in labels.items())),
    )
    assert len(buckets) == 13 and buckets[-1][0] == float("inf")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == value(text, f"{LATENCY}_count", **labels) >= 5
    assert value(text, f"{LATENCY}_sum", **labels) > 0


async def test_licence_decisions_are_counted_by_reason(origin: RunningOrigin) -> None:
    kid = await aes128_kid(origin.base)
    key_url = f"{origin.base}/license/aes128/{kid}"
    before = await scrape(origin.base)
    sent = [
        (f"{key_url}?token={mint()}", 200, "granted", "token policy"),
        (key_url, 401, "refused", "a token is required"),
        (f"{key_url}?token={mint(secret='another-secret-0123456789abcdef0123')}", 401,
         "refused", "token signature invalid"),
        (f"{key_url}?token={mint(asset='other')}", 403, "refused",
         "token is not valid for this asset"),
    ]
    for url, status, _, _ in sent:
        assert (await fetch(url))[0] == status
    after = await scrape(origin.base)
    for _, _, result, reason in sent:
        labels = {"key_system": "aes128", "result": result, "reason": reason}
        assert value(after, DECISIONS, **labels) - value(before, DECISIONS, **labels) == 1
    assert value(after, "origin_license_metrics_up") == 1


async def test_no_token_key_or_query_in_any_label(origin: RunningOrigin) -> None:
    kid = await aes128_kid(origin.base)
    token = mint(note=CANARY)
    status, key, _ = await fetch(f"{origin.base}/license/aes128/{kid}?token={token}")
    assert status == 200 and len(key) == 16
    before = await scrape(origin.base)
    requests = [
        (f"/hls/demo/aes128/master.m3u8?token={token}&x={CANARY}", None, 200),
        (f"/hls/demo/cbcs/video-360p/index.m3u8?ks={CANARY}", None, 200),
        (f"/license/aes128/{kid}", {"Authorization": f"Bearer {CANARY}"}, 401),
        (f"/license/aes128/{kid}?token={CANARY}", None, 401),
        (f"/hls/demo/clear/{CANARY}.m3u8", None, 404),
        (f"/hls/demo/{CANARY}/master.m3u8", None, 404),
        (f"/{CANARY}?token={token}", None, 404),
    ]
    for path, headers, status in requests:
        assert (await fetch(origin.base + path, headers))[0] == status, path
    after = await scrape(origin.base)

    for secret in (CANARY, token, token.split(".")[1], METRICS_TOKEN, ADMIN, key.hex(),
                   base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()
                   .rstrip("=")):
        assert secret not in after
    label_values = {v for _, lab, _ in samples(after) for v in lab.values()}
    assert not any("?" in v or "=" in v for v in label_values)
    # The control: those very requests were counted, under templates and fixed words.
    counted = [
        ({"route": "/hls/{asset}/{scheme}/{tail}", "scheme": "aes128", "status": "200"}, 1),
        ({"route": "/license/{tail}", "scheme": "none", "status": "401"}, 2),
        ({"route": "/hls/{asset}/{scheme}/{tail}", "scheme": "clear", "status": "404"}, 1),
        ({"route": "/hls/{asset}/{scheme}/{tail}", "scheme": "unknown", "status": "404"}, 1),
        ({"route": "unmatched", "scheme": "none", "status": "404"}, 1),
    ]
    for labels, count in counted:
        assert value(after, REQUESTS, **labels) - value(before, REQUESTS, **labels) == count


async def test_metrics_token_is_required(origin: RunningOrigin) -> None:
    for headers in (None, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": METRICS_TOKEN}):
        status, body, response_headers = await fetch(f"{origin.base}/metrics", headers)
        assert status == 401
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert b"origin_http_requests_total" not in body
        assert METRICS_TOKEN.encode() not in body
    status, _, _ = await fetch(f"{origin.base}/metrics?token={METRICS_TOKEN}")
    assert status == 401  # never from the query string
    assert "origin_http_requests_total" in await scrape(origin.base)  # the control


async def test_metrics_answer_without_the_licence_module(media_copy: Path,
                                                        tmp_path: Path) -> None:
    """One process, a licence module out of reach, the token from the environment."""
    dead = f"http://127.0.0.1:{free_port()}"
    server = start_origin(media_copy, tmp_path / "state", "--license-url", dead,
                          env={"ORIGIN_LICENSE_TOKEN": "internal-token-0123456789abcdef",
                               "ORIGIN_METRICS_TOKEN": METRICS_TOKEN})
    try:
        assert (await fetch(f"{server.base}/metrics"))[0] == 401
        for _ in range(3):
            assert (await fetch(f"{server.base}/healthz"))[0] == 200
        text = await scrape(server.base)
        assert value(text, REQUESTS, route="/healthz", status="200") == 3
        assert value(text, "origin_license_metrics_up") == 0
        assert DECISIONS not in text
    finally:
        assert server.stop() == 0
