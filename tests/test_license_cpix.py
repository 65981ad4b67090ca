"""Keys in and out as DASH-IF CPIX 2.3: the pure parser/builder, ``origin keys import|export``
as real subprocesses, the exported signalling against what the origin serves, and Shaka
Packager decrypting the origin's output with keys read back from an export."""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from origin.container.boxes import find_boxes
from origin.container.playready import parse_playready_object, playready_kid
from origin.container.pssh import SystemId, parse_pssh
from origin.container.widevine import decode_widevine_pssh_data
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme
from origin.keys_cpix import build_export
from origin.license.cpix import (
    MAX_CPIX_BYTES,
    CpixDocument,
    CpixDrmSystem,
    CpixError,
    CpixKey,
    EncryptedCpixKey,
    EncryptionScheme,
    HlsPlaylist,
    build_cpix,
    parse_cpix,
)
from origin.license.keystore import Keystore, KeystoreError
from origin.packaging.drm import DrmContext, constant_iv, hls_key_tags, init_pssh_boxes
from origin.packaging.key_system import KeySystem
from tests.conftest import ROOT, start_origin
from tests.tools.packager import PACKAGER

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
BASE = "https://origin.example"
KEK_A = "11" * 32
KEK_B = base64.b64encode(bytes(range(32))).decode()
WRONG_KEY = "0123456789abcdef0123456789abcdef"

# A hand-written document in the style of Axinom's ContentKeys/*.xml and the SPEKE v2 examples:
# several keys (cenc, explicit IVs), usage rules with Video/Audio filters, key periods, a
# DRMSystemList with a Widevine PSSH and wrapped base64, update history, extra namespaces.
VENDOR_KEYS = {
    "5e7c4ae0-9a2b-4a3c-8e0f-1f2d3c4b5a69": "n5Ql3ZJzTq2bAs0r7wkC3Q==",
    "0f4d43ee-7cfe-43b0-8f66-a3d8f3d1c1a2": "kV0Nvt8lFwVnQ6J6Ylu4XA==",
    "c1a1c8f0-5d4f-4e1b-9a4c-6a7b8c9d0e1f": "3cL1G9rO2bN4q8ZyR7TfUw==",
}
_VENDOR_KEY_ELEMENTS = "".join(
    f"""
    <ContentKey kid="{kid.upper() if i == 1 else kid}"
                explicitIV="{base64.b64encode(bytes(16)).decode()}" commonEncryptionScheme="cenc">
      <Data>
        <pskc:Secret>
          <pskc:PlainValue>{key}</pskc:PlainValue>
        </pskc:Secret>
      </Data>
    </ContentKey>"""
    for i, (kid, key) in enumerate(VENDOR_KEYS.items()))
_VENDOR_KIDS = list(VENDOR_KEYS)
_VENDOR_PSSH = ("AAAASHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAACgSEF58SuCaK0o8jg8f\n"
                "        LTxLWmkiDnRlYXJzLW9mLXN0ZWVsSOPclZsG")
