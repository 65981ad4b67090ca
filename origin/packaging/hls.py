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
- Playback filters and the offline profile (:func:`filter_multivariant_playlist`)
  only leave lines out and edit attribute lists; their rules head that section.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import m3u8

from origin.errors import BadRequest, MalformedMedia
from origin.packaging.playback_filter import (
    PlaybackFilter,
    TrackType,
    codec_track_type,
    rendition_ids,
)

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


_DECIMAL = re.compile(r"[0-9]{1,18}")


def parse_decimal(text: str) -> int | None:
    """A decimal-integer attribute (§4.2): ASCII digits only, at most 18 of them, else None.

    ``str.isdigit`` also accepts other scripts' digits and superscripts, which ``int``
    may refuse, and ``int`` refuses over 4,300 digits: both would escape as ValueError."""
    return int(text) if _DECIMAL.fullmatch(text) else None


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
            if parse_decimal(value) is None:
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
    if parse_decimal(bandwidth) is None:
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


# --- playback filters and the offline download profile -----------------------------------------
#
# A filtered multivariant playlist is the source with lines left out and a few attribute
# lists edited (RFC 8216 §4.3.4):
# - an EXT-X-STREAM-INF entry (tag and URI line) goes when its kind (video, or audio-only:
#   CODECS all audio and no RESOLUTION) is not in ``tracks``, its BANDWIDTH is outside the
#   bitrate range, or it is not the ``flavor`` (the rendition id of its URI).  ``bandwidth``
#   and the offline profile keep one entry: among the video variants left (else the
#   audio-only ones), the highest BANDWIDTH not above ``bandwidth``, else the highest.
# - without audio: TYPE=AUDIO renditions go, and so do the AUDIO attribute and the audio
#   codecs in CODECS of the variants (CODECS lists what the variant's renditions carry,
#   §4.3.4.2); without subtitles the same for SUBTITLES (and wvtt/stpp).  Muxed audio
#   cannot be taken out of a variant and stays.
# - ``audio_lang`` keeps the audio renditions of the used groups whose LANGUAGE matches;
#   a used group left empty is an error.
# - offline: each used audio group keeps one rendition (the best ``audio_lang`` match,
#   else DEFAULT=YES, else the first) written DEFAULT=YES,AUTOSELECT=YES (§4.3.4.1.1: a
#   client plays the DEFAULT rendition; downloads with alternates end up without audio);
#   I-frame playlists go; subtitles stay only when ``tracks`` names them.
# - EXT-X-I-FRAME-STREAM-INF: dropped without video and offline; one that belongs to video
#   variants (same folder or same RESOLUTION) stays when one of them stays; any other one
#   stays when its own BANDWIDTH is in the bitrate range and no variant is pinned.
# - EXT-X-MEDIA groups no kept variant refers to any more go.
# Everything else (header, unknown tags, comments, session data) stays where it was.

# EXT-X-MEDIA TYPEs; a variant names its group of each in the attribute of that name.
_GROUP_TYPES = ("AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS")
_STREAM_INF = "#EXT-X-STREAM-INF:"
_I_FRAME_STREAM_INF = "#EXT-X-I-FRAME-STREAM-INF:"
_MEDIA = "#EXT-X-MEDIA:"
_URI_ATTRIBUTE = re.compile(r'(?<![A-Z0-9-])URI="([^"\r\n]*)"')
_QUERY_TEXT = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*")  # RFC 3986 §3.4 query


@dataclass(frozen=True, slots=True)
class _VariantEntry:
    at: int  # line index of the EXT-X-STREAM-INF tag
    uri_at: int
    attrs: Mapping[str, str]
    path: str
    bandwidth: int

    @property
    def is_video(self) -> bool:
        if "RESOLUTION" in self.attrs or "VIDEO" in self.attrs:
            return True
        codecs = _codecs(self.attrs)
        # No CODECS (§4.3.4.2: SHOULD be present): assume the variant carries video.
        return not codecs or any(codec_track_type(c) is TrackType.VIDEO for c in codecs)


@dataclass(frozen=True, slots=True)
class _MediaEntry:
    at: int
    attrs: Mapping[str, str]

    @property
    def type(self) -> str:
        return self.attrs.get("TYPE", "")

    @property
    def group(self) -> str:
        return self.attrs.get("GROUP-ID", "")


@dataclass(frozen=True, slots=True)
class _IFrameEntry:
    at: int
    attrs: Mapping[str, str]
    path: str | None
    bandwidth: int


@dataclass(frozen=True, slots=True)
class _MultivariantLines:
    lines: list[str]
    variants: list[_VariantEntry]
    media: list[_MediaEntry]
    iframes: list[_IFrameEntry]


def _codecs(attrs: Mapping[str, str]) -> list[str]:
    return [c.strip() for c in attrs.get("CODECS", "").split(",") if c.strip()]


