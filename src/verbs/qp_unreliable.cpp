// SPDX-License-Identifier: Apache-2.0
// UC and UD: no acknowledgements, no retransmission (IB semantics).
//
// UC: a connected QP sends SEND/WRITE frames with consecutive PSNs on one port of its peer (one
// port, so frames arrive in order: a gap then really is a loss), and a WQE completes once its last
// frame is handed to the port. The receiver drops any message with a gap (the message in progress
// when a PSN is missing, and frames until the next FIRST/ONLY); the receive WQE it was filling
// stays for the next message. Remote access is checked as for RC; a refused UC write is dropped
// and counted (UC has no NAK).
//
// UD: one frame per datagram (≤ kUdMtu), to the LID of an address handle; the receiver accepts
// from anyone whose datagram carries its Q_Key and places the payload after the 40 bytes IB
// reserves for a GRH. A datagram sent through a global address handle carries the GRH fields the
// receiver cannot know (wire::kFlagGrh: source GID, traffic class, flow label, hop limit); the
// receiver writes the GRH into those 40 bytes and flags the completion (IBV_WC_GRH). Without
// one the 40 bytes are left as they are. No receive WQE posted: the datagram waits (parked in
// its port) and is dropped and counted only if none comes (kUdStarveLimit).
#include <algorithm>
#include <array>
#include <cstring>

#include "verbs/qp.hpp"
#include "verbs/qp_wire.hpp"
#include "verbs/srq.hpp"

