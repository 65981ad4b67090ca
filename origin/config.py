"""Origin settings: a frozen value built by the entry layer, never read at import time."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30
DEFAULT_CACHE_BYTES = 256 * MIB
DEFAULT_CACHE_DISK_BYTES = 4 * GIB
_BYTE_SIZE = re.compile(r"(\d{1,20})\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": MIB, "g": GIB, "t": 1 << 40}


def parse_byte_size(text: str) -> int:
    """``"268435456"``, ``"256M"``, ``"256MiB"``, ``"4G"`` → bytes (binary units).

    ``ValueError`` for anything else."""
    match = _BYTE_SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a byte size: {text[:32]!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True, slots=True)
class LicenseEndpoint:
    """Where the licence module answers: a base URL, optionally over a Unix socket."""

    base_url: str
    token: str = field(repr=False)
    unix_path: str | None = None


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The cache of protected segments and rewritten manifests (``origin.http.segment_cache``).

    ``memory_bytes`` 0 turns the whole cache off (memory, disk and single flight);
    ``disk_dir`` None means memory only.
    """

    memory_bytes: int = DEFAULT_CACHE_BYTES
    disk_dir: Path | None = None
    disk_bytes: int = DEFAULT_CACHE_DISK_BYTES

    @property
    def enabled(self) -> bool:
        return self.memory_bytes > 0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """``--tls-cert`` / ``--tls-key``: a PEM certificate chain and its private key.

    Paths only: ``origin.tls.server_context`` reads them, in each serving process."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client may cost a serving process (``origin.worker``, the licence proxy
    and ``origin.http.rate_limit``).

    ``header_timeout``: seconds a request head may take, from its first byte (a new
    connection's clock starts when it opens); ``body_timeout``: seconds a licence
    request body may take; ``keepalive_timeout``: seconds an idle keep-alive connection
    stays open.  ``license_rate`` requests/s with bursts of ``license_burst`` per client
    address on ``/license/…`` (``license_rate`` 0: no limit); ``trust_forwarded``: the
    client address is the last ``X-Forwarded-For`` entry, not the peer.
    """

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    license_rate: float = 50.0
    license_burst: int = 100
    trust_forwarded: bool = False


@dataclass(frozen=True, slots=True)
class OriginSettings:
    media_root: Path
    license: LicenseEndpoint
    cors_origins: tuple[str, ...] = ("*",)
    web_dir: Path = Path("web")  # the test player page and its npm packages
    public_url: str = ""  # base of absolute licence URLs; "" = the request's own host
    key_cache_ttl: float = 300.0
    # The origin's proxy waits for the licence module longer than the longest upstream or
    # KSM time-out the licence module accepts (60 s: upstream.MAX_TIMEOUT_S,
    # fairplay_routes.MAX_KSM_TIMEOUT_S), so a player gets its 504/503, not ours.
    license_timeout: float = 65.0
    catalog_interval: float = 10.0
    catalog_min_rescan: float = 1.0
    max_license_body: int = 1 << 20
    cache: CacheSettings = CacheSettings()
    encrypt_threads: int = 1  # threads per serving process that read and encrypt segments
    limits: ClientLimits = ClientLimits()
    tls: TlsFiles | None = None  # serve HTTPS with these files; None: plain HTTP
