"""AES-CTR encryptors for many counter blocks under one key, made cheaply.

``cenc`` needs one CTR encryptor per sample: the keystream restarts from every sample's
IV (ISO/IEC 23001-7 §9.5; SPECS §1.2), 50 of them in a dense 2 s segment.  The public
``Cipher(algorithm, modes.CTR(block)).encryptor()`` of pyca/cryptography spends about
4 µs per call validating its arguments in Python, more than the AES of a small sample.

``CtrEncryptors`` makes its first encryptor through that public call, which validates
the key and the mode, and the following ones — which differ only in their 16-byte
counter block, checked here — through the binding the public call ends in
(``create_encryption_ctx``, 1.6 µs), when this cryptography has it; otherwise through
the public call every time.  ``tests/test_crypto_cenc_cbcs.py`` fails if the binding
goes away, so the fast path cannot be lost unnoticed, and checks both paths against the
slow reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

BLOCK = 16


def _binding() -> Callable[[Any, Any], CipherContext] | None:
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    except ImportError:  # pragma: no cover - another cryptography build
        return None
    make = getattr(getattr(rust_openssl, "ciphers", None), "create_encryption_ctx", None)
    return make if callable(make) else None


_MAKE = _binding()


def fast_path_available() -> bool:
    """Whether encryptors after the first skip the public call's validation."""
    return _MAKE is not None


class CtrEncryptors:
    """CTR encryptors under ``algorithm``, one per counter block (module docstring)."""

    __slots__ = ("_algorithm", "_validated")

    def __init__(self, algorithm: algorithms.AES) -> None:
        self._algorithm = algorithm
        self._validated = False

    def __repr__(self) -> str:
        return "CtrEncryptors()"

    def encryptor(self, counter_block: bytes) -> CipherContext:
        """A fresh encryptor whose keystream starts at ``counter_block`` (16 bytes)."""
        if len(counter_block) != BLOCK:
            raise ValueError("a CTR counter block is 16 bytes")
        mode = modes.CTR(counter_block)
        if not self._validated or _MAKE is None:
            self._validated = True
            return Cipher(self._algorithm, mode).encryptor()
        return _MAKE(self._algorithm, mode)
