"""HLS playlist edits for key signalling (RFC 8216, SPECS §2).

Rules:
- Playlists are edited line by line, never regenerated: unknown tags,
  attributes, comments and URIs survive unchanged (line endings become LF).
- ``m3u8`` parses each source once, to validate it and to tell a multivariant
  playlist from a media playlist.
- AES-128 (§4.3.2.4, §5.2): an ``EXT-X-KEY`` with an explicit ``IV`` stands
  before every segment URI and before every ``EXT-X-MAP``; an encrypted Media
  Initialization Section requires an explicit IV (§4.3.2.5).  The IV of each
  derives from the path of the file inside the asset, so the segment route
  derives the same one.
- A multivariant playlist carries one ``EXT-X-SESSION-KEY`` per key system its
  media playlists use, with the same METHOD, URI and KEYFORMAT and no IV
  (§4.3.4.5: it should mirror the media playlists' keys).
- ``EXT-X-VERSION`` is raised to what the written attributes need (IV: 2,
  KEYFORMAT: 5), never lowered (§7).
- A source that already carries keys (METHOD other than NONE) or addresses
  segments by byte range cannot be encrypted on request: ``MalformedMedia``.
- A segment URI that is absolute (a scheme or a leading ``/``) or climbs out
  of the asset would bypass the origin's encryption: ``MalformedMedia``.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import m3u8

from origin.errors import MalformedMedia

MAX_PLAYLIST_BYTES = 16 << 20
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)')
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


class PlaylistKind(enum.Enum):
    MULTIVARIANT = "multivariant"
    MEDIA = "media"


class KeyMethod(enum.Enum):
    AES_128 = "AES-128"
    SAMPLE_AES = "SAMPLE-AES"
    SAMPLE_AES_CTR = "SAMPLE-AES-CTR"


@dataclass(frozen=True, slots=True)
class KeyTag:
    """One key signalling tag, as written into a playlist."""

    method: KeyMethod
    uri: str
    keyformat: str | None = None
    keyformatversions: str | None = None
    keyid: bytes | None = None
    iv: bytes | None = None  # a fixed IV this tag always carries

    @property
    def min_version(self) -> int:
        return 5 if self.keyformat is not None else 2

    def render(self, tag: str, iv: bytes | None = None) -> str:
        attrs = [f"METHOD={self.method.value}", f'URI="{self.uri}"']
        iv = iv if iv is not None else self.iv
        if iv is not None:
            attrs.append(f"IV=0x{iv.hex().upper()}")
        if self.keyformat is not None:
            attrs.append(f'KEYFORMAT="{self.keyformat}"')
        if self.keyformatversions is not None:
            attrs.append(f'KEYFORMATVERSIONS="{self.keyformatversions}"')
        if self.keyid is not None:
            attrs.append(f"KEYID=0x{self.keyid.hex().upper()}")
        return f"#{tag}:" + ",".join(attrs)


def parse_attributes(text: str) -> dict[str, str]:
    """Parse an attribute list (§4.2); quoted values are returned without quotes."""
    return {name: value.strip('"') for name, value in _ATTRIBUTE.findall(text)}


def decode_playlist(raw: bytes) -> str:
    if len(raw) > MAX_PLAYLIST_BYTES:
        raise MalformedMedia("playlist too large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedMedia("playlist is not UTF-8") from None
    if not text.lstrip().startswith("#EXTM3U"):
        raise MalformedMedia("playlist does not start with #EXTM3U")
    return text


def classify_playlist(text: str) -> PlaylistKind:
    try:
        parsed = m3u8.loads(text)
    except Exception as exc:  # m3u8 raises assorted errors on garbage
        raise MalformedMedia("playlist cannot be parsed") from exc
    return PlaylistKind.MULTIVARIANT if parsed.is_variant else PlaylistKind.MEDIA


def resolve_segment_path(playlist_path: str, uri: str) -> str:
    """Path inside the asset of a URI written in the playlist at ``playlist_path``."""
    bare = uri.split("?", 1)[0].split("#", 1)[0]
    if not bare or bare.startswith("/") or _URL_SCHEME.match(bare):
        raise MalformedMedia("playlist refers to segments outside the asset")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(playlist_path), bare))
    if joined.startswith("../") or joined == "..":
        raise MalformedMedia("playlist refers to segments outside the asset")
    return joined


def rewrite_multivariant_playlist(text: str, session_keys: Sequence[KeyTag]) -> str:
    """Add ``EXT-X-SESSION-KEY`` tags after the playlist's header tags."""
    lines = _lines(text)
    _refuse_existing_keys(lines)
    added = [key.render("EXT-X-SESSION-KEY") for key in session_keys]
    need = max((key.min_version for key in session_keys), default=1)
    at = _header_end(lines)
    return _join(_set_version(lines[:at] + added + lines[at:], need))


