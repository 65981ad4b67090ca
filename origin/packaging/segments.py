"""The one place where "segment X becomes encrypted segment Y" (DESIGN "Layers").

:func:`produce_segment` is blocking (it reads the source files and runs the
cipher); callers run it in an executor.  Its output is a pure function of the
source bytes, the key, the segment's path and the signalling context, so every
replica gives the same bytes and the same strong ETag.  :func:`segment_etag`
gives that ETag from the sources' stamps (size, mtime) alone, before any
byte is read or encrypted; it covers every input of the output.

Common Encryption pipeline, per media segment: parse the fragment → per
``traf``, the subsample map of each sample (NAL rules for video, full-sample
for audio) → encrypt in place → write the ``moof`` with ``senc``/``saiz``/``saio``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from origin.container.fragment import TrafProtection, parse_fragment, write_protected_fragment
from origin.container.init_segment import InitInfo, TrackInfo, parse_init, protect_init
from origin.container.sample_aes import protect_ts_segment
from origin.container.subsamples import SubsampleGenerator
from origin.crypto.aes128 import encrypt_segment
from origin.crypto.cbcs import encrypt_cbcs
from origin.crypto.cenc import encrypt_cenc
from origin.crypto.iv import derive_iv, derive_sample_ivs
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme, SampleCrypto
from origin.errors import MalformedMedia, NotFound
from origin.packaging.catalog import MediaFile, MediaKind
from origin.packaging.drm import DrmContext, constant_iv, init_pssh_boxes
from origin.packaging.scheme import Scheme

MAX_SEGMENT_BYTES = 256 << 20
ENCRYPTABLE = frozenset({
    MediaKind.TS_SEGMENT, MediaKind.MP4_INIT, MediaKind.MP4_SEGMENT, MediaKind.AUDIO_SEGMENT,
})
CBCS_VIDEO_PATTERN = (1, 9)
INIT_CACHE_ENTRIES = 256

SourceStamp = tuple[int, int]  # a source file's (st_size, st_mtime_ns)


@dataclass(frozen=True, slots=True)
class ProtectedSegment:
    body: bytes | bytearray = field(repr=False)
    etag: str


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """One request's worth of work: which file, which scheme, under which key and context."""

    file: MediaFile
    scheme: Scheme
    drm: DrmContext
    init_file: MediaFile | None = None

    @property
    def key(self) -> ContentKey:
        return self.drm.key


def segment_iv(scheme: Scheme, key: ContentKey, rel: str) -> bytes:
    """The AES-128 IV the playlist announces and the segment is encrypted with."""
    return derive_iv(key.kid, scheme.value, rel)


def rendition_iv(key: ContentKey, folder: str) -> bytes:
    """The SAMPLE-AES (MPEG-TS) IV of every segment in one folder.

    One IV per rendition, not per segment: every NAL unit and audio frame
    restarts its CBC chain from the IV anyway (SPECS §2.3), and ffmpeg 5.1
    decrypts a segment's last access unit with the next segment's IV.
    """
    return derive_iv(key.kid, Scheme.SAMPLE_AES.value, folder)


def read_source(file: MediaFile) -> tuple[bytearray, os.stat_result]:
    """Read a whole source file (blocking) into a fresh ``bytearray`` of its size (read
    straight into it, no intermediate copy; the caller may encrypt it in place); NotFound
    if it vanished since the scan.

    The bytes are those of the stamp returned: a file whose size or mtime is not the
    same after the read as before it changed while being read (cut, grown, or rewritten
    in place) and is ``MalformedMedia``, never a body under another version's ETag."""
    try:
        with open(file.real_path, "rb", buffering=0) as fh:
            before = os.fstat(fh.fileno())
            if before.st_size > MAX_SEGMENT_BYTES:
                raise MalformedMedia("segment too large")
            data = bytearray(before.st_size)
            view, got = memoryview(data), 0
            while got < before.st_size and (n := fh.readinto(view[got:before.st_size])):
                got += n
            view.release()
            grown = fh.read(1)
            after = os.fstat(fh.fileno())
    except FileNotFoundError:
        raise NotFound("no such file in asset") from None
    if got != before.st_size or grown or (after.st_size, after.st_mtime_ns) != (
            before.st_size, before.st_mtime_ns):
        raise MalformedMedia("segment changed while being read")
    return data, before


