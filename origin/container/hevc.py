"""H.265/HEVC parameter sets and slice-segment-header size (ITU-T H.265 §7.3.2, §7.3.6, §7.3.7).

The SPS is parsed in full through its extensions (the SCC extension's
``motion_vector_resolution_control_idc`` adds a slice-header flag, so VUI and
the extensions before it must be walked); the PPS up to the fields a slice
header needs.  Multi-layer streams (``nuh_layer_id`` > 0) and the reserved VCL
NAL unit types have a slice-header syntax this module does not implement and
raise :class:`UnsupportedBitstream`.

:func:`slice_header_size` returns the escaped bytes of a VCL NAL unit (NAL
header included) through the end of slice_segment_header(), which ends with
byte_alignment() and so is a whole number of bytes.
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

NAL_BLA_W_LP = 16
NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_RSV_IRAP_23 = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34

SLICE_B, SLICE_P, SLICE_I = 0, 1, 2
MAX_DPB = 16  # sps_max_dec_pic_buffering_minus1 + 1 <= 16 bounds every RPS list
MAX_REF_IDX_MINUS1 = 14


def is_supported_vcl(nal_type: int) -> bool:
    """VCL types with a defined slice_segment_header(): 0-9 and 16-21 (Table 7-1)."""
    return 0 <= nal_type <= 9 or NAL_BLA_W_LP <= nal_type <= NAL_CRA


@dataclass(frozen=True, slots=True)
class ShortTermRps:
    """A short-term reference picture set after §7.4.8 derivation."""

    delta_poc_s0: tuple[int, ...] = ()
    used_s0: tuple[bool, ...] = ()
    delta_poc_s1: tuple[int, ...] = ()
    used_s1: tuple[bool, ...] = ()

    @property
    def num_delta_pocs(self) -> int:
        return len(self.delta_poc_s0) + len(self.delta_poc_s1)

    @property
    def num_used(self) -> int:
        return sum(self.used_s0) + sum(self.used_s1)


@dataclass(frozen=True, slots=True)
class HevcSps:
    sps_id: int
    chroma_array_type: int
    separate_colour_plane: bool
    log2_max_poc_lsb: int
    pic_size_in_ctbs: int
    st_rps: tuple[ShortTermRps, ...]
    long_term_ref_pics_present: bool
    used_by_curr_pic_lt_sps: tuple[bool, ...]
    temporal_mvp_enabled: bool
    sao_enabled: bool
    motion_vector_resolution_control_idc: int = 0


@dataclass(frozen=True, slots=True)
class HevcPps:
    pps_id: int
    sps_id: int
    dependent_slice_segments_enabled: bool
    output_flag_present: bool
    num_extra_slice_header_bits: int
    cabac_init_present: bool
    num_ref_idx_l0_default_minus1: int
    num_ref_idx_l1_default_minus1: int
    slice_chroma_qp_offsets_present: bool
    weighted_pred: bool
    weighted_bipred: bool
    tiles_enabled: bool
    entropy_coding_sync_enabled: bool
    loop_filter_across_slices_enabled: bool
    deblocking_filter_override_enabled: bool
    deblocking_filter_disabled: bool
    lists_modification_present: bool
    slice_segment_header_extension_present: bool
    chroma_qp_offset_list_enabled: bool = False
    curr_pic_ref_enabled: bool = False
    slice_act_qp_offsets_present: bool = False


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """What ``hvcC`` (ISO/IEC 14496-15 §8.3.3.1) tells the subsample generator."""

    nal_length_size: int
    vps: Mapping[int, bytes]
    sps: Mapping[int, HevcSps]
    pps: Mapping[int, HevcPps]


def _ranged(value: int, high: int, what: str) -> int:
    if not 0 <= value <= high:
        raise BitstreamError(f"H.265 {what} out of range")
    return value


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def _payload_reader(nal: bytes | memoryview, expected_type: int, *, lazy: bool) -> BitReader:
    header = parse_nal_header(Codec.HEVC, nal)
    if header.type != expected_type:
        raise BitstreamError(f"expected H.265 NAL unit type {expected_type}")
    return BitReader(memoryview(nal)[2:], lazy=lazy)


def vps_id(nal: bytes | memoryview) -> int:
    """``vps_video_parameter_set_id`` of a VPS NAL unit (the rest is not needed)."""
    return _payload_reader(nal, NAL_VPS, lazy=True).u(4)


# -- SPS ------------------------------------------------------------------------


def _skip_profile_tier_level(br: BitReader, max_sub_layers_minus1: int) -> None:
    """profile_tier_level(1, sps_max_sub_layers_minus1) (§7.3.3)."""
    br.skip(88 + 8)  # general profile (88 bits) + general_level_idc
    present = [(br.flag(), br.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        br.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        br.skip((88 if profile_present else 0) + (8 if level_present else 0))


def _skip_scaling_list_data(br: BitReader) -> None:
    """scaling_list_data() (§7.3.4)."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not br.flag():  # scaling_list_pred_mode_flag
                br.ue()  # scaling_list_pred_matrix_id_delta
                continue
            if size_id > 1:
                br.se()  # scaling_list_dc_coef_minus8
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                br.se()  # scaling_list_delta_coef


