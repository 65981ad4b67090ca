"""Media fragments (``moof`` + ``mdat``): where the samples are, and the protected form.

Rules (ISO/IEC 14496-12 §8.8, ISO/IEC 23001-7 §7, SPECS §1.6):
- a sample's position is ``base + trun.data_offset + Σ earlier sizes``; the
  base is ``tfhd.base_data_offset`` when present, the ``moof`` start under
  default-base-is-moof (0x020000) or for a first ``traf`` without either, and
  the end of the previous ``traf``'s data otherwise;
- sizes come from the ``trun``, else ``tfhd`` default, else ``trex`` default;
- every sample must lie inside an ``mdat`` payload; a ``trun`` without a data
  offset, zero samples or counts larger than the box can hold are refused;
- protection adds ``saiz``, ``saio`` and ``senc`` after a ``traf``'s own
  children (``saiz``/``saio`` omitted when the auxiliary data is empty, as in
  cbcs audio); every new size and offset is computed from the planned sizes
  before anything is written: ``trun.data_offset`` grows by the ``moof``'s
  growth where the base is the ``moof``, ``tfhd.base_data_offset`` by the
  growth of everything before its data, ``sidx.referenced_size`` by its
  subsegment's growth, and ``saio`` points at the first ``senc`` entry,
  relative to the ``moof`` start.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from origin.container.boxes import (
    Box,
    BoxError,
    Buffer,
    build_box,
    build_full_box,
    iter_boxes,
    read_full_box_header,
)
from origin.container.init_segment import InitInfo
from origin.container.track_fragment import (
    TRUN_DATA_OFFSET,
    TrackFragmentError,
    read_tfhd,
    read_trun,
)
from origin.crypto.subsample import SampleCrypto, Subsample
from origin.errors import MalformedMedia

SENC_SUBSAMPLES = 0x000002


class FragmentError(TrackFragmentError):
    reason = "malformed media fragment"


@dataclass(frozen=True, slots=True)
class Trun:
    box: Box
    data_offset: int
    data_offset_at: int  # absolute position of the data_offset field
    sizes: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Traf:
    box: Box
    track_id: int
    base_offset_at: int | None  # position of tfhd.base_data_offset, if present
    relative_to_moof: bool  # trun offsets count from the moof start
    truns: tuple[Trun, ...]
    samples: tuple[tuple[int, int], ...] = field(repr=False)  # (absolute offset, size)


@dataclass(frozen=True, slots=True)
class Moof:
    box: Box
    trafs: tuple[Traf, ...]


@dataclass(frozen=True, slots=True)
class Fragment:
    moofs: tuple[Moof, ...]
    sidx: Box | None


@dataclass(frozen=True, slots=True)
class TrafAux:
    """What a ``traf``'s ``senc`` and ``saiz`` hold that does not depend on the value of
    its IVs, only on their size (:func:`plan_traf_aux`): each sample's subsample entries
    as written in ``senc`` (all empty when no sample has subsamples), and ``saiz`` (empty
    when every sample's auxiliary information is empty)."""

    iv_size: int
    subsampled: bool
    entries: tuple[bytes, ...] = field(repr=False)
    saiz: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TrafProtection:
    """How one ``traf``'s samples were protected: their subsamples and IVs, and, when the
    caller has it from an earlier request, the IV-independent part of the aux boxes."""

    samples: tuple[SampleCrypto, ...]
    ivs: tuple[bytes, ...] = field(default=(), repr=False)  # empty for constant-IV cbcs
    aux: TrafAux | None = field(default=None, repr=False)


def _read(fmt: str, buf: Buffer, at: int, end: int) -> tuple[int, ...]:
    if at < 0 or at + struct.calcsize(fmt) > end:
        raise FragmentError("truncated box")
    return struct.unpack_from(fmt, buf, at)


def parse_fragment(seg: Buffer, init: InitInfo) -> Fragment:
    """Locate every sample of every ``traf`` (see the module rules)."""
    top = list(iter_boxes(seg))
    mdats = [b for b in top if b.type == "mdat"]
    sidx = next((b for b in top if b.type == "sidx"), None)
    moofs = []
    for box in top:
        if box.type != "moof":
            continue
        moof = _parse_moof(seg, box, init)
        for traf in moof.trafs:
            for offset, size in traf.samples:
                if not any(m.payload_start <= offset and offset + size <= m.end for m in mdats):
                    raise FragmentError("sample lies outside every mdat")
        moofs.append(moof)
    if not moofs:
        raise FragmentError("segment has no moof")
    return Fragment(tuple(moofs), sidx)


def _parse_moof(seg: Buffer, moof: Box, init: InitInfo) -> Moof:
    trafs: list[Traf] = []
    previous_end: int | None = None
    for box in iter_boxes(seg, moof.payload_start, moof.end):
        if box.type != "traf":
            continue
        traf = _parse_traf(seg, box, moof, init, first=not trafs, previous_end=previous_end)
        if traf.samples:
            last_offset, last_size = traf.samples[-1]
            previous_end = last_offset + last_size
        trafs.append(traf)
    if not trafs:
        raise FragmentError("moof has no traf")
    return Moof(moof, tuple(trafs))


def _parse_traf(seg: Buffer, traf: Box, moof: Box, init: InitInfo, *,
                first: bool, previous_end: int | None) -> Traf:
    children = list(iter_boxes(seg, traf.payload_start, traf.end))
    tfhds = [c for c in children if c.type == "tfhd"]
    if len(tfhds) != 1:
        raise FragmentError("traf needs exactly one tfhd")
    tfhd = read_tfhd(seg, tfhds[0])
    track = init.track(tfhd.track_id)
    if tfhd.base_data_offset is not None:
        base, relative = tfhd.base_data_offset, False
    elif tfhd.default_base_is_moof or first:
        base, relative = moof.start, True
    else:
        if previous_end is None:
            raise FragmentError("traf data base cannot be determined")
        base, relative = previous_end, False
    default_size = tfhd.default_size if tfhd.default_size is not None \
        else track.default_sample_size

    truns = []
    samples: list[tuple[int, int]] = []
    for box in children:
        if box.type != "trun":
            continue
        trun = _parse_trun(seg, box, default_size)
        position = base + trun.data_offset
        for size in trun.sizes:
            samples.append((position, size))
            position += size
        truns.append(trun)
    if not truns:
        raise FragmentError("traf has no trun")
    return Traf(traf, tfhd.track_id, tfhd.base_offset_at, relative, tuple(truns),
                tuple(samples))


def _parse_trun(seg: Buffer, box: Box, default_size: int) -> Trun:
    _, flags = read_full_box_header(seg, box)
    if not flags & TRUN_DATA_OFFSET:  # checked first: without it the table is misread
        raise FragmentError("trun without data offset")
    raw = read_trun(seg, box)
    if raw.data_offset is None or raw.data_offset_at is None:
        raise FragmentError("trun without data offset")
    if raw.count == 0:
        raise FragmentError("trun sample count is zero")
    if raw.sizes is not None:
        sizes = raw.sizes
    elif default_size:
        sizes = (default_size,) * raw.count
    else:
        raise FragmentError("samples have no size")
    return Trun(box, raw.data_offset, raw.data_offset_at, sizes)


# --- writing ---------------------------------------------------------------------------


def _entries(sample: SampleCrypto) -> tuple[Subsample, ...]:
    """Subsamples as written in ``senc``: a full-sample sample is one protected run."""
    if sample.subsamples:
        return sample.subsamples
    return (Subsample(0, sample.size),)


def plan_traf_aux(samples: Sequence[SampleCrypto], iv_size: int) -> TrafAux:
    """The IV-independent part of a ``traf``'s ``senc`` and ``saiz`` (§7.2) for these
    samples and per-sample IVs of ``iv_size`` bytes (0: a constant IV)."""
    subsampled = any(s.subsamples for s in samples)
    if subsampled:
        entries = tuple(_pack_entries(_entries(s)) for s in samples)
    else:
        entries = (b"",) * len(samples)
    sizes = [iv_size + len(e) for e in entries]
    saiz = b""
    if any(sizes):
        if max(sizes) > 0xFF:
            raise MalformedMedia("a sample has too many NAL units to describe in saiz")
        if len(set(sizes)) == 1:
            saiz = build_full_box("saiz", 0, 0, struct.pack(">BI", sizes[0], len(sizes)))
        else:
            saiz = build_full_box("saiz", 0, 0, struct.pack(">BI", 0, len(sizes)), bytes(sizes))
    return TrafAux(iv_size, subsampled, entries, saiz)


def _pack_entries(subs: tuple[Subsample, ...]) -> bytes:
    """One sample's ``senc`` subsample list: u16 count, then (u16 clear, u32 protected)."""
    return struct.pack(">H" + "HI" * len(subs), len(subs),
                       *(v for e in subs for v in (e.clear, e.protected)))


def build_senc(prot: TrafProtection) -> bytes:
    """``senc`` (§7.2.1): per-sample IVs, then subsample entries when any sample has them."""
    aux = _aux(prot)
    body: Iterable[bytes] = (aux.entries if not prot.ivs
                             else itertools.chain.from_iterable(zip(prot.ivs, aux.entries,
                                                                    strict=True)))
    return build_full_box("senc", 0, SENC_SUBSAMPLES if aux.subsampled else 0,
                          struct.pack(">I", len(prot.samples)), b"".join(body))


def build_saiz(prot: TrafProtection) -> bytes:
    return _aux(prot).saiz


def _aux(prot: TrafProtection) -> TrafAux:
    iv_size = len(prot.ivs[0]) if prot.ivs else 0
    aux = prot.aux
    if aux is None or aux.iv_size != iv_size or len(aux.entries) != len(prot.samples):
        aux = plan_traf_aux(prot.samples, iv_size)
    return aux


SAIO_SIZE = 20  # header 8 + version/flags 4 + entry_count 4 + one u32 offset
SENC_ENTRIES_AT = 16  # header 8 + version/flags 4 + sample_count 4


@dataclass(frozen=True, slots=True)
class _TrafPlan:
    saiz: bytes
    senc: bytes

    @property
    def aux_present(self) -> bool:
        return bool(self.saiz)

    @property
    def growth(self) -> int:
        return len(self.saiz) + (SAIO_SIZE if self.saiz else 0) + len(self.senc)


def _plan(prot: TrafProtection) -> _TrafPlan:
    return _TrafPlan(build_saiz(prot), build_senc(prot))


def write_protected_fragment(
    buf: Buffer,
    fragment: Fragment,
    protections: Sequence[Sequence[TrafProtection]],
) -> bytes:
    """The segment with its samples as in ``buf`` and each ``moof`` carrying the aux boxes,
    as one ``bytes`` (:func:`protected_fragment_parts`, joined)."""
    return b"".join(protected_fragment_parts(buf, fragment, protections))


def protected_fragment_parts(
    buf: Buffer,
    fragment: Fragment,
    protections: Sequence[Sequence[TrafProtection]],
) -> list[Buffer]:
    """The protected segment as the pieces that follow each other on the wire: each new
    ``moof`` (and ``sidx``) as fresh bytes, every other top-level box as a view of
    ``buf`` (no copy of the ``mdat``: the caller sends the views, or joins them).

    ``protections[i][j]`` describes ``fragment.moofs[i].trafs[j]``; ``buf`` holds
    the segment with the samples already encrypted in place.
    """
    if len(protections) != len(fragment.moofs):
        raise ValueError("one protection list per moof")
    plans = [[_plan(p) for p in moof_prots] for moof_prots in protections]
    growth = [8 + sum(c.end - c.start for c in iter_boxes(buf, m.box.payload_start, m.box.end))
              + sum(p.growth for p in plan) - (m.box.end - m.box.start)
              for m, plan in zip(fragment.moofs, plans, strict=True)]
    new_moofs = {}
    shift_before = 0
    for moof, plan, delta in zip(fragment.moofs, plans, growth, strict=True):
        new_moofs[moof.box.start] = _write_moof(buf, moof, plan, delta, shift_before + delta)
        shift_before += delta
    source = memoryview(buf)
    out: list[Buffer] = []
    for box in iter_boxes(buf):
        if box.start in new_moofs:
            out.append(new_moofs[box.start])
        elif fragment.sidx is not None and box.start == fragment.sidx.start:
            out.append(_write_sidx(buf, box, fragment, growth))
        else:
            out.append(source[box.start:box.end])
    return out


def _write_moof(buf: Buffer, moof: Moof, plan: list[_TrafPlan],
                delta: int, absolute_shift: int) -> bytes:
    if len(plan) != len(moof.trafs):
        raise ValueError("one protection per traf")
    trafs = {t.box.start: (t, p) for t, p in zip(moof.trafs, plan, strict=True)}
    children: list[bytes] = []
    position = 8  # where the next child starts, relative to the new moof start
    for child in iter_boxes(buf, moof.box.payload_start, moof.box.end):
        if child.start in trafs:
            traf, traf_plan = trafs[child.start]
            written = _write_traf(buf, traf, traf_plan, position, delta, absolute_shift)
        else:
            written = bytes(buf[child.start:child.end])
        children.append(written)
        position += len(written)
    return build_box("moof", *children)


def _write_traf(buf: Buffer, traf: Traf, plan: _TrafPlan,
                traf_at: int, delta: int, absolute_shift: int) -> bytes:
    body = bytearray(buf[traf.box.payload_start:traf.box.end])
    origin = traf.box.payload_start
    if traf.base_offset_at is not None:
        (base,) = struct.unpack_from(">Q", buf, traf.base_offset_at)
        struct.pack_into(">Q", body, traf.base_offset_at - origin, base + absolute_shift)
    elif traf.relative_to_moof:
        for trun in traf.truns:
            new_offset = trun.data_offset + delta
            if not -(1 << 31) <= new_offset < (1 << 31):
                raise FragmentError("data offset out of range")
            struct.pack_into(">i", body, trun.data_offset_at - origin, new_offset)
    extra: list[bytes] = []
    senc_at = traf_at + 8 + len(body)
    if plan.aux_present:
        senc_at += len(plan.saiz) + SAIO_SIZE
        saio = build_full_box("saio", 0, 0, struct.pack(">II", 1, senc_at + SENC_ENTRIES_AT))
        extra += [plan.saiz, saio]
    extra.append(plan.senc)
    if len(body) + 8 != traf.box.end - traf.box.start:
        raise BoxError("traf uses a 64-bit size; not supported")
    return build_box("traf", body, *extra)


def _write_sidx(buf: Buffer, sidx: Box, fragment: Fragment,
                growth: list[int]) -> bytes:
    version, _ = read_full_box_header(buf, sidx)
    at = sidx.payload_start + 4 + 8 + (8 if version == 0 else 16) + 2
    (count,) = _read(">H", buf, at, sidx.end)
    at += 2
    if at + 12 * count > sidx.end or count == 0:
        raise FragmentError("sidx reference count larger than the box")
    if count == len(growth):
        adds = growth
    elif count == 1:
        adds = [sum(growth)]
    else:
        raise FragmentError("sidx references do not match the segment's fragments")
    body = bytearray(buf[sidx.start:sidx.end])
    for i, add in enumerate(adds):
        pos = at + 12 * i
        (word,) = struct.unpack_from(">I", buf, pos)
        if word >> 31:
            raise FragmentError("hierarchical sidx is not supported")
        size = (word & 0x7FFFFFFF) + add
        if size >= 1 << 31:
            raise FragmentError("sidx referenced size out of range")
        struct.pack_into(">I", body, pos - sidx.start, size)
    return bytes(body)