class _InitCache:
    """Parsed init segments by (path, size, mtime): a media segment's request reuses them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int, int], InitInfo] = OrderedDict()

    def parse(self, file: MediaFile) -> tuple[InitInfo, SourceStamp]:
        data, st = read_source(file)
        ident = (file.real_path, st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._entries.get(ident)
            if found is not None:
                self._entries.move_to_end(ident)
                return found, ident[1:]
        info = parse_init(data)
        with self._lock:
            self._entries[ident] = info
            while len(self._entries) > INIT_CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return info, ident[1:]


_INITS = _InitCache()


def produce_segment(job: SegmentJob) -> ProtectedSegment:
    """Read the job's file and return it protected under its scheme (blocking)."""
    file, scheme = job.file, job.scheme
    if file.kind not in ENCRYPTABLE:
        raise NotFound("not a media segment")
    data, st = read_source(file)
    init_stamp: SourceStamp | None = None
    body: bytes | bytearray
    if scheme is Scheme.AES128:
        body = encrypt_segment(job.key.key, segment_iv(scheme, job.key, file.rel), data)
    elif scheme is Scheme.SAMPLE_AES and file.kind is MediaKind.TS_SEGMENT:
        folder = file.rel.rsplit("/", 1)[0] if "/" in file.rel else ""
        body = protect_ts_segment(bytes(data), job.key.key, rendition_iv(job.key, folder))
    elif (common := scheme.common) is not None:
        if file.kind is MediaKind.MP4_INIT:
            body = protect_init(data, scheme=common, kid=job.key.kid,
                                constant_iv=constant_iv(job.key),
                                pssh=init_pssh_boxes(job.drm, common))
        elif file.kind is MediaKind.MP4_SEGMENT and job.init_file is not None:
            init, init_stamp = _INITS.parse(job.init_file)
            body = protect_fragment(data, init, common, job.key, file.rel)
        else:
            raise NotFound(f"{scheme.value} applies to fMP4 segments only")
    else:
        raise NotFound("unknown protection scheme")
    return ProtectedSegment(body, segment_etag(job, (st.st_size, st.st_mtime_ns), init_stamp))


def protect_fragment(data: bytes | bytearray, init: InitInfo, scheme: CommonScheme,
                     key: ContentKey, segment_id: str) -> bytes:
    """Common Encryption of one fMP4 media segment (pure; see the module docstring).

    A ``bytearray`` is encrypted in place and so consumed (``produce_segment`` hands over
    the buffer it read, saving a copy of the segment); ``bytes`` are copied first.  Every
    sample's subsample layout is read from the clear bytes before any is encrypted."""
    fragment = parse_fragment(data, init)
    buf = data if isinstance(data, bytearray) else bytearray(data)
    view = memoryview(buf)
    layouts = [[_sample_layout(view, traf.samples, init.track(traf.track_id), scheme)
                for traf in moof.trafs] for moof in fragment.moofs]
    view.release()
    civ = constant_iv(key)
    protections = []
    for moof_index, (moof, moof_layouts) in enumerate(zip(fragment.moofs, layouts,
                                                          strict=True)):
        row = []
        for traf, samples in zip(moof.trafs, moof_layouts, strict=True):
            ivs: tuple[bytes, ...] = ()
            if scheme is CommonScheme.CBCS:
                crypt, skip = CBCS_VIDEO_PATTERN
                encrypt_cbcs(key.key, civ, buf, samples, crypt=crypt, skip=skip)
            else:
                ivs = tuple(derive_sample_ivs(key.kid, f"{segment_id}#{moof_index}",
                                              traf.track_id, len(samples)))
                encrypt_cenc(key.key, buf, samples, ivs)
            row.append(TrafProtection(samples, ivs))
        protections.append(row)
    return write_protected_fragment(buf, fragment, protections)


def _sample_layout(view: memoryview, positions: tuple[tuple[int, int], ...], track: TrackInfo,
                   scheme: CommonScheme) -> tuple[SampleCrypto, ...]:
    if not track.is_video:
        return tuple(SampleCrypto(offset, size) for offset, size in positions)
    generator = SubsampleGenerator.from_config(track.codec_config, hevc=track.is_hevc)
    return tuple(
        SampleCrypto(offset, size, generator.subsamples(view[offset:offset + size], scheme))
        for offset, size in positions
    )


def stamped_files(job: SegmentJob) -> tuple[MediaFile, ...]:
    """The source files whose stamps :func:`segment_etag` needs for ``job``, in its order."""
    if (job.scheme.common is not None and job.file.kind is MediaKind.MP4_SEGMENT
            and job.init_file is not None):
        return job.file, job.init_file
    return (job.file,)


def segment_etag(job: SegmentJob, source: SourceStamp, init: SourceStamp | None) -> str:
    """The strong ETag :func:`produce_segment` gives ``job`` when its source file has the
    stamp ``source`` and its init section (if the job has one) ``init`` (pure).

    Beyond scheme, key id, path and the source's stamp it covers what else shapes the
    bytes: a protected init section's pssh boxes (the asset's key systems and the public
    base of the PlayReady licence URL), and a Common Encryption media segment's init
    section (its boxes are rebuilt from the init's tracks).
    """
    file, variant = job.file, ""
    if job.scheme.common is not None and file.kind is MediaKind.MP4_INIT:
        variant = ",".join(s.value for s in job.drm.systems) + "|" + job.drm.public_base
    elif (job.scheme.common is not None and file.kind is MediaKind.MP4_SEGMENT
          and job.init_file is not None and init is not None):
        variant = f"init={job.init_file.rel}:{init[0]}:{init[1]}"
    return protected_etag(job.scheme, job.key, file.rel, source, variant)


def protected_etag(scheme: Scheme, key: ContentKey, rel: str, source: SourceStamp,
                   variant: str = "") -> str:
    """A strong ETag: the output is a pure function of these inputs."""
    size, mtime_ns = source
    ident = f"{scheme.value}\0{key.kid_hex}\0{rel}\0{size}\0{mtime_ns}\0{variant}"
    return '"' + hashlib.sha256(ident.encode()).hexdigest()[:32] + '"'