def _bandwidth(attrs: Mapping[str, str], tag: str) -> int:
    value = parse_decimal(attrs.get("BANDWIDTH", ""))
    if value is None:
        raise MalformedMedia(f"{tag} without a valid BANDWIDTH")
    return value


def _asset_path(playlist_path: str, uri: str) -> str:
    """The URI's path inside the asset; an absolute URI stands for itself (no rendition id
    of the asset's can match it)."""
    try:
        return resolve_segment_path(playlist_path, uri)
    except MalformedMedia:
        return uri


def _scan_multivariant(text: str, playlist_path: str) -> _MultivariantLines:
    if classify_playlist(text) is not PlaylistKind.MULTIVARIANT:
        raise MalformedMedia("not a multivariant playlist")
    lines = _lines(text)
    variants: list[_VariantEntry] = []
    media: list[_MediaEntry] = []
    iframes: list[_IFrameEntry] = []
    pending: tuple[int, dict[str, str]] | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(_STREAM_INF):
            pending = (i, parse_attributes(stripped[len(_STREAM_INF):]))
        elif stripped.startswith(_MEDIA):
            media.append(_MediaEntry(i, parse_attributes(stripped[len(_MEDIA):])))
        elif stripped.startswith(_I_FRAME_STREAM_INF):
            attrs = parse_attributes(stripped[len(_I_FRAME_STREAM_INF):])
            uri = attrs.get("URI")
            iframes.append(_IFrameEntry(i, attrs, _asset_path(playlist_path, uri) if uri else None,
                                        _bandwidth(attrs, "EXT-X-I-FRAME-STREAM-INF")))
        elif stripped and not stripped.startswith("#") and pending is not None:
            at, attrs = pending
            variants.append(_VariantEntry(at, i, attrs, _asset_path(playlist_path, stripped),
                                          _bandwidth(attrs, "EXT-X-STREAM-INF")))
            pending = None
    return _MultivariantLines(lines, variants, media, iframes)


def multivariant_rendition_ids(text: str, playlist_path: str) -> dict[str, str]:
    """Rendition id of every media playlist (path inside the asset) the playlist names, as
    DASH generation numbers them: the variants' playlists, then the audio renditions'."""
    scanned = _scan_multivariant(text, playlist_path)
    return _rendition_ids_of(scanned, playlist_path)


def _rendition_ids_of(scanned: _MultivariantLines, playlist_path: str) -> dict[str, str]:
    paths = dict.fromkeys(v.path for v in scanned.variants)
    for entry in scanned.media:
        uri = entry.attrs.get("URI")
        if entry.type == "AUDIO" and uri:
            paths.setdefault(_asset_path(playlist_path, uri), None)
    return rendition_ids(list(paths))


def _pick_variants(scanned: _MultivariantLines, ids: Mapping[str, str],
                   f: PlaybackFilter) -> list[_VariantEntry]:
    kept = [
        v for v in scanned.variants
        if f.wants(TrackType.VIDEO if v.is_video else TrackType.AUDIO)
        and f.in_bitrate_range(v.bandwidth)
        and (f.flavor is None or ids.get(v.path) == f.flavor)
    ]
    if f.offline or f.bandwidth is not None:
        pool = [v for v in kept if v.is_video] or kept
        if f.bandwidth is not None:
            pool = [v for v in pool if v.bandwidth <= f.bandwidth]
        kept = [max(pool, key=lambda v: v.bandwidth)] if pool else []
    if not kept:
        raise BadRequest("no variant matches the filter")
    return kept


def _pick_audio(members: Sequence[_MediaEntry], f: PlaybackFilter) -> list[_MediaEntry]:
    """The renditions of one used audio group that stay."""
    if f.audio_languages is not None:
        ranked = [(rank, m) for m in members
                  if (rank := f.language_rank(m.attrs.get("LANGUAGE"))) is not None]
        if not ranked:
            raise BadRequest("no audio rendition matches audio_lang")
        if f.offline:
            return [min(ranked, key=lambda item: item[0])[1]]
        return [m for _, m in ranked]
    if f.offline:
        return [next((m for m in members if m.attrs.get("DEFAULT") == "YES"), members[0])]
    return list(members)


def _same_video(iframe: _IFrameEntry, variant: _VariantEntry) -> bool:
    folder = posixpath.dirname(iframe.path) if iframe.path else ""
    if folder and folder == posixpath.dirname(variant.path):
        return True
    resolution = iframe.attrs.get("RESOLUTION")
    return resolution is not None and resolution == variant.attrs.get("RESOLUTION")


