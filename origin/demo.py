"""The demo asset maker: one small, self-made HLS asset to serve and test against.

``make_demo(out_dir)`` runs ffmpeg on synthetic sources (lavfi ``testsrc2``
and a frequency-swept ``aevalsrc`` tone) and writes one asset folder::

    master.m3u8        multivariant playlist of the CMAF renditions
    master-ts.m3u8     multivariant playlist of the MPEG-TS rendition
    video-360p/        fMP4/CMAF H.264 640x360   (index.m3u8, init.mp4, seg-NNNNN.m4s)
    video-720p/        fMP4/CMAF H.264 1280x720  (index.m3u8, init.mp4, seg-NNNNN.m4s)
    audio-en/          fMP4/CMAF AAC-LC stereo 48 kHz (index.m3u8, init.mp4, seg-NNNNN.m4s)
    ts-360p/           MPEG-TS, H.264 640x360 + AAC muxed (index.m3u8, seg-NNNNN.ts)

Every video rendition has closed GOPs of exactly two seconds, so every
rendition has ``duration / 2`` segments.  Audio segments are as close to two
seconds as 1024-sample AAC frames allow (2.005 s or 1.984 s).

The multivariant playlists are written here, not by ffmpeg: BANDWIDTH and
AVERAGE-BANDWIDTH are measured from the segment files, and the ``avc1``
CODECS strings are read from the streams themselves (the ``avcC`` box of each
``init.mp4``, the SPS of the first TS segment).

x264 runs single-threaded: its multi-threaded rate control is not
repeatable, while one thread gives the same bytes on every run with the same
ffmpeg build.

Run as ``python -m origin.demo media/demo``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from origin.container.boxes import Box, iter_boxes, iter_sample_entries

SEGMENT_SECONDS = 2
FRAME_RATE = 25
SAMPLE_RATE = 48000
AAC_FRAME_SAMPLES = 1024
AUDIO_KBPS = 80
MAX_FOLDER_BYTES = 6_000_000

MASTER = "master.m3u8"
MASTER_TS = "master-ts.m3u8"
AUDIO_DIR = "audio-en"
TS_DIR = "ts-360p"
PLAYLIST = "index.m3u8"
INIT = "init.mp4"

TESTSRC = "testsrc2=size={w}x{h}:rate={fps}:duration={d}"
# A stereo tone whose pitch sweeps +-220 Hz every 4 s (phase = integral of the
# instantaneous frequency).  No commas: they would split the filtergraph.
TONE = (
    "aevalsrc=exprs="
    "0.3*sin(2*PI*440*t-880*cos(PI*t/2))|"
    "0.3*sin(2*PI*660*t-880*cos(PI*t/2+PI/2))"
    ":s={sr}:d={d}:c=stereo"
)

TS_PACKET = 188
TS_SYNC = 0x47


class DemoError(RuntimeError):
    """The demo asset could not be made or failed its own checks."""


@dataclass(frozen=True, slots=True)
class VideoRung:
    """One H.264 rendition of the ladder."""

    folder: str
    width: int
    height: int
    kbps: int

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


LADDER = (
    VideoRung("video-360p", 640, 360, 400),
    VideoRung("video-720p", 1280, 720, 1000),
)
TS_RUNG = VideoRung(TS_DIR, 640, 360, 400)


@dataclass(frozen=True, slots=True)
class Segment:
    """One media segment as listed in a media playlist."""

    uri: str
    duration: float
    size: int


@dataclass(frozen=True, slots=True)
class Rendition:
    """A media playlist's segments, with the bitrates measured from them."""

    folder: str
    segments: tuple[Segment, ...]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def peak_bps(self) -> int:
        """Highest segment bitrate (bytes * 8 / EXTINF), bits per second."""
        return max(math.ceil(s.size * 8 / s.duration) for s in self.segments)

    @property
    def average_bps(self) -> int:
        """All segment bytes * 8 over the whole duration, bits per second."""
        return math.ceil(sum(s.size for s in self.segments) * 8 / self.duration)


# --- ffmpeg command lines ----------------------------------------------------