def _parse_st_rps(br: BitReader, idx: int, num_sets: int,
                  sets: list[ShortTermRps] | tuple[ShortTermRps, ...]) -> ShortTermRps:
    """st_ref_pic_set(stRpsIdx) (§7.3.7) with the §7.4.8 derivation."""
    if idx != 0 and br.flag():  # inter_ref_pic_set_prediction_flag
        delta_idx = 1
        if idx == num_sets:
            delta_idx = br.ue() + 1
        if delta_idx > idx:
            raise BitstreamError("H.265 delta_idx_minus1 out of range")
        ref = sets[idx - delta_idx]
        sign = br.flag()
        abs_delta = _ranged(br.ue(), (1 << 15) - 1, "abs_delta_rps_minus1") + 1
        delta_rps = -abs_delta if sign else abs_delta
        used: list[bool] = []
        use_delta: list[bool] = []
        for _ in range(ref.num_delta_pocs + 1):
            u = br.flag()
            used.append(u)
            use_delta.append(True if u else br.flag())
        n_neg = len(ref.delta_poc_s0)
        n_all = ref.num_delta_pocs
        s0: list[tuple[int, bool]] = []
        for j in range(len(ref.delta_poc_s1) - 1, -1, -1):
            d = ref.delta_poc_s1[j] + delta_rps
            if d < 0 and use_delta[n_neg + j]:
                s0.append((d, used[n_neg + j]))
        if delta_rps < 0 and use_delta[n_all]:
            s0.append((delta_rps, used[n_all]))
        for j in range(n_neg):
            d = ref.delta_poc_s0[j] + delta_rps
            if d < 0 and use_delta[j]:
                s0.append((d, used[j]))
        s1: list[tuple[int, bool]] = []
        for j in range(n_neg - 1, -1, -1):
            d = ref.delta_poc_s0[j] + delta_rps
            if d > 0 and use_delta[j]:
                s1.append((d, used[j]))
        if delta_rps > 0 and use_delta[n_all]:
            s1.append((delta_rps, used[n_all]))
        for j in range(len(ref.delta_poc_s1)):
            d = ref.delta_poc_s1[j] + delta_rps
            if d > 0 and use_delta[n_neg + j]:
                s1.append((d, used[n_neg + j]))
        if len(s0) > MAX_DPB or len(s1) > MAX_DPB:
            raise BitstreamError("H.265 reference picture set too large")
        return ShortTermRps(tuple(d for d, _ in s0), tuple(u for _, u in s0),
                            tuple(d for d, _ in s1), tuple(u for _, u in s1))
    n_neg = _ranged(br.ue(), MAX_DPB, "num_negative_pics")
    n_pos = _ranged(br.ue(), MAX_DPB, "num_positive_pics")
    deltas0: list[int] = []
    used0: list[bool] = []
    poc = 0
    for _ in range(n_neg):
        poc -= br.ue() + 1
        deltas0.append(poc)
        used0.append(br.flag())
    deltas1: list[int] = []
    used1: list[bool] = []
    poc = 0
    for _ in range(n_pos):
        poc += br.ue() + 1
        deltas1.append(poc)
        used1.append(br.flag())
    return ShortTermRps(tuple(deltas0), tuple(used0), tuple(deltas1), tuple(used1))


