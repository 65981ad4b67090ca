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
The first two steps make a :class:`FragmentPlan`, a pure function of the clear
bytes, kept by source stamp (:mod:`origin.packaging.media_index`); the rest runs on
every request.  Media segments are read into pooled buffers
(:mod:`origin.packaging.buffer_pool`) and leave as views of them.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

from origin.container.boxes import Buffer
from origin.container.fragment import (
    Fragment,
    TrafAux,
    TrafProtection,
    parse_fragment,
    plan_traf_aux,
    protected_fragment_parts,
)
from origin.container.init_segment import InitInfo, TrackInfo, parse_init, protect_init
from origin.container.sample_aes import protect_ts_segment
from origin.container.subsamples import SubsampleGenerator
from origin.crypto.aes128 import SegmentEncryptor, output_room
from origin.crypto.cbcs import encrypt_cbcs
from origin.crypto.cenc import encrypt_cenc
from origin.crypto.iv import CENC_IV_SIZE, derive_iv, derive_sample_ivs
from origin.crypto.key import ContentKey
from origin.crypto.subsample import CommonScheme, SampleCrypto
from origin.errors import NotFound
from origin.packaging.buffer_pool import BufferPool
from origin.packaging.catalog import MediaFile, MediaKind
from origin.packaging.drm import DrmContext, constant_iv, init_pssh_boxes
from origin.packaging.media_index import MediaIndex
from origin.packaging.scheme import Scheme
from origin.packaging.source_file import open_source, read_source, read_whole

ENCRYPTABLE = frozenset({
    MediaKind.TS_SEGMENT, MediaKind.MP4_INIT, MediaKind.MP4_SEGMENT, MediaKind.AUDIO_SEGMENT,
})
CBCS_VIDEO_PATTERN = (1, 9)
AES128_PIECE = 256 << 10  # bytes read and encrypted at a time (they stay in L2)
INIT_INDEX_ENTRIES = 256
INIT_REVALIDATE_SECONDS = 1.0  # as origin.http.source_stamps: a changed init seen within 1 s
PLAN_INDEX_WEIGHT = 1 << 17  # samples + subsamples of remembered fragment plans (~13 MB)

SourceStamp = tuple[int, int]  # a source file's (st_size, st_mtime_ns)


class Releasable(Protocol):
    """Something held for a body until it is sent: ``release`` is idempotent."""

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProtectedSegment:
    """A protected body as the buffers it lies in, in wire order, and its strong ETag.

    ``leases`` are the pooled buffers ``parts`` point into (and whatever else is held
    for the body while it is out): the holder sends the parts (or copies them with
    :meth:`take_bytes`) and then calls :meth:`release`, after which the parts must not be
    read.
    """

    parts: tuple[Buffer, ...] = field(repr=False)
    size: int
    etag: str
    leases: tuple[Releasable, ...] = field(default=(), repr=False)

    def holding(self, extra: Releasable) -> ProtectedSegment:
        """The same body, whose :meth:`release` also releases ``extra``."""
        return replace(self, leases=(*self.leases, extra))

    def release(self) -> None:
        """Give the buffers back to their pool (idempotent)."""
        for lease in self.leases:
            lease.release()

    def take_bytes(self) -> bytes:
        """The body as one ``bytes`` (a copy unless it already is one); releases the
        buffers."""
        parts = self.parts
        body = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        self.release()
        return body


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


@dataclass(frozen=True, slots=True)
class FragmentPlan:
    """What protecting one media segment needs from its clear bytes under one scheme:
    its boxes and sample positions, and every sample's subsample layout, per ``moof``
    and ``traf`` (``layouts[i][j]`` for ``fragment.moofs[i].trafs[j]``)."""

    fragment: Fragment
    layouts: tuple[tuple[tuple[SampleCrypto, ...], ...], ...] = field(repr=False)
    aux: tuple[tuple[TrafAux, ...], ...] = field(repr=False)  # senc/saiz parts, same shape

    @property
    def weight(self) -> int:
        """Its size for :class:`~origin.packaging.media_index.MediaIndex`: samples plus
        subsamples."""
        return sum(len(sample.subsamples) + 1 for moof in self.layouts for traf in moof
                   for sample in traf)


