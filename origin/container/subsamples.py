"""CMAF subsample layout for H.264/H.265 samples (SPECS §1.4), apart from the cipher.

Per NAL unit of a sample (ISO/IEC 23001-7 §9.5, ISO/IEC 23000-19 §8.2.2, and
Shaka Packager's ``SubsampleGenerator``/``SubsampleOrganizer``, which this
reproduces; ``tests/test_container_subsamples.py`` checks it against Shaka
Packager's own output):

- the length prefix and NAL header are clear; a non-VCL NAL unit is clear
  whole, and clear bytes accumulate into the clear part of the next entry;
- a VCL NAL unit is clear through its slice header (escaped bytes), protected
  after it; under ``cenc`` the ``protected % 16`` leading bytes move to the
  clear side, so the protected range is whole blocks ending at the NAL end
  (one subsample per NAL unit, as Bento4, GPAC and Shaka Packager before v3.5
  and after PR #1598 do; v3.5-v3.8 put those bytes after the range instead);
- a VCL NAL unit left with nothing to protect only adds clear bytes;
- clear bytes left after the last protected range become a final
  ``(clear, 0)`` entry;
- a clear run over 65535 bytes is emitted as ``(65535, 0)`` entries followed
  by the remainder (with the protected size).

The generator keeps the SPS/PPS (and VPS) it has seen: ``avcC``/``hvcC``
first, then every in-band parameter set in decode order, so samples must be
fed in decode order and one generator serves one track.
"""

from __future__ import annotations

from origin.container.avc import AvcConfig, AvcPps, AvcSps
from origin.container.avc import parse_avcc as parse_avcc
from origin.container.avc import parse_pps as parse_avc_pps
from origin.container.avc import parse_sps as parse_avc_sps
from origin.container.avc import slice_header_size as avc_slice_header_size
from origin.container.bits import BitstreamError
from origin.container.boxes import Box, iter_boxes
from origin.container.hevc import HevcConfig, HevcPps, HevcSps, update_parameter_sets
from origin.container.hevc import parse_hvcc as parse_hvcc
from origin.container.hevc import slice_header_size as hevc_slice_header_size
from origin.container.nal import Codec, is_vcl, iter_nals, parse_nal_header
from origin.crypto.subsample import MAX_CLEAR, CommonScheme, Subsample

__all__ = ["Codec", "SubsampleGenerator", "codec_config_from_sample_entry", "is_vcl"]

AES_BLOCK = 16
AVC_NAL_SPS = 7
AVC_NAL_PPS = 8
VISUAL_SAMPLE_ENTRY_FIELDS = 78  # SampleEntry (8) + VisualSampleEntry fields (70), §12.1.3


def codec_config_from_sample_entry(buf: bytes | memoryview, entry: Box) -> AvcConfig | HevcConfig:
    """The parsed ``avcC``/``hvcC`` of a visual sample entry (``avc1``, ``hvc1``, ``hev1``, …)."""
    first = entry.payload_start + VISUAL_SAMPLE_ENTRY_FIELDS
    if first > entry.end:
        raise BitstreamError("truncated visual sample entry")
    for child in iter_boxes(buf, first, entry.end):
        payload = memoryview(buf)[child.payload_start:child.end]
        if child.type == "avcC":
            return parse_avcc(payload)
        if child.type == "hvcC":
            return parse_hvcc(payload)
    raise BitstreamError("sample entry has no avcC or hvcC")


def _push(out: list[Subsample], clear: int, protected: int) -> None:
    while clear > MAX_CLEAR:
        out.append(Subsample(MAX_CLEAR, 0))
        clear -= MAX_CLEAR
    out.append(Subsample(clear, protected))


class SubsampleGenerator:
    """Subsample lists for the samples of one AVC or HEVC track, in decode order."""

    __slots__ = ("_avc_pps", "_avc_sps", "_codec", "_hevc_pps", "_hevc_sps", "_length_size",
                 "_vps")

    def __init__(self, config: AvcConfig | HevcConfig) -> None:
        self._length_size = config.nal_length_size
        self._avc_sps: dict[int, AvcSps] = {}
        self._avc_pps: dict[int, AvcPps] = {}
        self._hevc_sps: dict[int, HevcSps] = {}
        self._hevc_pps: dict[int, HevcPps] = {}
        self._vps: dict[int, bytes] = {}
        if isinstance(config, AvcConfig):
            self._codec = Codec.AVC
            self._avc_sps.update(config.sps)
            self._avc_pps.update(config.pps)
        else:
            self._codec = Codec.HEVC
            self._vps.update(config.vps)
            self._hevc_sps.update(config.sps)
            self._hevc_pps.update(config.pps)

    @classmethod
    def from_config(cls, payload: bytes | memoryview, *, hevc: bool) -> SubsampleGenerator:
        """A generator from a raw ``avcC`` (``hevc=False``) or ``hvcC`` box payload."""
        return cls(parse_hvcc(payload) if hevc else parse_avcc(payload))

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def nal_length_size(self) -> int:
        return self._length_size

    def subsamples(self, sample: bytes | memoryview, scheme: CommonScheme) -> tuple[Subsample, ...]:
        """The subsample entries of ``sample``; their sizes add up to ``len(sample)``.

        An empty sample gives ``()``.  Malformed or unsupported bitstreams raise
        a :class:`~origin.errors.MalformedMedia` subclass.
        """
        view = memoryview(sample)
        codec = self._codec
        prefix = self._length_size
        align = scheme is CommonScheme.CENC
        out: list[Subsample] = []
        clear_run = 0
        for start, end in iter_nals(view, prefix):
            size = end - start
            clear = prefix + size
            protected = 0
            if size:
                nal = view[start:end]
                nal_type = parse_nal_header(codec, nal).type
                if is_vcl(codec, nal_type):
                    head = self._slice_header_size(nal)
                    clear = prefix + head
                    protected = size - head
                    if align:
                        misaligned = protected % AES_BLOCK
                        clear += misaligned
                        protected -= misaligned
                else:
                    self._update_parameter_sets(nal, nal_type)
            clear_run += clear
            if protected:
                _push(out, clear_run, protected)
                clear_run = 0
        if clear_run:
            _push(out, clear_run, 0)
        return tuple(out)

    def _slice_header_size(self, nal: memoryview) -> int:
        if self._codec is Codec.AVC:
            return avc_slice_header_size(nal, self._avc_sps, self._avc_pps)
        return hevc_slice_header_size(nal, self._hevc_sps, self._hevc_pps)

    def _update_parameter_sets(self, nal: memoryview, nal_type: int) -> None:
        if self._codec is Codec.HEVC:
            update_parameter_sets(nal, self._vps, self._hevc_sps, self._hevc_pps)
        elif nal_type == AVC_NAL_SPS:
            sps = parse_avc_sps(nal)
            self._avc_sps[sps.sps_id] = sps
        elif nal_type == AVC_NAL_PPS:
            pps = parse_avc_pps(nal)
            self._avc_pps[pps.pps_id] = pps
