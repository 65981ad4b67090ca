"""AES encryptors made without pyca/cryptography's per-call Python validation.

The public ``Cipher(algorithm, mode).encryptor()`` spends about 4 µs per call checking
its arguments in Python (ABC ``isinstance`` checks, the mode against the algorithm) —
more than the AES of a small cenc sample (SPECS §1.2: one CTR encryptor per sample, 50 in
a dense 2 s segment) and a tenth of a 64 KiB AES-128 segment.  What it checks is the
algorithm's type and the IV or counter block's size for the block cipher; callers here
pass an ``algorithms.AES`` (whose constructor checks the key size) and ``encryptor``
checks the 16 bytes itself, then calls the binding the public call ends in
(``create_encryption_ctx``, 1.6 µs) when this cryptography has it, else the public call.
``tests/test_crypto_cenc_cbcs.py`` fails if the binding goes away, so the fast path
cannot be lost unnoticed, and checks both paths against the slow reference.
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
    """Whether encryptors skip the public call's validation."""
    return _MAKE is not None


def encryptor(algorithm: algorithms.AES, mode: modes.CBC | modes.CTR) -> CipherContext:
    """A fresh encryptor for ``algorithm`` in ``mode`` (whose IV or counter block must be
    one 16-byte block); ``ValueError`` otherwise."""
    block = mode.initialization_vector if isinstance(mode, modes.CBC) else mode.nonce
    if len(block) != BLOCK:
        raise ValueError("an AES IV or counter block is 16 bytes")
    if _MAKE is None:
        return Cipher(algorithm, mode).encryptor()
    return _MAKE(algorithm, mode)
