"""The origin's client for content keys (DESIGN "Layers": the origin never opens the keystore).

Keys come from the licence module's authenticated internal API and are
cached per asset for a TTL; each internal request may take ``INTERNAL_API_TIMEOUT``.
Concurrent misses for one asset share a single request (single flight).  Any
failure to reach the licence module, or an answer that is not a well-formed key,
is ``DependencyUnavailable`` (503); the internal token and key bytes never appear
in errors or logs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from origin.config import LicenseEndpoint
from origin.crypto.key import ContentKey
from origin.errors import DependencyUnavailable, NotFound

LICENSE_METRICS_TIMEOUT = 3.0  # seconds: a scrape must not hang on the licence module
# Seconds a key or playback-info request may take.  The session's own time-out is the
# licence proxy's, which outwaits upstream licence servers
# (``OriginSettings.license_timeout``): a segment request must not wait that long for a key.
INTERNAL_API_TIMEOUT = 10.0
MAX_LICENSE_METRICS = 1 << 20


@dataclass(frozen=True, slots=True)
class PlaybackInfo:
    """An asset's licence facts for a playback context (no key bytes)."""

    kid: bytes
    restriction: str  # "open" | "token"
    offline_allowed: bool
    license_duration_s: int | None
    rental_duration_s: int | None
    fairplay: bool  # a FairPlay certificate and KSM are configured
    widevine: bool  # an upstream Widevine licence server is configured
    playready: bool  # an upstream PlayReady licence server is configured


@dataclass(frozen=True, slots=True)
class _Cached:
    key: ContentKey
    expires: float


def make_license_session(endpoint: LicenseEndpoint, timeout: float) -> aiohttp.ClientSession:
    """A pooled keep-alive session to the licence module (TCP or Unix socket)."""
    connector: aiohttp.BaseConnector
    if endpoint.unix_path is not None:
        connector = aiohttp.UnixConnector(path=endpoint.unix_path, limit=256)
    else:
        connector = aiohttp.TCPConnector(limit=256)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 3.0)),
        auto_decompress=False,
        trust_env=False,
    )


class KeyClient:
    def __init__(self, session: aiohttp.ClientSession, endpoint: LicenseEndpoint,
                 ttl: float) -> None:
        self._session = session
        self._endpoint = endpoint
        self._ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[ContentKey]] = {}

    def __repr__(self) -> str:
        return f"KeyClient({self._endpoint.base_url!r}, ttl={self._ttl})"

    def cached_key(self, asset: str) -> ContentKey | None:
        """The content key of ``asset`` if one is cached and within its TTL, else None
        (no I/O: callers on a hot path try this before awaiting ``asset_key``)."""
        cached = self._cache.get(asset)
        if cached is not None and cached.expires > time.monotonic():
            return cached.key
        return None

    async def asset_key(self, asset: str) -> ContentKey:
        """The content key the origin encrypts ``asset`` with."""
        cached = self.cached_key(asset)
        if cached is not None:
            return cached
        pending = self._inflight.get(asset)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ContentKey] = asyncio.get_running_loop().create_future()
        self._inflight[asset] = future
        try:
            key = await self._fetch(asset)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            self._cache[asset] = _Cached(key, time.monotonic() + self._ttl)
            future.set_result(key)
            return key
        finally:
            del self._inflight[asset]

    async def playback_info(self, asset: str) -> PlaybackInfo:
        """The asset's key id, policy and configured licence services (not cached: policies
        change under the admin API)."""
        doc = await self._get_json(f"/internal/v1/assets/{asset}/playback")
        try:
            policy, configured = doc["policy"], doc["configured"]
            return PlaybackInfo(
                kid=bytes.fromhex(doc["kid"]),
                restriction=str(policy["restriction"]),
                offline_allowed=bool(policy["persistent"]),
                license_duration_s=_optional_int(policy.get("license_duration_s")),
                rental_duration_s=_optional_int(policy.get("rental_duration_s")),
                fairplay=bool(configured["fairplay"]),
                widevine=bool(configured["widevine"]),
                playready=bool(configured["playready"]),
            )
        except (KeyError, TypeError, ValueError):
            raise DependencyUnavailable("licence module sent a malformed answer") from None

    async def license_metrics(self) -> str:
        """The licence module's metrics (Prometheus text), through its internal API;
        ``DependencyUnavailable`` when it does not answer 200 within
        ``LICENSE_METRICS_TIMEOUT`` with at most ``MAX_LICENSE_METRICS`` bytes of UTF-8."""
        url = f"{self._endpoint.base_url}/internal/v1/metrics"
        headers = {"Authorization": f"Bearer {self._endpoint.token}"}
        timeout = aiohttp.ClientTimeout(total=LICENSE_METRICS_TIMEOUT)
        try:
            async with self._session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise DependencyUnavailable(f"licence module answered {resp.status}")
                body = bytearray()
                while chunk := await resp.content.read(MAX_LICENSE_METRICS + 1 - len(body)):
                    body += chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DependencyUnavailable("licence module unavailable") from exc
        if len(body) > MAX_LICENSE_METRICS:
            raise DependencyUnavailable("licence module metrics too large")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise DependencyUnavailable("licence module sent malformed metrics") from None

    async def _get_json(self, path: str) -> Any:
        url = f"{self._endpoint.base_url}{path}"
        headers = {"Authorization": f"Bearer {self._endpoint.token}"}
        timeout = aiohttp.ClientTimeout(total=INTERNAL_API_TIMEOUT)
        try:
            async with self._session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status == 400:
                    raise NotFound("unknown asset")
                if resp.status != 200:
                    raise DependencyUnavailable(f"licence module answered {resp.status}")
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DependencyUnavailable("licence module unavailable") from exc

    async def _fetch(self, asset: str) -> ContentKey:
        doc = await self._get_json(f"/internal/v1/assets/{asset}/key")
        try:
            return ContentKey(bytes.fromhex(doc["kid"]), bytes.fromhex(doc["key"]))
        except (KeyError, TypeError, ValueError):
            raise DependencyUnavailable("licence module sent a malformed key") from None


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value
