// SPDX-License-Identifier: Apache-2.0
// QP responder: incoming requests → checks → placement → in-order delivery → completions, READ
// responses and atomic ACKs; ACK/NAK/RNR NAK through transport::Receiver.
//
// Every request frame is checked before the receiver may accept it: R_Key, PD, the QP's and the
// MR's access flags, bounds (overflow-safe) of the whole message the frame belongs to (its RETH
// and msg_len; the decoder already holds the frame inside the message). A refused
// frame is answered with a NAK only when it is the next expected PSN (a NAK says "everything
// before this arrived"); a refused frame ahead of a gap is dropped and meets the same check again
// when it is retransmitted in order. Nothing outside a checked range is ever written or read.
//
// READs and atomics execute in PSN order (an answer implies that everything before it arrived):
// they are queued when accepted and run once the receiver delivers them.
#include <algorithm>
#include <cstring>

#include "verbs/qp.hpp"
#include "verbs/qp_wire.hpp"
#include "verbs/srq.hpp"

namespace tbv::verbs {

namespace wire = transport::wire;
namespace psn = transport::psn;

namespace {
enum : std::uint8_t { kNone = 0, kSend = 1, kWriteImm = 2, kResponse = 3 };

std::uint32_t read_span(std::uint32_t len) noexcept {
    return len == 0 ? 1 : (len + kSegment - 1) / kSegment;
}
}  // namespace

bool Qp::port_alive(const transport::Port* p) const noexcept {
    return std::find(peer_->ports.begin(), peer_->ports.end(), p) != peer_->ports.end();
}

Qp::RecvWqe* Qp::recv_for(std::uint32_t ssn) noexcept {
    const std::uint32_t d = psn::distance(ssn_rx_, ssn);
    if (init_.srq == nullptr) {
        if (d >= rq_tail_ - rq_head_) {
            return nullptr;
        }
        return &rq_[(rq_head_ + d) % rq_.size()];
    }
    if (d >= kBindRing) {
        return nullptr;
    }
    RecvWqe& b = bound_[ssn % kBindRing];
    if (b.bound && b.ssn == ssn) {
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
    b.ssn = ssn;
    b.status = init_.srq->faulty(slot) ? WcStatus::loc_prot_err : WcStatus::success;
    return &b;
}

void Qp::on_request(const wire::Frame& f, transport::Port& /*from*/,
                    transport::TimePoint now) noexcept {
    const wire::Header& h = f.header;
    const wire::OpcodeInfo info = wire::opcode_info(static_cast<std::uint8_t>(h.opcode));
    if (!rcv_ || info.deth) {
        ++ctr_.dropped;
        return;
    }
    const std::uint32_t access = sm_.attr().qp_access_flags;
    const bool in_order = h.psn == rcv_->expected_psn();
    transport::RxFrameInfo ri{};
    ri.psn = h.psn;
    ri.ack_request = (h.flags & wire::kFlagAckRequest) != 0;
    AccessCheck target{};
    RecvWqe* r = nullptr;
    bool fault = false;
    bool len_error = false;
    auto nak = wire::NakCode::remote_access_error;
    std::uint8_t kind = kNone;
    const bool send = info.data && h.opcode <= wire::Opcode::send_only_imm;
    const bool atomic = h.opcode == wire::Opcode::cmp_swap || h.opcode == wire::Opcode::fetch_add;
    const bool read = h.opcode == wire::Opcode::read_request;

    if (info.data) {
        ri.last_of_message =
            info.position == wire::Position::last || info.position == wire::Position::only;
        if (!send) {
            // The whole message's range, on every frame (as an HCA checks the RETH): a WRITE
            // that would cross the MR's end writes nothing, not its first frames.
            if ((access & kAccessRemoteWrite) == 0) {
                fault = true;
            } else {
                target = env_.mrs->check_remote(h.reth.rkey, *init_.pd, h.reth.va, h.msg_len,
                                                kAccessRemoteWrite);
                fault = !target;
            }
        }
        if (info.seth) {
            kind = send ? kSend : kWriteImm;
            r = recv_for(h.ssn);
            ri.no_rx_buffer = r == nullptr;
            if (r != nullptr && r->status != WcStatus::success) {
                fault = true;
                nak = wire::NakCode::remote_operational_error;
            } else if (r != nullptr && send && h.msg_len > r->total) {
                fault = true;
                len_error = true;
                nak = wire::NakCode::invalid_request;
            }
        }
    } else if (read || atomic) {
        if (responses_full()) {
            ++ctr_.dropped;  // more outstanding than max_dest_rd_atomic: the retry finds room
            return;
        }
        kind = kResponse;
        ri.last_of_message = true;
        ri.replayable = true;
        const std::uint32_t need = read ? kAccessRemoteRead : kAccessRemoteAtomic;
        const std::uint64_t va = read ? h.reth.va : h.atomic.va;
        const std::uint32_t rkey = read ? h.reth.rkey : h.atomic.rkey;
        ri.span = read ? read_span(h.msg_len) : 1;
        if (ri.span > kReadChunkFrames) {
            fault = true;
            nak = wire::NakCode::invalid_request;
        } else if ((access & need) == 0) {
            fault = true;
        } else if (atomic && (va & 7u) != 0) {
            fault = true;
            nak = wire::NakCode::invalid_request;
        } else {
            target = env_.mrs->check_remote(rkey, *init_.pd, va, h.msg_len, need);
            fault = !target;
        }
    } else {
        ++ctr_.dropped;  // a credit/unknown opcode cannot reach here; ignore defensively
        return;
    }

    if (fault) {
        if (psn::before(h.psn, rcv_->expected_psn())) {
            (void)rcv_->on_frame(ri, now);  // an old duplicate: re-ACK, nothing else
        } else if (in_order) {
            ++ctr_.remote_access_faults;
            send_nak(nak, h.psn);
            if ((len_error || nak == wire::NakCode::remote_operational_error) && r != nullptr) {
                // The receive WQE it was meant for fails; the QP cannot go on (IB: class C).
                complete_recv(*r, len_error ? WcStatus::loc_len_err : r->status, 0, 0, false,
                              false);
                to_error();
            }
        } else {
            ++ctr_.dropped;
        }
        return;
    }

    const transport::RxVerdict v = rcv_->on_frame(ri, now);
    if (v == transport::RxVerdict::accept) {
        if (h.payload_len != 0) {
            if (send) {
                scatter(r->segs, r->nseg, h.msg_offset, f.payload.data(), h.payload_len);
            } else {
                std::memcpy(target.target.host + h.msg_offset, f.payload.data(), h.payload_len);
            }
            ctr_.rx_bytes += h.payload_len;
        }
        if (ri.last_of_message) {
            const std::uint32_t last = psn::add(h.psn, ri.span - 1);
            MsgRecord& m = records_[last % kRecordRing];
            m = MsgRecord{};
            m.psn = last;
            m.ssn = h.ssn;
            m.len = h.msg_len;
            m.imm = h.imm;
            m.has_imm = info.imm;
            m.solicited = (h.flags & wire::kFlagSolicited) != 0;
            m.kind = kind;
            m.valid = true;
        }
        if (kind == kResponse) {
            (void)queue_response(f, target, false);
        }
    } else if (v == transport::RxVerdict::replay) {
        ++ctr_.replays;
        if (read) {
            // Answer a duplicate READ again, unless its answer is still queued (the requester
            // retried while we were sending it: a second copy would only add load).
            bool queued = false;
            for (std::uint32_t i = resp_head_; i != resp_tail_; ++i) {
                queued |= responses_[i % responses_.size()].psn == h.psn;
            }
            if (!queued) {
                (void)queue_response(f, target, true);
            }
        } else {
            for (const AtomicResult& a : atomics_) {
                if (a.valid && a.psn == h.psn) {
                    (void)send_atomic_ack(h.psn, a.orig);
                    break;
                }
            }
        }
    }
    deliver();
}

bool Qp::queue_response(const wire::Frame& f, const AccessCheck& target, bool ready) noexcept {
    if (responses_full()) {
        return false;
    }
    const wire::Header& h = f.header;
    Response& x = responses_[resp_tail_++ % responses_.size()];
    x = Response{};
    x.op = h.opcode;
    x.psn = h.psn;
    x.len = h.msg_len;
    x.ready = ready;
    x.host = target.target.host;
    x.mr = target.target.mr;
    if (h.opcode != wire::Opcode::read_request) {
        x.swap_add = h.atomic.swap_add;
        x.cmp = h.atomic.compare;
    }
    if (x.mr != nullptr) {
        x.mr->acquire();
    }
    return true;
}

void Qp::deliver() noexcept {
    std::uint32_t last = 0;
    while (rcv_ && rcv_->pop_delivered(last)) {
        MsgRecord& m = records_[last % kRecordRing];
        if (!m.valid || m.psn != last) {
            continue;
        }
        m.valid = false;
        if (m.kind == kSend || m.kind == kWriteImm) {
            RecvWqe* r =
                init_.srq == nullptr ? &rq_[rq_head_ % rq_.size()] : &bound_[ssn_rx_ % kBindRing];
            complete_recv(*r, r->status, m.len, m.imm, m.has_imm, m.kind == kWriteImm, m.solicited);
            if (init_.srq == nullptr) {
                ++rq_head_;
            } else {
                r->bound = false;
            }
            ssn_rx_ = psn::add(ssn_rx_, 1);
        } else if (m.kind == kResponse) {
            for (std::uint32_t i = resp_head_; i != resp_tail_; ++i) {
                Response& x = responses_[i % responses_.size()];
                const std::uint32_t span =
                    x.op == wire::Opcode::read_request ? read_span(x.len) : 1;
                if (!x.ready && psn::add(x.psn, span - 1) == last) {
                    x.ready = true;
                    break;
                }
            }
        }
    }
}

bool Qp::respond(transport::TimePoint /*now*/) noexcept {
    bool did = false;
    unsigned budget = kPumpBudget;
    while (resp_head_ != resp_tail_) {
        Response& x = responses_[resp_head_ % responses_.size()];
        if (x.revoked) {
            ++resp_head_;
            continue;
        }
        if (!x.ready) {
            break;
        }
        if (x.op == wire::Opcode::read_request) {
            const std::uint32_t span = read_span(x.len);
            if (x.port != nullptr && !port_alive(x.port)) {
                x.port = nullptr;  // its rail went away: the rest goes on another port
            }
            while (x.sent < span) {
                if (budget == 0) {
                    return did;  // other QPs' turn; the rest goes in the next round
                }
                if (!peer_->up()) {
                    ++ctr_.no_route;
                    x.sent = span;  // lost; the requester's retry asks again
                    break;
                }
                if (x.port == nullptr) {
                    x.port = peer_->pick(false);
                    if (x.port == nullptr) {
                        return did;
                    }
                } else if (!x.port->can_send(false)) {
                    return did;
                }
                const std::uint32_t k = x.sent;
                const std::uint32_t off = k * kSegment;
                const std::uint32_t plen = std::min(kSegment, x.len - off);
                wire::Header h{};
                using O = wire::Opcode;
                h.opcode = span == 1       ? O::read_response_only
                           : k == 0        ? O::read_response_first
                           : k + 1 == span ? O::read_response_last
                                           : O::read_response_middle;
                h.dest_qpn = dest_qpn_;
                h.src_qpn = qpn_;
                h.psn = psn::add(x.psn, k);
                h.msg_psn = x.psn;
                h.msg_offset = off;
                h.msg_len = x.len;
                h.payload_len = static_cast<std::uint16_t>(plen);
                x.port->stamp(h);
                std::byte* buf = x.port->tx_buffer();
                const std::size_t hs = wire::encode_header(h, {buf, wire::kMaxFrame});
                if (hs != 0) {
                    if (plen != 0) {
                        std::memcpy(buf + hs, x.host + off, plen);
                    }
                    x.port->commit(static_cast<std::uint32_t>(hs + plen));
                    ++ctr_.tx_frames;
                    ctr_.tx_bytes += plen;
                }
                ++x.sent;
                --budget;
                did = true;
            }
        } else {
            if (!x.executed) {
                auto* word = reinterpret_cast<std::uint64_t*>(x.host);
                if (x.op == wire::Opcode::cmp_swap) {
                    std::uint64_t expected = x.cmp;
                    __atomic_compare_exchange_n(word, &expected, x.swap_add, false,
                                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
                    x.orig = expected;
                } else {
                    x.orig = __atomic_fetch_add(word, x.swap_add, __ATOMIC_SEQ_CST);
                }
                x.executed = true;
                atomics_[atomic_next_++ % atomics_.size()] = {x.psn, x.orig, true};
            }
            if (!send_atomic_ack(x.psn, x.orig)) {
                return did;  // no control credit now; executed stays set, so it never runs twice
            }
            did = true;
        }
        if (x.mr != nullptr) {
            x.mr->release();
        }
        ++resp_head_;
    }
    return did;
}

void Qp::send_nak(wire::NakCode code, std::uint32_t p) noexcept {
    transport::Port* port = peer_->up() ? peer_->pick(true) : nullptr;
    if (port == nullptr) {
        return;  // the requester's timeout brings the request back and we answer again
    }
    wire::Header h{};
    h.opcode = wire::Opcode::nak;
    h.dest_qpn = dest_qpn_;
    h.src_qpn = qpn_;
    h.psn = p;
    h.aeth = {static_cast<std::uint8_t>(code), rcv_->msn()};
    port->stamp(h);
    const std::size_t n = wire::encode_header(h, {port->tx_buffer(), wire::kMaxFrame});
    if (n != 0) {
        port->commit(static_cast<std::uint32_t>(n));
    }
}

bool Qp::send_atomic_ack(std::uint32_t p, std::uint64_t orig) noexcept {
    if (!peer_->up()) {
        ++ctr_.no_route;
        return true;  // lost like any frame on a missing cable
    }
    transport::Port* port = peer_->pick(true);
    if (port == nullptr) {
        return false;
    }
    wire::Header h{};
    h.opcode = wire::Opcode::atomic_ack;
    h.dest_qpn = dest_qpn_;
    h.src_qpn = qpn_;
    h.psn = p;
    h.aeth = {0, rcv_->msn()};
    h.atomic_orig = orig;
    port->stamp(h);
    const std::size_t n = wire::encode_header(h, {port->tx_buffer(), wire::kMaxFrame});
    if (n != 0) {
        port->commit(static_cast<std::uint32_t>(n));
    }
    return true;
}

void Qp::send_control(transport::TimePoint now) noexcept {
    transport::Control c;
    for (;;) {
        transport::Port* port = nullptr;
        if (peer_->up()) {
            port = peer_->pick(true);
            if (port == nullptr) {
                return;
            }
        }
        if (!rcv_->take_control(c, now)) {
            return;
        }
        if (port == nullptr) {
            continue;
        }
        wire::Header h{};
        h.opcode = c.kind == transport::ControlKind::ack   ? wire::Opcode::ack
                   : c.kind == transport::ControlKind::nak ? wire::Opcode::nak
                                                           : wire::Opcode::rnr_nak;
        h.dest_qpn = dest_qpn_;
        h.src_qpn = qpn_;
        h.psn = c.psn;
        h.aeth = {c.syndrome, c.msn};
        port->stamp(h);
        const std::size_t n = wire::encode_header(h, {port->tx_buffer(), wire::kMaxFrame});
        if (n != 0) {
            port->commit(static_cast<std::uint32_t>(n));
        }
    }
}

void Qp::revoke(const Mr* mr) noexcept {
    for (std::uint32_t i = resp_head_; i != resp_tail_; ++i) {
        Response& x = responses_[i % responses_.size()];
        if (x.mr == mr) {
            // The MR goes away: the answer is dropped (the requester's retry then meets an
            // unknown R_Key), and nothing will read or write its memory any more.
            x.mr->release();
            x.mr = nullptr;
            x.host = nullptr;
            x.revoked = true;
        }
    }
}

void Qp::drop_responses() noexcept {
    // Answers still owed hold MR references: give them back (a destroyed or failed QP answers
    // nothing more, and its MRs must stay deregistrable).
    for (std::uint32_t i = resp_head_; i != resp_tail_; ++i) {
        Response& x = responses_[i % responses_.size()];
        if (x.mr != nullptr) {
            x.mr->release();
            x.mr = nullptr;
        }
    }
    resp_head_ = resp_tail_ = 0;
}

void Qp::flush_bound() noexcept {
    for (RecvWqe& b : bound_) {
        if (b.bound) {
            b.bound = false;
            complete_recv(b, WcStatus::wr_flush_err, 0, 0, false, false);
        }
    }
}

void Qp::drop_bound() noexcept {
    for (RecvWqe& b : bound_) {
        if (b.bound) {
            b.bound = false;
            release(b.segs, b.nseg);
            b.srq->give_back(b.srq_slot);
        }
    }
}

}  // namespace tbv::verbs
