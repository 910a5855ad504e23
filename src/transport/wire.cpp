// SPDX-License-Identifier: Apache-2.0
// Frame encoder and strict decoder (layout: docs/wire-protocol.md).
#include "transport/wire.hpp"

#include <cstring>

#include "transport/psn.hpp"
#include "util/endian.hpp"

namespace tbv::transport::wire {

namespace {

// Base-header byte offsets (docs/wire-protocol.md, "Base header").
constexpr std::size_t kOffVersionFlags = 0;  // version in bits 7:4, flags in bits 3:0
constexpr std::size_t kOffOpcode = 1;
constexpr std::size_t kOffRailSeq = 2;
constexpr std::size_t kOffDestQpn = 4;
constexpr std::size_t kOffSrcQpn = 8;
constexpr std::size_t kOffPsn = 12;
constexpr std::size_t kOffMsgPsn = 16;
constexpr std::size_t kOffMsgOffset = 20;
constexpr std::size_t kOffMsgLen = 24;
constexpr std::size_t kOffPayloadLen = 28;
constexpr std::size_t kOffCredit = 30;
static_assert(kOffCredit + 2 == kBaseHeader);

// AETH word: syndrome in bits 31:24, MSN in bits 23:0.
constexpr unsigned kAethSyndromeShift = 24;

// GRH extension: SGID (16 bytes as they are), then a word with the flow label in bits 19:0 and
// the traffic class in bits 27:20 (bits 31:28 reserved), then a word with the hop limit in bits
// 7:0 (bits 31:8 reserved).
constexpr std::size_t kGrhOffSgid = 0;
constexpr std::size_t kGrhOffClassFlow = 16;
constexpr std::size_t kGrhOffHopLimit = 20;
constexpr unsigned kTrafficClassShift = 20;
constexpr std::uint32_t kClassFlowReserved = 0xF000'0000u;
constexpr std::uint32_t kHopLimitReserved = 0xFFFF'FF00u;
static_assert(kGrhOffHopLimit + 4 == kGrhExtSize);

std::uint16_t load16(const std::byte* p) noexcept {
    return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) |
                                      (std::to_integer<unsigned>(p[1]) << 8));
}
std::uint32_t load32(const std::byte* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return util::le32_to_cpu(v);
}
std::uint64_t load64(const std::byte* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return util::le64_to_cpu(v);
}
void store16(std::byte* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::byte>(v & 0xFFu);
    p[1] = static_cast<std::byte>(v >> 8);
}
void store32(std::byte* p, std::uint32_t v) noexcept {
    v = util::cpu_to_le32(v);
    std::memcpy(p, &v, sizeof v);
}
void store64(std::byte* p, std::uint64_t v) noexcept {
    v = util::cpu_to_le64(v);
    std::memcpy(p, &v, sizeof v);
}

Status check_position(const Header& h, Position pos) noexcept {
    const std::uint64_t end = std::uint64_t{h.msg_offset} + h.payload_len;
    if (h.msg_len > kMaxMessage || end > h.msg_len) {
        return Status::bad_offset;
    }
    const bool starts = h.msg_psn == h.psn;
    switch (pos) {
        case Position::first:
            if (h.msg_offset != 0 || h.payload_len == 0 || end >= h.msg_len || !starts) {
                return Status::bad_offset;
            }
            break;
        case Position::middle:
            if (h.msg_offset == 0 || h.payload_len == 0 || end >= h.msg_len || starts) {
                return Status::bad_offset;
            }
            break;
        case Position::last:
            if (h.msg_offset == 0 || h.payload_len == 0 || end != h.msg_len || starts) {
                return Status::bad_offset;
            }
            break;
        case Position::only:
            if (h.msg_offset != 0 || end != h.msg_len || !starts) {
                return Status::bad_offset;
            }
            break;
        case Position::none: return Status::bad_offset;
    }
    // A message spans fewer than 2^23 PSNs (2 GiB / 4048 B ≈ 530 k frames).
    if (psn::distance(h.msg_psn, h.psn) >= psn::kHalf) {
        return Status::bad_offset;
    }
    return Status::ok;
}

}  // namespace

const char* to_string(Status s) noexcept {
    switch (s) {
        case Status::ok: return "ok";
        case Status::too_short: return "too short";
        case Status::too_long: return "too long";
        case Status::bad_version: return "bad version";
        case Status::bad_opcode: return "unknown opcode";
        case Status::reserved_bits: return "reserved bits set";
        case Status::bad_length: return "inconsistent length";
        case Status::bad_offset: return "inconsistent message offset/length/PSN";
        case Status::bad_field: return "field out of range";
    }
    return "?";
}

