"""Licence request bodies: ClearKey JSON, FairPlay SPC requests (raw, form, JSON) and
content ids, test-KSM SPCs and KSM answers, Widevine and PlayReady challenges, the
protobuf reader, and content key policies (admin API JSON).

Seeds are valid bodies built the way players send them (the tests' own builders,
written again here).  Typed errors: each parser's documented ones — the
``OriginError`` subclasses of ``clearkey``, ``fairplay``, ``challenge``, ``ksm``,
``policy``; ``strict_json.load_json`` documents ``ValueError``.
"""

from __future__ import annotations

import base64
import json
import uuid
from functools import cache

from origin.container.pssh import common_pssh
from origin.container.widevine import encode_widevine_pssh_data, widevine_pssh
from origin.crypto.rsa import RsaPrivateKey, load_private_key
from origin.crypto.subsample import CommonScheme
from origin.errors import BadRequest
from origin.license.challenge import (
    ChallengeError,
    MalformedWidevineRequest,
    parse_playready_challenge,
    parse_widevine_challenge,
    read_proto_fields,
)
from origin.license.clearkey import ClearKeyRequestError, parse_license_request
from origin.license.fairplay import (
    MalformedContentId,
    MalformedSpcRequest,
    parse_content_id,
    parse_spc_request,
    skd_query,
)
from origin.license.ksm import KsmFailed, MalformedTestSpc, parse_ksm_response, parse_test_spc
from origin.license.policy import parse_policy
from origin.license.strict_json import load_json
from tests.fuzz.core import Target, json_starts
from tests.tools.fairplay import build_test_spc, make_credentials

KID_A = bytes.fromhex("4060a86588784267 9cbf91ae5bae1e72".replace(" ", ""))
KID_B = bytes(range(16))
CONTENT_TYPES = (None, "application/json", "application/x-www-form-urlencoded",
                 "application/octet-stream", "text/plain",
                 "application/x-www-form-urlencoded; charset=UTF-8", "application/vnd.x+json")
PR_NS = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def signed_licence_request(content_id: bytes) -> bytes:
    request = pb(1, b"\x08\x01\x12\x20" + b"c" * 32) + pb(2, content_id) + pb(3, 1) + pb(6, 21)
    return pb(1, 1) + pb(2, request) + pb(3, b"s" * 64)


def widevine_bodies() -> list[bytes]:
    pssh_data = encode_widevine_pssh_data([KID_A, KID_B], b"", CommonScheme.CENC)
    boxes = widevine_pssh([KID_A], b"cid", CommonScheme.CBCS) + common_pssh([KID_B])
    return [
        signed_licence_request(pb(1, pb(1, pssh_data) + pb(2, 2) + pb(3, b"request-0001"))),
        signed_licence_request(pb(4, pb(1, 1) + pb(2, boxes) + pb(3, 1))),
        signed_licence_request(pb(2, pb(1, KID_A) + pb(2, 1))),
        b"\x08\x04",
    ]


def _guid_le_b64(kid: bytes) -> str:
    return base64.b64encode(kid[3::-1] + kid[5:3:-1] + kid[7:5:-1] + kid[8:]).decode()


def playready_bodies() -> list[bytes]:
    kids = "".join(f'<KID ALGID="AESCTR" VALUE="{_guid_le_b64(k)}"></KID>' for k in (KID_A, KID_B))
    headers = [
        f'<WRMHEADER xmlns="{PR_NS}" version="4.2.0.0"><DATA><PROTECTINFO><KIDS>{kids}'
        "</KIDS></PROTECTINFO></DATA></WRMHEADER>",
        f'<WRMHEADER xmlns="{PR_NS}" version="4.0.0.0"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN>'
        f"<ALGID>AESCTR</ALGID></PROTECTINFO><KID>{_guid_le_b64(KID_A)}</KID></DATA></WRMHEADER>",
    ]
    return [(
        '<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
        'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        '<AcquireLicense xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols"><challenge>'
        '<Challenge xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols/messages">'
        '<LA xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols" Id="SignedData">'
        f"<Version>1</Version><ContentHeader>{header}</ContentHeader>"
        "<CustomData>user</CustomData><LicenseNonce>U9WysleTindM/gVQyExDdw==</LicenseNonce>"
        "</LA></Challenge></challenge></AcquireLicense></soap:Body></soap:Envelope>"
    ).encode() for header in headers]


@cache
def _test_ksm() -> tuple[RsaPrivateKey, bytes]:
    credentials = make_credentials(bits=1024)
    return load_private_key(credentials.key_pem), credentials.cert_der


# -- runs ---------------------------------------------------------------------------------------


def run_clearkey(body: bytes) -> None:
    request = parse_license_request(body)
    assert request.kids and all(len(kid) == 16 for kid in request.kids)