VENDOR_DOCUMENT = f"""<?xml version="1.0" encoding="utf-8"?>
<!-- exported by a key service -->
<CPIX xmlns:xsd="http://www.w3.org/2001/XMLSchema"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
      xmlns="urn:dashif:org:cpix" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
      xmlns:enc="http://www.w3.org/2001/04/xmlenc#"
      xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
      xmlns:speke="urn:aws:amazon:com:speke"
      id="doc-1" contentId="tears-of-steel" version="2.3">
  <ContentKeyList>{_VENDOR_KEY_ELEMENTS}
  </ContentKeyList>
  <DRMSystemList>
    <DRMSystem kid="{_VENDOR_KIDS[0]}" systemId="edef8ba9-79d6-4ace-a3c8-27dcd51d21ed">
      <PSSH>{_VENDOR_PSSH}</PSSH>
      <speke:ProtectionHeader/>
    </DRMSystem>
    <DRMSystem kid="{_VENDOR_KIDS[1]}" systemId="94ce86fb-07ff-4f43-adb8-93d2fa968ca2">
      <URIExtXKey>{base64.b64encode(b"skd://tears-of-steel").decode()}</URIExtXKey>
      <HLSSignalingData>{base64.b64encode(b"#EXT-X-KEY:METHOD=SAMPLE-AES").decode()}</HLSSignalingData>
    </DRMSystem>
  </DRMSystemList>
  <ContentKeyPeriodList>
    <ContentKeyPeriod id="period-1" index="1"/>
  </ContentKeyPeriodList>
  <ContentKeyUsageRuleList>
    <ContentKeyUsageRule kid="{_VENDOR_KIDS[0]}" intendedTrackType="SD">
      <VideoFilter maxPixels="409920"/>
    </ContentKeyUsageRule>
    <ContentKeyUsageRule kid="{_VENDOR_KIDS[1]}" intendedTrackType="HD">
      <VideoFilter minPixels="409921" maxPixels="8847360" hdr="false"/>
      <BitrateFilter minBitrate="1000000"/>
    </ContentKeyUsageRule>
    <ContentKeyUsageRule kid="{_VENDOR_KIDS[2]}" intendedTrackType="AUDIO">
      <AudioFilter minChannels="1" maxChannels="8"/>
      <LabelFilter label="audio"/>
    </ContentKeyUsageRule>
  </ContentKeyUsageRuleList>
  <UpdateHistoryItemList>
    <UpdateHistoryItem id="1" index="1" source="keyservice" date="2024-01-01T00:00:00Z"/>
  </UpdateHistoryItemList>
</CPIX>
"""


# --- helpers ---------------------------------------------------------------------------------


def cli_env(kek: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ORIGIN_KEK"}
    if kek is not None:
        env["ORIGIN_KEK"] = kek
    return env


def origin_keys(*args: str, state: Path, kek: str | None = KEK_A
                ) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "origin", "keys", *args, "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, cwd=ROOT, env=cli_env(kek), timeout=60)


def stored(state: Path, kek_hex_or_b64: str) -> dict[bytes, tuple[str, bytes, bool]]:
    raw = (bytes.fromhex(kek_hex_or_b64) if re.fullmatch(r"[0-9a-f]+", kek_hex_or_b64)
           else base64.b64decode(kek_hex_or_b64))
    with Keystore.open(state / "keys.sqlite", raw) as keystore:
        out = {}
        for record in keystore.records():
            key = keystore.get(record.kid)
            assert key is not None
            out[record.kid] = (record.asset, key.key.key, record.active)
        return out


def secrets_in(text: bytes, keys: list[bytes]) -> list[str]:
    """Which of ``keys`` appear in ``text`` (base64, base64url or hex, any case)."""
    lowered = text.lower()
    found = []
    for key in keys:
        forms = {base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"="),
                 base64.b64encode(key).rstrip(b"=")}
        if any(form in text for form in forms) or key.hex().encode() in lowered:
            found.append(key.hex()[:6])
    return found


def plain_keys(document: bytes) -> dict[str, str]:
    """kid → key hex, read with ElementTree (not with origin's parser)."""
    root = ET.fromstring(document)  # our own export
    out = {}
    for element in root.iter(f"{{{CPIX_NS}}}ContentKey"):
        value = element.find(f"{{{CPIX_NS}}}Data/{{{PSKC_NS}}}Secret/{{{PSKC_NS}}}PlainValue")
        assert value is not None and value.text
        out[element.attrib["kid"].replace("-", "")] = base64.b64decode(value.text).hex()
    return out


def cpix_text(key_elements: str, content_id: str = ' contentId="a"', extra: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<CPIX xmlns="{CPIX_NS}" '
            f'xmlns:pskc="{PSKC_NS}"{content_id} version="2.3"><ContentKeyList>{key_elements}'
            f"</ContentKeyList>{extra}</CPIX>").encode()


def key_element(kid: str, value: str) -> str:
    return (f'<ContentKey kid="{kid}"><Data><pskc:Secret><pskc:PlainValue>{value}'
            "</pskc:PlainValue></pskc:Secret></Data></ContentKey>")


GOOD_KID = "8e0a2cbb-5a6f-4e4e-9d49-0f1c2b3a4d5e"
GOOD_KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
GOOD_B64 = base64.b64encode(GOOD_KEY).decode()


# --- the pure parser and builder -------------------------------------------------------------