def rewrite_media_playlist(
    text: str,
    *,
    playlist_path: str,
    keys: Sequence[KeyTag],
    iv_for: Callable[[str], bytes] | None,
) -> str:
    """Put ``keys`` before the segments and ``EXT-X-MAP``s they apply to.

    With ``iv_for`` (AES-128), ``iv_for(path)`` gives the explicit IV of the
    file at ``path`` inside the asset and the keys stand before every segment
    URI and ``EXT-X-MAP``.  Without it (the sample schemes, whose IVs travel in
    the media), the keys stand once, before the first segment or map: a key
    tag applies until the next one with the same KEYFORMAT (§4.3.2.4).
    """
    lines = _lines(text)
    _refuse_existing_keys(lines)
    out: list[str] = []
    need = max((key.min_version for key in keys), default=1)

    signalled = False

    def signal(uri: str) -> None:
        nonlocal signalled
        path = resolve_segment_path(playlist_path, uri)
        if iv_for is not None:
            out.extend(key.render("EXT-X-KEY", iv_for(path)) for key in keys)
        elif not signalled:
            out.extend(key.render("EXT-X-KEY") for key in keys)
        signalled = True

    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#EXT-X-BYTERANGE") or (
            stripped.startswith("#EXT-X-MAP:") and "BYTERANGE=" in stripped
        ):
            raise MalformedMedia("byte-range playlists cannot be encrypted on request")
        if stripped.startswith("#EXT-X-KEY:"):
            continue  # METHOD=NONE (anything else was refused above)
        if stripped.startswith("#EXT-X-MAP:"):
            uri = parse_attributes(stripped[len("#EXT-X-MAP:"):]).get("URI")
            if not uri:
                raise MalformedMedia("EXT-X-MAP without URI")
            signal(uri)
        elif stripped and not stripped.startswith("#"):
            signal(stripped)
        out.append(line)
    return _join(_set_version(out, need))


def _lines(text: str) -> list[str]:
    return text.lstrip("\ufeff").splitlines()


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _refuse_existing_keys(lines: list[str]) -> None:
    for line in lines:
        stripped = line.strip()
        for tag in ("#EXT-X-KEY:", "#EXT-X-SESSION-KEY:"):
            if stripped.startswith(tag):
                method = parse_attributes(stripped[len(tag):]).get("METHOD", "NONE")
                if method != "NONE":
                    raise MalformedMedia("source playlist is already encrypted")


