"""HTTPS for ``origin serve``: the server's TLS context, from a PEM certificate and key.

Rules:

- ``--tls-cert`` and ``--tls-key`` come together or not at all (``TlsFiles``).  The
  certificate file is PEM, the leaf first, intermediates after it; the key file is an
  unencrypted PEM private key (protect it with file permissions: a passphrase would
  need a prompt no server has).
- The context is ``ssl.SSLContext(PROTOCOL_TLS_SERVER)``: TLS 1.2 at least, OpenSSL's
  default cipher list with the server's preference, no client certificates, ALPN
  ``http/1.1`` only (the aiohttp server speaks HTTP/1.1).
- Every problem is a ``TlsConfigError`` whose message names the flag and the kind of
  failure (unreadable, not PEM, encrypted, key does not match the certificate) —
  never anything read from the files.
- ``key_file_warning``: a key file readable by its group or by others deserves a
  warning; ``origin serve`` logs it once and serves anyway.
- ``server_context`` reads both files: blocking.  It runs at startup only — in the
  parent, to fail early with a clear message, and in each worker again (an
  ``SSLContext`` cannot cross a process boundary).
"""

from __future__ import annotations

import ssl
import stat

from origin.config import TlsFiles

ALPN_PROTOCOLS = ("http/1.1",)


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; the message is safe to print."""


def _refuse_passphrase() -> bytes:
    raise TlsConfigError("--tls-key is encrypted; give an unencrypted PEM key")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The TLS context serving ``files`` (module rules).  Blocking (reads both files)."""
    for flag, path in (("--tls-cert", files.cert_file), ("--tls-key", files.key_file)):
        if not path.is_file():
            raise TlsConfigError(f"{flag} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        context.load_cert_chain(files.cert_file, files.key_file, password=_refuse_passphrase)
    except TlsConfigError:
        raise
    except ssl.SSLError as exc:
        raise TlsConfigError(_describe(exc, files)) from None
    except OSError as exc:
        raise TlsConfigError(f"cannot read --tls-cert/--tls-key: {exc.strerror}") from None
    return context


def _describe(exc: ssl.SSLError, files: TlsFiles) -> str:
    reason = getattr(exc, "reason", None) or ""
    if reason == "KEY_VALUES_MISMATCH":
        return (f"--tls-key {files.key_file} does not match the certificate in "
                f"--tls-cert {files.cert_file}")
    if reason in ("BAD_DECRYPT", "BAD_PASSWORD_READ", "PROBLEMS_GETTING_PASSWORD"):
        return "--tls-key is encrypted; give an unencrypted PEM key"
    detail = f" ({reason})" if reason else ""
    return (f"--tls-cert {files.cert_file} / --tls-key {files.key_file}: not a PEM "
            f"certificate chain and its private key{detail}")


def key_file_warning(files: TlsFiles) -> str | None:
    """A warning when the key file is readable by its group or by others, else ``None``."""
    try:
        mode = files.key_file.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (f"--tls-key {files.key_file} is readable by its group or by others "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return None


def listening_scheme(files: TlsFiles | None) -> str:
    """``https`` when serving TLS, else ``http`` (for the announced URL)."""
    return "https" if files is not None else "http"