def base_args(ffmpeg: str) -> list[str]:
    """Arguments every run starts with."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


def video_source_args(rung: VideoRung, duration: float) -> list[str]:
    """The lavfi ``testsrc2`` input at the rung's size."""
    spec = TESTSRC.format(w=rung.width, h=rung.height, fps=FRAME_RATE, d=duration)
    return ["-f", "lavfi", "-i", spec]


def audio_source_args(duration: float) -> list[str]:
    """The lavfi swept-tone input."""
    return ["-f", "lavfi", "-i", TONE.format(sr=SAMPLE_RATE, d=duration)]


def video_codec_args(rung: VideoRung) -> list[str]:
    """H.264 High, yuv420p, closed two-second GOPs, capped bitrate, one thread."""
    gop = FRAME_RATE * SEGMENT_SECONDS
    return [
        "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-b:v", f"{rung.kbps}k", "-maxrate", f"{rung.kbps * 6 // 5}k",
        "-bufsize", f"{rung.kbps * 2}k",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})",
        "-threads", "1", "-flags:v", "+bitexact+cgop",
    ]  # fmt: skip


def audio_frame_count(duration: float) -> int:
    """AAC frames to keep so the audio fits ``duration`` (the +1 is the priming frame)."""
    return int(duration * SAMPLE_RATE) // AAC_FRAME_SAMPLES + 1


def audio_codec_args(duration: float) -> list[str]:
    """AAC-LC stereo 48 kHz, cut so no sliver of a segment trails the last one."""
    return [
        "-c:a", "aac", "-profile:a", "aac_low", "-b:a", f"{AUDIO_KBPS}k",
        "-ar", str(SAMPLE_RATE), "-ac", "2", "-flags:a", "+bitexact",
        "-frames:a", str(audio_frame_count(duration)),
    ]  # fmt: skip


def hls_args(segment_ext: str) -> list[str]:
    """The hls muxer writing a VOD media playlist with bare segment names into the cwd."""
    args = [
        "-map_metadata", "-1", "-fflags", "+bitexact",
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments", "-start_number", "1",
    ]  # fmt: skip
    if segment_ext == "m4s":
        args += ["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT]
    else:
        args += ["-hls_segment_type", "mpegts"]
    return [*args, "-hls_segment_filename", f"seg-%05d.{segment_ext}", PLAYLIST]


def video_command(ffmpeg: str, rung: VideoRung, duration: float) -> list[str]:
    """ffmpeg command for one video-only CMAF rendition."""
    return [
        *base_args(ffmpeg),
        *video_source_args(rung, duration),
        *video_codec_args(rung),
        "-an",
        *hls_args("m4s"),
    ]


def audio_command(ffmpeg: str, duration: float) -> list[str]:
    """ffmpeg command for the audio-only CMAF rendition."""
    return [
        *base_args(ffmpeg),
        *audio_source_args(duration),
        *audio_codec_args(duration),
        "-vn",
        *hls_args("m4s"),
    ]


def ts_command(ffmpeg: str, duration: float) -> list[str]:
    """ffmpeg command for the muxed video + audio MPEG-TS rendition."""
    return [
        *base_args(ffmpeg),
        *video_source_args(TS_RUNG, duration),
        *audio_source_args(duration),
        "-map", "0:v", "-map", "1:a",
        *video_codec_args(TS_RUNG),
        *audio_codec_args(duration),
        *hls_args("ts"),
    ]  # fmt: skip


def demo_commands(ffmpeg: str, duration: float) -> dict[str, list[str]]:
    """Every ffmpeg command, keyed by the folder it runs in."""
    commands = {rung.folder: video_command(ffmpeg, rung, duration) for rung in LADDER}
    commands[AUDIO_DIR] = audio_command(ffmpeg, duration)
    commands[TS_DIR] = ts_command(ffmpeg, duration)
    return commands


def run_ffmpeg(command: list[str], cwd: Path) -> None:
    """Run one ffmpeg command in ``cwd`` (which it writes into)."""
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, cwd=cwd, check=True)


# --- media playlists -----------------------------------------------------------