_HEADER_TAGS = ("#EXTM3U", "#EXT-X-VERSION", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-START")


def _header_end(lines: list[str]) -> int:
    """Index after the leading run of header tags (where session keys belong)."""
    at = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(_HEADER_TAGS):
            at = i + 1
        elif stripped:
            break
    return at


def _set_version(lines: list[str], need: int) -> list[str]:
    for i, line in enumerate(lines):
        if line.strip().startswith("#EXT-X-VERSION:"):
            value = line.strip()[len("#EXT-X-VERSION:"):]
            if not value.isdigit():
                raise MalformedMedia("bad EXT-X-VERSION")
            if int(value) < need:
                lines[i] = f"#EXT-X-VERSION:{need}"
            return lines
    if need > 1:
        head = next(i for i, line in enumerate(lines) if line.strip().startswith("#EXTM3U"))
        lines.insert(head + 1, f"#EXT-X-VERSION:{need}")
    return lines


# --- reading playlists for other manifest formats (DASH generation) ---------------------


@dataclass(frozen=True, slots=True)
class VariantStream:
    """One ``EXT-X-STREAM-INF`` entry of a multivariant playlist."""

    path: str  # the media playlist's path inside the asset
    bandwidth: int
    resolution: tuple[int, int] | None
    frame_rate: str | None  # as written, e.g. "25.000"
    codecs: tuple[str, ...]
    audio_group: str | None


@dataclass(frozen=True, slots=True)
class MediaRendition:
    """One ``EXT-X-MEDIA`` entry (RFC 8216 §4.3.4.1)."""

    type: str  # AUDIO, VIDEO, SUBTITLES, CLOSED-CAPTIONS
    group_id: str
    name: str
    language: str | None
    default: bool
    channels: str | None
    path: str | None  # its media playlist inside the asset, if it has a URI


@dataclass(frozen=True, slots=True)
class MultivariantInfo:
    variants: tuple[VariantStream, ...]
    renditions: tuple[MediaRendition, ...]


@dataclass(frozen=True, slots=True)
class SegmentRef:
    path: str  # inside the asset
    duration: float  # EXTINF seconds


@dataclass(frozen=True, slots=True)
class MediaPlaylistInfo:
    map_path: str | None  # the EXT-X-MAP init inside the asset; None for MPEG-TS / packed audio
    segments: tuple[SegmentRef, ...]


_RESOLUTION = re.compile(r"(\d{1,5})x(\d{1,5})")


def parse_multivariant_playlist(text: str, playlist_path: str) -> MultivariantInfo:
    """Variants and renditions of a multivariant playlist; URIs resolved inside the asset.

    ``EXT-X-I-FRAME-STREAM-INF`` entries are left out.  A URI that is absolute
    or climbs out of the asset is ``MalformedMedia`` (as for segments).
    """
    if classify_playlist(text) is not PlaylistKind.MULTIVARIANT:
        raise MalformedMedia("not a multivariant playlist")
    variants: list[VariantStream] = []
    renditions: list[MediaRendition] = []
    pending: dict[str, str] | None = None
    for line in _lines(text):
        stripped = line.strip()
        if stripped.startswith("#EXT-X-STREAM-INF:"):
            pending = parse_attributes(stripped[len("#EXT-X-STREAM-INF:"):])
        elif stripped.startswith("#EXT-X-MEDIA:"):
            attrs = parse_attributes(stripped[len("#EXT-X-MEDIA:"):])
            uri = attrs.get("URI")
            renditions.append(MediaRendition(
                type=attrs.get("TYPE", ""), group_id=attrs.get("GROUP-ID", ""),
                name=attrs.get("NAME", ""), language=attrs.get("LANGUAGE"),
                default=attrs.get("DEFAULT") == "YES", channels=attrs.get("CHANNELS"),
                path=resolve_segment_path(playlist_path, uri) if uri else None,
            ))
        elif stripped and not stripped.startswith("#") and pending is not None:
            variants.append(_variant(pending, resolve_segment_path(playlist_path, stripped)))
            pending = None
    return MultivariantInfo(tuple(variants), tuple(renditions))


def _variant(attrs: dict[str, str], path: str) -> VariantStream:
    bandwidth = attrs.get("BANDWIDTH", "")
    if not bandwidth.isdigit():
        raise MalformedMedia("EXT-X-STREAM-INF without a valid BANDWIDTH")
    match = _RESOLUTION.fullmatch(attrs.get("RESOLUTION", ""))
    resolution = (int(match.group(1)), int(match.group(2))) if match else None
    codecs = tuple(c.strip() for c in attrs.get("CODECS", "").split(",") if c.strip())
    return VariantStream(path, int(bandwidth), resolution, attrs.get("FRAME-RATE"), codecs,
                         attrs.get("AUDIO"))


def parse_media_playlist(text: str, playlist_path: str) -> MediaPlaylistInfo:
    """The init section and the segments (paths inside the asset, EXTINF durations).

    Refused (``MalformedMedia``): byte ranges, and more than one distinct
    ``EXT-X-MAP`` (a single init per rendition is what a manifest can say).
    """
    if classify_playlist(text) is not PlaylistKind.MEDIA:
        raise MalformedMedia("not a media playlist")
    map_path: str | None = None
    segments: list[SegmentRef] = []
    duration: float | None = None
    for line in _lines(text):
        stripped = line.strip()
        if stripped.startswith("#EXT-X-BYTERANGE") or (
            stripped.startswith("#EXT-X-MAP:") and "BYTERANGE=" in stripped
        ):
            raise MalformedMedia("byte-range playlists are not supported here")
        if stripped.startswith("#EXT-X-MAP:"):
            uri = parse_attributes(stripped[len("#EXT-X-MAP:"):]).get("URI")
            if not uri:
                raise MalformedMedia("EXT-X-MAP without URI")
            path = resolve_segment_path(playlist_path, uri)
            if map_path is not None and path != map_path:
                raise MalformedMedia("media playlist changes its EXT-X-MAP")
            map_path = path
        elif stripped.startswith("#EXTINF:"):
            value = stripped[len("#EXTINF:"):].split(",", 1)[0].strip()
            try:
                duration = float(value)
            except ValueError:
                raise MalformedMedia("bad EXTINF duration") from None
            if not 0 <= duration < 1e9:  # also refuses nan and inf
                raise MalformedMedia("bad EXTINF duration")
        elif stripped and not stripped.startswith("#"):
            if duration is None:
                raise MalformedMedia("segment without EXTINF")
            segments.append(SegmentRef(resolve_segment_path(playlist_path, stripped), duration))
            duration = None
    return MediaPlaylistInfo(map_path, tuple(segments))
