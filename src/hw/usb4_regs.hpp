// SPDX-License-Identifier: Apache-2.0
// USB4 control packets and router configuration spaces: hardware facts shared by the connection
// manager (src/usb4) and the router model (src/emu). One source of truth; every value cites
// ../shared/docs/hardware/nhi-reference.md ("ref §x") and Linux drivers/thunderbolt (tb_msgs.h,
// tb_regs.h, thunderbolt.h). Names keep Linux's/the spec's spelling so they can be grepped there.
//
// All dword values here are host-order numbers; on the wire control packets are big-endian dwords
// followed by a big-endian CRC-32C (ref §5.1, handled by nhi::ControlRing).
#pragma once

#include <array>
#include <cstdint>

#include "util/field.hpp"

namespace tbv::hw::usb4 {

using util::Bit;
using util::Field;

// ---- ref §5.2: packet types (PDF) -------------------------------------------------------------
enum class Pdf : std::uint8_t {
    read = 1,          ///< config read request; also the response to a write
    write = 2,         ///< config write request; also the response to a read (carries data)
    error = 3,         ///< error / notification from a router; the CM acks hot-plug with it
    notify_ack = 4,    ///< CM acks USB4 notifications
    event = 5,         ///< hot plug / unplug
    xdomain_req = 6,   ///< host-to-host request
    xdomain_resp = 7,  ///< host-to-host response (and all ThunderboltIP login traffic)
    override_ = 8,
    reset = 9,
    icm_event = 10,
    icm_cmd = 11,
    icm_resp = 12,
};

// ---- ref §5.3: common header (DW0, DW1) -------------------------------------------------------
using HDR_ROUTE_HI = Field<21, 0>;  ///< DW0: route string bits [53:32]
using HDR_RESPONSE = Bit<31>;       ///< DW0: set on everything a router sends to the CM
/// DW0 [31:22] of a read/write response must be exactly this (Linux check_header).
inline constexpr std::uint32_t kHdrResponseTag = 0x200;
using HDR_TAG = Field<31, 22>;
using HDR_RSVD = Field<30, 22>;  ///< DW0: must be zero
/// The 54 route-string bits a header carries (6 levels of 8 bits + 6 bits of level 7, ref §5.3).
inline constexpr std::uint64_t kRouteMask = (std::uint64_t{1} << 54) - 1;
/// Route bit 63: set on XDomain packets that arrive from a peer (ref §8.1).
inline constexpr std::uint64_t kRouteFromPeer = std::uint64_t{1} << 63;
/// Max route depth for USB4 (ref §5.3): 5 hops of 8 bits.
inline constexpr unsigned kMaxRouteDepth = 5;

constexpr std::uint64_t route_of(std::uint32_t dw0, std::uint32_t dw1) noexcept {
    return std::uint64_t{HDR_ROUTE_HI::get(dw0)} << 32 | dw1;
}
/// Header dwords for a route (CM → router: bit 31 clear).
constexpr std::array<std::uint32_t, 2> route_header(std::uint64_t route) noexcept {
    return {static_cast<std::uint32_t>((route >> 32) & HDR_ROUTE_HI::kMax),
            static_cast<std::uint32_t>(route)};
}

// ---- ref §5.4: read/write address dword (DW2) ------------------------------------------------
using ADDR_OFFSET = Field<12, 0>;   ///< dwords
using ADDR_LENGTH = Field<18, 13>;  ///< dwords
using ADDR_PORT = Field<24, 19>;    ///< adapter number (0 for router space)
using ADDR_SPACE = Field<26, 25>;
using ADDR_SEQ = Field<28, 27>;
using ADDR_RSVD = Field<31, 29>;  ///< must be zero

enum class Space : std::uint8_t { path = 0, adapter = 1, router = 2, counters = 3 };

/// Longest read/write Linux issues (TB_MAX_CONFIG_RW_LENGTH).
inline constexpr unsigned kMaxConfigDwords = 60;

// ---- ref §5.5: error / notification packet (DW2) -------------------------------------------
using ERR_CODE = Field<7, 0>;
using ERR_PORT = Field<13, 8>;
using ERR_RSVD = Field<29, 14>;  ///< must be zero
using ERR_PG = Field<31, 30>;    ///< plug-ack type: 2 plug, 3 unplug

enum class ErrorCode : std::uint8_t {
    port_not_connected = 0,
    link_error = 1,
    invalid_config_space = 2,
    no_such_port = 4,
    ack_plug_event = 7,
    loop = 8,
    hec_error_detected = 12,
    flow_control_error = 13,
    lock = 15,
    dp_bw = 32,
    rop_cmplt = 33,
    pop_cmplt = 34,
    pcie_wake = 35,
    dp_con_change = 36,
    dptx_discovery = 37,
    link_recovery = 38,
    asym_link = 39,
};
inline constexpr std::uint32_t kPgPlug = 2;
inline constexpr std::uint32_t kPgUnplug = 3;
/// Codes delivered to the CM's event path rather than to a waiting request (ref §5.5).
constexpr bool is_async_error(std::uint32_t code) noexcept {
    return code == 1 || code == 12 || code == 13 || (code >= 32 && code <= 39);
}

// ---- ref §5.6: hot-plug event (DW2) ----------------------------------------------------------
using EVT_PORT = Field<5, 0>;
using EVT_RSVD = Field<30, 6>;  ///< must be zero
using EVT_UNPLUG = Bit<31>;

// ---- ref §6.1: router space (ROUTER_CS_n = dword n) ------------------------------------------
inline constexpr std::uint32_t ROUTER_CS_0 = 0;
inline constexpr std::uint32_t ROUTER_CS_1 = 1;
inline constexpr std::uint32_t ROUTER_CS_2 = 2;
inline constexpr std::uint32_t ROUTER_CS_3 = 3;
inline constexpr std::uint32_t ROUTER_CS_4 = 4;
inline constexpr std::uint32_t ROUTER_CS_5 = 5;
inline constexpr std::uint32_t ROUTER_CS_6 = 6;
inline constexpr std::uint32_t ROUTER_CS_7 = 7;  ///< UID low
inline constexpr std::uint32_t ROUTER_CS_8 = 8;  ///< UID high
inline constexpr std::uint32_t ROUTER_CS_9 = 9;  ///< router-operation data (16 dwords)
inline constexpr std::uint32_t ROUTER_CS_25 = 25;
inline constexpr std::uint32_t ROUTER_CS_26 = 26;
inline constexpr unsigned kRouterSpaceDwords = 27;

using CS0_VENDOR = Field<15, 0>;
using CS0_DEVICE = Field<31, 16>;
using CS1_FIRST_CAP = Field<7, 0>;
using CS1_UPSTREAM = Field<13, 8>;
using CS1_MAX_ADAPTER = Field<19, 14>;
using CS1_DEPTH = Field<22, 20>;
using CS1_REVISION = Field<31, 24>;
using CS3_ROUTE_HI = Field<30, 0>;
using CS3_VALID = Bit<31>;
using CS4_NOTIFICATION_TIMEOUT = Field<7, 0>;  ///< ms
using CS4_CMUV = Field<15, 8>;                 ///< CM USB4 version: 0x10 v1, 0x20 v2
using CS4_USB4_VERSION = Field<31, 24>;        ///< major in [7:5]: 0x20 ⇒ v1
inline constexpr std::uint32_t kCmuvV1 = 0x10;
using CS5_CV = Bit<31>;
using CS6_CR = Bit<25>;
using CS26_OPCODE = Field<15, 0>;
using CS26_STATUS = Field<29, 24>;
using CS26_ONS = Bit<30>;
using CS26_OV = Bit<31>;
inline constexpr std::uint32_t kRouterOpBufferAllocQuery = 0x33;
/// Buffer-allocation index of baMaxHI (DMA credits, ref §6.1).
inline constexpr std::uint32_t kBaMaxHi = 5;

// ---- ref §6.1/6.2: capability headers ---------------------------------------------------------
using CAP_NEXT = Field<7, 0>;
using CAP_ID = Field<15, 8>;
enum class CapId : std::uint8_t {
    lane = 0x01,  ///< PHY (lane adapter) capability
    power = 0x02,
    tmu = 0x03,
    protocol = 0x04,
    vendor = 0x05,
    usb4_port = 0x06,
};

// ---- ref §6.2: adapter space header (ADP_CS_0..7) --------------------------------------------
inline constexpr std::uint32_t ADP_CS_0 = 0;
inline constexpr std::uint32_t ADP_CS_1 = 1;
inline constexpr std::uint32_t ADP_CS_2 = 2;
inline constexpr std::uint32_t ADP_CS_3 = 3;
inline constexpr std::uint32_t ADP_CS_4 = 4;
inline constexpr std::uint32_t ADP_CS_5 = 5;
inline constexpr unsigned kAdapterHeaderDwords = 8;

using ADP1_FIRST_CAP = Field<7, 0>;
using ADP1_MAX_COUNTERS = Field<18, 8>;
using ADP2_TYPE = Field<23, 0>;
using ADP2_VERSION = Field<31, 24>;
using ADP3_NUMBER = Field<25, 20>;
using ADP4_NFC_BUFFERS = Field<9, 0>;
using ADP4_TOTAL_BUFFERS = Field<29, 20>;
using ADP4_LCK = Bit<31>;
using ADP5_MAX_IN_HOP = Field<10, 0>;
using ADP5_MAX_OUT_HOP = Field<21, 11>;
using ADP5_LCA = Field<28, 22>;
using ADP5_DHP = Bit<31>;

enum class AdapterType : std::uint32_t {
    inactive = 0x000000,
    lane = 0x000001,
    nhi = 0x000002,
    dp_in = 0x0e0101,
    dp_out = 0x0e0102,
    pcie_down = 0x100101,
    pcie_up = 0x100102,
    usb3_down = 0x200101,
    usb3_up = 0x200102,
};

// ---- ref §6.3: lane adapter capability (offsets from the cap) -------------------------------
inline constexpr std::uint32_t LANE_ADP_CS_0 = 0;
inline constexpr std::uint32_t LANE_ADP_CS_1 = 1;
using LANE0_SUPPORTED_SPEEDS = Field<19, 16>;
using LANE0_SUPPORTED_WIDTHS = Field<25, 20>;
using LANE1_TARGET_SPEED = Field<3, 0>;
using LANE1_TARGET_WIDTH = Field<5, 4>;
using LANE1_LD = Bit<14>;  ///< lane disable
using LANE1_LB = Bit<15>;  ///< lane bonding
using LANE1_CURRENT_SPEED = Field<19, 16>;
using LANE1_CURRENT_WIDTH = Field<25, 20>;
using LANE1_STATE = Field<29, 26>;
inline constexpr std::uint32_t kSpeedGen2 = 0x8;  ///< 10 Gb/s per lane
inline constexpr std::uint32_t kSpeedGen3 = 0x4;  ///< 20 Gb/s per lane
inline constexpr std::uint32_t kSpeedGen4 = 0x2;  ///< 40 Gb/s per lane
inline constexpr std::uint32_t kTargetWidthSingle = 0x1;
inline constexpr std::uint32_t kTargetWidthDual = 0x3;

enum class LaneState : std::uint8_t {
    disabled = 0,
    training = 1,
    cl0 = 2,
    cl0s_tx = 3,
    cl0s_rx = 4,
    cl1 = 5,
    cl2 = 6,
    unplugged = 7,
};
/// States 2–6 count as link up (Linux tb_wait_for_port).
constexpr bool lane_up(std::uint32_t state) noexcept {
    return state >= 2 && state <= 6;
}

// ---- ref §6.4: USB4 port capability (offsets from the cap) ---------------------------------
inline constexpr std::uint32_t PORT_CS_18 = 0x12;
inline constexpr std::uint32_t PORT_CS_19 = 0x13;
using PORT18_BE = Bit<8>;
using PORT18_TCM = Bit<9>;
using PORT19_DPR = Bit<0>;  ///< downstream port reset
using PORT19_PC = Bit<3>;   ///< port configured
using PORT19_PID = Bit<4>;  ///< port is inter-domain (XDomain)

// ---- ref §6.5: path (HOPS) entry for HopID h at dword 2·h of the ingress adapter --------------
using PATH0_OUT_HOP = Field<10, 0>;
using PATH0_OUT_ADAPTER = Field<16, 11>;
using PATH0_CREDITS = Field<23, 17>;
using PATH0_PMPS = Bit<24>;
using PATH0_VALID = Bit<31>;
using PATH1_WEIGHT = Field<3, 0>;
using PATH1_PRIORITY = Field<10, 8>;
using PATH1_DROP = Bit<11>;
using PATH1_COUNTER = Field<22, 12>;
using PATH1_COUNTER_EN = Bit<23>;
using PATH1_IFC = Bit<24>;
using PATH1_EFC = Bit<25>;
using PATH1_ISE = Bit<26>;
using PATH1_ESE = Bit<27>;
using PATH1_PENDING = Bit<28>;
inline constexpr unsigned kPathEntryDwords = 2;
/// HopIDs 0–7 are reserved on lane and protocol adapters (TB_PATH_MIN_HOPID, ref §6.5).
inline constexpr unsigned kMinLaneHopId = 8;
/// DMA path credits default (TB_DMA_CREDITS, ref §9.2).
inline constexpr unsigned kDmaCredits = 14;

// ---- ref §8: XDomain ------------------------------------------------------------------------
using XD_LENGTH = Field<5, 0>;  ///< DW2: dwords after DW2
using XD_SEQ = Field<28, 27>;
/// DW2 bits outside length and sequence; zero in everything Linux sends (tb_xdp_fill_header).
inline constexpr std::uint32_t kXdDw2Rsvd = ~(XD_LENGTH::kMask | XD_SEQ::kMask);
inline constexpr unsigned kXdHeaderDwords = 8;  ///< route(2), len/seq, protocol UUID(4), type
// ref §8.2 payload fields (dword values after the 8-dword header).
using XD_PROP_OFFSET = Field<15, 0>;     ///< PROPERTIES_REQUEST/RESPONSE: offset in dwords
using XD_PROP_REQ_RSVD = Field<31, 16>;  ///< PROPERTIES_REQUEST: must be zero
using XD_PROP_TOTAL = Field<31, 16>;     ///< PROPERTIES_RESPONSE: whole block length in dwords
using XD_LS_SLW = Field<7, 0>;           ///< LINK_STATE_STATUS_RESPONSE: supported widths
using XD_LS_TLW = Field<15, 8>;          ///<   target width
using XD_LS_SLS = Field<23, 16>;         ///<   supported speeds
using XD_LS_TLS = Field<31, 24>;         ///<   target speed
using XD_LSC_TLW = Field<7, 0>;          ///< LINK_STATE_CHANGE_REQUEST: target width
using XD_LSC_TLS = Field<15, 8>;         ///<   target speed
using XD_LSC_RSVD = Field<31, 16>;       ///<   must be zero

/// A UUID as the four host dwords that go on the wire (ref §8.5: bytes little-endian per dword).
using UuidDwords = std::array<std::uint32_t, 4>;
/// XDomain discovery protocol b638d70e-42ff-40bb-97c2-90e2c0b2ff07 (ref §8.5).
inline constexpr UuidDwords kXdomainDiscoveryUuid{0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0};

enum class XdType : std::uint32_t {
    uuid_request_old = 1,
    uuid_response = 2,
    properties_request = 3,
    properties_response = 4,
    properties_changed_request = 5,
    properties_changed_response = 6,
    error_response = 7,
    uuid_request = 12,
    link_state_status_request = 15,
    link_state_status_response = 16,
    link_state_change_request = 17,
    link_state_change_response = 18,
};
enum class XdError : std::uint32_t {
    success = 0,
    unknown_packet = 1,
    unknown_domain = 2,
    not_supported = 3,
    not_ready = 4,
};
/// Max data dwords in one PROPERTIES_RESPONSE, and the largest block Linux accepts (ref §8.2).
inline constexpr unsigned kXdMaxPropertyChunk = 45;
inline constexpr unsigned kXdMaxPropertyBlock = 500;

// ---- ref §8.3: property block --------------------------------------------------------------
inline constexpr std::uint32_t kPropertyRootMagic = 0x55584401;  ///< "UXD\x01"
enum class PropertyType : std::uint8_t {
    directory = 0x44,  ///< 'D'
    data = 0x64,       ///< 'd'
    text = 0x74,       ///< 't'
    value = 0x76,      ///< 'v'
};
using PROP_LENGTH = Field<15, 0>;
using PROP_RSVD = Field<23, 16>;  ///< must be zero
using PROP_TYPE = Field<31, 24>;
inline constexpr unsigned kPropertyEntryDwords = 4;

static_assert(ADDR_SPACE::make(static_cast<std::uint32_t>(Space::router)) == 0x04000000u);
// Appendix A: READ router space offset 0 len 5 → address dword 0x0400a000.
static_assert((ADDR_LENGTH::make(5) | ADDR_SPACE::make(2)) == 0x0400a000u);
// Appendix A: plug ack adapter 2, PG 2 → 0x80000207.
static_assert((ERR_PG::make(kPgPlug) | ERR_PORT::make(2) | ERR_CODE::make(7)) == 0x80000207u);

}  // namespace tbv::hw::usb4