def _skip_sub_layer_hrd(br: BitReader, cpb_cnt: int, sub_pic: bool) -> None:
    for _ in range(cpb_cnt):
        br.ue()  # bit_rate_value_minus1
        br.ue()  # cpb_size_value_minus1
        if sub_pic:
            br.ue()  # cpb_size_du_value_minus1
            br.ue()  # bit_rate_du_value_minus1
        br.skip(1)  # cbr_flag


def _skip_hrd_parameters(br: BitReader, max_sub_layers_minus1: int) -> None:
    """hrd_parameters(1, maxNumSubLayersMinus1) (§E.2.2)."""
    nal_hrd = br.flag()
    vcl_hrd = br.flag()
    sub_pic = False
    if nal_hrd or vcl_hrd:
        sub_pic = br.flag()
        if sub_pic:
            br.skip(8 + 5 + 1 + 5)
        br.skip(4 + 4)  # bit_rate_scale, cpb_size_scale
        if sub_pic:
            br.skip(4)  # cpb_size_du_scale
        br.skip(5 + 5 + 5)
    for _ in range(max_sub_layers_minus1 + 1):
        within_cvs = True
        if not br.flag():  # fixed_pic_rate_general_flag
            within_cvs = br.flag()
        low_delay = False
        if within_cvs:
            br.ue()  # elemental_duration_in_tc_minus1
        else:
            low_delay = br.flag()
        cpb_cnt = 1
        if not low_delay:
            cpb_cnt = _ranged(br.ue(), 31, "cpb_cnt_minus1") + 1
        if nal_hrd:
            _skip_sub_layer_hrd(br, cpb_cnt, sub_pic)
        if vcl_hrd:
            _skip_sub_layer_hrd(br, cpb_cnt, sub_pic)


def _skip_vui(br: BitReader, max_sub_layers_minus1: int) -> None:
    """vui_parameters() (§E.2.1)."""
    if br.flag() and br.u(8) == 255:  # aspect_ratio_info_present_flag, aspect_ratio_idc
        br.skip(32)  # sar_width, sar_height
    if br.flag():  # overscan_info_present_flag
        br.skip(1)
    if br.flag():  # video_signal_type_present_flag
        br.skip(4)
        if br.flag():  # colour_description_present_flag
            br.skip(24)
    if br.flag():  # chroma_loc_info_present_flag
        br.ue()
        br.ue()
    br.skip(3)  # neutral_chroma_indication, field_seq, frame_field_info_present
    if br.flag():  # default_display_window_flag
        for _ in range(4):
            br.ue()
    if br.flag():  # vui_timing_info_present_flag
        br.skip(64)
        if br.flag():  # vui_poc_proportional_to_timing_flag
            br.ue()
        if br.flag():  # vui_hrd_parameters_present_flag
            _skip_hrd_parameters(br, max_sub_layers_minus1)
    if br.flag():  # bitstream_restriction_flag
        br.skip(3)
        for _ in range(5):
            br.ue()


def _skip_sps_3d_extension(br: BitReader) -> None:
    """sps_3d_extension() (§I.7.3.2.2.5)."""
    br.skip(2)  # iv_di_mc_enabled_flag[0], iv_mv_scal_enabled_flag[0]
    br.ue()  # log2_ivmc_sub_pb_size_minus3[0]
    br.skip(4)  # iv_res_pred, depth_ref, vsp_mc, dbbp
    br.skip(3)  # iv_di_mc[1], iv_mv_scal[1], tex_mc_enabled_flag[1]
    br.ue()  # log2_texmc_sub_pb_size_minus3[1]
    br.skip(5)  # intra_contour … skip_intra_enabled_flag[1]