def run_spc(payload: bytes) -> None:
    content_type = CONTENT_TYPES[payload[0] % len(CONTENT_TYPES)] if payload else None
    request = parse_spc_request(payload[1:], content_type)
    assert request.spc
    if request.content_id is not None:
        skd_query(request.content_id)
        assert len(parse_content_id(request.content_id)) == 16


def run_content_id(raw: bytes) -> None:
    text = raw.decode("utf-8", "replace")
    skd_query(text)
    assert len(parse_content_id(text)) == 16


def run_widevine(body: bytes) -> None:
    challenge = parse_widevine_challenge(body)
    assert all(len(kid) == 16 for kid in challenge.kids)


def run_playready(body: bytes) -> None:
    challenge = parse_playready_challenge(body)
    assert challenge.kids and all(len(kid) == 16 for kid in challenge.kids)


def run_proto(body: bytes) -> None:
    read_proto_fields(body)


def run_policy(body: bytes) -> None:
    """What the admin API does with a policy body: strict JSON, then the policy rules."""
    try:
        data = load_json(body)
    except ValueError:
        return
    policy = parse_policy(data)
    assert parse_policy(policy.to_json()) == policy


def run_test_spc(spc: bytes) -> None:
    key, _ = _test_ksm()
    parsed = parse_test_spc(spc, key)
    assert len(parsed.session_key) == 16 and len(parsed.nonce) == 16


def run_ksm_response(body: bytes) -> None:
    assert parse_ksm_response(body)


# -- seeds --------------------------------------------------------------------------------------


def _clearkey_seeds() -> list[bytes]:
    return [json.dumps({"kids": [b64u(KID_A)], "type": "temporary"}).encode(),
            json.dumps({"kids": [b64u(KID_A), b64u(KID_B) + "=="],
                        "type": "persistent-license"}).encode(),
            b'{"kids":["QGCoZYh4QmecvyBrlrrsrg"]}']


def _spc_seeds() -> list[bytes]:
    spc = bytes(range(256)) * 2
    b64 = base64.b64encode(spc).decode()
    bodies = [
        (3, spc),
        (2, f"spc={b64.replace('+', '%2B')}&assetId={KID_A.hex()}&offline=true".encode()),
        (1, json.dumps({"spc": b64, "assetId": f"skd://{KID_A.hex()}?token=t",
                        "offline": "yes"}).encode()),
        (0, json.dumps({"spc": b64, "assetID": str(uuid.UUID(bytes=KID_B))}).encode()),
    ]
    return [bytes([choice]) + body for choice, body in bodies]


def _content_id_seeds() -> list[bytes]:
    return [f"skd://{KID_A.hex()}".encode(), f"skd://x?KeyId={KID_A.hex()}&token=a".encode(),
            b"4060a865-8878-4267-9cbf-91ae5bae1e72"]


def _policy_seeds() -> list[bytes]:
    return [b'{"restriction":"token","persistent":true,"license_duration_s":3600,'
            b'"rental_duration_s":86400}', b'{"restriction":"open"}', b"{}"]


def _test_spc_seeds() -> list[bytes]:
    _, cert = _test_ksm()
    return [build_test_spc(cert, KID_A.hex(), bytes(16), bytes(range(16))),
            build_test_spc(cert, "skd://" + KID_B.hex(), bytes(range(16)), bytes(16))]


def _ksm_seeds() -> list[bytes]:
    ckc = base64.b64encode(b"ckc-bytes" * 8).decode()
    return [json.dumps({"fairplay-streaming-response": {"create-ckc": [
        {"id": 1, "status": 0, "ckc": ckc}]}}).encode(),
        json.dumps({"fairplay-streaming-response": {"create-ckc": [
            {"id": "1", "status": -42581}]}}).encode()]


TARGETS: tuple[Target, ...] = (
    Target("clearkey", run_clearkey, (ClearKeyRequestError,), _clearkey_seeds, json_starts),
    Target("spc", run_spc, (MalformedSpcRequest, MalformedContentId), _spc_seeds,
           lambda d: [i for i in json_starts(d) if i] + [i for i, b in enumerate(d) if b == 0x26]),
    Target("content_id", run_content_id, (MalformedContentId,), _content_id_seeds),
    Target("widevine", run_widevine, (ChallengeError,), widevine_bodies, lambda d: [0, 2, 4, 6]),
    Target("playready", run_playready, (ChallengeError,), playready_bodies,
           lambda d: [i for i, b in enumerate(d) if b in b'<"=']),
    Target("proto_fields", run_proto, (MalformedWidevineRequest,), widevine_bodies),
    Target("policy", run_policy, (BadRequest,), _policy_seeds, json_starts),
    Target("test_spc", run_test_spc, (MalformedTestSpc,), _test_spc_seeds,
           lambda d: [0, 16, 18, 50]),
    Target("ksm_response", run_ksm_response, (KsmFailed,), _ksm_seeds, json_starts),
)
