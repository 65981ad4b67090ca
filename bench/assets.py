"""The benchmark's test assets: the committed demo asset and a dense 1080p asset made here.

Rules:

- The dense asset is laid out like ``media/demo`` (``master.m3u8``,
  ``video-1080p/``, ``audio-en/``, each with ``index.m3u8``, ``init.mp4`` and
  ``seg-NNNNN.m4s``) and made with ffmpeg the way ``origin media demo`` makes
  the demo — the same audio command, the same hls muxer arguments, the same
  checks and multivariant playlist writer from ``origin.demo`` — except that the
  video is 1080p ``testsrc2`` under temporal noise at ~10 Mbit/s, so x264
  really has to spend the bits (~2.5 MB per 2 s segment).
- It is made once and cached in ``bench/.cache/dense``; a ``.complete`` file
  naming the recipe marks a finished build, so an interrupted or outdated one
  is rebuilt.  ffmpeg runs with a time-out.
- ``stage_media`` copies the assets into a fresh media root for one run (the
  origin drops symlinks that leave its root, so copies, not links).

    .venv/bin/python bench/assets.py     # make (or reuse) the dense asset and print it
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from origin import demo  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
DEMO = ROOT / "media" / "demo"
DENSE_NAME = "dense"
DENSE_SECONDS = 20
DENSE_RUNG = demo.VideoRung("video-1080p", 1920, 1080, 10_000)
DENSE_NOISE = 16  # lavfi noise strength: enough that 10 Mbit/s is really spent
RECIPE = f"v1 {DENSE_RUNG} {DENSE_SECONDS}s noise={DENSE_NOISE}"
FFMPEG_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Asset:
    """One asset folder and the renditions whose segments a benchmark rotates over."""

    name: str
    folder: Path
    renditions: tuple[str, ...]  # folders holding a media playlist

    def segments(self, rendition: str) -> tuple[str, ...]:
        """Segment paths in the asset, playlist order (``video-1080p/seg-00001.m4s`` …)."""
        playlist = (self.folder / rendition / demo.PLAYLIST).read_text().splitlines()
        names = [line.strip() for line in playlist if line.strip() and not line.startswith("#")]
        return tuple(f"{rendition}/{name}" for name in names)

    def all_segments(self) -> tuple[str, ...]:
        """Every media segment of every rendition."""
        return tuple(path for rendition in self.renditions for path in self.segments(rendition))

    def mean_segment_bytes(self, rendition: str) -> float:
        sizes = [(self.folder / path).stat().st_size for path in self.segments(rendition)]
        return sum(sizes) / len(sizes)


def demo_asset(folder: Path = DEMO) -> Asset:
    """The committed demo asset (its CMAF renditions; the TS one is SAMPLE-AES's business)."""
    return Asset("demo", folder, ("video-360p", "video-720p", demo.AUDIO_DIR))


def dense_video_command(ffmpeg: str) -> list[str]:
    """1080p H.264 High at ~10 Mbit/s over noisy ``testsrc2``, closed 2 s GOPs, CMAF."""
    rung, seconds = DENSE_RUNG, DENSE_SECONDS
    gop = demo.FRAME_RATE * demo.SEGMENT_SECONDS
    source = (
        f"testsrc2=size={rung.resolution}:rate={demo.FRAME_RATE}:duration={seconds},"
        f"noise=alls={DENSE_NOISE}:allf=t"
    )
    return [
        *demo.base_args(ffmpeg), "-f", "lavfi", "-i", source,
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-b:v", f"{rung.kbps}k", "-maxrate", f"{rung.kbps}k", "-bufsize", f"{rung.kbps * 2}k",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{demo.SEGMENT_SECONDS})",
        "-flags:v", "+cgop", "-an", *demo.hls_args("m4s"),
    ]  # fmt: skip


def run_ffmpeg(command: list[str], cwd: Path) -> None:
    """One ffmpeg command in ``cwd``, bounded in time."""
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, cwd=cwd, check=True, timeout=FFMPEG_TIMEOUT)


def describe_dense(build: Path) -> None:
    """Check what ffmpeg wrote and write ``master.m3u8`` (origin.demo's checks and writer)."""
    video = demo.read_rendition(build / DENSE_RUNG.folder, fmp4=True)
    demo.check_segment_count(video, DENSE_SECONDS)
    codec, width, height = demo.read_avc_entry((build / DENSE_RUNG.folder / demo.INIT).read_bytes())
    if (width, height) != (DENSE_RUNG.width, DENSE_RUNG.height):
        raise demo.DemoError(f"{DENSE_RUNG.folder}: init.mp4 is {width}x{height}")
    audio = demo.read_rendition(build / demo.AUDIO_DIR, fmp4=True)
    demo.check_segment_count(audio, DENSE_SECONDS)
    acodec = demo.read_mp4a_codec((build / demo.AUDIO_DIR / demo.INIT).read_bytes())
    demo.write_master(build, [(DENSE_RUNG, video, codec)], audio, acodec)


def make_dense(folder: Path = CACHE / DENSE_NAME, *, ffmpeg: str = "ffmpeg") -> Asset:
    """The dense asset, made with ffmpeg unless a finished build of this recipe is cached."""
    asset = Asset(DENSE_NAME, folder, (DENSE_RUNG.folder, demo.AUDIO_DIR))
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == RECIPE:
        return asset
    print(f"making the dense asset with ffmpeg into {folder} (once) ...", flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dense-", dir=folder.parent) as tmp:
        build = Path(tmp)
        run_ffmpeg(dense_video_command(ffmpeg), build / DENSE_RUNG.folder)
        run_ffmpeg(demo.audio_command(ffmpeg, DENSE_SECONDS), build / demo.AUDIO_DIR)
        describe_dense(build)
        (build / ".complete").write_text(RECIPE)
        if folder.exists():
            shutil.rmtree(folder)
        build.replace(folder)
        folder.chmod(0o755)
    return asset


def stage_media(media_root: Path, assets: tuple[Asset, ...]) -> tuple[Asset, ...]:
    """Copy ``assets`` into ``media_root`` (one folder each); the copies, as assets."""
    media_root.mkdir(parents=True, exist_ok=True)
    staged = []
    for asset in assets:
        target = media_root / asset.name
        shutil.copytree(asset.folder, target, ignore=shutil.ignore_patterns(".*"))
        staged.append(Asset(asset.name, target, asset.renditions))
    return tuple(staged)


def main() -> int:
    for asset in (demo_asset(), make_dense()):
        for rendition in asset.renditions:
            count = len(asset.segments(rendition))
            mean = asset.mean_segment_bytes(rendition) / 1e6
            print(f"{asset.name}/{rendition}: {count} segments, mean {mean:.3f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
