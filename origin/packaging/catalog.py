"""The asset catalog: what lies under the media root, and safe lookups into it.

Rules:
- An asset is a direct sub-folder of the media root, named by ``ASSET_NAME``,
  holding at least one HLS multivariant playlist (a top-level ``.m3u8`` with
  ``#EXT-X-STREAM-INF``).  ``master.m3u8`` is its default playlist.
- The catalog is a snapshot made by walking the root (blocking: callers run
  :func:`scan_catalog` in an executor).  Requests are answered from the
  snapshot only: a request path is checked component by component
  (:func:`split_request_path`) and looked up in a dict, so no request makes
  the process open or stat a path computed from the URL.
- Symlinks are followed only while every hop, resolved link by link from the
  root, stays inside the root; any other link is left out, and its target is
  never opened or stat-ed.
- Files whose names do not match ``COMPONENT`` are not served.
- An optional ``asset.json`` in the asset folder configures the asset
  (``{"key_systems": ["fairplay", "widevine", "playready", "clearkey"]}``, all
  four by default); it is never served.  A bad one is reported on every
  protected request (502) rather than silently ignored.
"""

from __future__ import annotations

import enum
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from origin.container.boxes import read_handler_types
from origin.errors import MalformedMedia, NotFound
from origin.packaging.key_system import ALL_KEY_SYSTEMS, KeySystem

ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
MAX_DEPTH = 8
MAX_FILES_PER_ASSET = 100_000
MAX_LINK_HOPS = 16
PLAYLIST_HEAD = 65536
ASSET_CONFIG = "asset.json"
MAX_CONFIG_BYTES = 65536
INIT_HEAD = 1 << 20


class MediaKind(enum.Enum):
    PLAYLIST = "playlist"
    TS_SEGMENT = "ts"
    MP4_INIT = "init"
    MP4_SEGMENT = "mp4"
    AUDIO_SEGMENT = "audio"
    SUBTITLE = "subtitle"
    MANIFEST = "mpd"
    OTHER = "other"


_SUFFIX_KIND = {
    ".m3u8": MediaKind.PLAYLIST,
    ".ts": MediaKind.TS_SEGMENT,
    ".m4s": MediaKind.MP4_SEGMENT,
    ".mp4": MediaKind.MP4_SEGMENT,
    ".m4v": MediaKind.MP4_SEGMENT,
    ".cmfv": MediaKind.MP4_SEGMENT,
    ".m4a": MediaKind.MP4_SEGMENT,
    ".cmfa": MediaKind.MP4_SEGMENT,
    ".aac": MediaKind.AUDIO_SEGMENT,
    ".vtt": MediaKind.SUBTITLE,
    ".webvtt": MediaKind.SUBTITLE,
    ".mpd": MediaKind.MANIFEST,
}