def plan_fragment(buf: Buffer, init: InitInfo, scheme: CommonScheme) -> FragmentPlan:
    """Parse the media segment in ``buf`` and lay out every sample under ``scheme``
    (pure; reads the clear bytes only)."""
    fragment = parse_fragment(buf, init)
    view = memoryview(buf)
    layouts = tuple(tuple(_sample_layout(view, traf.samples, init.track(traf.track_id), scheme)
                          for traf in moof.trafs) for moof in fragment.moofs)
    iv_size = CENC_IV_SIZE if scheme is CommonScheme.CENC else 0  # cbcs: constant IV
    aux = tuple(tuple(plan_traf_aux(samples, iv_size) for samples in moof) for moof in layouts)
    return FragmentPlan(fragment, layouts, aux)


# Parsed structure by source stamp (``origin.packaging.media_index``): init sections by
# (path, size, mtime); fragment plans by the segment's and its init's stamps and the
# scheme.  A dense 2 s segment's plan weighs about 100.
_INITS: MediaIndex[tuple[str, int, int], InitInfo] = MediaIndex(INIT_INDEX_ENTRIES)
# An init section's stamp and when it was last taken, by path: a dense segment's cache
# miss then costs no syscall for its init (each one gives the GIL away to the loop).
_INIT_STAMPS: MediaIndex[str, tuple[SourceStamp, float]] = MediaIndex(INIT_INDEX_ENTRIES)
_PLANS: MediaIndex[tuple[str, int, int, str, int, int, CommonScheme], FragmentPlan] = \
    MediaIndex(PLAN_INDEX_WEIGHT)


def parsed_init(file: MediaFile) -> tuple[InitInfo, SourceStamp]:
    """The parsed init section ``file`` holds (as of at most ``INIT_REVALIDATE_SECONDS``
    ago), and the stamp it was parsed under (blocking: a ``stat`` once a second, and a
    read and a parse when the index does not have it)."""
    path, now = file.real_path, time.monotonic()
    seen = _INIT_STAMPS.get(path)
    if seen is not None and now - seen[1] < INIT_REVALIDATE_SECONDS:
        stamp = seen[0]
    else:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound("no such file in asset") from None
        stamp = (st.st_size, st.st_mtime_ns)
    found = _INITS.get((path, *stamp))
    if found is None:
        data, st = read_whole(file)
        stamp = (st.st_size, st.st_mtime_ns)
        found = parse_init(data)
        _INITS.put((path, *stamp), found)
    if seen is None or seen[0] != stamp or now - seen[1] >= INIT_REVALIDATE_SECONDS:
        _INIT_STAMPS.put(path, (stamp, now))
    return found, stamp


def produce_segment(job: SegmentJob, pool: BufferPool) -> ProtectedSegment:
    """Read the job's file and return it protected under its scheme (blocking).

    Media segments are read into buffers from ``pool`` and come back as views of them
    (the caller releases them once the body is sent); init sections and MPEG-TS
    SAMPLE-AES come back as ``bytes``.
    """
    file, scheme = job.file, job.scheme
    if file.kind not in ENCRYPTABLE:
        raise NotFound("not a media segment")
    if scheme is Scheme.AES128:
        return _produce_aes128(job, pool)
    if scheme is Scheme.SAMPLE_AES and file.kind is MediaKind.TS_SEGMENT:
        data, st = read_whole(file)
        folder = file.rel.rsplit("/", 1)[0] if "/" in file.rel else ""
        body = protect_ts_segment(bytes(data), job.key.key, rendition_iv(job.key, folder))
        return ProtectedSegment((body,), len(body), segment_etag(job, _stamp(st), None))
    common = scheme.common
    if common is None:
        raise NotFound("unknown protection scheme")
    if file.kind is MediaKind.MP4_INIT:
        data, st = read_whole(file)
        body = protect_init(data, scheme=common, kid=job.key.kid,
                            constant_iv=constant_iv(job.key),
                            pssh=init_pssh_boxes(job.drm, common))
        return ProtectedSegment((body,), len(body), segment_etag(job, _stamp(st), None))
    if file.kind is not MediaKind.MP4_SEGMENT or job.init_file is None:
        raise NotFound(f"{scheme.value} applies to fMP4 segments only")
    init, init_stamp = parsed_init(job.init_file)
    lease, st = read_source(file, pool)
    try:
        buf = lease.view[:st.st_size]
        ident = (file.real_path, st.st_size, st.st_mtime_ns, job.init_file.real_path,
                 *init_stamp, common)
        plan = _PLANS.get(ident)
        if plan is None:
            plan = plan_fragment(buf, init, common)
            _PLANS.put(ident, plan, plan.weight)
        parts = protect_fragment_parts(buf, init, common, job.key, file.rel, plan)
    except BaseException:
        lease.release()
        raise
    return ProtectedSegment(tuple(parts), sum(len(p) for p in parts),
                            segment_etag(job, _stamp(st), init_stamp), (lease,))


