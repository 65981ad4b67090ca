"""Playback filters: what a request's query narrows a presentation to.

Rules:
- Query parameters (unknown ones are ignored: tokens travel there too):
  ``tracks=video,audio,subtitles`` (the track types to keep), ``min_bitrate=``
  and ``max_bitrate=`` (bits/s, inclusive, compared with an HLS variant's
  ``BANDWIDTH`` or a DASH Representation's ``@bandwidth``), ``audio_lang=en,fr``
  (BCP 47 tags, in order of preference), ``flavor=`` (one rendition id, see
  :func:`rendition_ids`), ``bandwidth=`` (pin the variant with the highest
  bandwidth not above it) and ``profile=offline`` (the download profile: one
  video variant, one audio rendition, see ``hls.filter_multivariant_playlist``
  and ``dash.filter_mpd``).
- A bad value is ``BadRequest`` naming the parameter; no value is echoed back.
- Languages match case-insensitively (RFC 5646 §2.1.1) by RFC 4647 §3.3.1
  basic filtering, in both directions: ``en`` matches ``en-GB`` and a
  rendition tagged ``en`` matches a request for ``en-GB``; ``en-GB`` does not
  match ``en-US``.
- :meth:`PlaybackFilter.query_items` writes the canonical parameters back, so
  the origin can carry a filter into the URIs it writes:
  ``parse_playback_filter(dict(f.query_items())) == f``.
- Rendition ids are shared by HLS and DASH: the media playlist's folder
  (``video-720p``) where no other playlist shares it, else its path without
  extension, made unique in order.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from origin.errors import BadRequest

OFFLINE_PROFILE = "offline"
MAX_BITRATE_DIGITS = 15
MAX_LANGUAGES = 16
MAX_FLAVOR_CHARS = 256

_DIGITS = re.compile(rf"[0-9]{{1,{MAX_BITRATE_DIGITS}}}")
# RFC 5646 §2.1: alphanumeric subtags of 1-8 characters, the first alphabetic.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
# Rendition ids come from paths inside an asset (catalog: [A-Za-z0-9._-] per component).
_FLAVOR = re.compile(rf"[A-Za-z0-9._/-]{{1,{MAX_FLAVOR_CHARS}}}")


_AUDIO_CODECS = frozenset({"mp4a", "ac-3", "ec-3", "ac-4", "opus", "flac", "alac", "mp3",
                           "dtsc", "dtse", "dtsh", "dtsl", "dtsx", "mha1", "mhm1"})
_TEXT_CODECS = frozenset({"wvtt", "stpp"})


class TrackType(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"
    SUBTITLES = "subtitles"


def codec_track_type(codec: str) -> TrackType:
    """The track type an RFC 6381 codecs entry (HLS CODECS, DASH @codecs) describes;
    anything not known as audio or text counts as video."""
    fourcc = codec.strip().split(".", 1)[0].lower()
    if fourcc in _AUDIO_CODECS:
        return TrackType.AUDIO
    if fourcc in _TEXT_CODECS:
        return TrackType.SUBTITLES
    return TrackType.VIDEO


@dataclass(frozen=True, slots=True)
class PlaybackFilter:
    """What one request keeps of a presentation; the default keeps everything."""

    tracks: frozenset[TrackType] | None = None
    min_bitrate: int | None = None
    max_bitrate: int | None = None
    audio_languages: tuple[str, ...] | None = None
    flavor: str | None = None
    bandwidth: int | None = None
    offline: bool = False

    @property
    def active(self) -> bool:
        return bool(self.query_items())

    def wants(self, track: TrackType) -> bool:
        """Whether ``tracks`` keeps this track type (no ``tracks``: all of them)."""
        return self.tracks is None or track in self.tracks

    def wants_subtitles(self) -> bool:
        """Subtitles stay unless ``tracks`` leaves them out; offline only when asked for."""
        if self.offline:
            return self.tracks is not None and TrackType.SUBTITLES in self.tracks
        return self.wants(TrackType.SUBTITLES)

    def in_bitrate_range(self, bits_per_second: int) -> bool:
        return (self.min_bitrate is None or bits_per_second >= self.min_bitrate) and (
            self.max_bitrate is None or bits_per_second <= self.max_bitrate)

    def language_rank(self, tag: str | None) -> int | None:
        """Index of the first ``audio_languages`` entry ``tag`` matches; None if none does."""
        if tag is None or self.audio_languages is None:
            return None
        for rank, wanted in enumerate(self.audio_languages):
            if language_matches(wanted, tag):
                return rank
        return None

    def query_items(self) -> list[tuple[str, str]]:
        """The canonical query parameters that reproduce this filter (empty: no filter)."""
        items: list[tuple[str, str]] = []
        if self.tracks is not None:
            items.append(("tracks", ",".join(t.value for t in TrackType if t in self.tracks)))
        if self.min_bitrate is not None:
            items.append(("min_bitrate", str(self.min_bitrate)))
        if self.max_bitrate is not None:
            items.append(("max_bitrate", str(self.max_bitrate)))
        if self.audio_languages is not None:
            items.append(("audio_lang", ",".join(self.audio_languages)))
        if self.flavor is not None:
            items.append(("flavor", self.flavor))
        if self.bandwidth is not None:
            items.append(("bandwidth", str(self.bandwidth)))
        if self.offline:
            items.append(("profile", OFFLINE_PROFILE))
        return items


def language_matches(wanted: str, tag: str) -> bool:
    """RFC 4647 §3.3.1 basic filtering, either way round, ignoring case."""
    a, b = wanted.lower(), tag.lower()
    return a == b or b.startswith(a + "-") or a.startswith(b + "-")


def parse_playback_filter(query: Mapping[str, str]) -> PlaybackFilter:
    """The filter a request's query asks for; ``BadRequest`` naming a bad parameter."""
    min_bitrate = _bitrate(query, "min_bitrate")
    max_bitrate = _bitrate(query, "max_bitrate")
    if min_bitrate is not None and max_bitrate is not None and min_bitrate > max_bitrate:
        raise BadRequest("min_bitrate is above max_bitrate")
    bandwidth = _bitrate(query, "bandwidth")
    if bandwidth == 0:
        raise BadRequest("bad bandwidth")
    flavor = query.get("flavor")
    if flavor is not None and not _FLAVOR.fullmatch(flavor):
        raise BadRequest("bad flavor")
    profile = query.get("profile")
    if profile is not None and profile != OFFLINE_PROFILE:
        raise BadRequest("unknown profile")
    return PlaybackFilter(
        tracks=_tracks(query.get("tracks")),
        min_bitrate=min_bitrate,
        max_bitrate=max_bitrate,
        audio_languages=_languages(query.get("audio_lang")),
        flavor=flavor,
        bandwidth=bandwidth,
        offline=profile is not None,
    )


def _bitrate(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise BadRequest(f"bad {name}")
    return int(value)


def _tracks(value: str | None) -> frozenset[TrackType] | None:
    if value is None:
        return None
    try:
        tracks = frozenset(TrackType(part) for part in value.split(","))
    except ValueError:
        raise BadRequest("bad tracks") from None
    return tracks


def _languages(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    tags = tuple(value.split(","))
    if len(tags) > MAX_LANGUAGES or not all(_LANGUAGE_TAG.fullmatch(t) for t in tags):
        raise BadRequest("bad audio_lang")
    return tags


def rendition_ids(paths: Sequence[str]) -> dict[str, str]:
    """Rendition ids of media playlists (paths inside the asset), in order: the playlist's
    folder (``video-360p``) where no other playlist shares it, else the playlist's path
    without its extension; made unique with ``-2``, ``-3`` …"""
    folders = [posixpath.dirname(p) for p in paths]
    ids: dict[str, str] = {}
    for path, folder in zip(paths, folders, strict=True):
        base = folder if folder and folders.count(folder) == 1 else posixpath.splitext(path)[0]
        candidate, n = base, 1
        while candidate in ids.values():
            n += 1
            candidate = f"{base}-{n}"
        ids[path] = candidate
    return ids