Status validate(const Header& h) noexcept {
    const auto op = static_cast<std::uint8_t>(h.opcode);
    const OpcodeInfo info = opcode_info(op);
    if (!info.known) {
        return Status::bad_opcode;
    }
    if ((h.flags & ~kFlagsKnown) != 0) {
        return Status::reserved_bits;
    }
    if ((h.flags & kFlagSolicited) != 0 && !info.solicited_ok) {
        return Status::bad_field;
    }
    // ACK_REQUEST: on a sequenced frame, "ACK this now"; on CREDIT, "send me your credit" (a
    // probe from a port out of data credit, rail_io.hpp kCreditProbeFirst).
    if ((h.flags & kFlagAckRequest) != 0 && !info.sequenced && h.opcode != Opcode::credit) {
        return Status::bad_field;
    }
    if ((h.flags & kFlagGrh) != 0 ? !info.deth || h.grh.flow_label > kFlowLabelMask
                                  : h.grh != GrhExt{}) {
        return Status::bad_field;  // a GRH only on a UD datagram; its fields only with the flag
    }
    if (h.dest_qpn > kQpnMask || h.src_qpn > kQpnMask || !psn::valid(h.psn) ||
        !psn::valid(h.msg_psn) || h.aeth.msn > psn::kMask || h.ssn > psn::kMask ||
        (h.ssn != 0 && !info.seth)) {
        return Status::bad_field;
    }
    const std::size_t hsize = header_size(op, h.flags);
    if (h.payload_len > kMaxFrame - hsize) {
        return Status::too_long;
    }
    if (info.data) {
        if (info.deth) {
            // UD: one frame per datagram, no PSN stream.
            if (h.psn != 0 || h.msg_psn != 0) {
                return Status::bad_field;
            }
        }
        return check_position(h, info.position);
    }
    if (h.payload_len != 0) {
        return Status::bad_length;
    }
    if (h.msg_offset != 0) {
        return Status::bad_offset;
    }
    switch (h.opcode) {
        case Opcode::read_request:
            if (h.msg_psn != h.psn || h.msg_len > kMaxMessage) {
                return Status::bad_offset;
            }
            break;
        case Opcode::cmp_swap:
        case Opcode::fetch_add:
            if (h.msg_psn != h.psn || h.msg_len != 8) {
                return Status::bad_offset;
            }
            if (h.opcode == Opcode::fetch_add && h.atomic.compare != 0) {
                return Status::reserved_bits;
            }
            break;
        case Opcode::ack:
        case Opcode::atomic_ack:
        case Opcode::nak:
        case Opcode::rnr_nak:
        case Opcode::credit:
            if (h.msg_psn != 0 || h.msg_len != 0) {
                return Status::bad_offset;
            }
            break;
        default: break;
    }
    switch (h.opcode) {
        case Opcode::ack:
        case Opcode::atomic_ack:
            if (h.aeth.syndrome != 0) {
                return Status::bad_field;
            }
            break;
        case Opcode::nak:
            if (h.aeth.syndrome > kNakCodeMax) {
                return Status::bad_field;
            }
            break;
        case Opcode::rnr_nak:
            if (h.aeth.syndrome > kRnrTimerMax) {
                return Status::bad_field;
            }
            break;
        case Opcode::credit:
            // Rail-level: names no QP and no PSN.
            if (h.dest_qpn != 0 || h.src_qpn != 0 || h.psn != 0) {
                return Status::bad_field;
            }
            break;
        default: break;
    }
    return Status::ok;
}

std::size_t encode_header(const Header& h, std::span<std::byte> out) noexcept {
    if (validate(h) != Status::ok) {
        return 0;
    }
    const auto op = static_cast<std::uint8_t>(h.opcode);
    const OpcodeInfo info = opcode_info(op);
    const std::size_t hsize = header_size(op, h.flags);
    if (out.size() < hsize) {
        return 0;
    }
    std::byte* p = out.data();
    p[kOffVersionFlags] = static_cast<std::byte>((kVersion << 4) | h.flags);
    p[kOffOpcode] = static_cast<std::byte>(op);
    store16(p + kOffRailSeq, h.rail_seq);
    store32(p + kOffDestQpn, h.dest_qpn);
    store32(p + kOffSrcQpn, h.src_qpn);
    store32(p + kOffPsn, h.psn);
    store32(p + kOffMsgPsn, h.msg_psn);
    store32(p + kOffMsgOffset, h.msg_offset);
    store32(p + kOffMsgLen, h.msg_len);
    store16(p + kOffPayloadLen, h.payload_len);
    store16(p + kOffCredit, h.credit);
    std::byte* e = p + kBaseHeader;
    if (info.reth) {
        store64(e, h.reth.va);
        store32(e + 8, h.reth.rkey);
        e += kRethSize;
    }
    if (info.atomic_eth) {
        store64(e, h.atomic.va);
        store64(e + 8, h.atomic.swap_add);
        store64(e + 16, h.atomic.compare);
        store32(e + 24, h.atomic.rkey);
        e += kAtomicEthSize;
    }
    if (info.deth) {
        store32(e, h.qkey);
        e += kDethSize;
    }
    if ((h.flags & kFlagGrh) != 0) {
        std::memcpy(e + kGrhOffSgid, h.grh.sgid.data(), h.grh.sgid.size());
        store32(e + kGrhOffClassFlow,
                (std::uint32_t{h.grh.traffic_class} << kTrafficClassShift) | h.grh.flow_label);
        store32(e + kGrhOffHopLimit, h.grh.hop_limit);
        e += kGrhExtSize;
    }
    if (info.seth) {
        store32(e, h.ssn);
        e += kSethSize;
    }
    if (info.imm) {
        store32(e, h.imm);
        e += kImmSize;
    }
    if (info.aeth) {
        store32(e, (std::uint32_t{h.aeth.syndrome} << kAethSyndromeShift) | h.aeth.msn);
        e += kAethSize;
    }
    if (info.atomic_ack) {
        store64(e, h.atomic_orig);
        e += kAtomicAckSize;
    }
    return static_cast<std::size_t>(e - p);
}

