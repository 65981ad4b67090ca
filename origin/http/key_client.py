"""The origin's client for content keys (DESIGN "Layers": the origin never opens the keystore).

Keys come from the licence module's authenticated internal API and are
cached per asset for a TTL.  Concurrent misses for one asset share a single
request (single flight).  Any failure to reach the licence module, or an
answer that is not a well-formed key, is ``DependencyUnavailable`` (503);
the internal token and key bytes never appear in errors or logs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from origin.config import LicenseEndpoint
from origin.crypto.key import ContentKey
from origin.errors import DependencyUnavailable, NotFound


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

    async def asset_key(self, asset: str) -> ContentKey:
        """The content key the origin encrypts ``asset`` with."""
        cached = self._cache.get(asset)
        if cached is not None and cached.expires > time.monotonic():
            return cached.key
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

    async def _fetch(self, asset: str) -> ContentKey:
        url = f"{self._endpoint.base_url}/internal/v1/assets/{asset}/key"
        headers = {"Authorization": f"Bearer {self._endpoint.token}"}
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status == 400:
                    raise NotFound("unknown asset")
                if resp.status != 200:
                    raise DependencyUnavailable(f"licence module answered {resp.status}")
                doc = await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DependencyUnavailable("licence module unavailable") from exc
        try:
            return ContentKey(bytes.fromhex(doc["kid"]), bytes.fromhex(doc["key"]))
        except (KeyError, TypeError, ValueError):
            raise DependencyUnavailable("licence module sent a malformed key") from None