def filter_multivariant_playlist(text: str, playlist_path: str, f: PlaybackFilter) -> str:
    """The multivariant playlist at ``playlist_path`` narrowed to what ``f`` keeps (see the
    rules above); ``BadRequest`` when nothing would be left to play."""
    if not f.active:
        return text
    scanned = _scan_multivariant(text, playlist_path)
    ids = _rendition_ids_of(scanned, playlist_path)
    kept = _pick_variants(scanned, ids, f)
    drop: set[int] = set()
    for variant in scanned.variants:
        if variant not in kept:
            drop |= {variant.at, variant.uri_at}
    edits: dict[int, str] = {}
    removed_attributes: set[str] = set()
    removed_codecs: set[TrackType] = set()

    audio = [m for m in scanned.media if m.type == "AUDIO"]
    if not f.wants(TrackType.AUDIO):
        drop |= {m.at for m in audio}
        removed_attributes.add("AUDIO")
        removed_codecs.add(TrackType.AUDIO)
    else:
        used = dict.fromkeys(v.attrs["AUDIO"] for v in kept if "AUDIO" in v.attrs)
        for group in used:
            members = [m for m in audio if m.group == group]
            if not members:
                continue
            stay = _pick_audio(members, f)
            drop |= {m.at for m in members if m not in stay}
            if f.offline:
                edits[stay[0].at] = _edit_attribute_list(
                    scanned.lines[stay[0].at], _MEDIA, {"DEFAULT": "YES", "AUTOSELECT": "YES"})

    if not f.wants_subtitles():
        drop |= {m.at for m in scanned.media if m.type == "SUBTITLES"}
        removed_attributes.add("SUBTITLES")
        removed_codecs.add(TrackType.SUBTITLES)

    pinned = f.offline or f.bandwidth is not None or f.flavor is not None
    for iframe in scanned.iframes:
        ties = [v for v in scanned.variants if v.is_video and _same_video(iframe, v)]
        if ties:
            keep = any(v in kept for v in ties)
        else:
            keep = not pinned and f.in_bitrate_range(iframe.bandwidth)
        if f.offline or not f.wants(TrackType.VIDEO) or not keep:
            drop.add(iframe.at)

    for variant in kept:
        changes: dict[str, str | None] = {
            name: None for name in removed_attributes if name in variant.attrs}
        if changes and "CODECS" in variant.attrs:
            codecs = [c for c in _codecs(variant.attrs)
                      if codec_track_type(c) not in removed_codecs]
            changes["CODECS"] = f'"{",".join(codecs)}"' if codecs else None
        if changes:
            edits[variant.at] = _edit_attribute_list(
                scanned.lines[variant.at], _STREAM_INF, changes)

    used_groups = {
        (name, variant.attrs[name]) for variant in kept for name in _GROUP_TYPES
        if name in variant.attrs and name not in removed_attributes
    }
    for entry in scanned.media:
        if entry.type in _GROUP_TYPES and (entry.type, entry.group) not in used_groups:
            drop.add(entry.at)
    return _join([edits.get(i, line) for i, line in enumerate(scanned.lines) if i not in drop])


def _edit_attribute_list(line: str, tag: str, changes: Mapping[str, str | None]) -> str:
    """``line`` (a ``tag`` with an attribute list) with attributes replaced in place, removed
    (None) or appended; values are written as given (quoted where the type needs it)."""
    body = line.strip()[len(tag):]
    out: list[str] = []
    seen: set[str] = set()
    for match in _ATTRIBUTE.finditer(body):
        name, value = match.group(1), match.group(2)
        if name in changes:
            seen.add(name)
            replacement = changes[name]
            if replacement is None:
                continue
            value = replacement
        out.append(f"{name}={value}")
    out += [f"{name}={value}" for name, value in changes.items()
            if value is not None and name not in seen]
    return tag + ",".join(out)


def append_query_to_playlist_uris(text: str, query: str) -> str:
    """A multivariant playlist with ``query`` (URL-encoded, no ``?``) appended to every
    variant URI and to the ``URI`` of every ``EXT-X-MEDIA`` and ``EXT-X-I-FRAME-STREAM-INF``.

    URIs with a scheme (another host, ``data:``) are left alone; a ``#fragment`` stays
    last.  A query that is not URL-encoded (quotes, spaces, line breaks, ``#``) would
    change the playlist's structure: ``ValueError``.
    """
    if not query:
        return text
    if query.startswith("?") or not _QUERY_TEXT.fullmatch(query):
        raise ValueError("query must be URL-encoded and without a leading '?'")
    out: list[str] = []
    for line in _lines(text):
        stripped = line.strip()
        if stripped.startswith((_MEDIA, _I_FRAME_STREAM_INF)):
            line = _URI_ATTRIBUTE.sub(
                lambda m: f'URI="{_with_query(m.group(1), query)}"', line)
        elif stripped and not stripped.startswith("#"):
            line = _with_query(stripped, query)
        out.append(line)
    return _join(out)


def _with_query(uri: str, query: str) -> str:
    if not uri or _URL_SCHEME.match(uri):
        return uri
    base, hash_mark, fragment = uri.partition("#")
    if "?" not in base:
        separator = "?"
    elif base.endswith(("?", "&")):
        separator = ""
    else:
        separator = "&"
    return f"{base}{separator}{query}{hash_mark}{fragment}"