namespace tbv::verbs {

namespace wire = transport::wire;
namespace psn = transport::psn;

namespace {

// The headers a GRH's lengths count behind it, as on an IB or RoCE wire (IBA chapter 9): BTH,
// the 8-byte IB DETH (Q_Key + source QPN; ours keeps the QPN in the base header), ImmDt, the
// payload padded to 4 bytes, ICRC; RoCE v2 adds UDP (IBA annex A17) and, for IPv4, the IPv4
// header itself.
constexpr std::uint32_t kBthBytes = 12;
constexpr std::uint32_t kIbDethBytes = 8;
constexpr std::uint32_t kImmDtBytes = 4;
constexpr std::uint32_t kIcrcBytes = 4;
constexpr std::uint32_t kUdpBytes = 8;
constexpr std::uint32_t kIpv4Bytes = 20;
constexpr std::uint8_t kNxtHdrIba = 0x1B;  // IBA 8.3: an IBA transport header follows
constexpr std::uint8_t kIpProtoUdp = 17;   // RoCE v2: UDP, destination port 4791
constexpr std::size_t kIpv4Offset = 20;    // RoCE v2 over IPv4: bytes 20..39 of the GRH area

void put_be16(std::byte* p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::byte>(v >> 8);
    p[1] = static_cast<std::byte>(v);
}

void put_be32(std::byte* p, std::uint32_t v) noexcept {
    put_be16(p, v >> 16);
    put_be16(p + 2, v);
}

/// ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), the form RoCE v2 gives IPv4 addresses.
bool ipv4_mapped(const std::array<std::uint8_t, 16>& g) noexcept {
    return std::all_of(g.begin(), g.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
           g[10] == 0xff && g[11] == 0xff;
}

/// The 40 bytes an HCA writes at the start of a UD receive buffer for a datagram that came with
/// a GRH. `dgid` is the receiving port's GID: the sender's DGID resolved to this port, which
/// has only that one.
/// - IB (and RoCE v1) ports, IBA 8.3: IPVer 6, TClass, FlowLabel, PayLen (the bytes after the
///   GRH up to and including the ICRC), NxtHdr 0x1B, HopLmt, SGID, DGID, big-endian.
/// - RoCE v2 ports (gid_roce_v2) when both GIDs are IPv4-mapped: the packet was IPv4, and RoCE v2
///   hardware puts its 20-byte IPv4 header in bytes 20..39 and nothing defined in 0..19 (rxe
///   zeroes them; so do we). libibverbs' ibv_init_ah_from_wc finds the IPv4 header there by the
///   version nibbles (byte 0 is not 6, byte 20 is 4).
/// - RoCE v2 ports with another SGID (a sender in IB mode): the IPv6 header, NxtHdr UDP.
std::array<std::byte, kGrhSize> make_grh(const wire::Header& h, const Gid& dgid,
                                         bool roce_v2) noexcept {
    const bool imm = h.opcode == wire::Opcode::ud_send_only_imm;
    const std::uint32_t ib_len =
        ((kBthBytes + kIbDethBytes + (imm ? kImmDtBytes : 0) + h.payload_len + 3u) & ~3u) +
        kIcrcBytes;
    std::array<std::byte, kGrhSize> g{};
    if (roce_v2 && ipv4_mapped(h.grh.sgid) && ipv4_mapped(dgid)) {
        std::byte* ip = g.data() + kIpv4Offset;
        ip[0] = std::byte{0x45};                              // version 4, IHL 5 words
        ip[1] = static_cast<std::byte>(h.grh.traffic_class);  // TOS
        put_be16(ip + 2, kIpv4Bytes + kUdpBytes + ib_len);    // total length
        put_be16(ip + 6, 0x4000);                             // identification 0, DF
        ip[8] = static_cast<std::byte>(h.grh.hop_limit);      // TTL
        ip[9] = static_cast<std::byte>(kIpProtoUdp);
        std::memcpy(ip + 12, h.grh.sgid.data() + 12, 4);  // source address
        std::memcpy(ip + 16, dgid.data() + 12, 4);        // destination address
        std::uint32_t sum = 0;                            // RFC 791 header checksum
        for (std::size_t i = 0; i < kIpv4Bytes; i += 2) {
            sum += (std::to_integer<std::uint32_t>(ip[i]) << 8) |
                   std::to_integer<std::uint32_t>(ip[i + 1]);
        }
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        put_be16(ip + 10, ~sum & 0xFFFF);
        return g;
    }
    put_be32(g.data(), (6u << 28) | (std::uint32_t{h.grh.traffic_class} << 20) |
                           (h.grh.flow_label & wire::kFlowLabelMask));
    put_be16(g.data() + 4, roce_v2 ? kUdpBytes + ib_len : ib_len);
    g[6] = static_cast<std::byte>(roce_v2 ? kIpProtoUdp : kNxtHdrIba);
    g[7] = static_cast<std::byte>(h.grh.hop_limit);
    std::memcpy(g.data() + 8, h.grh.sgid.data(), h.grh.sgid.size());
    std::memcpy(g.data() + 24, dgid.data(), dgid.size());
    return g;
}

}  // namespace

transport::Port* Qp::uc_port() noexcept {
    if (peer_ == nullptr || peer_->ports.empty()) {
        return nullptr;
    }
    return peer_->ports[qpn_ % peer_->ports.size()];
}

Qp::RecvWqe* Qp::next_recv() noexcept {
    if (init_.srq == nullptr) {
        return rq_head_ == rq_tail_ ? nullptr : &rq_[rq_head_ % rq_.size()];
    }
    RecvWqe& b = bound_[0];
    if (b.bound) {
        return &b;
    }
    std::uint32_t slot = 0;
    if (!init_.srq->take(slot)) {
        return nullptr;
    }
    b = RecvWqe{};
    b.wr_id = init_.srq->wr_id(slot);
    b.nseg = init_.srq->nseg(slot);
    b.total = init_.srq->total(slot);
    b.segs = init_.srq->segs(slot);
    b.srq = init_.srq;
    b.srq_slot = slot;
    b.bound = true;
    b.status = init_.srq->faulty(slot) ? WcStatus::loc_prot_err : WcStatus::success;
    return &b;
}

void Qp::consume_recv() noexcept {
    if (init_.srq == nullptr) {
        ++rq_head_;
    } else {
        bound_[0].bound = false;
    }
}

bool Qp::pump_unreliable() noexcept {
    bool did = false;
    const std::uint64_t end = sq_limit();
    while (sq_push_ != end) {
        SendWqe& w = sq_[sq_push_ % sq_.size()];
        if (w.status != WcStatus::success) {
            complete_send(w, w.status);
            sq_push_ = sq_done_;
            to_error();  // IB: a UC/UD send-queue error moves the QP to SQE; we flush it all
            return true;
        }
        transport::Peer* dst = type() == QpType::ud ? w.dst : peer_;
        while (push_frame_ < w.frames) {
            transport::Port* port = nullptr;
            if (dst != nullptr && dst->up()) {
                port = type() == QpType::ud ? dst->pick(false) : uc_port();
                if (port == nullptr || !port->can_send(false)) {
                    return did;  // wait for credit: never overrun the peer's RX ring
                }
            }
            if (port == nullptr) {
                ++ctr_.no_route;  // no link: the datagram / frame is lost, as on a cable
            } else if (type() == QpType::ud) {
                wire::Header h{};
                h.opcode = w.op == WrOpcode::send_with_imm ? wire::Opcode::ud_send_only_imm
                                                           : wire::Opcode::ud_send_only;
                h.dest_qpn = w.rqpn;
                h.src_qpn = qpn_;
                h.msg_len = w.len;
                h.payload_len = static_cast<std::uint16_t>(w.len);
                h.qkey = w.qkey;
                h.imm = w.imm;
                if (w.solicited) {
                    h.flags |= wire::kFlagSolicited;
                }
                if (w.grh) {
                    h.flags |= wire::kFlagGrh;
                    h.grh.sgid = env_.gid;
                    h.grh.flow_label = w.flow_label;
                    h.grh.traffic_class = w.traffic_class;
                    h.grh.hop_limit = w.hop_limit;
                }
                port->stamp(h);
                std::byte* buf = port->tx_buffer();
                const std::size_t hs = wire::encode_header(h, {buf, wire::kMaxFrame});
                if (hs != 0) {
                    const std::uint64_t slot = sq_push_ % sq_.size();
                    if (w.is_inline) {
                        std::memcpy(buf + hs, sq_inline_.data() + slot * caps_.max_inline_data,
                                    w.len);
                    } else {
                        gather(sq_segs_.data() + slot * caps_.max_send_sge, w.nseg, 0, buf + hs,
                               w.len);
                    }
                    port->commit(static_cast<std::uint32_t>(hs + w.len));
                    ++ctr_.tx_frames;
                    ctr_.tx_bytes += w.len;
                }
            } else {
                const transport::TxFrame tf{uc_tx_psn_, 1, (sq_push_ << 24) | push_frame_, false,
                                            false};
                build_request(tf, *port);
            }
            if (type() == QpType::uc) {
                uc_tx_psn_ = psn::add(uc_tx_psn_, 1);
            }
            ++push_frame_;
            did = true;
        }
        ++sq_push_;
        push_frame_ = 0;
        complete_send(w, WcStatus::success);  // unreliable: done once on the wire
    }
    return did;
}

void Qp::on_frame_uc(const wire::Frame& f, transport::Port& /*from*/) noexcept {
    const wire::Header& h = f.header;
    const wire::OpcodeInfo info = wire::opcode_info(static_cast<std::uint8_t>(h.opcode));
    if (!info.data || info.deth || h.opcode >= wire::Opcode::read_request) {
        ++ctr_.dropped;  // READ, atomics, ACKs have no meaning on UC
        return;
    }
    if (h.psn != uc_rx_psn_) {
        if (uc_in_msg_) {
            ++ctr_.uc_dropped_messages;
        }
        uc_in_msg_ = false;  // a gap: the message in progress is lost
    }
    uc_rx_psn_ = psn::add(h.psn, 1);
    const bool starts =
        info.position == wire::Position::first || info.position == wire::Position::only;
    const bool ends =
        info.position == wire::Position::last || info.position == wire::Position::only;
    if (starts) {
        uc_in_msg_ = true;
        uc_msg_psn_ = h.msg_psn;
    } else if (!uc_in_msg_ || h.msg_psn != uc_msg_psn_) {
        ++ctr_.dropped;
        return;
    }
    const bool send = h.opcode <= wire::Opcode::send_only_imm;
    RecvWqe* r = nullptr;
    if (send || (info.imm && ends)) {
        r = next_recv();
        if (r == nullptr || r->status != WcStatus::success || (send && h.msg_len > r->total)) {
            ++ctr_.uc_dropped_messages;  // no (usable) receive WQE: UC drops the message
            uc_in_msg_ = false;
            return;
        }
    }
    if (!send) {
        const AccessCheck t = (sm_.attr().qp_access_flags & kAccessRemoteWrite) == 0
                                  ? AccessCheck{AccessFault::no_permission, {}}
                                  : env_.mrs->check_remote(h.reth.rkey, *init_.pd, h.reth.va,
                                                           h.msg_len, kAccessRemoteWrite);
        if (!t) {
            ++ctr_.remote_access_faults;
            ++ctr_.uc_dropped_messages;
            uc_in_msg_ = false;
            return;
        }
        if (h.payload_len != 0) {
            std::memcpy(t.target.host + h.msg_offset, f.payload.data(), h.payload_len);
        }
    } else if (h.payload_len != 0) {
        scatter(r->segs, r->nseg, h.msg_offset, f.payload.data(), h.payload_len);
    }
    ctr_.rx_bytes += h.payload_len;
    if (ends) {
        uc_in_msg_ = false;
        if (r != nullptr) {
            complete_recv(*r, WcStatus::success, h.msg_len, h.imm, info.imm, !send,
                          (h.flags & wire::kFlagSolicited) != 0);
            consume_recv();
        }
    }
}

bool Qp::on_frame_ud(const wire::Frame& f, transport::Port& from) noexcept {
    const wire::Header& h = f.header;
    const QpState st = sm_.state();
    if (!wire::opcode_info(static_cast<std::uint8_t>(h.opcode)).deth ||
        (st != QpState::rtr && st != QpState::rts && st != QpState::sqd)) {
        ++ctr_.dropped;
        from.count_drop(transport::DropReason::bad_state);
        return true;
    }
    if (h.qkey != qkey_) {
        ++ctr_.qkey_drops;
        from.count_drop(transport::DropReason::qkey);
        return true;
    }
    RecvWqe* r = next_recv();
    if (r == nullptr) {
        // No receive posted yet: the port keeps the datagram (its RX buffer stays taken, so
        // the sender runs out of credit) until one is, unless we have starved too long.
        const transport::TimePoint now = transport::Clock::now();
        if (!ud_starved_) {
            ud_starved_ = true;
            ud_starved_since_ = now;
        } else if (now - ud_starved_since_ > kUdStarveLimit) {
            ++ctr_.dropped;
            from.count_drop(transport::DropReason::no_recv);
            return true;
        }
        return false;
    }
    ud_starved_ = false;
    ++ctr_.rx_frames;
    const bool imm = h.opcode == wire::Opcode::ud_send_only_imm;
    WcStatus st_wc = r->status;
    if (st_wc == WcStatus::success && h.payload_len + kGrhSize > r->total) {
        st_wc = WcStatus::loc_len_err;
    }
    if (st_wc == WcStatus::success && h.payload_len != 0) {
        scatter(r->segs, r->nseg, kGrhSize, f.payload.data(), h.payload_len);
        ctr_.rx_bytes += h.payload_len;
    }
    const bool grh = st_wc == WcStatus::success && (h.flags & wire::kFlagGrh) != 0;
    if (grh) {
        const std::array<std::byte, kGrhSize> g = make_grh(h, env_.gid, env_.roce_v2);
        scatter(r->segs, r->nseg, 0, g.data(), kGrhSize);
    }
    complete_recv(*r, st_wc, h.payload_len + kGrhSize, h.imm, imm, false,
                  (h.flags & wire::kFlagSolicited) != 0, &from, h.src_qpn, grh);
    consume_recv();
    return true;
}

}  // namespace tbv::verbs
