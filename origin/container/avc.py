"""H.264/AVC parameter sets and slice-header size (ITU-T H.264 §7.3.2.1, §7.3.2.2, §7.3.3).

Only what the slice header's syntax depends on is kept: the SPS is read up to
``frame_mbs_only_flag`` (VUI is not needed), the PPS up to
``redundant_pic_cnt_present_flag`` (the High-profile tail is not needed), so
neither parser depends on fields a slice header never uses.

:func:`slice_header_size` returns how many escaped bytes of a coded-slice NAL
unit (NAL header included) the slice header occupies, rounded up to whole
bytes: the clear part of the NAL under CMAF subsample encryption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from origin.container.bits import BitReader, BitstreamError, UnsupportedBitstream
from origin.container.nal import (
    Codec,
    MissingParameterSet,
    check_length_size,
    parse_nal_header,
    read_config_nals,
)

NAL_SLICE = 1
NAL_SLICE_DPA = 2
NAL_SLICE_DPB = 3
NAL_SLICE_DPC = 4
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8

# profile_idc values whose SPS carries chroma_format_idc … scaling matrices (§7.3.2.1.1).
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

SLICE_P, SLICE_B, SLICE_I, SLICE_SP, SLICE_SI = 0, 1, 2, 3, 4
MAX_REF_IDX_MINUS1 = 31
MAX_LIST_OPS = 100  # ref_pic_list_modification / MMCO loops; real streams use a handful


@dataclass(frozen=True, slots=True)
class AvcSps:
    sps_id: int
    profile_idc: int
    chroma_format_idc: int
    separate_colour_plane: bool
    log2_max_frame_num: int
    pic_order_cnt_type: int
    log2_max_poc_lsb: int
    delta_pic_order_always_zero: bool
    frame_mbs_only: bool
    pic_width_in_mbs: int
    pic_height_in_map_units: int

    @property
    def chroma_array_type(self) -> int:
        return 0 if self.separate_colour_plane else self.chroma_format_idc


@dataclass(frozen=True, slots=True)
class AvcPps:
    pps_id: int
    sps_id: int
    entropy_coding_mode: bool
    bottom_field_pic_order_in_frame_present: bool
    num_slice_groups_minus1: int
    slice_group_map_type: int
    slice_group_change_rate: int
    num_ref_idx_l0_default_minus1: int
    num_ref_idx_l1_default_minus1: int
    weighted_pred: bool
    weighted_bipred_idc: int
    deblocking_filter_control_present: bool
    redundant_pic_cnt_present: bool


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """What ``avcC`` (ISO/IEC 14496-15 §5.3.3.1) tells the subsample generator."""

    nal_length_size: int
    sps: Mapping[int, AvcSps]
    pps: Mapping[int, AvcPps]


def _payload_reader(nal: bytes | memoryview, expected_type: int, *, lazy: bool) -> BitReader:
    header = parse_nal_header(Codec.AVC, nal)
    if header.type != expected_type:
        raise BitstreamError(f"expected H.264 NAL unit type {expected_type}")
    return BitReader(memoryview(nal)[1:], lazy=lazy)


def _ranged(value: int, high: int, what: str) -> int:
    if not 0 <= value <= high:
        raise BitstreamError(f"H.264 {what} out of range")
    return value


def _skip_scaling_list(br: BitReader, size: int) -> None:
    """scaling_list() (§7.3.2.1.1.1): parsed only to be skipped."""
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = br.se()
            if not -128 <= delta <= 127:
                raise BitstreamError("H.264 delta_scale out of range")
            nxt = (last + delta + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps(nal: bytes | memoryview) -> AvcSps:
    """Parse a sequence parameter set NAL unit (header byte included)."""
    br = _payload_reader(nal, NAL_SPS, lazy=False)
    profile_idc = br.u(8)
    br.skip(16)  # constraint_set flags, reserved_zero_2bits, level_idc
    sps_id = _ranged(br.ue(), 31, "seq_parameter_set_id")
    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in HIGH_PROFILES:
        chroma_format_idc = _ranged(br.ue(), 3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = br.flag()
        _ranged(br.ue(), 6, "bit_depth_luma_minus8")
        _ranged(br.ue(), 6, "bit_depth_chroma_minus8")
        br.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if br.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if br.flag():
                    _skip_scaling_list(br, 16 if i < 6 else 64)
    log2_max_frame_num = _ranged(br.ue(), 12, "log2_max_frame_num_minus4") + 4
    poc_type = _ranged(br.ue(), 2, "pic_order_cnt_type")
    log2_max_poc_lsb = 0
    always_zero = False
    if poc_type == 0:
        log2_max_poc_lsb = _ranged(br.ue(), 12, "log2_max_pic_order_cnt_lsb_minus4") + 4
    elif poc_type == 1:
        always_zero = br.flag()
        br.se()  # offset_for_non_ref_pic
        br.se()  # offset_for_top_to_bottom_field
        for _ in range(_ranged(br.ue(), 255, "num_ref_frames_in_pic_order_cnt_cycle")):
            br.se()  # offset_for_ref_frame
    br.ue()  # max_num_ref_frames
    br.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = br.ue() + 1
    height_map_units = br.ue() + 1
    frame_mbs_only = br.flag()
    return AvcSps(sps_id=sps_id, profile_idc=profile_idc, chroma_format_idc=chroma_format_idc,
                  separate_colour_plane=separate_colour_plane,
                  log2_max_frame_num=log2_max_frame_num, pic_order_cnt_type=poc_type,
                  log2_max_poc_lsb=log2_max_poc_lsb, delta_pic_order_always_zero=always_zero,
                  frame_mbs_only=frame_mbs_only, pic_width_in_mbs=width_mbs,
                  pic_height_in_map_units=height_map_units)


def _ceil_log2(n: int) -> int:
    """Ceil(Log2(n)) for n >= 1."""
    return (n - 1).bit_length()


def parse_pps(nal: bytes | memoryview) -> AvcPps:
    """Parse a picture parameter set NAL unit (header byte included)."""
    br = _payload_reader(nal, NAL_PPS, lazy=False)
    pps_id = _ranged(br.ue(), 255, "pic_parameter_set_id")
    sps_id = _ranged(br.ue(), 31, "seq_parameter_set_id")
    entropy_coding_mode = br.flag()
    bottom_field_poc = br.flag()
    groups_minus1 = _ranged(br.ue(), 7, "num_slice_groups_minus1")
    map_type = 0
    change_rate = 1
    if groups_minus1 > 0:
        map_type = _ranged(br.ue(), 6, "slice_group_map_type")
        if map_type == 0:
            for _ in range(groups_minus1 + 1):
                br.ue()  # run_length_minus1
        elif map_type == 2:
            for _ in range(groups_minus1):
                br.ue()  # top_left
                br.ue()  # bottom_right
        elif map_type in (3, 4, 5):
            br.skip(1)  # slice_group_change_direction_flag
            change_rate = br.ue() + 1
        elif map_type == 6:
            map_units = br.ue() + 1
            br.skip(map_units * _ceil_log2(groups_minus1 + 1))  # slice_group_id[]
    l0 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l0_default_active_minus1")
    l1 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l1_default_active_minus1")
    weighted_pred = br.flag()
    weighted_bipred_idc = _ranged(br.u(2), 2, "weighted_bipred_idc")
    br.se()  # pic_init_qp_minus26
    br.se()  # pic_init_qs_minus26
    br.se()  # chroma_qp_index_offset
    deblocking_control = br.flag()
    br.skip(1)  # constrained_intra_pred_flag
    redundant_pic_cnt = br.flag()
    return AvcPps(pps_id=pps_id, sps_id=sps_id, entropy_coding_mode=entropy_coding_mode,
                  bottom_field_pic_order_in_frame_present=bottom_field_poc,
                  num_slice_groups_minus1=groups_minus1, slice_group_map_type=map_type,
                  slice_group_change_rate=change_rate, num_ref_idx_l0_default_minus1=l0,
                  num_ref_idx_l1_default_minus1=l1, weighted_pred=weighted_pred,
                  weighted_bipred_idc=weighted_bipred_idc,
                  deblocking_filter_control_present=deblocking_control,
                  redundant_pic_cnt_present=redundant_pic_cnt)


def parse_avcc(payload: bytes | memoryview) -> AvcConfig:
    """Parse an ``avcC`` box payload (AVCDecoderConfigurationRecord).

    The optional High-profile tail (chroma format, bit depths, SPS extensions)
    is ignored.
    """
    data = memoryview(payload)
    if len(data) < 6:
        raise BitstreamError("truncated avcC")
    if data[0] != 1:
        raise BitstreamError("unsupported avcC configurationVersion")
    length_size = check_length_size((data[4] & 0x3) + 1)
    sps: dict[int, AvcSps] = {}
    pps: dict[int, AvcPps] = {}
    pos = 5
    for kind in ("sps", "pps"):
        if pos >= len(data):
            raise BitstreamError("truncated avcC")
        count = data[pos] & 0x1F if kind == "sps" else data[pos]
        nals, pos = read_config_nals(data, pos + 1, count, "avcC")
        for nal in nals:
            if kind == "sps":
                parsed_sps = parse_sps(nal)
                sps[parsed_sps.sps_id] = parsed_sps
            else:
                parsed_pps = parse_pps(nal)
                pps[parsed_pps.pps_id] = parsed_pps
    return AvcConfig(nal_length_size=length_size, sps=MappingProxyType(sps),
                     pps=MappingProxyType(pps))


def _skip_ref_pic_list_modification(br: BitReader) -> None:
    """One list of ref_pic_list_modification() (§7.3.3.1)."""
    if not br.flag():  # ref_pic_list_modification_flag_lX
        return
    for _ in range(MAX_LIST_OPS):
        idc = br.ue()  # modification_of_pic_nums_idc
        if idc == 3:
            return
        if idc > 3:
            raise BitstreamError("H.264 modification_of_pic_nums_idc out of range")
        br.ue()  # abs_diff_pic_num_minus1 or long_term_pic_num
    raise BitstreamError("H.264 ref_pic_list_modification too long")


def _skip_weights(br: BitReader, count: int, chroma: bool) -> None:
    for _ in range(count):
        if br.flag():  # luma_weight_lX_flag
            br.se()
            br.se()
        if chroma and br.flag():  # chroma_weight_lX_flag
            for _ in range(4):
                br.se()


def _skip_pred_weight_table(br: BitReader, sps: AvcSps, slice_type: int,
                            l0: int, l1: int) -> None:
    """pred_weight_table() (§7.3.3.2)."""
    chroma = sps.chroma_array_type != 0
    _ranged(br.ue(), 7, "luma_log2_weight_denom")
    if chroma:
        _ranged(br.ue(), 7, "chroma_log2_weight_denom")
    _skip_weights(br, l0 + 1, chroma)
    if slice_type == SLICE_B:
        _skip_weights(br, l1 + 1, chroma)


def _skip_dec_ref_pic_marking(br: BitReader, idr: bool) -> None:
    """dec_ref_pic_marking() (§7.3.3.3)."""
    if idr:
        br.skip(2)  # no_output_of_prior_pics_flag, long_term_reference_flag
        return
    if not br.flag():  # adaptive_ref_pic_marking_mode_flag
        return
    for _ in range(MAX_LIST_OPS):
        mmco = br.ue()
        if mmco == 0:
            return
        if mmco > 6:
            raise BitstreamError("H.264 memory_management_control_operation out of range")
        if mmco in (1, 3):
            br.ue()  # difference_of_pic_nums_minus1
        if mmco == 2:
            br.ue()  # long_term_pic_num
        if mmco in (3, 6):
            br.ue()  # long_term_frame_idx
        if mmco == 4:
            br.ue()  # max_long_term_frame_idx_plus1
    raise BitstreamError("H.264 dec_ref_pic_marking too long")


def slice_header_size(nal: memoryview, sps_map: Mapping[int, AvcSps],
                      pps_map: Mapping[int, AvcPps]) -> int:
    """Escaped bytes of ``nal`` from its start through the last byte of slice_header().

    ``nal`` is one NAL unit of type 1, 2 (partition A) or 5, NAL header
    included.  Partitions B/C (types 3, 4) carry no slice header and raise
    :class:`UnsupportedBitstream`.
    """
    header = parse_nal_header(Codec.AVC, nal)
    if header.type in (NAL_SLICE_DPB, NAL_SLICE_DPC):
        raise UnsupportedBitstream("H.264 data partitions B/C are not supported")
    if header.type not in (NAL_SLICE, NAL_SLICE_DPA, NAL_IDR):
        raise BitstreamError("not an H.264 coded slice NAL unit")
    idr = header.type == NAL_IDR
    br = BitReader(nal[1:])
    br.ue()  # first_mb_in_slice
    slice_type = _ranged(br.ue(), 9, "slice_type") % 5
    pps_id = br.ue()
    pps = pps_map.get(pps_id)
    if pps is None:
        raise MissingParameterSet("H.264 slice refers to an unknown PPS")
    sps = sps_map.get(pps.sps_id)
    if sps is None:
        raise MissingParameterSet("H.264 PPS refers to an unknown SPS")
    if sps.separate_colour_plane:
        br.skip(2)  # colour_plane_id
    br.skip(sps.log2_max_frame_num)  # frame_num
    field_pic = False
    if not sps.frame_mbs_only:
        field_pic = br.flag()
        if field_pic:
            br.skip(1)  # bottom_field_flag
    if idr:
        br.ue()  # idr_pic_id
    if sps.pic_order_cnt_type == 0:
        br.skip(sps.log2_max_poc_lsb)  # pic_order_cnt_lsb
        if pps.bottom_field_pic_order_in_frame_present and not field_pic:
            br.se()  # delta_pic_order_cnt_bottom
    if sps.pic_order_cnt_type == 1 and not sps.delta_pic_order_always_zero:
        br.se()  # delta_pic_order_cnt[0]
        if pps.bottom_field_pic_order_in_frame_present and not field_pic:
            br.se()  # delta_pic_order_cnt[1]
    if pps.redundant_pic_cnt_present:
        _ranged(br.ue(), 127, "redundant_pic_cnt")
    if slice_type == SLICE_B:
        br.skip(1)  # direct_spatial_mv_pred_flag
    l0, l1 = pps.num_ref_idx_l0_default_minus1, pps.num_ref_idx_l1_default_minus1
    if slice_type in (SLICE_P, SLICE_SP, SLICE_B) and br.flag():  # num_ref_idx_active_override
        l0 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l0_active_minus1")
        if slice_type == SLICE_B:
            l1 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l1_active_minus1")
    if slice_type not in (SLICE_I, SLICE_SI):
        _skip_ref_pic_list_modification(br)
    if slice_type == SLICE_B:
        _skip_ref_pic_list_modification(br)
    if ((pps.weighted_pred and slice_type in (SLICE_P, SLICE_SP))
            or (pps.weighted_bipred_idc == 1 and slice_type == SLICE_B)):
        _skip_pred_weight_table(br, sps, slice_type, l0, l1)
    if header.ref_idc != 0:
        _skip_dec_ref_pic_marking(br, idr)
    if pps.entropy_coding_mode and slice_type not in (SLICE_I, SLICE_SI):
        _ranged(br.ue(), 2, "cabac_init_idc")
    br.se()  # slice_qp_delta
    if slice_type in (SLICE_SP, SLICE_SI):
        if slice_type == SLICE_SP:
            br.skip(1)  # sp_for_switch_flag
        br.se()  # slice_qs_delta
    if pps.deblocking_filter_control_present:
        idc = _ranged(br.ue(), 2, "disable_deblocking_filter_idc")
        if idc != 1:
            br.se()  # slice_alpha_c0_offset_div2
            br.se()  # slice_beta_offset_div2
    if pps.num_slice_groups_minus1 > 0 and 3 <= pps.slice_group_map_type <= 5:
        # Ceil(Log2(PicSizeInMapUnits ÷ SliceGroupChangeRate + 1)), exact division (§7.4.3).
        units = sps.pic_width_in_mbs * sps.pic_height_in_map_units
        rate = pps.slice_group_change_rate
        bits = 0
        while (rate << bits) < units + rate:
            bits += 1
        br.skip(bits)  # slice_group_change_cycle
    return 1 + br.escaped_size()