_FIXED_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4a": "audio/mp4",
    ".cmfa": "audio/mp4",
    ".aac": "audio/aac",
    ".vtt": "text/vtt",
    ".webvtt": "text/vtt",
    ".mpd": "application/dash+xml",
}


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One servable file: its path inside the asset and its real path on disk."""

    rel: str
    real_path: str
    kind: MediaKind
    content_type: str
    init: str | None = None  # for fMP4 media segments: the init segment of their folder


@dataclass(frozen=True, slots=True)
class AssetConfig:
    key_systems: tuple[KeySystem, ...] = ALL_KEY_SYSTEMS
    error: str | None = None  # why asset.json could not be used

    def require_valid(self) -> AssetConfig:
        if self.error is not None:
            raise MalformedMedia(f"{ASSET_CONFIG}: {self.error}")
        return self


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    multivariant: tuple[str, ...]
    files: Mapping[str, MediaFile] = field(repr=False)
    config: AssetConfig = AssetConfig()
    transport_stream: frozenset[str] = frozenset()  # multivariant playlists leading to MPEG-TS

    @property
    def default_playlist(self) -> str:
        return "master.m3u8" if "master.m3u8" in self.multivariant else self.multivariant[0]

    def file(self, rel: str) -> MediaFile:
        found = self.files.get(rel)
        if found is None:
            raise NotFound("no such file in asset")
        return found


@dataclass(frozen=True, slots=True)
class Catalog:
    root: str
    assets: Mapping[str, Asset]

    def asset(self, name: str) -> Asset:
        found = self.assets.get(name)
        if found is None:
            raise NotFound("unknown asset")
        return found


def split_request_path(tail: str) -> str:
    """Check a decoded request path inside an asset; return it normalised, or raise NotFound.

    Refused (404, never looked up on disk): empty or absolute paths, ``.`` and
    ``..`` components, empty components, backslashes, NUL and other control
    characters, and ``%`` (left over from double encoding).
    """
    if not tail or tail.startswith("/") or len(tail) > 1024:
        raise NotFound("no such file in asset")
    parts = tail.split("/")
    if len(parts) > MAX_DEPTH or not all(COMPONENT.fullmatch(p) for p in parts):
        raise NotFound("no such file in asset")
    return "/".join(parts)


def check_asset_name(name: str) -> str:
    if not ASSET_NAME.fullmatch(name):
        raise NotFound("unknown asset")
    return name


def scan_catalog(root: str) -> Catalog:
    """Walk the media root and build a snapshot (blocking; run it in an executor)."""
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise MalformedMedia("media root is not a directory")
    assets: dict[str, Asset] = {}
    with os.scandir(real_root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if not ASSET_NAME.fullmatch(entry.name):
                continue
            folder = _resolve_inside(real_root, entry.path)
            if folder is None or not stat.S_ISDIR(os.stat(folder).st_mode):
                continue
            asset = _scan_asset(real_root, entry.name, folder)
            if asset is not None:
                assets[entry.name] = asset
    return Catalog(real_root, assets)


def _scan_asset(root: str, name: str, folder: str) -> Asset | None:
    found: dict[str, str] = {}
    _walk(root, folder, PurePosixPath(), found, 0)
    multivariant = tuple(
        rel for rel, real in sorted(found.items())
        if "/" not in rel and rel.endswith(".m3u8") and _is_multivariant(real)
    )
    if not multivariant:
        return None
    config_path = found.pop(ASSET_CONFIG, None)
    config = read_asset_config(config_path) if config_path else AssetConfig()
    inits = _find_inits(found)
    files = {rel: _classify(rel, real, inits) for rel, real in found.items()}
    ts = frozenset(rel for rel in multivariant if _leads_to_ts(found[rel], files))
    return Asset(name, multivariant, files, config, ts)


def _leads_to_ts(real: str, files: Mapping[str, MediaFile]) -> bool:
    """Whether a top-level multivariant playlist's first variant folder holds MPEG-TS."""
    with open(real, "rb") as fh:
        head = fh.read(PLAYLIST_HEAD).decode("utf-8", "replace")
    uri = next((ln.strip() for ln in head.splitlines()
                if ln.strip() and not ln.startswith("#")), None)
    if uri is None or "/" not in uri:
        return False
    folder = uri.split("?", 1)[0].rsplit("/", 1)[0] + "/"
    return any(f.kind is MediaKind.TS_SEGMENT for rel, f in files.items()
               if rel.startswith(folder) and "/" not in rel[len(folder):])