def read_rendition(folder: Path, *, fmp4: bool) -> Rendition:
    """Read and check the media playlist ffmpeg wrote in ``folder``."""
    lines = [ln.strip() for ln in (folder / PLAYLIST).read_text().splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise DemoError(f"{folder.name}: not an M3U8 playlist")
    if fmp4 and f'#EXT-X-MAP:URI="{INIT}"' not in lines:
        raise DemoError(f"{folder.name}: EXT-X-MAP URI is not {INIT}")
    if "#EXT-X-ENDLIST" not in lines:
        raise DemoError(f"{folder.name}: playlist has no EXT-X-ENDLIST")
    segments: list[Segment] = []
    for i, line in enumerate(lines):
        if not line.startswith("#EXTINF:"):
            continue
        duration = float(line.removeprefix("#EXTINF:").split(",", 1)[0])
        uri = lines[i + 1] if i + 1 < len(lines) else ""
        if not uri or uri.startswith("#") or "/" in uri:
            raise DemoError(f"{folder.name}: segment URI {uri!r} is not a bare file name")
        segments.append(Segment(uri, duration, (folder / uri).stat().st_size))
    if not segments:
        raise DemoError(f"{folder.name}: playlist lists no segments")
    return Rendition(folder.name, tuple(segments))


def check_segment_count(rendition: Rendition, duration: float) -> None:
    """Every rendition must have one segment per started two seconds."""
    expected = math.ceil(duration / SEGMENT_SECONDS - 1e-6)
    if len(rendition.segments) != expected:
        raise DemoError(
            f"{rendition.folder}: {len(rendition.segments)} segments, expected {expected}"
        )


# --- ISO BMFF --------------------------------------------------------------------


def find_entry(data: bytes, kinds: tuple[str, ...]) -> Box:
    """The first sample entry of one of ``kinds``."""
    for entry in iter_sample_entries(data):
        if entry.type in kinds:
            return entry
    raise DemoError(f"no {'/'.join(kinds)} sample entry")


def format_avc1(profile: int, constraints: int, level: int) -> str:
    """RFC 6381 ``avc1.PPCCLL``."""
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def read_avc_entry(data: bytes) -> tuple[str, int, int]:
    """The ``avc1`` CODECS string and the width and height of an H.264 init segment."""
    entry = find_entry(data, ("avc1", "avc3"))
    # VisualSampleEntry: 8 bytes SampleEntry, 70 bytes visual fields, then child boxes
    children = entry.payload_start + 78
    if children > entry.end:
        raise DemoError("truncated avc1 sample entry")
    width, height = struct.unpack_from(">HH", data, entry.payload_start + 24)
    for box in iter_boxes(data, children, entry.end):
        if box.type == "avcC":
            if box.end - box.payload_start < 4:
                raise DemoError("truncated avcC box")
            _version, profile, constraints, level = data[box.payload_start : box.payload_start + 4]
            return format_avc1(profile, constraints, level), width, height
    raise DemoError("avc1 sample entry has no avcC box")


def read_descriptor(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """One MPEG-4 descriptor header at ``pos``: (tag, payload start, payload end)."""
    if pos >= end:
        raise DemoError("truncated descriptor")
    tag, pos, size = data[pos], pos + 1, 0
    for _ in range(4):
        if pos >= end:
            raise DemoError("truncated descriptor size")
        byte, pos = data[pos], pos + 1
        size = size << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    if pos + size > end:
        raise DemoError(f"descriptor {tag:#x} overruns its parent")
    return tag, pos, pos + size


def read_mp4a_codec(data: bytes) -> str:
    """``mp4a.OO.A`` from the ``esds`` of an AAC init segment."""
    entry = find_entry(data, ("mp4a",))
    if entry.end - entry.payload_start < 28:
        raise DemoError("truncated mp4a sample entry")
    # AudioSampleEntry: 8 bytes SampleEntry, 20 bytes audio fields (QuickTime v1/v2 add more)
    (version,) = struct.unpack_from(">H", data, entry.payload_start + 8)
    children = entry.payload_start + 28 + {0: 0, 1: 16, 2: 36}.get(version, 0)
    esds = [box for box in iter_boxes(data, children, entry.end) if box.type == "esds"]
    if not esds:
        raise DemoError("mp4a sample entry has no esds box")
    tag, pos, end = read_descriptor(data, esds[0].payload_start + 4, esds[0].end)
    if tag != 0x03 or end - pos < 3:
        raise DemoError("esds does not hold an ES_Descriptor")
    flags, pos = data[pos + 2], pos + 3
    pos += 2 if flags & 0x80 else 0  # dependsOn_ES_ID
    if flags & 0x40:  # URL
        pos += 1 + (data[pos] if pos < end else 0)
    pos += 2 if flags & 0x20 else 0  # OCR_ES_ID
    tag, pos, end = read_descriptor(data, pos, end)
    if tag != 0x04 or end - pos < 13:
        raise DemoError("ES_Descriptor does not hold a DecoderConfigDescriptor")
    object_type = data[pos]
    tag, pos, end = read_descriptor(data, pos + 13, end)
    if tag != 0x05 or end - pos < 1:
        raise DemoError("DecoderConfigDescriptor does not hold a DecoderSpecificInfo")
    audio_object_type = data[pos] >> 3
    if audio_object_type == 31:  # escape: 6 more bits
        if end - pos < 2:
            raise DemoError("truncated AudioSpecificConfig")
        audio_object_type = 32 + ((data[pos] & 0x07) << 3 | data[pos + 1] >> 5)
    return f"mp4a.{object_type:02x}.{audio_object_type}"


# --- MPEG-TS -------------------------------------------------------------------------


def first_video_pes(data: bytes) -> bytes:
    """The first complete video PES packet (stream_id 0xE0-0xEF) of a TS segment."""
    pid: int | None = None
    pes = bytearray()
    for pos in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        packet = data[pos : pos + TS_PACKET]
        if packet[0] != TS_SYNC:
            raise DemoError(f"lost TS sync at byte {pos}")
        unit_start = bool(packet[1] & 0x40)
        packet_pid = (packet[1] & 0x1F) << 8 | packet[2]
        control = packet[3] >> 4 & 0x03
        offset = 4 + (1 + packet[4] if control & 0x02 else 0)
        if not control & 0x01 or offset >= TS_PACKET:
            continue
        payload = packet[offset:]
        if pid is None:
            is_video = (
                payload[:3] == b"\x00\x00\x01" and len(payload) > 3 and payload[3] >> 4 == 0xE
            )
            if unit_start and is_video:
                pid = packet_pid
                pes += payload
        elif packet_pid == pid:
            if unit_start:
                return bytes(pes)
            pes += payload
    if pid is None:
        raise DemoError("no video PES in TS segment")
    return bytes(pes)


def read_ts_avc_codec(data: bytes) -> str:
    """The ``avc1`` CODECS string from the first SPS of a TS segment."""
    pes = first_video_pes(data)
    if len(pes) < 9 or len(pes) < 9 + pes[8]:
        raise DemoError("truncated PES header")
    es = pes[9 + pes[8] :]
    pos = es.find(b"\x00\x00\x01")
    while pos >= 0:
        # nal header, then profile_idc, constraint flags, level_idc; profile_idc is
        # never 0, so no emulation-prevention byte can fall inside these three
        if pos + 7 <= len(es) and es[pos + 3] & 0x1F == 7:
            return format_avc1(es[pos + 4], es[pos + 5], es[pos + 6])
        pos = es.find(b"\x00\x00\x01", pos + 3)
    raise DemoError("no SPS in the first video access unit")


# --- multivariant playlists ------------------------------------------------------------


def stream_inf(attrs: dict[str, str]) -> str:
    """An ``#EXT-X-STREAM-INF`` line from ordered attributes."""
    return "#EXT-X-STREAM-INF:" + ",".join(f"{k}={v}" for k, v in attrs.items())


def write_master(
    out_dir: Path, videos: Sequence[tuple[VideoRung, Rendition, str]], audio: Rendition, acodec: str
) -> None:
    """Write ``master.m3u8``: the CMAF video ladder with one audio group."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",'
        f'DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="{AUDIO_DIR}/{PLAYLIST}"',
    ]
    for rung, video, vcodec in videos:
        attrs = {
            "BANDWIDTH": str(video.peak_bps + audio.peak_bps),
            "AVERAGE-BANDWIDTH": str(video.average_bps + audio.average_bps),
            "RESOLUTION": rung.resolution,
            "FRAME-RATE": f"{FRAME_RATE:.3f}",
            "CODECS": f'"{vcodec},{acodec}"',
            "AUDIO": '"aud"',
        }
        lines += [stream_inf(attrs), f"{rung.folder}/{PLAYLIST}"]
    (out_dir / MASTER).write_text("\n".join(lines) + "\n")


def write_master_ts(out_dir: Path, ts: Rendition, vcodec: str, acodec: str) -> None:
    """Write ``master-ts.m3u8``: the one muxed MPEG-TS variant."""
    attrs = {
        "BANDWIDTH": str(ts.peak_bps),
        "AVERAGE-BANDWIDTH": str(ts.average_bps),
        "RESOLUTION": TS_RUNG.resolution,
        "FRAME-RATE": f"{FRAME_RATE:.3f}",
        "CODECS": f'"{vcodec},{acodec}"',
    }
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        stream_inf(attrs),
        f"{TS_DIR}/{PLAYLIST}",
    ]
    (out_dir / MASTER_TS).write_text("\n".join(lines) + "\n")


# --- the asset -------------------------------------------------------------------------


def demo_entries() -> tuple[str, ...]:
    """Every top-level name the asset folder holds."""
    return (MASTER, MASTER_TS, *(r.folder for r in LADDER), AUDIO_DIR, TS_DIR)


def folder_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(build: Path, duration: float) -> None:
    """Read back what ffmpeg wrote, check it, and write both multivariant playlists."""
    videos: list[tuple[VideoRung, Rendition, str]] = []
    for rung in LADDER:
        video = read_rendition(build / rung.folder, fmp4=True)
        check_segment_count(video, duration)
        codec, width, height = read_avc_entry((build / rung.folder / INIT).read_bytes())
        if (width, height) != (rung.width, rung.height):
            raise DemoError(f"{rung.folder}: init.mp4 is {width}x{height}")
        videos.append((rung, video, codec))
    audio = read_rendition(build / AUDIO_DIR, fmp4=True)
    check_segment_count(audio, duration)
    acodec = read_mp4a_codec((build / AUDIO_DIR / INIT).read_bytes())
    if acodec != "mp4a.40.2":
        raise DemoError(f"audio is {acodec}, not AAC-LC")
    ts = read_rendition(build / TS_DIR, fmp4=False)
    check_segment_count(ts, duration)
    ts_codec = read_ts_avc_codec((build / TS_DIR / ts.segments[0].uri).read_bytes())
    write_master(build, videos, audio, acodec)
    write_master_ts(build, ts, ts_codec, acodec)


def install(build: Path, out_dir: Path) -> None:
    """Replace the asset's entries in ``out_dir`` with the freshly built ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in demo_entries():
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        (build / name).replace(target)


def make_demo(out_dir: Path, *, ffmpeg: str = "ffmpeg", duration: float = 12.0) -> None:
    """Encode the demo asset into ``out_dir`` (replacing a previous one there)."""
    if not duration > 0:
        raise ValueError("duration must be positive")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=out_dir.parent) as tmp:
        build = Path(tmp)
        for folder, command in demo_commands(ffmpeg, duration).items():
            run_ffmpeg(command, build / folder)
        describe(build, duration)
        size = folder_size(build)
        if size > MAX_FOLDER_BYTES:
            raise DemoError(f"demo asset is {size} bytes, over {MAX_FOLDER_BYTES}")
        install(build, out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m origin.demo OUT_DIR [--ffmpeg PATH] [--duration SECONDS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m origin.demo", description="Make the demo HLS asset with ffmpeg."
    )
    parser.add_argument("out_dir", type=Path, help="asset folder to write, e.g. media/demo")
    parser.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg binary (default: ffmpeg)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds (default: 12)")
    args = parser.parse_args(argv)
    make_demo(args.out_dir, ffmpeg=args.ffmpeg, duration=args.duration)
    print(f"wrote {args.out_dir} ({folder_size(args.out_dir)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
