"""Configuration of the licence module: where keys live, the KEK, the internal API token.

Nothing here runs at import time; the entry point calls ``load_kek`` and
``load_internal_token`` and builds a ``LicenseSettings``.  Neither the KEK nor
the token ever appears in a repr or in an error message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from origin.crypto.keywrap import KEK_SIZES

log = logging.getLogger(__name__)

KEK_ENV = "ORIGIN_KEK"
TOKEN_ENV = "ORIGIN_LICENSE_TOKEN"  # noqa: S105 - the name of the variable, not a secret
ADMIN_TOKEN_ENV = "ORIGIN_ADMIN_TOKEN"  # noqa: S105 - the name of the variable, not a secret
DEFAULT_KEK_FILE = "kek"
MIN_TOKEN_LENGTH = 16
RAW_KEK_FILE_SIZE = 32

_SIZES_TEXT = "16, 24 or 32 bytes"


@dataclass(frozen=True)
class LicenseSettings:
    """Everything the licence module's app needs to run.

    ``config`` is the licence configuration file (TOML, ``--license-config``) as
    parsed tables; each subsystem (``token``, ``fairplay``, ``widevine``,
    ``playready``) validates its own table when the app starts, resolving
    relative paths against ``config_dir``.  Secrets stay out of the file: they
    come from the environment or from files it names.
    """

    db_path: Path
    kek: bytes = field(repr=False)
    internal_token: str = field(repr=False)
    admin_token: str | None = field(default=None, repr=False)
    config: Mapping[str, Any] = field(default_factory=dict)
    config_dir: Path = Path(".")

    def section(self, name: str) -> Mapping[str, Any] | None:
        """The ``[name]`` table of the configuration file, if present.

        ``ValueError`` if ``name`` is present but not a table.
        """
        table = self.config.get(name)
        if table is None:
            return None
        if not isinstance(table, Mapping):
            raise ValueError(f"licence config: [{name}] must be a table")
        return table

    def resolve(self, path: str) -> Path:
        """A path from the configuration file, relative to the file's directory."""
        return (self.config_dir / path).resolve()


def load_license_config(path: Path) -> dict[str, Any]:
    """Parse the licence configuration file (TOML).  ``ValueError`` names the file.  Blocking."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read licence config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"licence config {path} is not valid TOML: {exc}") from None


def load_admin_token(env: Mapping[str, str]) -> str | None:
    """The admin API's bearer token (``ORIGIN_ADMIN_TOKEN``); ``None`` disables the API."""
    token = env.get(ADMIN_TOKEN_ENV)
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not all("!" <= ch <= "~" for ch in token):
        raise ValueError(
            f"{ADMIN_TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} printable ASCII characters"
        )
    return token


def load_kek(*, env: Mapping[str, str], kek_file: Path | None, state_dir: Path) -> bytes:
    """Return the key-encryption key that wraps every stored content key.

    Sources, first match wins:

    1. the environment variable ``ORIGIN_KEK``: hex or base64 of 16, 24 or 32 bytes;
    2. ``kek_file``: hex or base64 text (surrounding whitespace ignored) of 16, 24 or
       32 bytes, or exactly 32 raw bytes;
    3. ``state_dir/kek``, created with mode 0600 and 32 random bytes (as hex) when
       missing.  This is the embedded default for local development only: the KEK
       then lives next to the database it protects.  Production deployments pass
       ``ORIGIN_KEK`` or ``--kek-file`` from a secret store.

    Hex is tried before base64 (32 hex digits are also valid base64).  Raises
    ``ValueError`` with a message that names the source but never the value.
    Blocking (file I/O); call it before the event loop starts or in an executor.
    """
    from_env = env.get(KEK_ENV)
    if from_env is not None:
        kek = _decode_kek_text(from_env)
        if kek is None:
            raise ValueError(f"{KEK_ENV} must be hex or base64 of {_SIZES_TEXT}")
        return kek
    if kek_file is not None:
        return _read_kek_file(kek_file)
    return _default_kek(state_dir / DEFAULT_KEK_FILE)


def load_internal_token(env: Mapping[str, str]) -> str:
    """Return the bearer token that guards the internal API (``ORIGIN_LICENSE_TOKEN``).

    Required; at least 16 printable ASCII characters without whitespace (a bearer
    token travels in an HTTP header).  ``ValueError`` otherwise; the message never
    contains the value.
    """
    token = env.get(TOKEN_ENV)
    if not token:
        raise ValueError(
            f"{TOKEN_ENV} must be set (a shared secret of at least {MIN_TOKEN_LENGTH} characters)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters")
    if not all("!" <= ch <= "~" for ch in token):
        raise ValueError(f"{TOKEN_ENV} must be printable ASCII without whitespace")
    return token


def _decode_kek_text(text: str) -> bytes | None:
    compact = text.strip()
    try:
        kek = bytes.fromhex(compact)
    except ValueError:
        pass
    else:
        if len(kek) in KEK_SIZES and compact.isascii() and compact.isalnum():
            return kek
    try:
        kek = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return kek if len(kek) in KEK_SIZES else None


def _read_kek_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read KEK file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        kek = None
    else:
        kek = _decode_kek_text(text)
    if kek is not None:
        return kek
    if len(raw) == RAW_KEK_FILE_SIZE:
        return raw
    raise ValueError(
        f"KEK file {path} must hold hex or base64 of {_SIZES_TEXT}, "
        f"or exactly {RAW_KEK_FILE_SIZE} raw bytes"
    )


def _default_kek(path: Path) -> bytes:
    if not path.exists():
        _create_default_kek(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("KEK file %s is readable by group or others (mode %o)", path, mode)
    return _read_kek_file(path)


def _create_default_kek(path: Path) -> None:
    """Write a fresh KEK atomically: a complete 0600 temp file, hard-linked into place.

    If another process wins the race the link fails and its KEK is used.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_bytes(32).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            log.warning(
                "created a development KEK at %s; use %s or --kek-file in production",
                path,
                KEK_ENV,
            )
    finally:
        tmp.unlink(missing_ok=True)