def read_asset_config(path: str) -> AssetConfig:
    """Parse ``asset.json`` (blocking); problems become ``AssetConfig.error``."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_CONFIG_BYTES + 1)[:MAX_CONFIG_BYTES])
    except (OSError, ValueError):
        return AssetConfig(error="not readable JSON")
    if not isinstance(doc, dict):
        return AssetConfig(error="not a JSON object")
    names = doc.get("key_systems", [s.value for s in ALL_KEY_SYSTEMS])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return AssetConfig(error="key_systems must be a list of names")
    known = {s.value: s for s in KeySystem}
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        return AssetConfig(error=("unknown key system " + ", ".join(unknown))[:120])
    return AssetConfig(tuple(known[n] for n in dict.fromkeys(names)))


def _walk(root: str, folder: str, rel: PurePosixPath, out: dict[str, str], depth: int) -> None:
    if depth >= MAX_DEPTH:
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            if not COMPONENT.fullmatch(entry.name) or len(out) >= MAX_FILES_PER_ASSET:
                continue
            real = entry.path
            if entry.is_symlink():
                resolved = _resolve_inside(root, entry.path)
                if resolved is None:
                    continue
                real = resolved
            mode = os.stat(real).st_mode
            if stat.S_ISDIR(mode):
                _walk(root, real, rel / entry.name, out, depth + 1)
            elif stat.S_ISREG(mode):
                out[str(rel / entry.name)] = real


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _resolve_inside(root: str, path: str) -> str | None:
    """Resolve ``path`` (inside ``root``) link by link; None if any hop leaves the root.

    Only paths already known to lie inside the root are ever ``lstat``-ed: a
    link target outside the root is rejected from its text alone.
    """
    rel = os.path.relpath(path, root)
    todo = [] if rel == "." else rel.split(os.sep)
    cur, hops = root, 0
    while todo:
        comp = todo.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if cur == root:
                return None
            cur = os.path.dirname(cur)
            continue
        candidate = os.path.join(cur, comp)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if not stat.S_ISLNK(mode):
            cur = candidate
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return None
        target = os.readlink(candidate)
        if os.path.isabs(target):
            target = os.path.normpath(target)
            if not _within(root, target):
                return None
            cur = root
            trel = os.path.relpath(target, root)
            todo = ([] if trel == "." else trel.split(os.sep)) + todo
        else:
            todo = target.split("/") + todo
    return cur


def _is_multivariant(real: str) -> bool:
    with open(real, "rb") as fh:
        head = fh.read(PLAYLIST_HEAD)
    return head.startswith(b"#EXTM3U") and b"#EXT-X-STREAM-INF" in head


@dataclass(frozen=True, slots=True)
class _Init:
    rel: str
    audio_only: bool


def _find_inits(found: Mapping[str, str]) -> dict[str, _Init]:
    """Per folder, its init segment: the smallest ``.mp4`` that holds a ``moov``."""
    inits: dict[str, _Init] = {}
    for rel, real in sorted(found.items(), key=lambda item: os.path.getsize(item[1])):
        if not rel.endswith(".mp4") or os.path.getsize(real) > INIT_HEAD:
            continue
        folder = str(PurePosixPath(rel).parent)
        if folder in inits:
            continue
        with open(real, "rb") as fh:
            head = fh.read(INIT_HEAD)
        try:
            kinds = read_handler_types(head)
        except MalformedMedia:
            continue
        if kinds:
            inits[folder] = _Init(rel, kinds == {"soun"})
    return inits


def _classify(rel: str, real: str, inits: Mapping[str, _Init]) -> MediaFile:
    suffix = PurePosixPath(rel).suffix.lower()
    kind = _SUFFIX_KIND.get(suffix, MediaKind.OTHER)
    ctype = _FIXED_TYPES.get(suffix)
    folder_init = inits.get(str(PurePosixPath(rel).parent))
    init = None
    if kind is MediaKind.MP4_SEGMENT and folder_init is not None:
        init = folder_init.rel
        if folder_init.rel == rel:
            kind = MediaKind.MP4_INIT
    if ctype is None:
        if kind in (MediaKind.MP4_SEGMENT, MediaKind.MP4_INIT):
            audio = folder_init is not None and folder_init.audio_only
            ctype = "audio/mp4" if audio else "video/mp4"
        else:
            ctype = "application/octet-stream"
    return MediaFile(rel, real, kind, ctype, init)