def test_build_then_parse_gives_the_same_document() -> None:
    kid1, kid2 = uuid.uuid4().bytes, uuid.uuid4().bytes
    doc = CpixDocument(
        content_id='film "one" & <two>',
        keys=(CpixKey(kid1, os.urandom(16), EncryptionScheme.CBCS, os.urandom(16)),
              CpixKey(kid2, os.urandom(16))),
        drm_systems=(
            CpixDrmSystem(kid1, SystemId.WIDEVINE, pssh=b"\x00pssh", content_protection_data="<a/>",
                          hls_signaling_data=((HlsPlaylist.MASTER, "#EXT-X-SESSION-KEY:x"),
                                              (HlsPlaylist.MEDIA, "#EXT-X-KEY:x\n#EXT-X-KEY:y"))),
            CpixDrmSystem(kid2, SystemId.FAIRPLAY, uri_ext_x_key="skd://x"),
        ),
    )
    raw = build_cpix(doc)
    parsed = parse_cpix(raw)
    assert parsed.content_id == doc.content_id and parsed.keys == doc.keys
    assert [(d.kid, d.system_id, d.pssh, d.content_protection_data, d.uri_ext_x_key,
             d.hls(HlsPlaylist.MEDIA), d.hls(HlsPlaylist.MASTER)) for d in parsed.drm_systems] == \
        [(d.kid, d.system_id, d.pssh, d.content_protection_data, d.uri_ext_x_key,
          d.hls(HlsPlaylist.MEDIA), d.hls(HlsPlaylist.MASTER)) for d in doc.drm_systems]
    assert build_cpix(parsed) == raw  # deterministic
    keys = [k.key for k in doc.keys]
    assert secrets_in(repr(parsed).encode(), keys) == []
    assert "key=" not in repr(doc.keys[0])