std::size_t encode_frame(const Header& h, std::span<const std::byte> payload,
                         std::span<std::byte> out) noexcept {
    if (payload.size() != h.payload_len) {
        return 0;
    }
    const std::size_t hsize = encode_header(h, out);
    if (hsize == 0 || out.size() - hsize < payload.size()) {
        return 0;
    }
    if (!payload.empty()) {
        std::memcpy(out.data() + hsize, payload.data(), payload.size());
    }
    return hsize + payload.size();
}

Status decode(std::span<const std::byte> frame, Frame& out) noexcept {
    if (frame.size() < kBaseHeader) {
        return Status::too_short;
    }
    if (frame.size() > kMaxFrame) {
        return Status::too_long;
    }
    const std::byte* p = frame.data();
    const auto vf = std::to_integer<std::uint8_t>(p[kOffVersionFlags]);
    if ((vf >> 4) != kVersion) {
        return Status::bad_version;
    }
    const auto op = std::to_integer<std::uint8_t>(p[kOffOpcode]);
    const OpcodeInfo info = opcode_info(op);
    if (!info.known) {
        return Status::bad_opcode;
    }
    const auto flags = static_cast<std::uint8_t>(vf & 0x0Fu);
    const std::size_t hsize = header_size(op, flags);
    if (frame.size() < hsize) {
        return Status::too_short;
    }
    Header h{};
    h.opcode = static_cast<Opcode>(op);
    h.flags = flags;
    h.rail_seq = load16(p + kOffRailSeq);
    h.dest_qpn = load32(p + kOffDestQpn);
    h.src_qpn = load32(p + kOffSrcQpn);
    h.psn = load32(p + kOffPsn);
    h.msg_psn = load32(p + kOffMsgPsn);
    h.msg_offset = load32(p + kOffMsgOffset);
    h.msg_len = load32(p + kOffMsgLen);
    h.payload_len = load16(p + kOffPayloadLen);
    h.credit = load16(p + kOffCredit);
    // The top byte of every 24-bit word is reserved.
    if (((h.dest_qpn | h.src_qpn | h.psn | h.msg_psn) & ~kQpnMask) != 0) {
        return Status::reserved_bits;
    }
    const std::byte* e = p + kBaseHeader;
    if (info.reth) {
        h.reth.va = load64(e);
        h.reth.rkey = load32(e + 8);
        e += kRethSize;
    }
    if (info.atomic_eth) {
        h.atomic.va = load64(e);
        h.atomic.swap_add = load64(e + 8);
        h.atomic.compare = load64(e + 16);
        h.atomic.rkey = load32(e + 24);
        e += kAtomicEthSize;
    }
    if (info.deth) {
        h.qkey = load32(e);
        e += kDethSize;
        if ((flags & kFlagGrh) != 0) {
            std::memcpy(h.grh.sgid.data(), e + kGrhOffSgid, h.grh.sgid.size());
            const std::uint32_t cf = load32(e + kGrhOffClassFlow);
            const std::uint32_t hl = load32(e + kGrhOffHopLimit);
            if ((cf & kClassFlowReserved) != 0 || (hl & kHopLimitReserved) != 0) {
                return Status::reserved_bits;
            }
            h.grh.flow_label = cf & kFlowLabelMask;
            h.grh.traffic_class = static_cast<std::uint8_t>(cf >> kTrafficClassShift);
            h.grh.hop_limit = static_cast<std::uint8_t>(hl);
            e += kGrhExtSize;
        }
    }
    if (info.seth) {
        h.ssn = load32(e);
        if ((h.ssn & ~kQpnMask) != 0) {
            return Status::reserved_bits;
        }
        e += kSethSize;
    }
    if (info.imm) {
        h.imm = load32(e);
        e += kImmSize;
    }
    if (info.aeth) {
        const std::uint32_t w = load32(e);
        h.aeth.syndrome = static_cast<std::uint8_t>(w >> kAethSyndromeShift);
        h.aeth.msn = w & psn::kMask;
        e += kAethSize;
    }
    if (info.atomic_ack) {
        h.atomic_orig = load64(e);
        e += kAtomicAckSize;
    }
    if (frame.size() != hsize + h.payload_len) {
        return Status::bad_length;
    }
    const Status s = validate(h);
    if (s != Status::ok) {
        return s;
    }
    out.header = h;
    out.payload = frame.subspan(hsize, h.payload_len);
    return Status::ok;
}

}  // namespace tbv::transport::wire
