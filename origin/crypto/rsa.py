"""RSA and X.509 for FairPlay's application certificate and the development test KSM.

- ``certificate_der``: an X.509 certificate given as PEM or DER becomes its DER
  encoding, the form players fetch and hand to ``setServerCertificate()``
  (SPECS §6).  Exactly one certificate; it must parse.
- ``load_private_key``: an unencrypted RSA private key, PEM or DER, PKCS#8 or
  PKCS#1.  ``RsaPrivateKey`` never shows the key in a repr.
- ``RsaPrivateKey.oaep_decrypt``: RSAES-OAEP (RFC 8017 §7.1) with SHA-256, MGF1
  with SHA-256 and an empty label.

Errors are typed and never carry key bytes: ``CertificateError`` and
``PrivateKeyError`` for configuration files, ``OaepDecryptError`` for a
ciphertext that does not decrypt.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_PEM_MARKER = b"-----BEGIN "


class CertificateError(ValueError):
    """Not exactly one parseable X.509 certificate."""


class PrivateKeyError(ValueError):
    """Not an unencrypted RSA private key."""


class OaepDecryptError(Exception):
    """The ciphertext does not decrypt under this key (wrong key, corrupt, wrong size)."""


class RsaPrivateKey:
    """An RSA private key; the key material never appears in a repr or str."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"RsaPrivateKey(bits={self._key.key_size})"

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def matches_certificate(self, certificate_der: bytes) -> bool:
        """Whether ``certificate_der`` carries this key's public half."""
        public = _load_der_certificate(certificate_der).public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            return False
        return public.public_numbers() == self._key.public_key().public_numbers()

    def oaep_decrypt(self, ciphertext: bytes) -> bytes:
        """RSA-OAEP-SHA-256 decryption; ``OaepDecryptError`` if it does not decrypt."""
        if len(ciphertext) != (self._key.key_size + 7) // 8:
            raise OaepDecryptError("ciphertext has the wrong size for this key")
        try:
            return self._key.decrypt(ciphertext, _oaep())
        except ValueError:
            raise OaepDecryptError("ciphertext does not decrypt under this key") from None


def certificate_der(data: bytes) -> bytes:
    """The DER encoding of the one X.509 certificate in ``data`` (PEM or DER)."""
    if data.lstrip().startswith(_PEM_MARKER):
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CertificateError("not a PEM X.509 certificate") from None
        if len(certificates) != 1:
            raise CertificateError("expected exactly one certificate")
        return certificates[0].public_bytes(serialization.Encoding.DER)
    certificate = _load_der_certificate(data)
    der = certificate.public_bytes(serialization.Encoding.DER)
    if der != data:
        raise CertificateError("trailing or non-canonical bytes after the DER certificate")
    return der


def load_private_key(data: bytes) -> RsaPrivateKey:
    """An unencrypted RSA private key from PEM or DER (PKCS#8 or PKCS#1)."""
    try:
        if data.lstrip().startswith(_PEM_MARKER):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: the key is encrypted.  Messages are dropped: they may quote input.
        raise PrivateKeyError("not an unencrypted PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PrivateKeyError("not an RSA private key")
    return RsaPrivateKey(key)


def _load_der_certificate(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateError("not a DER X.509 certificate") from None


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=None)