def test_vendor_document_parses_and_unknown_parts_are_tolerated() -> None:
    doc = parse_cpix(VENDOR_DOCUMENT.encode())
    assert doc.content_id == "tears-of-steel"
    assert {str(uuid.UUID(bytes=k.kid)): base64.b64encode(k.key).decode() for k in doc.keys} \
        == VENDOR_KEYS
    assert all(k.common_encryption_scheme is EncryptionScheme.CENC for k in doc.keys)
    widevine, fairplay = doc.drm_systems
    box = parse_pssh(widevine.pssh or b"")
    assert box.system_id == SystemId.WIDEVINE
    assert decode_widevine_pssh_data(box.data).key_ids == (doc.keys[0].kid,)
    assert fairplay.uri_ext_x_key == "skd://tears-of-steel"
    assert fairplay.hls(HlsPlaylist.MEDIA) == "#EXT-X-KEY:METHOD=SAMPLE-AES"  # default: media


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("malformed XML", cpix_text(key_element(GOOD_KID, GOOD_B64))[:-8], "not well-formed"),
    ("DOCTYPE", b'<?xml version="1.0"?><!DOCTYPE CPIX [<!ENTITY k "' + GOOD_B64.encode()
     + b'">]>' + cpix_text(key_element(GOOD_KID, "&k;")).split(b"?>", 1)[1], "DTD"),
    ("entity only", cpix_text(key_element(GOOD_KID, GOOD_B64)).replace(
        b"<CPIX", b"<!ENTITY x 'y'><CPIX"), "DTD"),
    ("EncryptedValue", cpix_text(
        f'<ContentKey kid="{GOOD_KID}"><Data><pskc:Secret><pskc:EncryptedValue>'
        f"<enc:CipherData xmlns:enc='http://www.w3.org/2001/04/xmlenc#'><enc:CipherValue>"
        f"{GOOD_B64}</enc:CipherValue></enc:CipherData></pskc:EncryptedValue><pskc:ValueMAC>"
        f"{GOOD_B64}</pskc:ValueMAC></pskc:Secret></Data></ContentKey>",
        extra="<DeliveryDataList/>"),
     "encrypted CPIX keys are not supported; export them as PlainValue"),
    ("15-byte key", cpix_text(key_element(GOOD_KID, base64.b64encode(GOOD_KEY[:15]).decode())),
     "not 16 bytes"),
    ("17-byte key", cpix_text(key_element(GOOD_KID, base64.b64encode(GOOD_KEY + b"!").decode())),
     "not 16 bytes"),
    ("key not base64", cpix_text(key_element(GOOD_KID, GOOD_B64[:-2] + "*=")), "not base64"),
    ("bad kid", cpix_text(key_element("8e0a2cbb5a6f4e4e9d490f1c2b3a4d5e-", GOOD_B64)),
     "not a UUID"),
    ("no kid", cpix_text(key_element(GOOD_KID, GOOD_B64).replace(f' kid="{GOOD_KID}"', "")),
     "missing ContentKey@kid"),
    ("missing contentId", cpix_text(key_element(GOOD_KID, GOOD_B64), content_id=""),
     "missing CPIX@contentId"),
    ("empty contentId", cpix_text(key_element(GOOD_KID, GOOD_B64), content_id=' contentId=" "'),
     "missing CPIX@contentId"),
    ("no keys", cpix_text(""), "no ContentKey"),
    ("no value", cpix_text(f'<ContentKey kid="{GOOD_KID}"/>'), "no pskc:PlainValue"),
    ("kid twice", cpix_text(key_element(GOOD_KID, GOOD_B64) * 2), "appears twice"),
    ("DRMSystem of no key", cpix_text(
        key_element(GOOD_KID, GOOD_B64),
        extra=f'<DRMSystemList><DRMSystem kid="{uuid.UUID(int=1)}" '
              f'systemId="{SystemId.WIDEVINE.urn[9:]}"/></DRMSystemList>'),
     "not in ContentKeyList"),
    ("bad playlist", cpix_text(
        key_element(GOOD_KID, GOOD_B64),
        extra=f'<DRMSystemList><DRMSystem kid="{GOOD_KID}" systemId="{SystemId.FAIRPLAY.urn[9:]}">'
              '<HLSSignalingData playlist="variant">AA==</HLSSignalingData></DRMSystem>'
              "</DRMSystemList>"), "media or master"),
    ("wrong root", b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"/>', "not a CPIX document"),
    ("wrong namespace", cpix_text(key_element(GOOD_KID, GOOD_B64)).replace(
        CPIX_NS.encode(), b"urn:example"), "not a CPIX document"),
    ("version 3", cpix_text(key_element(GOOD_KID, GOOD_B64)).replace(b'"2.3"', b'"3.0"'),
     "unsupported CPIX@version"),
    ("UTF-16", cpix_text(key_element(GOOD_KID, GOOD_B64)).decode().replace(
        "UTF-8", "UTF-16").encode("utf-16"), "not UTF-8"),
    ("too large", cpix_text(key_element(GOOD_KID, GOOD_B64)) + b" " * MAX_CPIX_BYTES,
     "too large"),
])
def test_bad_documents_raise_typed_errors_without_key_material(
        name: str, raw: bytes, expected: str) -> None:
    with pytest.raises(CpixError) as caught:
        parse_cpix(raw)
    assert expected in caught.value.detail, name
    assert caught.value.status == 400
    assert secrets_in(caught.value.detail.encode(), [GOOD_KEY, GOOD_KEY[:15]]) == []
    assert GOOD_B64[:12] not in str(caught.value)
    if "EncryptedValue" in name:
        assert isinstance(caught.value, EncryptedCpixKey)


def test_the_good_control_document_parses() -> None:
    """The negative cases above are mutations of this document: it must be fine."""
    doc = parse_cpix(cpix_text(key_element(GOOD_KID, GOOD_B64)))
    assert doc.keys == (CpixKey(uuid.UUID(GOOD_KID).bytes, GOOD_KEY),)


# --- the exported signalling is what the origin serves ---------------------------------------


