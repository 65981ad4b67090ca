"""Init and fragment parsing/protection on the demo media, and on broken media."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.container.boxes import find_boxes, iter_boxes
from origin.container.fragment import (
    FragmentError,
    TrafProtection,
    parse_fragment,
    write_protected_fragment,
)
from origin.container.init_segment import UnsupportedMedia, parse_init, protect_init
from origin.container.pssh import common_pssh
from origin.crypto.subsample import CommonScheme, SampleCrypto, Subsample
from origin.errors import MalformedMedia
from tests.conftest import DEMO
from tests.tools.mp4check import check_fragment

KID = bytes(range(16))
IV = bytes(range(16, 32))
VIDEO_INIT = (DEMO / "video-360p/init.mp4").read_bytes()
AUDIO_INIT = (DEMO / "audio-en/init.mp4").read_bytes()
VIDEO_SEG = (DEMO / "video-360p/seg-00002.m4s").read_bytes()
AUDIO_SEG = (DEMO / "audio-en/seg-00002.m4s").read_bytes()


def test_parse_init_reads_tracks() -> None:
    video = parse_init(VIDEO_INIT).track(1)
    assert (video.handler, video.codec, video.is_video) == ("vide", "avc1", True)
    assert video.codec_config[:1] == b"\x01"  # avcC configurationVersion
    audio = parse_init(AUDIO_INIT).track(1)
    assert (audio.handler, audio.codec, audio.codec_config) == ("soun", "mp4a", b"")


@pytest.mark.parametrize(("init", "entry"), [(VIDEO_INIT, "encv"), (AUDIO_INIT, "enca")])
@pytest.mark.parametrize("scheme", list(CommonScheme))
def test_protect_init_structure(init: bytes, entry: str, scheme: CommonScheme) -> None:
    pssh = common_pssh([KID])
    out = protect_init(init, scheme=scheme, kid=KID, constant_iv=IV, pssh=[pssh])
    (moov,) = find_boxes(out, ("moov",))
    assert out[moov.end - len(pssh):moov.end] == pssh  # appended to moov
    assert out.count(pssh) == 1
    path = ("moov", "trak", "mdia", "minf", "stbl", "stsd")
    (stsd,) = find_boxes(out, path)
    (sample_entry,) = iter_boxes(out, stsd.payload_start + 8, stsd.end)
    assert sample_entry.type == entry
    children = sample_entry.payload_start + (78 if entry == "encv" else 28)
    assert len(list(find_boxes(out, ("sinf", "schi", "tenc"), children, sample_entry.end))) == 1
    frma = out.index(b"frma")
    assert out[frma + 4:frma + 8] in (b"avc1", b"mp4a")
    schm = out.index(b"schm")
    assert out[schm + 8:schm + 12] == scheme.value.encode()
    t = out.index(b"tenc") - 4
    version = out[t + 8]
    body = out[t + 12:]
    if scheme is CommonScheme.CBCS:
        video = entry == "encv"
        assert version == (1 if video else 0)
        assert body[1] == (0x19 if video else 0)
        assert body[2:4] == b"\x01\x00"  # protected, per-sample IV size 0
        assert body[4:20] == KID and body[20] == 16 and body[21:37] == IV
    else:
        assert version == 0 and body[2:4] == b"\x01\x08" and body[4:20] == KID
    # Unchanged apart from the rename and the appended boxes: the clear init re-parses too.
    assert parse_init(out).track(1).handler == parse_init(init).track(1).handler


def test_parse_fragment_finds_every_sample() -> None:
    frag = parse_fragment(VIDEO_SEG, parse_init(VIDEO_INIT))
    (moof,) = frag.moofs
    (traf,) = moof.trafs
    assert len(traf.samples) == 50  # 2 s at 25 fps
    (mdat,) = [b for b in iter_boxes(VIDEO_SEG) if b.type == "mdat"]
    assert traf.samples[0][0] == mdat.payload_start
    last_offset, last_size = traf.samples[-1]
    assert last_offset + last_size == mdat.end


def test_write_protected_fragment_keeps_offsets_consistent() -> None:
    for init, seg in ((VIDEO_INIT, VIDEO_SEG), (AUDIO_INIT, AUDIO_SEG)):
        frag = parse_fragment(seg, parse_init(init))
        (traf,) = frag.moofs[0].trafs
        samples = tuple(SampleCrypto(o, s, (Subsample(5, s - 5),)) for o, s in traf.samples)
        ivs = tuple(struct.pack(">Q", i) for i in range(len(samples)))
        out = write_protected_fragment(seg, frag, [[TrafProtection(samples, ivs)]])
        assert check_fragment(out, 8) == len(samples)
        # The mdat payload is carried over byte for byte.
        assert out.endswith(seg[traf.samples[0][0]:])


def corrupt(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


def trun_at(seg: bytes) -> int:
    (trun,) = find_boxes(seg, ("moof", "traf", "trun"))
    return trun.start


@pytest.mark.parametrize("broken", [
    VIDEO_SEG[:100],  # truncated inside moof
    VIDEO_SEG[:-1000],  # samples run past the end
    corrupt(VIDEO_SEG, 0, b"\xff\xff\xff\xff"),  # first box size past the end
    corrupt(VIDEO_SEG, trun_at(VIDEO_SEG) + 12, struct.pack(">I", 0)),  # zero samples
    corrupt(VIDEO_SEG, trun_at(VIDEO_SEG) + 12, struct.pack(">I", 0xFFFFFFFF)),  # absurd count
    corrupt(VIDEO_SEG, trun_at(VIDEO_SEG) + 9, b"\x00\x0e\x04"),  # trun without data offset
    corrupt(VIDEO_SEG, trun_at(VIDEO_SEG) + 16, struct.pack(">i", -5000)),  # offset before mdat
    b"",
    b"\x00\x00\x00\x08moov",
], ids=["truncated", "short-mdat", "box-past-end", "zero-samples", "absurd-count",
        "no-data-offset", "offset-before-mdat", "empty", "no-moof"])
def test_broken_fragments_raise_typed_errors(broken: bytes) -> None:
    with pytest.raises(MalformedMedia):
        parse_fragment(broken, parse_init(VIDEO_INIT))


def test_specific_error_types() -> None:
    with pytest.raises(FragmentError, match="data offset"):
        parse_fragment(corrupt(VIDEO_SEG, trun_at(VIDEO_SEG) + 9, b"\x00\x0e\x04"),
                       parse_init(VIDEO_INIT))
    unknown = VIDEO_INIT.replace(b"avc1", b"vp09")
    with pytest.raises(UnsupportedMedia, match="vp09"):
        protect_init(unknown, scheme=CommonScheme.CBCS, kid=KID, constant_iv=IV, pssh=[])
    already = VIDEO_INIT.replace(b"avc1", b"encv")
    with pytest.raises(UnsupportedMedia, match="already"):
        protect_init(already, scheme=CommonScheme.CENC, kid=KID, constant_iv=IV, pssh=[])
    with pytest.raises(MalformedMedia):
        parse_init(VIDEO_INIT[:200])


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(base[:max(1, cut)])
        for at, value in edits:
            data[at % len(data)] = value
        return bytes(data)

    return st.builds(
        mutate,
        st.sampled_from([VIDEO_SEG, AUDIO_SEG, VIDEO_INIT, AUDIO_INIT]),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
        st.integers(1, 120_000),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), _mutations()))
def test_fuzz_parsers_raise_only_typed_errors(data: bytes) -> None:
    for call in (
        lambda: parse_init(data),
        lambda: protect_init(data, scheme=CommonScheme.CBCS, kid=KID, constant_iv=IV, pssh=[]),
        lambda: parse_fragment(data, parse_init(VIDEO_INIT)),
        lambda: parse_fragment(data, parse_init(AUDIO_INIT)),
    ):
        with contextlib.suppress(MalformedMedia):
            call()