def _scc_mv_resolution_idc(br: BitReader, chroma_format_idc: int,
                           bit_depth_luma: int, bit_depth_chroma: int) -> int:
    """sps_scc_extension() (§7.3.2.2.3): returns motion_vector_resolution_control_idc."""
    br.skip(1)  # sps_curr_pic_ref_enabled_flag
    if br.flag():  # palette_mode_enabled_flag
        br.ue()  # palette_max_size
        br.ue()  # delta_palette_max_predictor_size
        if br.flag():  # sps_palette_predictor_initializers_present_flag
            entries = _ranged(br.ue(), 127, "sps_num_palette_predictor_initializers_minus1") + 1
            br.skip(entries * bit_depth_luma)
            if chroma_format_idc != 0:
                br.skip(2 * entries * bit_depth_chroma)
    return br.u(2)


def parse_sps(nal: bytes | memoryview) -> HevcSps:
    """Parse a sequence parameter set NAL unit (2-byte header included, nuh_layer_id 0)."""
    if parse_nal_header(Codec.HEVC, nal).layer_id != 0:
        raise UnsupportedBitstream("H.265 SPS with nuh_layer_id > 0")
    br = _payload_reader(nal, NAL_SPS, lazy=False)
    br.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = _ranged(br.u(3), 6, "sps_max_sub_layers_minus1")
    br.skip(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(br, max_sub_layers_minus1)
    sps_id = _ranged(br.ue(), 15, "sps_seq_parameter_set_id")
    chroma_format_idc = _ranged(br.ue(), 3, "chroma_format_idc")
    separate_colour_plane = chroma_format_idc == 3 and br.flag()
    width = br.ue()
    height = br.ue()
    if width == 0 or height == 0:
        raise BitstreamError("H.265 picture size is zero")
    if br.flag():  # conformance_window_flag
        for _ in range(4):
            br.ue()
    bit_depth_luma = _ranged(br.ue(), 8, "bit_depth_luma_minus8") + 8
    bit_depth_chroma = _ranged(br.ue(), 8, "bit_depth_chroma_minus8") + 8
    log2_max_poc_lsb = _ranged(br.ue(), 12, "log2_max_pic_order_cnt_lsb_minus4") + 4
    ordering_all = br.flag()  # sps_sub_layer_ordering_info_present_flag
    for _ in range(max_sub_layers_minus1 + 1 if ordering_all else 1):
        br.ue()
        br.ue()
        br.ue()
    log2_min_cb = _ranged(br.ue(), 3, "log2_min_luma_coding_block_size_minus3") + 3
    log2_ctb = log2_min_cb + _ranged(br.ue(), 3, "log2_diff_max_min_luma_coding_block_size")
    if log2_ctb > 6:
        raise BitstreamError("H.265 CtbLog2SizeY out of range")
    for _ in range(4):  # transform block sizes, hierarchy depths
        br.ue()
    if br.flag() and br.flag():  # scaling_list_enabled, sps_scaling_list_data_present
        _skip_scaling_list_data(br)
    br.skip(1)  # amp_enabled_flag
    sao_enabled = br.flag()
    if br.flag():  # pcm_enabled_flag
        br.skip(8)
        br.ue()
        br.ue()
        br.skip(1)
    num_sets = _ranged(br.ue(), 64, "num_short_term_ref_pic_sets")
    sets: list[ShortTermRps] = []
    for i in range(num_sets):
        sets.append(_parse_st_rps(br, i, num_sets, sets))
    lt_present = br.flag()
    lt_used: list[bool] = []
    if lt_present:
        for _ in range(_ranged(br.ue(), 32, "num_long_term_ref_pics_sps")):
            br.skip(log2_max_poc_lsb)  # lt_ref_pic_poc_lsb_sps
            lt_used.append(br.flag())
    temporal_mvp = br.flag()
    br.skip(1)  # strong_intra_smoothing_enabled_flag
    if br.flag():  # vui_parameters_present_flag
        _skip_vui(br, max_sub_layers_minus1)
    mv_idc = 0
    if br.flag():  # sps_extension_present_flag
        range_ext, multilayer_ext, ext_3d, scc_ext = br.flag(), br.flag(), br.flag(), br.flag()
        br.skip(4)  # sps_extension_4bits
        if scc_ext:
            if range_ext:
                br.skip(9)  # sps_range_extension()
            if multilayer_ext:
                br.skip(1)  # inter_view_mv_vert_constraint_flag
            if ext_3d:
                _skip_sps_3d_extension(br)
            mv_idc = _scc_mv_resolution_idc(br, chroma_format_idc, bit_depth_luma,
                                            bit_depth_chroma)
    ctb = 1 << log2_ctb
    pic_size_in_ctbs = ((width + ctb - 1) >> log2_ctb) * ((height + ctb - 1) >> log2_ctb)
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    return HevcSps(sps_id=sps_id, chroma_array_type=chroma_array_type,
                   separate_colour_plane=separate_colour_plane, log2_max_poc_lsb=log2_max_poc_lsb,
                   pic_size_in_ctbs=pic_size_in_ctbs, st_rps=tuple(sets),
                   long_term_ref_pics_present=lt_present, used_by_curr_pic_lt_sps=tuple(lt_used),
                   temporal_mvp_enabled=temporal_mvp, sao_enabled=sao_enabled,
                   motion_vector_resolution_control_idc=mv_idc)


# -- PPS ------------------------------------------------------------------------


def parse_pps(nal: bytes | memoryview) -> HevcPps:
    """Parse a picture parameter set NAL unit (2-byte header included, nuh_layer_id 0)."""
    if parse_nal_header(Codec.HEVC, nal).layer_id != 0:
        raise UnsupportedBitstream("H.265 PPS with nuh_layer_id > 0")
    br = _payload_reader(nal, NAL_PPS, lazy=False)
    pps_id = _ranged(br.ue(), 63, "pps_pic_parameter_set_id")
    sps_id = _ranged(br.ue(), 15, "pps_seq_parameter_set_id")
    dependent = br.flag()
    output_flag = br.flag()
    extra_bits = br.u(3)
    br.skip(1)  # sign_data_hiding_enabled_flag
    cabac_init = br.flag()
    l0 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l0_default_active_minus1")
    l1 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l1_default_active_minus1")
    br.se()  # init_qp_minus26
    br.skip(1)  # constrained_intra_pred_flag
    transform_skip = br.flag()
    if br.flag():  # cu_qp_delta_enabled_flag
        br.ue()  # diff_cu_qp_delta_depth
    br.se()  # pps_cb_qp_offset
    br.se()  # pps_cr_qp_offset
    chroma_qp_offsets = br.flag()
    weighted_pred = br.flag()
    weighted_bipred = br.flag()
    br.skip(1)  # transquant_bypass_enabled_flag
    tiles = br.flag()
    wavefront = br.flag()
    if tiles:
        columns = br.ue()
        rows = br.ue()
        if not br.flag():  # uniform_spacing_flag
            for _ in range(_ranged(columns, 255, "num_tile_columns_minus1")):
                br.ue()
            for _ in range(_ranged(rows, 255, "num_tile_rows_minus1")):
                br.ue()
        br.skip(1)  # loop_filter_across_tiles_enabled_flag
    lf_across_slices = br.flag()
    override_enabled = False
    deblocking_disabled = False
    if br.flag():  # deblocking_filter_control_present_flag
        override_enabled = br.flag()
        deblocking_disabled = br.flag()
        if not deblocking_disabled:
            br.se()
            br.se()
    if br.flag():  # pps_scaling_list_data_present_flag
        _skip_scaling_list_data(br)
    lists_mod = br.flag()
    br.ue()  # log2_parallel_merge_level_minus2
    header_ext = br.flag()
    chroma_qp_list = curr_pic_ref = act_qp_offsets = False
    if br.flag():  # pps_extension_present_flag
        range_ext, multilayer_ext, ext_3d, scc_ext = br.flag(), br.flag(), br.flag(), br.flag()
        br.skip(4)  # pps_extension_4bits
        if range_ext:
            if transform_skip:
                br.ue()  # log2_max_transform_skip_block_size_minus2
            br.skip(1)  # cross_component_prediction_enabled_flag
            chroma_qp_list = br.flag()
            if scc_ext:  # walk the rest of pps_range_extension() only to reach SCC
                if chroma_qp_list:
                    br.ue()
                    for _ in range(_ranged(br.ue(), 5, "chroma_qp_offset_list_len_minus1") + 1):
                        br.se()
                        br.se()
                br.ue()  # log2_sao_offset_scale_luma
                br.ue()  # log2_sao_offset_scale_chroma
        if scc_ext:
            if multilayer_ext or ext_3d:
                raise UnsupportedBitstream("H.265 PPS SCC extension after multilayer/3D")
            curr_pic_ref = br.flag()
            if br.flag():  # residual_adaptive_colour_transform_enabled_flag
                act_qp_offsets = br.flag()
    return HevcPps(pps_id=pps_id, sps_id=sps_id, dependent_slice_segments_enabled=dependent,
                   output_flag_present=output_flag, num_extra_slice_header_bits=extra_bits,
                   cabac_init_present=cabac_init, num_ref_idx_l0_default_minus1=l0,
                   num_ref_idx_l1_default_minus1=l1,
                   slice_chroma_qp_offsets_present=chroma_qp_offsets,
                   weighted_pred=weighted_pred, weighted_bipred=weighted_bipred,
                   tiles_enabled=tiles, entropy_coding_sync_enabled=wavefront,
                   loop_filter_across_slices_enabled=lf_across_slices,
                   deblocking_filter_override_enabled=override_enabled,
                   deblocking_filter_disabled=deblocking_disabled,
                   lists_modification_present=lists_mod,
                   slice_segment_header_extension_present=header_ext,
                   chroma_qp_offset_list_enabled=chroma_qp_list, curr_pic_ref_enabled=curr_pic_ref,
                   slice_act_qp_offsets_present=act_qp_offsets)


# -- hvcC -----------------------------------------------------------------------


def parse_hvcc(payload: bytes | memoryview) -> HevcConfig:
    """Parse an ``hvcC`` box payload (HEVCDecoderConfigurationRecord).

    VPS/SPS/PPS arrays are read; other arrays (SEI, …) and parameter sets of
    layers other than 0 are ignored.
    """
    data = memoryview(payload)
    if len(data) < 23:
        raise BitstreamError("truncated hvcC")
    if data[0] != 1:
        raise BitstreamError("unsupported hvcC configurationVersion")
    length_size = check_length_size((data[21] & 0x3) + 1)
    vps: dict[int, bytes] = {}
    sps: dict[int, HevcSps] = {}
    pps: dict[int, HevcPps] = {}
    pos = 23
    for _ in range(data[22]):
        if pos + 3 > len(data):
            raise BitstreamError("truncated hvcC array")
        count = int.from_bytes(data[pos + 1:pos + 3], "big")
        nals, pos = read_config_nals(data, pos + 3, count, "hvcC")
        for nal in nals:
            update_parameter_sets(nal, vps, sps, pps)
    return HevcConfig(nal_length_size=length_size, vps=MappingProxyType(vps),
                      sps=MappingProxyType(sps), pps=MappingProxyType(pps))


def update_parameter_sets(nal: bytes | memoryview, vps: dict[int, bytes],
                          sps: dict[int, HevcSps], pps: dict[int, HevcPps]) -> None:
    """Record a VPS/SPS/PPS NAL unit of layer 0 in the maps; ignore anything else."""
    header = parse_nal_header(Codec.HEVC, nal)
    if header.layer_id != 0:
        return
    if header.type == NAL_VPS:
        vps[vps_id(nal)] = bytes(nal)
    elif header.type == NAL_SPS:
        parsed_sps = parse_sps(nal)
        sps[parsed_sps.sps_id] = parsed_sps
    elif header.type == NAL_PPS:
        parsed_pps = parse_pps(nal)
        pps[parsed_pps.pps_id] = parsed_pps


# -- slice_segment_header() -----------------------------------------------------


def _skip_pred_weight_table(br: BitReader, sps: HevcSps, is_b: bool, l0: int, l1: int) -> None:
    """pred_weight_table() (§7.3.6.3), single layer, no current-picture reference."""
    chroma = sps.chroma_array_type != 0
    _ranged(br.ue(), 7, "luma_log2_weight_denom")
    if chroma:
        br.se()  # delta_chroma_log2_weight_denom
    for count in ((l0 + 1, l1 + 1) if is_b else (l0 + 1,)):
        luma = [br.flag() for _ in range(count)]
        chroma_flags = [br.flag() for _ in range(count)] if chroma else [False] * count
        for i in range(count):
            if luma[i]:
                br.se()
                br.se()
            if chroma_flags[i]:
                for _ in range(4):
                    br.se()


def slice_header_size(nal: memoryview, sps_map: Mapping[int, HevcSps],
                      pps_map: Mapping[int, HevcPps]) -> int:
    """Escaped bytes of ``nal`` from its start through byte_alignment() of its slice header.

    ``nal`` is one VCL NAL unit (types 0-9, 16-21), 2-byte NAL header included.
    The byte_alignment() bits are checked, so a misparse cannot pass silently.
    """
    header = parse_nal_header(Codec.HEVC, nal)
    nal_type = header.type
    if not is_supported_vcl(nal_type):
        if nal_type <= 31:
            raise UnsupportedBitstream("reserved H.265 VCL NAL unit type")
        raise BitstreamError("not an H.265 VCL NAL unit")
    if header.layer_id != 0:
        raise UnsupportedBitstream("H.265 slices with nuh_layer_id > 0 are not supported")
    br = BitReader(nal[2:])
    first_in_pic = br.flag()
    if NAL_BLA_W_LP <= nal_type <= NAL_RSV_IRAP_23:
        br.skip(1)  # no_output_of_prior_pics_flag
    pps = pps_map.get(br.ue())
    if pps is None:
        raise MissingParameterSet("H.265 slice refers to an unknown PPS")
    sps = sps_map.get(pps.sps_id)
    if sps is None:
        raise MissingParameterSet("H.265 PPS refers to an unknown SPS")
    dependent = False
    if not first_in_pic:
        if pps.dependent_slice_segments_enabled:
            dependent = br.flag()
        br.skip(_ceil_log2(sps.pic_size_in_ctbs))  # slice_segment_address
    if not dependent:
        _skip_independent_fields(br, nal_type, sps, pps)
    if pps.tiles_enabled or pps.entropy_coding_sync_enabled:
        offsets = br.ue()  # num_entry_point_offsets
        if offsets > 0:
            offset_len = _ranged(br.ue(), 31, "offset_len_minus1") + 1
            br.skip(offsets * offset_len)  # entry_point_offset_minus1[]
    if pps.slice_segment_header_extension_present:
        br.skip(8 * _ranged(br.ue(), 256, "slice_segment_header_extension_length"))
    # byte_alignment(): one 1 bit, then 0 bits up to the byte boundary.
    if not br.flag():
        raise BitstreamError("H.265 slice header byte_alignment() mismatch")
    pad = -br.pos % 8
    if br.u(pad) != 0:
        raise BitstreamError("H.265 slice header byte_alignment() mismatch")
    return 2 + br.escaped_size()


def _skip_independent_fields(br: BitReader, nal_type: int, sps: HevcSps, pps: HevcPps) -> None:
    """The part of slice_segment_header() under ``if(!dependent_slice_segment_flag)``."""
    br.skip(pps.num_extra_slice_header_bits)  # slice_reserved_flag[]
    slice_type = _ranged(br.ue(), 2, "slice_type")
    if pps.output_flag_present:
        br.skip(1)  # pic_output_flag
    if sps.separate_colour_plane:
        br.skip(2)  # colour_plane_id
    temporal_mvp = False
    num_pic_total_curr = 0
    if nal_type not in (NAL_IDR_W_RADL, NAL_IDR_N_LP):
        br.skip(sps.log2_max_poc_lsb)  # slice_pic_order_cnt_lsb
        num_sets = len(sps.st_rps)
        if not br.flag():  # short_term_ref_pic_set_sps_flag
            rps = _parse_st_rps(br, num_sets, num_sets, sps.st_rps)
        else:
            if num_sets == 0:
                raise BitstreamError("H.265 slice uses an SPS RPS but the SPS has none")
            idx = br.u(_ceil_log2(num_sets)) if num_sets > 1 else 0
            if idx >= num_sets:
                raise BitstreamError("H.265 short_term_ref_pic_set_idx out of range")
            rps = sps.st_rps[idx]
        num_pic_total_curr = rps.num_used
        if sps.long_term_ref_pics_present:
            num_lt_sps_entries = len(sps.used_by_curr_pic_lt_sps)
            num_lt_sps = 0
            if num_lt_sps_entries > 0:
                num_lt_sps = _ranged(br.ue(), num_lt_sps_entries, "num_long_term_sps")
            num_lt_pics = _ranged(br.ue(), 32, "num_long_term_pics")
            lt_idx_bits = _ceil_log2(num_lt_sps_entries) if num_lt_sps_entries > 1 else 0
            for i in range(num_lt_sps + num_lt_pics):
                if i < num_lt_sps:
                    lt_idx = br.u(lt_idx_bits)
                    if lt_idx >= num_lt_sps_entries:
                        raise BitstreamError("H.265 lt_idx_sps out of range")
                    num_pic_total_curr += sps.used_by_curr_pic_lt_sps[lt_idx]
                else:
                    br.skip(sps.log2_max_poc_lsb)  # poc_lsb_lt
                    num_pic_total_curr += br.flag()  # used_by_curr_pic_lt_flag
                if br.flag():  # delta_poc_msb_present_flag
                    br.ue()  # delta_poc_msb_cycle_lt
        if sps.temporal_mvp_enabled:
            temporal_mvp = br.flag()
    if pps.curr_pic_ref_enabled:
        num_pic_total_curr += 1
    sao_luma = sao_chroma = False
    if sps.sao_enabled:
        sao_luma = br.flag()
        if sps.chroma_array_type != 0:
            sao_chroma = br.flag()
    if slice_type in (SLICE_P, SLICE_B):
        is_b = slice_type == SLICE_B
        l0, l1 = pps.num_ref_idx_l0_default_minus1, pps.num_ref_idx_l1_default_minus1
        if br.flag():  # num_ref_idx_active_override_flag
            l0 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l0_active_minus1")
            if is_b:
                l1 = _ranged(br.ue(), MAX_REF_IDX_MINUS1, "num_ref_idx_l1_active_minus1")
        if pps.lists_modification_present and num_pic_total_curr > 1:
            entry_bits = _ceil_log2(num_pic_total_curr)
            if br.flag():  # ref_pic_list_modification_flag_l0
                br.skip((l0 + 1) * entry_bits)
            if is_b and br.flag():  # ref_pic_list_modification_flag_l1
                br.skip((l1 + 1) * entry_bits)
        if is_b:
            br.skip(1)  # mvd_l1_zero_flag
        if pps.cabac_init_present:
            br.skip(1)  # cabac_init_flag
        if temporal_mvp:
            collocated_from_l0 = br.flag() if is_b else True
            if (l0 if collocated_from_l0 else l1) > 0:
                br.ue()  # collocated_ref_idx
        if (pps.weighted_pred and not is_b) or (pps.weighted_bipred and is_b):
            if pps.curr_pic_ref_enabled:
                raise UnsupportedBitstream("H.265 weighted prediction with current-picture ref")
            _skip_pred_weight_table(br, sps, is_b, l0, l1)
        _ranged(br.ue(), 4, "five_minus_max_num_merge_cand")
        if sps.motion_vector_resolution_control_idc == 2:
            br.skip(1)  # use_integer_mv_flag
    br.se()  # slice_qp_delta
    if pps.slice_chroma_qp_offsets_present:
        br.se()
        br.se()
    if pps.slice_act_qp_offsets_present:
        br.se()
        br.se()
        br.se()
    if pps.chroma_qp_offset_list_enabled:
        br.skip(1)  # cu_chroma_qp_offset_enabled_flag
    override = pps.deblocking_filter_override_enabled and br.flag()
    deblocking_disabled = pps.deblocking_filter_disabled  # inferred when not present (§7.4.7.1)
    if override:
        deblocking_disabled = br.flag()
        if not deblocking_disabled:
            br.se()  # slice_beta_offset_div2
            br.se()  # slice_tc_offset_div2
    if pps.loop_filter_across_slices_enabled and (sao_luma or sao_chroma
                                                  or not deblocking_disabled):
        br.skip(1)  # slice_loop_filter_across_slices_enabled_flag
