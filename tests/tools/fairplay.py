"""FairPlay test tools: a test application certificate, a test-KSM client, a fake external KSM.

The client side of the test KSM's format (``origin.license.ksm`` docstring) is
written again here with ``cryptography`` directly, so the tests check the
server against an independent reading of the format, not against itself.

``FakeKsm`` stands in for Apple's KSM, which ships under licence and cannot run
here: a real aiohttp server on loopback speaking the FairPlay Streaming Server
SDK reference server's JSON.  It checks the request's shape the way the SDK
parses it (an SDK-style non-zero ``status`` otherwise), records what it got,
and answers a CKC derived from the SPC, key and IV it received, so a test can
tell that the right key reached it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import enum
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from cryptography.x509.oid import NameOID

SPC_MAGIC = b"ORIGIN-TEST-SPC1"
CKC_MAGIC = b"ORIGIN-TEST-CKC1"
FPS_PARSER_ERR = -42581  # the SDK's FPSStatus.parserErr
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Credentials:
    """A self-signed RSA application certificate and its private key."""

    cert_pem: bytes
    cert_der: bytes
    key_pem: bytes = field(repr=False)
    key_der: bytes = field(repr=False)


def make_credentials(bits: int = 2048, name: str = "origin FairPlay test") -> Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Credentials(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()),
        key_der=key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


# --- test KSM client -------------------------------------------------------------------------


def build_test_spc(cert_der: bytes, content_id: str, session_key: bytes, nonce: bytes) -> bytes:
    """A test SPC: content id and ``session key ‖ nonce`` RSA-OAEP-SHA-256'd to the cert."""
    public = x509.load_der_x509_certificate(cert_der).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    wrapped = public.encrypt(
        session_key + nonce,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    raw_id = content_id.encode("utf-8")
    return b"".join((SPC_MAGIC, struct.pack(">H", len(raw_id)), raw_id,
                     struct.pack(">H", len(wrapped)), wrapped))


@dataclass(frozen=True)
class OpenedCkc:
    nonce: bytes
    key: bytes = field(repr=False)
    iv: bytes
    terms: dict[str, Any]


def open_test_ckc(ckc: bytes, session_key: bytes) -> OpenedCkc:
    """Read a test CKC and unwrap its key with ``session_key`` (``InvalidUnwrap`` if wrong)."""
    assert ckc[:16] == CKC_MAGIC
    nonce = ckc[16:32]
    (wrapped_len,) = struct.unpack_from(">H", ckc, 32)
    wrapped = ckc[34 : 34 + wrapped_len]
    offset = 34 + wrapped_len
    (terms_len,) = struct.unpack_from(">H", ckc, offset)
    terms = json.loads(ckc[offset + 2 : offset + 2 + terms_len])
    assert offset + 2 + terms_len == len(ckc)
    unwrapped = aes_key_unwrap(session_key, wrapped)
    return OpenedCkc(nonce=nonce, key=unwrapped[:16], iv=unwrapped[16:], terms=terms)


# --- fake external KSM ---------------------------------------------------------------------------


class KsmMode(enum.Enum):
    OK = "ok"
    FPS_ERROR = "fps-error"  # 200 with a non-zero status
    HTTP_500 = "http-500"
    GARBAGE = "garbage"  # 200, not JSON
    WRONG_SHAPE = "wrong-shape"  # 200, JSON of another shape
    HANG = "hang"  # never answers until released


KSM_ERROR_BODY = "ksm-internal-detail-7d1e: stack trace here"


def fake_ckc(spc: bytes, key: bytes, iv: bytes) -> bytes:
    """The CKC the fake KSM answers: bound to what it was given (tests recompute it)."""
    return b"FAKE-CKC" + hashlib.sha256(b"\0".join((spc, key, iv))).digest()


class FakeKsm:
    """The FairPlay Streaming Server SDK's JSON on a real loopback server (module docstring)."""

    def __init__(self, mode: KsmMode = KsmMode.OK) -> None:
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/fps", self.handle)

    @property
    def contacted(self) -> bool:
        return bool(self.requests)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.headers.append(dict(request.headers))
        message = json.loads(raw)
        self.requests.append(message)
        self.received.set()
        if self.mode is KsmMode.HANG:
            await self.release.wait()
            return web.Response(status=503)
        if self.mode is KsmMode.HTTP_500:
            return web.Response(status=500, text=KSM_ERROR_BODY)
        if self.mode is KsmMode.GARBAGE:
            return web.Response(text="<html>" + KSM_ERROR_BODY, content_type="text/html")
        if self.mode is KsmMode.WRONG_SHAPE:
            return web.json_response({"error": KSM_ERROR_BODY})
        if request.content_type != "application/json":
            return _ksm_answer(FPS_PARSER_ERR)
        operation = _check_shape(message)
        if operation is None or self.mode is KsmMode.FPS_ERROR:
            return _ksm_answer(FPS_PARSER_ERR)
        info = operation["asset-info"][0]
        ckc = fake_ckc(base64.b64decode(operation["spc"]), bytes.fromhex(info["content-key"]),
                       bytes.fromhex(info["content-iv"]))
        return _ksm_answer(0, ckc)


def _ksm_answer(status: int, ckc: bytes | None = None) -> web.Response:
    item: dict[str, Any] = {"id": 1, "status": status}
    if ckc is not None:
        item["hu"] = "00" * 20
        item["ckc"] = base64.b64encode(ckc).decode()
    return web.json_response({"fairplay-streaming-response": {"create-ckc": [item]}})


def _check_shape(message: Any) -> dict[str, Any] | None:
    """The ``create-ckc`` operation if the request has the SDK's shape, else ``None``."""
    try:
        request = message["fairplay-streaming-request"]
        assert request["version"] == 1
        (operation,) = request["create-ckc"]
        assert operation["id"] == 1
        base64.b64decode(operation["spc"], validate=True)
        (info,) = operation["asset-info"]
        assert _HEX32.fullmatch(info["content-key"]) and _HEX32.fullmatch(info["content-iv"])
        assert set(info) <= {"content-key", "content-iv", "lease-duration", "offline-hls"}
        assert set(operation) == {"id", "spc", "asset-info"}
        offline = info.get("offline-hls", {})
        assert set(offline) <= {"stream-id", "title-id", "rental-duration", "playback-duration"}
        for name in ("lease-duration", "rental-duration", "playback-duration"):
            value = info.get(name, offline.get(name, 1))
            assert isinstance(value, int) and not isinstance(value, bool) and value > 0
        return dict(operation)
    except (KeyError, TypeError, ValueError, AssertionError):
        return None
