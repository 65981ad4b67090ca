"""Several ``traf``s per ``moof`` and several ``trun``s per ``traf``, decrypted by real tools.

ffmpeg writes a muxed audio+video fragmented MP4 (one ``moof`` with a video
and an audio ``traf``); a second variant splits every ``trun`` in two (data
offsets recomputed, checked to decode identically while clear).  Each
fragment is protected by ``protect_fragment`` and the result must decode
frame-exact in ffmpeg and decrypt in Shaka Packager.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from origin.container.boxes import build_box, iter_boxes
from origin.container.init_segment import parse_init, protect_init
from origin.container.pssh import common_pssh
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme
from origin.packaging.drm import constant_iv
from origin.packaging.segments import protect_fragment
from tests.tools.mp4check import check_fragment
from tests.tools.packager import PACKAGER

KEY = ContentKey(bytes.fromhex("00112233445566778899aabbccddeeff"),
                 bytes.fromhex("ffeeddccbbaa99887766554433221100"))


@pytest.fixture(scope="module")
def muxed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("muxed") / "av.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
         "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "mp4",
         "-movflags", "+frag_keyframe+empty_moov+default_base_moof", str(out)],
        check=True, timeout=120)
    return out.read_bytes()


def split_truns(data: bytes) -> bytes:
    """The same file with every trun split into two truns (offsets recomputed)."""
    out = []
    for box in iter_boxes(data):
        if box.type != "moof":
            out.append(data[box.start:box.end])
            continue
        children = []
        for child in iter_boxes(data, box.payload_start, box.end):
            if child.type != "traf":
                children.append(data[child.start:child.end])
                continue
            parts = []
            for sub in iter_boxes(data, child.payload_start, child.end):
                if sub.type == "trun":
                    parts.extend(_split(data[sub.start:sub.end]))
                else:
                    parts.append(data[sub.start:sub.end])
            children.append(build_box("traf", *parts))
        new_moof = build_box("moof", *children)
        growth = len(new_moof) - (box.end - box.start)
        out.append(_shift_offsets(new_moof, growth))
    return b"".join(out)


def _split(trun: bytes) -> list[bytes]:
    word = struct.unpack_from(">I", trun, 8)[0]
    flags = word & 0xFFFFFF
    count, offset = struct.unpack_from(">Ii", trun, 12)
    assert flags & 0x1  # data offset present
    first_flags = trun[20:24] if flags & 0x4 else b""
    fields = [b for b in (0x100, 0x200, 0x400, 0x800) if flags & b]
    stride = 4 * len(fields)
    at = 20 + len(first_flags)
    table = trun[at:at + stride * count]
    if count < 2:
        return [trun]
    half = count // 2
    size_at = fields.index(0x200) * 4
    first_bytes = sum(struct.unpack_from(">I", table, i * stride + size_at)[0]
                      for i in range(half))
    # The first-sample flags belong to the first run only.
    one = build_box("trun", struct.pack(">I", word), struct.pack(">Ii", half, offset),
                    first_flags, table[:half * stride])
    two = build_box("trun", struct.pack(">I", word & ~0x4),
                    struct.pack(">Ii", count - half, offset + first_bytes),
                    table[half * stride:])
    return [one, two]


def _shift_offsets(moof: bytes, growth: int) -> bytes:
    buf = bytearray(moof)
    for traf in iter_boxes(buf, 8, len(buf)):
        if traf.type != "traf":
            continue
        for sub in iter_boxes(buf, traf.payload_start, traf.end):
            if sub.type == "trun":
                (offset,) = struct.unpack_from(">i", buf, sub.start + 16)
                struct.pack_into(">i", buf, sub.start + 16, offset + growth)
    return bytes(buf)


def framemd5(path: Path, key: str | None = None, *, check: bool = True) -> list[str]:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += ["-decryption_key", key] if key else []
    cmd += ["-i", str(path), "-map", "0", "-f", "framemd5", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return [ln for ln in done.stdout.splitlines() if ln and not ln.startswith("#")]


def per_stream(lines: list[str]) -> dict[str, list[str]]:
    """framemd5 lines by stream, in order (interleaving across streams is not content)."""
    out: dict[str, list[str]] = {}
    for line in lines:
        out.setdefault(line.split(",")[0].strip(), []).append(line)
    return out


def split_file(data: bytes) -> tuple[bytes, list[bytes]]:
    """(init, fragments) of a fragmented file; a fragment is a moof and what follows it."""
    boxes = list(iter_boxes(data))
    moov_end = next(b.end for b in boxes if b.type == "moov")
    fragments: list[bytes] = []
    current = b""
    for box in boxes:
        if box.start < moov_end:
            continue
        if box.type == "moof" and current:
            fragments.append(current)
            current = b""
        current += data[box.start:box.end]
    fragments.append(current)
    return data[:moov_end], fragments


def protect_file(data: bytes, scheme: CommonScheme) -> tuple[bytes, list[bytes]]:
    """(protected init, protected fragments) of a whole fragmented file."""
    init, fragments = split_file(data)
    info = parse_init(init)
    assert len(info.tracks) == 2
    protected_init = protect_init(init, scheme=scheme, kid=KEY.kid,
                                  constant_iv=constant_iv(KEY), pssh=[common_pssh([KEY.kid])])
    return protected_init, [protect_fragment(f, info, scheme, KEY, f"frag{i}")
                            for i, f in enumerate(fragments)]


@pytest.mark.parametrize("scheme", list(CommonScheme))
@pytest.mark.parametrize("variant", ["two-trafs", "two-trafs-two-truns"])
def test_muxed_fragments_decrypt(muxed: bytes, tmp_path: Path, scheme: CommonScheme,
                                 variant: str) -> None:
    clear = split_truns(muxed) if variant == "two-trafs-two-truns" else muxed
    clear_path = tmp_path / "clear.mp4"
    clear_path.write_bytes(clear)
    expected = framemd5(clear_path)
    if variant == "two-trafs-two-truns":
        original = tmp_path / "orig.mp4"
        original.write_bytes(muxed)
        assert expected == framemd5(original)  # the split itself is faithful
        assert clear.count(b"trun") == 2 * muxed.count(b"trun")
    init, fragments = protect_file(clear, scheme)
    for fragment in fragments:
        assert fragment.count(b"traf") == 2
        check_fragment(fragment, 8 if scheme is CommonScheme.CENC else 0)
    # ffmpeg: one fragment at a time (its demuxer mislays encryption info past two),
    # against the clear file cut the same way (decoder state differs at the cuts).
    clear_init, clear_fragments = split_file(clear)
    for index, (fragment, plain) in enumerate(zip(fragments, clear_fragments, strict=True)):
        enc_path, plain_path = tmp_path / f"enc{index}.mp4", tmp_path / f"plain{index}.mp4"
        enc_path.write_bytes(init + fragment)
        plain_path.write_bytes(clear_init + plain)
        want = framemd5(plain_path)
        assert len(per_stream(want)) == 2
        assert framemd5(enc_path, KEY.key.hex()) == want, f"fragment {index}"
        if index == 0:
            assert framemd5(enc_path, "00" * 16, check=False) != want
    # Shaka Packager decrypts the whole file.  Under cbcs with one key id shared by a
    # 1:9-pattern video track and a full-sample audio track in ONE file, Shaka v3.8
    # decrypts the audio with the video's pattern (first block right, the next nine
    # left encrypted: its cryptor is kept per key id), though this file's audio tenc
    # says full-sample and ffmpeg decrypts it exactly above.  Our renditions carry one
    # track per file, where Shaka decrypts cbcs audio exactly (test_cenc_playback).
    whole = tmp_path / "enc.mp4"
    whole.write_bytes(init + b"".join(fragments))
    streams = ("video",) if scheme is CommonScheme.CBCS else ("video", "audio")
    for stream in streams:
        out = tmp_path / f"dec-{stream}.mp4"
        done = subprocess.run(
            [str(PACKAGER), f"in={whole},stream={stream},output={out}",
             "--enable_raw_key_decryption",
             "--keys", f"label=:key_id={KEY.kid.hex()}:key={KEY.key.hex()}"],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-800:]
        index = "0" if stream == "video" else "1"
        clear_hashes = [ln.rsplit(",", 1)[1] for ln in per_stream(expected)[index]]
        assert [ln.rsplit(",", 1)[1] for ln in framemd5(out)] == clear_hashes