@pytest.mark.parametrize("scheme", [CommonScheme.CBCS, CommonScheme.CENC])
def test_exported_signalling_equals_what_the_origin_writes(scheme: CommonScheme) -> None:
    key = ContentKey(kid=uuid.uuid4().bytes, key=os.urandom(16))
    other = ContentKey(kid=uuid.uuid4().bytes, key=os.urandom(16))
    doc = parse_cpix(build_cpix(build_export([key, other], "demo", EncryptionScheme(scheme.value),
                                             BASE)))
    (cpix_key, _) = doc.keys
    assert cpix_key.common_encryption_scheme is EncryptionScheme(scheme.value)
    assert cpix_key.explicit_iv == (constant_iv(key) if scheme is CommonScheme.CBCS else None)
    systems = {d.system_id: d for d in doc.drm_systems if d.kid == key.kid}
    expected_ids = {SystemId.COMMON, SystemId.WIDEVINE, SystemId.PLAYREADY}
    if scheme is CommonScheme.CBCS:
        expected_ids.add(SystemId.FAIRPLAY)  # FairPlay requires cbcs
    assert set(systems) == expected_ids

    # pssh boxes: valid, right system ids and KIDs, byte-equal to the origin's init boxes.
    served = init_pssh_boxes(DrmContext(key, (KeySystem.WIDEVINE, KeySystem.PLAYREADY), BASE),
                             scheme)
    exported = [systems[s].pssh for s in (SystemId.COMMON, SystemId.WIDEVINE, SystemId.PLAYREADY)]
    assert exported == served
    common, widevine, playready = (parse_pssh(box or b"") for box in exported)
    assert (common.system_id, common.version, common.kids, common.data) == \
        (SystemId.COMMON, 1, (key.kid,), b"")
    data = decode_widevine_pssh_data(widevine.data)
    assert widevine.system_id == SystemId.WIDEVINE
    assert data.key_ids == (key.kid,) and data.protection_scheme == scheme.value
    header = parse_playready_object(playready.data)[1].decode("utf-16-le")
    assert playready.system_id == SystemId.PLAYREADY
    assert playready_kid(key.kid) in header and f"<LA_URL>{BASE}/license/playready<" in header

    # HLS tags: the very lines the origin writes, media and master.
    for system, key_system in ((SystemId.WIDEVINE, KeySystem.WIDEVINE),
                               (SystemId.PLAYREADY, KeySystem.PLAYREADY),
                               (SystemId.FAIRPLAY, KeySystem.FAIRPLAY)):
        if system not in systems:
            continue
        tags = hls_key_tags(DrmContext(key, (key_system,), BASE), scheme)
        assert tags
        assert systems[system].hls(HlsPlaylist.MEDIA) == "\n".join(
            t.render("EXT-X-KEY") for t in tags)
        assert systems[system].hls(HlsPlaylist.MASTER) == "\n".join(
            t.render("EXT-X-SESSION-KEY") for t in tags)
    if scheme is CommonScheme.CBCS:
        fairplay = systems[SystemId.FAIRPLAY].hls(HlsPlaylist.MEDIA) or ""
        assert fairplay.startswith("#EXT-X-KEY:METHOD=SAMPLE-AES,")
        assert f'URI="skd://{key.kid_hex}"' in fairplay
        assert 'KEYFORMAT="com.apple.streamingkeydelivery"' in fairplay
        assert (systems[SystemId.FAIRPLAY].hls(HlsPlaylist.MASTER) or "").startswith(
            "#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,")

    # ContentProtectionData: standalone XML (no prefixes) holding the same boxes / PRO.
    for system in (SystemId.WIDEVINE, SystemId.PLAYREADY):
        fragment = systems[system].content_protection_data or ""
        assert re.search(r"</?\w+:", fragment) is None
        wrapper = ET.fromstring(f"<w>{fragment}</w>")  # our own output
        pssh = wrapper.find("{urn:mpeg:cenc:2013}pssh")
        assert pssh is not None and base64.b64decode(pssh.text or "") == systems[system].pssh
    fragment = systems[SystemId.PLAYREADY].content_protection_data
    pro = ET.fromstring(f"<w>{fragment}</w>").find("{urn:microsoft:playready}pro")
    assert pro is not None and base64.b64decode(pro.text or "") == playready.data

    # A different key gives different boxes: the comparison above can fail.
    assert init_pssh_boxes(DrmContext(other, (KeySystem.WIDEVINE,), BASE), scheme)[1] != \
        systems[SystemId.WIDEVINE].pssh


def test_without_license_base_playready_has_no_la_url() -> None:
    key = ContentKey(kid=uuid.uuid4().bytes, key=os.urandom(16))
    doc = build_export([key], "demo", EncryptionScheme.CENC, "")
    (playready,) = [d for d in doc.drm_systems if d.system_id == SystemId.PLAYREADY]
    header = parse_playready_object(parse_pssh(playready.pssh or b"").data)[1]
    assert "LA_URL" not in header.decode("utf-16-le") and "<KID>" in header.decode("utf-16-le")