def _produce_aes128(job: SegmentJob, pool: BufferPool) -> ProtectedSegment:
    """HLS AES-128: the source read ``AES128_PIECE`` bytes at a time into a small pooled
    buffer (it stays in cache) and encrypted from there into the output buffer."""
    file, key = job.file, job.key
    with open_source(file) as source:
        out = pool.take(output_room(source.size))
        piece = pool.take(AES128_PIECE)
        try:
            encryptor = SegmentEncryptor(key.key, segment_iv(job.scheme, key, file.rel))
            chunk, got, n = piece.view, 0, 0
            # Up to one byte past the stamped size: a file that grew is seen (and refused
            # below) without ever writing past the output's room.
            while got <= source.size and (
                    read := source.readinto(chunk[:min(AES128_PIECE, source.size - got + 1)])):
                got += read
                n += encryptor.update_into(chunk[:read], out.view[n:])
            source.check_unchanged(got)
            n += encryptor.finish_into(out.view[n:])
        except BaseException:
            out.release()
            raise
        finally:
            piece.release()
    return ProtectedSegment((out.view[:n],), n, segment_etag(job, _stamp(source.stat), None),
                            (out,))


def _stamp(st: os.stat_result) -> SourceStamp:
    return st.st_size, st.st_mtime_ns


def protect_fragment(data: bytes | bytearray, init: InitInfo, scheme: CommonScheme,
                     key: ContentKey, segment_id: str) -> bytes:
    """Common Encryption of one fMP4 media segment, as one ``bytes`` (``data`` is not
    changed; :func:`protect_fragment_parts` does the work)."""
    return b"".join(protect_fragment_parts(memoryview(bytearray(data)), init, scheme, key,
                                           segment_id))


def protect_fragment_parts(buf: memoryview, init: InitInfo, scheme: CommonScheme,
                           key: ContentKey, segment_id: str,
                           plan: FragmentPlan | None = None) -> list[Buffer]:
    """Common Encryption of the fMP4 media segment in ``buf`` (pure; see the module
    docstring), encrypted in place: the protected segment is the returned parts in
    order — the new ``moof`` boxes as bytes, the rest views of ``buf``.

    ``plan`` is :func:`plan_fragment` of these clear bytes (made here if not given):
    every sample's subsample layout is read before any is encrypted."""
    if plan is None:
        plan = plan_fragment(buf, init, scheme)
    fragment = plan.fragment
    civ = constant_iv(key)
    protections = []
    for moof_index, (moof, moof_layouts, moof_aux) in enumerate(
            zip(fragment.moofs, plan.layouts, plan.aux, strict=True)):
        row = []
        for traf, samples, aux in zip(moof.trafs, moof_layouts, moof_aux, strict=True):
            ivs: tuple[bytes, ...] = ()
            if scheme is CommonScheme.CBCS:
                crypt, skip = CBCS_VIDEO_PATTERN
                encrypt_cbcs(key.key, civ, buf, samples, crypt=crypt, skip=skip)
            else:
                ivs = tuple(derive_sample_ivs(key.kid, f"{segment_id}#{moof_index}",
                                              traf.track_id, len(samples)))
                encrypt_cenc(key.key, buf, samples, ivs)
            row.append(TrafProtection(samples, ivs, aux))
        protections.append(row)
    return protected_fragment_parts(buf, fragment, protections)


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



