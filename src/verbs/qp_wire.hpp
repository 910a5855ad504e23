// SPDX-License-Identifier: Apache-2.0
// Constants and small helpers shared by the QP's control path, requester and responder.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>

#include "tbv/verbs_types.hpp"
#include "transport/wire.hpp"
#include "verbs/mr.hpp"

namespace tbv::verbs {

/// Payload per frame (wire::kSegment, 4044 bytes).
inline constexpr std::uint32_t kSegment = static_cast<std::uint32_t>(transport::wire::kSegment);
/// The receiver's reorder window in PSNs, and how far the sender lets its PSNs run ahead of the
/// oldest unacknowledged one (so nothing it sends falls outside the peer's window).
inline constexpr std::uint32_t kPsnWindow = 1024;
/// Frames the sender keeps unacknowledged at most.
inline constexpr std::uint32_t kSendWindow = 1024;
/// A READ is asked for in chunks of this many response frames (≈ 1 MiB), so one READ request
/// never spans more than a quarter of the receiver's window, and a large READ's chunks can be
/// answered on different rails.
inline constexpr std::uint32_t kReadChunkFrames = kPsnWindow / 4;
inline constexpr std::uint32_t kReadChunk = kReadChunkFrames * kSegment;
/// Records of accepted last frames (indexed by PSN mod kRecordRing; the window is no larger).
inline constexpr std::uint32_t kRecordRing = kPsnWindow;
/// Frames one QP may put on the wire per round of progress (requests, and READ responses):
/// QPs sharing a rail take turns instead of the first one filling every credit.
inline constexpr unsigned kPumpBudget = 64;
/// Largest UD datagram: the port's active MTU (one frame always holds it with its headers).
inline constexpr std::uint32_t kUdMtu = 2048;
/// IB: a UD receive buffer starts with 40 bytes reserved for the GRH; the payload follows.
inline constexpr std::uint32_t kGrhSize = 40;
// A datagram of the full MTU fits one frame with every header it can have (immediate, GRH).
static_assert(transport::wire::header_size(transport::wire::Opcode::ud_send_only_imm,
                                           transport::wire::kFlagGrh) +
                  kUdMtu <=
              transport::wire::kMaxFrame);
/// A UD datagram waits (parked in its port, the sender paused by credits) while its QP has no
/// receive WQE; once the QP has had none for this long straight, the datagram is dropped
/// (no_recv), so an application that stopped posting receives cannot hold a rail. Measured from
/// the first refusal since a receive was last taken, not from when this datagram arrived: frames
/// on another rail may take the freshly posted receives first.
inline constexpr std::chrono::milliseconds kUdStarveLimit{20};
/// SRQ WQEs one QP may hold for messages still arriving (by SSN mod this).
inline constexpr std::uint32_t kBindRing = 64;

constexpr WcOpcode wc_opcode(WrOpcode op) noexcept {
    switch (op) {
        case WrOpcode::rdma_write:
        case WrOpcode::rdma_write_with_imm: return WcOpcode::rdma_write;
        case WrOpcode::send:
        case WrOpcode::send_with_imm: return WcOpcode::send;
        case WrOpcode::rdma_read: return WcOpcode::rdma_read;
        case WrOpcode::atomic_cmp_and_swp: return WcOpcode::comp_swap;
        case WrOpcode::atomic_fetch_and_add: return WcOpcode::fetch_add;
    }
    return WcOpcode::send;
}

/// Frames a requester receives (the rest are requests a responder handles).
constexpr bool is_response(transport::wire::Opcode op) noexcept {
    using transport::wire::Opcode;
    switch (op) {
        case Opcode::read_response_first:
        case Opcode::read_response_middle:
        case Opcode::read_response_last:
        case Opcode::read_response_only:
        case Opcode::ack:
        case Opcode::atomic_ack:
        case Opcode::nak:
        case Opcode::rnr_nak: return true;
        default: return false;
    }
}

/// Copies `len` bytes starting `offset` bytes into a list of segments from `src` (scatter), or
/// into `dst` from them (gather). Segments are {host, length}; false if they are too short.
template <typename SegT>
bool scatter(const SegT* segs, std::uint32_t n, std::uint64_t offset, const std::byte* src,
             std::uint32_t len) noexcept {
    for (std::uint32_t i = 0; i < n && len != 0; ++i) {
        if (offset >= segs[i].length) {
            offset -= segs[i].length;
            continue;
        }
        const auto k =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(segs[i].length - offset, len));
        std::memcpy(segs[i].host + offset, src, k);
        src += k;
        len -= k;
        offset = 0;
    }
    return len == 0;
}

template <typename SegT>
bool gather(const SegT* segs, std::uint32_t n, std::uint64_t offset, std::byte* dst,
            std::uint32_t len) noexcept {
    for (std::uint32_t i = 0; i < n && len != 0; ++i) {
        if (offset >= segs[i].length) {
            offset -= segs[i].length;
            continue;
        }
        const auto k =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(segs[i].length - offset, len));
        std::memcpy(dst, segs[i].host + offset, k);
        dst += k;
        len -= k;
        offset = 0;
    }
    return len == 0;
}

}  // namespace tbv::verbs
