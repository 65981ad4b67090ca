"""Origin settings: a frozen value built by the entry layer, never read at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LicenseEndpoint:
    """Where the licence module answers: a base URL, optionally over a Unix socket."""

    base_url: str
    token: str = field(repr=False)
    unix_path: str | None = None


@dataclass(frozen=True, slots=True)
class OriginSettings:
    media_root: Path
    license: LicenseEndpoint
    cors_origins: tuple[str, ...] = ("*",)
    web_dir: Path = Path("web")  # the test player page and its npm packages
    public_url: str = ""  # base of absolute licence URLs; "" = the request's own host
    key_cache_ttl: float = 300.0
    license_timeout: float = 10.0
    catalog_interval: float = 10.0
    catalog_min_rescan: float = 1.0
    max_license_body: int = 1 << 20
