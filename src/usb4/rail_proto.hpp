// SPDX-License-Identifier: Apache-2.0
// The rail handshake: our own XDomain protocol (PDF 6 requests, PDF 7 responses, ref §8.1 framing)
// by which two tbverbs hosts agree, per cable, on the rails that will carry RDMA traffic. A rail is
// one TX ring + one RX ring on each side and a DMA path each way (dma_path.hpp). Each host picks
// the input HopIDs it wants to receive on (from its own lane adapter) and the number of RX
// descriptors it keeps posted (the software credits the transport starts with); the peer
// transmits with those HopIDs. Both sides offer what their controller can give; the responder
// accepts at most what it can match. The peer is identified by its host UUID, so rails of several
// cables to the same peer can be pooled by the transport.
//
// This file only encodes and validates the payload that follows the XDomain header's type dword;
// the connection manager adds the header and runs the exchange. Layout (host-order dwords):
//   OFFER / ACCEPT:  initiator UUID (4) | target UUID (4) | session | link | count | count × rail
//   rail:            [15:0] index, [31:16] flags (0) | rx_hop | rx_credits
//   REJECT:          initiator UUID (4) | target UUID (4) | session | reason
//   TEARDOWN / ACK:  initiator UUID (4) | target UUID (4) | session
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"

namespace tbv::usb4 {

/// tbverbs rail protocol UUID 2e6c1b4f-a793-584d-b0e1-5c2a8d7f3e91, as wire dwords (ref §8.5
/// byte order: each dword is the little-endian load of four UUID bytes).
inline constexpr hw::usb4::UuidDwords kRailProtocolUuid{0x4f1b6c2e, 0x4d5893a7, 0x2a5ce1b0,
                                                        0x913e7f8d};

enum class RailMsg : std::uint32_t {
    offer = 1,
    accept = 2,
    reject = 3,
    teardown = 4,
    teardown_ack = 5,
};

enum class RailReject : std::uint32_t {
    no_rings = 1,      ///< responder has no free ring pair
    not_ready = 2,     ///< responder has not finished discovery (retry later)
    unknown_peer = 3,  ///< target UUID is not ours
};

/// Most rails one cable carries: what fits one control packet (55 payload dwords after the
/// XDomain header: 11 fixed + 3 per rail). USB4 NHIs have a few dozen rings at most, and
/// DESIGN.md's AMD controllers two data rings each.
inline constexpr unsigned kMaxRailsPerLink = 14;

struct RailSpec {
    std::uint16_t index = 0;
    std::uint32_t rx_hop = 0;      ///< HopID the sender of this message receives on
    std::uint32_t rx_credits = 0;  ///< RX descriptors it keeps posted on that rail
};

struct RailMessage {
    RailMsg type = RailMsg::offer;
    hw::usb4::UuidDwords initiator{};
    hw::usb4::UuidDwords target{};
    std::uint32_t session = 0;
    std::uint32_t link = 0;  ///< sender's lane adapter number (diagnostics only)
    std::uint32_t reason = 0;
    std::vector<RailSpec> rails;
};

/// Payload dwords (after the XDomain type dword). Errc::malformed if the message cannot be valid
/// (too many rails, HopIDs outside [8, 2047], zero credits).
Result<std::vector<std::uint32_t>> encode_rail_message(const RailMessage& m);
/// Strict parse of a received payload: exact length for the type, counts and fields in range.
Result<RailMessage> decode_rail_message(RailMsg type, std::span<const std::uint32_t> payload);

}  // namespace tbv::usb4