# --- the CLI: round trip between keystores ---------------------------------------------------


def test_keys_round_trip_through_cpix_between_keystores(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for _ in range(2):
        assert origin_keys("rotate", "demo", state=a).returncode == 0
    assert origin_keys("rotate", "other", state=a).returncode == 0
    in_a = stored(a, KEK_A)
    demo_a = {kid: key for kid, (asset, key, _) in in_a.items() if asset == "demo"}
    keys = [key for _, key, _ in in_a.values()]
    assert len(demo_a) == 2

    out = tmp_path / "demo.cpix.xml"
    exported = origin_keys("export", "--asset", "demo", "--output", str(out),
                           "--license-base", BASE, state=a)
    assert exported.returncode == 0, exported.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert b"content keys in clear" in exported.stderr
    assert secrets_in(exported.stdout + exported.stderr, keys) == []
    document = out.read_bytes()
    assert {bytes.fromhex(kid): bytes.fromhex(key) for kid, key in plain_keys(document).items()} \
        == demo_a

    imported = origin_keys("import", str(out), "--asset", "demo", state=b, kek=KEK_B)
    assert imported.returncode == 0, imported.stderr
    assert secrets_in(imported.stdout + imported.stderr, keys) == []
    assert all(str(uuid.UUID(bytes=kid)).encode() in imported.stdout for kid in demo_a)
    in_b = stored(b, KEK_B)
    assert {kid: key for kid, (_, key, _) in in_b.items()} == demo_a
    assert not any(active for _, _, active in in_b.values())  # no --activate
    with pytest.raises(KeystoreError):
        stored(b, KEK_A)  # b's keys are wrapped under its own KEK

    again = origin_keys("export", "--asset", "demo", "--license-base", BASE, state=b, kek=KEK_B)
    assert again.returncode == 0, again.stderr
    assert again.stdout == document  # byte-identical

    # Re-importing is a no-op; --activate needs --kid for a two-key document.
    assert origin_keys("import", str(out), "--asset", "demo", state=b, kek=KEK_B).returncode == 0
    assert stored(b, KEK_B) == in_b
    ambiguous = origin_keys("import", str(out), "--asset", "demo", "--activate", state=b,
                            kek=KEK_B)
    assert ambiguous.returncode == 1 and b"--kid" in ambiguous.stderr
    second = list(demo_a)[1]
    chosen = origin_keys("import", str(out), "--asset", "demo", "--activate", "--kid",
                         second.hex(), state=b, kek=KEK_B)
    assert chosen.returncode == 0, chosen.stderr
    assert [kid for kid, (_, _, active) in stored(b, KEK_B).items() if active] == [second]

    # The same kids under another asset, or with another key, are refused; nothing changes.
    before = stored(b, KEK_B)
    other_asset = origin_keys("import", str(out), "--asset", "film", state=b, kek=KEK_B)
    assert other_asset.returncode == 1 and b"already stored" in other_asset.stderr
    tampered = tmp_path / "tampered.xml"
    first_b64 = base64.b64encode(demo_a[next(iter(demo_a))])
    tampered.write_bytes(document.replace(first_b64, base64.b64encode(os.urandom(16))))
    changed = origin_keys("import", str(tampered), "--asset", "demo", state=b, kek=KEK_B)
    assert changed.returncode == 1 and b"already stored" in changed.stderr
    assert secrets_in(changed.stdout + changed.stderr + other_asset.stderr, keys) == []
    assert stored(b, KEK_B) == before
    # All or nothing: a new key listed before a conflicting one is not written either.
    fresh_kid = uuid.uuid4()
    mixed = tmp_path / "mixed.xml"
    mixed.write_bytes(tampered.read_bytes().replace(
        b"<ContentKeyList>",
        b"<ContentKeyList>" + key_element(str(fresh_kid), GOOD_B64).encode(), 1))
    partial = origin_keys("import", str(mixed), "--asset", "demo", state=b, kek=KEK_B)
    assert partial.returncode == 1 and b"already stored" in partial.stderr
    assert stored(b, KEK_B) == before and fresh_kid.bytes not in before
    mixed.write_bytes(document.replace(
        b"<ContentKeyList>",
        b"<ContentKeyList>" + key_element(str(fresh_kid), GOOD_B64).encode(), 1))
    control = origin_keys("import", str(mixed), "--asset", "demo", state=b, kek=KEK_B)
    assert control.returncode == 0, control.stderr
    assert stored(b, KEK_B)[fresh_kid.bytes] == ("demo", GOOD_KEY, False)


def test_export_errors(tmp_path: Path) -> None:
    state = tmp_path / "s"
    missing = origin_keys("export", "--asset", "demo", state=state)
    assert missing.returncode == 1 and missing.stderr.startswith(b"error: no keystore")
    assert not (state / "keys.sqlite").exists()
    assert origin_keys("rotate", "demo", state=state).returncode == 0
    assert origin_keys("rotate", "other", state=state).returncode == 0
    other_kid = next(kid for kid, (asset, _, _) in stored(state, KEK_A).items() if asset == "other")
    for args, message in (
        (("--asset", "nothing"), b"has no keys"),
        (("--asset", "demo", "--kid", other_kid.hex()), b"has no key"),
        (("--asset", "demo", "--kid", "zz"), b"malformed key id"),
        (("--asset", "../x"), b"invalid asset name"),
        (("--asset", "demo", "--license-base", "ftp://x"), b"--license-base"),
    ):
        result = origin_keys("export", *args, state=state)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert result.stdout == b""
    good = origin_keys("export", "--asset", "demo", "--kid", str(uuid.UUID(bytes=next(
        kid for kid, (asset, _, _) in stored(state, KEK_A).items() if asset == "demo"))),
        state=state)
    assert good.returncode == 0 and len(plain_keys(good.stdout)) == 1


# --- the CLI: vendor documents and failed imports --------------------------------------------


def test_vendor_document_import_lands_every_key(tmp_path: Path) -> None:
    state = tmp_path / "s"
    path = tmp_path / "vendor.xml"
    path.write_text(VENDOR_DOCUMENT)
    chosen = _VENDOR_KIDS[1]
    result = origin_keys("import", str(path), "--asset", "tears", "--activate", "--kid", chosen,
                         state=state)
    assert result.returncode == 0, result.stderr
    keys = {uuid.UUID(kid).bytes: (base64.b64decode(key)) for kid, key in VENDOR_KEYS.items()}
    assert stored(state, KEK_A) == {
        kid: ("tears", key, str(uuid.UUID(bytes=kid)) == chosen) for kid, key in keys.items()}
    assert b"explicitIV" in result.stderr  # the vendor's IVs are not origin's: said so
    assert secrets_in(result.stdout + result.stderr, list(keys.values())) == []


BAD_IMPORTS = {
    "malformed": VENDOR_DOCUMENT[:-30],
    "doctype": VENDOR_DOCUMENT.replace("<!-- exported", '<!DOCTYPE CPIX SYSTEM "x.dtd"><!-- e'),
    "encrypted": VENDOR_DOCUMENT.replace(
        f"<pskc:PlainValue>{VENDOR_KEYS[_VENDOR_KIDS[2]]}</pskc:PlainValue>",
        f"<pskc:EncryptedValue>{VENDOR_KEYS[_VENDOR_KIDS[2]]}</pskc:EncryptedValue>"),
    "short key": VENDOR_DOCUMENT.replace(VENDOR_KEYS[_VENDOR_KIDS[2]],
                                         base64.b64encode(b"fifteen bytes!!").decode()),
    "bad kid": VENDOR_DOCUMENT.replace(f'kid="{_VENDOR_KIDS[2]}"', 'kid="not-a-kid"', 1),
    "no contentId": VENDOR_DOCUMENT.replace(' contentId="tears-of-steel"', ""),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_failed_import_writes_nothing_and_says_why(tmp_path: Path, case: str) -> None:
    state = tmp_path / "s"
    assert origin_keys("rotate", "tears", state=state).returncode == 0
    before = stored(state, KEK_A)
    path = tmp_path / "bad.xml"
    path.write_text(BAD_IMPORTS[case])
    result = origin_keys("import", str(path), "--asset", "tears", "--activate", "--kid",
                         _VENDOR_KIDS[0], state=state)
    assert result.returncode == 1
    assert result.stderr.startswith(b"error: ") and result.stdout == b""
    if case == "encrypted":
        assert b"encrypted CPIX keys are not supported; export them as PlainValue" in result.stderr
    vendor_keys = [base64.b64decode(v) for v in VENDOR_KEYS.values()]
    assert secrets_in(result.stderr, vendor_keys) == []
    assert stored(state, KEK_A) == before  # the first, valid keys were not written either
    # Control: the untouched document imports in the same keystore.
    path.write_text(VENDOR_DOCUMENT)
    assert origin_keys("import", str(path), "--asset", "tears", state=state).returncode == 0
    assert len(stored(state, KEK_A)) == len(before) + 3


# --- a real tool no one here wrote: Shaka Packager -------------------------------------------


def framemd5(path: Path) -> list[str]:
    result = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                             "-i", str(path), "-map", "0", "-f", "framemd5", "-"],
                            capture_output=True, text=True, timeout=60)
    return [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")] \
        if result.returncode == 0 else [f"ffmpeg failed: {result.stderr[-300:]}"]


def packager_decrypt(src: Path, dst: Path, kid: str, key: str) -> bool:
    result = subprocess.run(
        [str(PACKAGER), f"in={src},stream=audio,output={dst}", "--enable_raw_key_decryption",
         "--keys", f"label=:key_id={kid}:key={key}"],
        capture_output=True, text=True, timeout=60)
    return result.returncode == 0


async def fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200, url
        return await resp.read()


async def test_origin_serves_an_imported_key_and_packager_decrypts_with_the_export(
        media_copy: Path, tmp_path: Path) -> None:
    """A key made outside (a hand-written CPIX) is imported and activated; the origin encrypts
    with it; the export of the keystore gives Shaka Packager the key that decrypts the
    origin's cbcs segment back to the clear frames, and its pssh equal the served init's."""
    state = tmp_path / "state"  # the default KEK file in the state dir, shared with the origin
    kid, key = uuid.uuid4(), secrets.token_bytes(16)
    source = tmp_path / "made-elsewhere.xml"
    source.write_bytes(cpix_text(key_element(str(kid), base64.b64encode(key).decode()),
                                 content_id=' contentId="demo"'))
    imported = origin_keys("import", str(source), "--asset", "demo", "--activate", state=state,
                           kek=None)
    assert imported.returncode == 0, imported.stderr

    server = start_origin(media_copy, state)
    try:
        rendition = f"{server.base}/hls/demo/%s/audio-en"
        async with aiohttp.ClientSession() as session:
            playlist = (await fetch(session, rendition % "cbcs" + "/index.m3u8")).decode()
            assert f"KEYID=0x{kid.hex.upper()}" in playlist  # the imported key is the one used
            init = await fetch(session, rendition % "cbcs" + "/init.mp4")
            segment = await fetch(session, rendition % "cbcs" + "/seg-00001.m4s")
            clear = (await fetch(session, rendition % "clear" + "/init.mp4")
                     + await fetch(session, rendition % "clear" + "/seg-00001.m4s"))
        exported = origin_keys("export", "--asset", "demo", "--license-base", server.base,
                               state=state, kek=None)
    finally:
        assert server.stop() == 0
    assert exported.returncode == 0, exported.stderr
    assert plain_keys(exported.stdout) == {kid.hex: key.hex()}

    doc = parse_cpix(exported.stdout)
    served_pssh = [init[box.start:box.end] for box in find_boxes(init, ("moov", "pssh"))]
    assert [d.pssh for d in doc.drm_systems if d.pssh is not None] == served_pssh
    assert doc.keys[0].explicit_iv is not None and doc.keys[0].explicit_iv in init  # tenc IV

    encrypted, plain = tmp_path / "enc.mp4", tmp_path / "clear.mp4"
    encrypted.write_bytes(init + segment)
    plain.write_bytes(clear)
    expected = framemd5(plain)
    assert len(expected) > 10
    ((kid_hex, key_hex),) = plain_keys(exported.stdout).items()
    decrypted = tmp_path / "dec.mp4"
    assert packager_decrypt(encrypted, decrypted, kid_hex, key_hex)
    assert framemd5(decrypted) == expected
    wrong = tmp_path / "wrong.mp4"
    if packager_decrypt(encrypted, wrong, kid_hex, WRONG_KEY):
        assert framemd5(wrong) != expected
