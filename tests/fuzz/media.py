"""The real media the fuzz seeds come from, and where their structures start (mutation anchors).

Pure reads of committed files: ``tests/media`` (CMAF H.264/H.265 and MPEG-TS),
``media/demo`` (the demo asset) and ``tests/golden`` (playlists).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from origin.container.boxes import CONTAINERS, iter_boxes
from origin.errors import MalformedMedia

ROOT = Path(__file__).resolve().parents[2]
TEST_MEDIA = ROOT / "tests" / "media"
DEMO = ROOT / "media" / "demo"
GOLDEN = ROOT / "tests" / "golden"
CMAF_FILES = ("h264_baseline", "h264_high_slices", "h264_interlaced_inband", "hevc_default",
              "hevc_nodeblock_nosao", "hevc_slices_wpp_inband")
TS_FILES = ("h264_ac3.ts", "h264_eac3.ts")
PACKET = 188
VISUAL_ENTRIES = frozenset({"avc1", "avc3", "hvc1", "hev1", "encv"})
AUDIO_ENTRIES = frozenset({"mp4a", "ac-3", "ec-3", "enca"})


def read(path: Path) -> bytes:
    return path.read_bytes()


@cache
def split_cmaf(name: str) -> tuple[bytes, tuple[bytes, ...]]:
    """A whole CMAF file of ``tests/media`` as its init segment and its fragments."""
    data = read(TEST_MEDIA / f"{name}.mp4")
    boxes = list(iter_boxes(data))
    moofs = [i for i, box in enumerate(boxes) if box.type == "moof"]
    init = data[:boxes[moofs[0]].start]
    ends = [boxes[i].start for i in moofs[1:]] + [len(data)]
    fragments = tuple(data[boxes[i].start:end] for i, end in zip(moofs, ends, strict=True))
    return init, fragments


@cache
def inits() -> tuple[tuple[str, bytes], ...]:
    """Every init segment: the demo's video and audio, then one per ``tests/media`` file."""
    demo = (("demo-video", read(DEMO / "video-360p" / "init.mp4")),
            ("demo-audio", read(DEMO / "audio-en" / "init.mp4")))
    return demo + tuple((name, split_cmaf(name)[0]) for name in CMAF_FILES)


@cache
def fragments() -> tuple[tuple[int, bytes], ...]:
    """(index into :func:`inits`, media segment): the demo audio, one per ``tests/media`` file."""
    out = [(1, read(DEMO / "audio-en" / "seg-00001.m4s"))]
    out += [(2 + i, split_cmaf(name)[1][0]) for i, name in enumerate(CMAF_FILES)]
    return tuple(out)


def box_starts(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[int]:
    """Where every box header lies, descending into containers, ``stsd`` and sample entries."""
    out: list[int] = []
    try:
        boxes = list(iter_boxes(data, start, end))
    except MalformedMedia:
        return out
    for box in boxes:
        out.append(box.start)
        if depth > 8:
            continue
        skip = None
        if box.type in CONTAINERS or box.type in ("mdia", "minf"):
            skip = 0
        elif box.type == "stsd":
            skip = 8
        elif box.type in VISUAL_ENTRIES:
            skip = 78
        elif box.type in AUDIO_ENTRIES:
            skip = 28
        if skip is not None and box.payload_start + skip <= box.end:
            out += box_starts(data, box.payload_start + skip, box.end, depth + 1)
    return out


def packet_starts(data: bytes) -> list[int]:
    """The start of every 188-byte packet, and every PES start code inside one."""
    out = list(range(0, len(data), PACKET))
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and len(out) < 4096:
        out.append(at)
        at = data.find(b"\x00\x00\x01", at + 3)
    return out


def line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]


def markup_starts(data: bytes) -> list[int]:
    """Every ``<`` and every quote: element and attribute boundaries of an XML document."""
    return [i for i, byte in enumerate(data) if byte in b'<"='] or [0]


def shifted(anchors: list[int], by: int) -> list[int]:
    return [a + by for a in anchors]
