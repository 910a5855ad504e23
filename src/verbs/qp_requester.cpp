// SPDX-License-Identifier: Apache-2.0
// QP requester: WQEs → frames (segmentation, READ chunks, atomics), transmission over the peer's
// ports, and the answers: ACK/NAK/RNR NAK, READ responses, atomic ACKs, completions in order.
//
// READ and atomic results arrive as responses, so a plain ACK must never retire them: an ACK that
// reaches past the oldest outstanding READ/atomic is held back to just before it (and remembered),
// and applied once that READ's responses are all in. A READ chunk's responses come on one port, so
// they arrive in PSN order; a response out of order is dropped and recovered by the retransmitted
// request (the responder answers a duplicate READ again).
#include <algorithm>
#include <cstring>

#include "verbs/qp.hpp"
#include "verbs/qp_wire.hpp"

namespace tbv::verbs {

namespace wire = transport::wire;
namespace psn = transport::psn;

namespace {
constexpr unsigned kFrameBits = 24;
constexpr std::uint64_t cookie(std::uint64_t seq, std::uint32_t frame) noexcept {
    return (seq << kFrameBits) | frame;
}
bool is_atomic(WrOpcode op) noexcept {
    return op == WrOpcode::atomic_cmp_and_swp || op == WrOpcode::atomic_fetch_and_add;
}
std::uint32_t chunk_len(std::uint32_t len, std::uint32_t chunk) noexcept {
    const std::uint64_t off = std::uint64_t{chunk} * kReadChunk;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(kReadChunk, len - off));
}
}  // namespace

bool Qp::push_frames(transport::TimePoint /*now*/) noexcept {
    bool did = false;
    const std::uint64_t end = sq_limit();
    while (sq_push_ != end) {
        SendWqe& w = sq_[sq_push_ % sq_.size()];
        if (w.status != WcStatus::success) {
            break;  // completes with its error once everything before it has (retire)
        }
        const bool rd = w.op == WrOpcode::rdma_read || is_atomic(w.op);
        if (push_frame_ == 0 && w.fence && pend_head_ != pend_tail_) {
            break;  // IBV_SEND_FENCE: wait for earlier READs/atomics
        }
        while (push_frame_ < w.frames) {
            std::uint32_t span = 1;
            std::uint32_t clen = 0;
            if (w.op == WrOpcode::rdma_read) {
                clen = chunk_len(w.len, push_frame_);
                span = clen == 0 ? 1 : (clen + kSegment - 1) / kSegment;
            }
            if (snd_->window_full() ||
                psn::distance(snd_->oldest_psn(), snd_->next_psn()) + span > kPsnWindow ||
                (rd && pend_tail_ - pend_head_ >= rd_limit_)) {
                return did;
            }
            std::uint32_t p = 0;
            if (snd_->push(cookie(sq_push_, push_frame_), sq_push_, push_frame_ + 1 == w.frames,
                           span, &p) != transport::Sender::Push::ok) {
                return did;
            }
            if (rd) {
                Pending& e = pending_[pend_tail_++ % pending_.size()];
                e = Pending{};
                e.seq = sq_push_;
                e.psn = p;
                e.span = span;
                e.offset = push_frame_ * kReadChunk;
                e.len = is_atomic(w.op) ? 8 : clen;
            }
            ++push_frame_;
            did = true;
        }
        ++sq_push_;
        push_frame_ = 0;
    }
    return did;
}

bool Qp::transmit(transport::TimePoint now) noexcept {
    bool did = false;
    transport::TxFrame tf;
    for (unsigned budget = kPumpBudget; budget != 0; --budget) {
        transport::Port* port = nullptr;
        if (peer_->up()) {
            port = peer_->pick(false);
            if (port == nullptr) {
                break;  // out of credit everywhere: wait for the peer's RX ring to drain
            }
        }
        if (!snd_->next_tx(now, tf)) {
            break;
        }
        did = true;
        if (port == nullptr) {
            // No link to the peer: the frame is lost as on an unplugged cable. The retransmit
            // timer and retry budget decide when the QP gives up.
            ++ctr_.no_route;
            ++peer_->no_route;
            continue;
        }
        build_request(tf, *port);
    }
    return did;
}

void Qp::build_request(const transport::TxFrame& tf, transport::Port& port) noexcept {
    const std::uint64_t seq = tf.cookie >> kFrameBits;
    const auto fi = static_cast<std::uint32_t>(tf.cookie & ((1u << kFrameBits) - 1));
    const SendWqe& w = sq_[seq % sq_.size()];
    wire::Header h{};
    h.dest_qpn = dest_qpn_;
    h.src_qpn = qpn_;
    h.psn = tf.psn;
    if (tf.ack_request) {
        h.flags |= wire::kFlagAckRequest;
    }
    std::uint32_t plen = 0;
    std::uint32_t offset = 0;
    switch (w.op) {
        case WrOpcode::rdma_read:
            h.opcode = wire::Opcode::read_request;
            h.msg_psn = tf.psn;
            h.msg_len = chunk_len(w.len, fi);
            h.reth = {w.raddr + std::uint64_t{fi} * kReadChunk, w.rkey};
            break;
        case WrOpcode::atomic_cmp_and_swp:
        case WrOpcode::atomic_fetch_and_add: {
            const bool cas = w.op == WrOpcode::atomic_cmp_and_swp;
            h.opcode = cas ? wire::Opcode::cmp_swap : wire::Opcode::fetch_add;
            h.msg_psn = tf.psn;
            h.msg_len = 8;
            // ibv_send_wr: compare_add is the compare value (CAS) or the addend (FETCH_ADD).
            h.atomic = {w.raddr, cas ? w.swap : w.cmp, cas ? w.cmp : 0, w.rkey};
            break;
        }
        default: {
            offset = fi * kSegment;
            plen = std::min(kSegment, w.len - offset);
            const bool first = fi == 0;
            const bool last = fi + 1 == w.frames;
            const bool send = w.op == WrOpcode::send || w.op == WrOpcode::send_with_imm;
            const bool imm =
                w.op == WrOpcode::send_with_imm || w.op == WrOpcode::rdma_write_with_imm;
            using O = wire::Opcode;
            if (send) {
                h.opcode = first && last ? (imm ? O::send_only_imm : O::send_only)
                           : first       ? O::send_first
                           : last        ? (imm ? O::send_last_imm : O::send_last)
                                         : O::send_middle;
                h.ssn = w.ssn;
            } else {
                h.opcode = first && last ? (imm ? O::write_only_imm : O::write_only)
                           : first       ? O::write_first
                           : last        ? (imm ? O::write_last_imm : O::write_last)
                                         : O::write_middle;
                h.reth = {w.raddr, w.rkey};
                if (imm && last) {
                    h.ssn = w.ssn;
                }
            }
            if (imm && last) {
                h.imm = w.imm;
            }
            if (last && w.solicited && (send || imm)) {
                h.flags |= wire::kFlagSolicited;
            }
            h.msg_psn = psn::sub(tf.psn, fi);
            h.msg_offset = offset;
            h.msg_len = w.len;
            h.payload_len = static_cast<std::uint16_t>(plen);
            break;
        }
    }
    port.stamp(h);
    std::byte* buf = port.tx_buffer();
    const std::size_t hs = wire::encode_header(h, {buf, wire::kMaxFrame});
    if (hs == 0) {
        ++ctr_.dropped;  // cannot happen for a validated WQE; the retransmit timer covers it
        return;
    }
    if (plen != 0) {
        if (w.is_inline) {
            const std::byte* src =
                sq_inline_.data() + (seq % sq_.size()) * caps_.max_inline_data + offset;
            std::memcpy(buf + hs, src, plen);
        } else {
            gather(sq_segs_.data() + (seq % sq_.size()) * caps_.max_send_sge, w.nseg, offset,
                   buf + hs, plen);
        }
    }
    port.commit(static_cast<std::uint32_t>(hs + plen));
    ++ctr_.tx_frames;
    ctr_.tx_bytes += plen;
}

bool Qp::retire(transport::TimePoint /*now*/) noexcept {
    bool did = false;
    std::uint64_t id = 0;
    while (sm_.state() != QpState::err && snd_->pop_completion(id)) {
        if (id != sq_done_) {
            break;  // cannot happen: completions are in order, one per WQE
        }
        complete_send(sq_[sq_done_ % sq_.size()], WcStatus::success);
        did = true;
    }
    if (sm_.state() == QpState::err) {
        return did;
    }
    if (snd_->status() != transport::SenderStatus::ok) {
        const WcStatus st = snd_->status() == transport::SenderStatus::retry_exceeded
                                ? WcStatus::retry_exc_err
                                : WcStatus::rnr_retry_exc_err;
        if (sq_done_ != sq_tail_) {
            complete_send(sq_[sq_done_ % sq_.size()], st);
        }
        to_error();
        return true;
    }
    // A WQE that failed its local checks at post time completes once all before it did.
    if (sq_done_ != sq_limit() && sq_done_ == sq_push_ && snd_->idle()) {
        SendWqe& w = sq_[sq_done_ % sq_.size()];
        if (w.status != WcStatus::success) {
            complete_send(w, w.status);
            to_error();
            return true;
        }
    }
    return did;
}

void Qp::ack_through(std::uint32_t p, transport::TimePoint now) noexcept {
    if (pend_head_ != pend_tail_) {
        const Pending& front = pending_[pend_head_ % pending_.size()];
        if (!psn::before(p, front.psn)) {
            if (!ack_hint_valid_ || psn::after(p, ack_hint_)) {
                ack_hint_ = p;
                ack_hint_valid_ = true;
            }
            p = psn::sub(front.psn, 1);
        }
    }
    snd_->on_ack(p, now);
}

void Qp::on_ack_frame(const wire::Frame& f, transport::TimePoint now) noexcept {
    const wire::Header& h = f.header;
    switch (h.opcode) {
        case wire::Opcode::ack: ack_through(h.psn, now); break;
        case wire::Opcode::atomic_ack:
            for (std::uint32_t i = pend_head_; i != pend_tail_; ++i) {
                Pending& e = pending_[i % pending_.size()];
                const SendWqe& w = sq_[e.seq % sq_.size()];
                if (e.psn == h.psn && !e.done && is_atomic(w.op)) {
                    const std::uint64_t orig = h.atomic_orig;
                    scatter(sq_segs_.data() + (e.seq % sq_.size()) * caps_.max_send_sge, w.nseg, 0,
                            reinterpret_cast<const std::byte*>(&orig), 8);
                    e.done = true;
                    advance_pending(now);
                    break;
                }
            }
            break;
        case wire::Opcode::nak:
        case wire::Opcode::rnr_nak: {
            // Never go back past an incomplete READ/atomic's responses: resend from its request.
            std::uint32_t p = h.psn;
            if (pend_head_ != pend_tail_) {
                const Pending& front = pending_[pend_head_ % pending_.size()];
                if (psn::after(p, front.psn)) {
                    p = front.psn;
                }
            }
            if (h.opcode == wire::Opcode::rnr_nak) {
                snd_->on_rnr_nak(p, h.aeth.syndrome, now);
                break;
            }
            const auto code = static_cast<wire::NakCode>(h.aeth.syndrome);
            if (code == wire::NakCode::psn_sequence_error) {
                snd_->on_nak(p, now);
                break;
            }
            // A fatal NAK: everything before it completed; the request at h.psn failed.
            ack_through(psn::sub(h.psn, 1), now);
            std::uint64_t id = 0;
            while (snd_->pop_completion(id) && sm_.state() != QpState::err) {
                complete_send(sq_[sq_done_ % sq_.size()], WcStatus::success);
            }
            if (sm_.state() == QpState::err) {
                break;
            }
            const WcStatus st =
                code == wire::NakCode::remote_access_error        ? WcStatus::rem_access_err
                : code == wire::NakCode::remote_operational_error ? WcStatus::rem_op_err
                : code == wire::NakCode::invalid_rd_request       ? WcStatus::rem_inv_rd_req_err
                                                                  : WcStatus::rem_inv_req_err;
            if (sq_done_ != sq_tail_) {
                complete_send(sq_[sq_done_ % sq_.size()], st);
            }
            to_error();
            break;
        }
        default: break;
    }
}

void Qp::on_read_response(const wire::Frame& f, transport::TimePoint now) noexcept {
    const wire::Header& h = f.header;
    for (std::uint32_t i = pend_head_; i != pend_tail_; ++i) {
        Pending& e = pending_[i % pending_.size()];
        if (e.done || !psn::in_window(h.psn, e.psn, e.span)) {
            continue;
        }
        const SendWqe& w = sq_[e.seq % sq_.size()];
        if (w.op != WrOpcode::rdma_read) {
            break;
        }
        const std::uint32_t expect = psn::add(e.psn, e.got);
        if (h.psn != expect || h.msg_len != e.len ||
            h.msg_offset != std::uint64_t{e.got} * kSegment) {
            ++ctr_.dropped;  // duplicate of an earlier answer, or out of order: the retry covers it
            return;
        }
        if (h.payload_len != 0) {
            scatter(sq_segs_.data() + (e.seq % sq_.size()) * caps_.max_send_sge, w.nseg,
                    std::uint64_t{e.offset} + h.msg_offset, f.payload.data(), h.payload_len);
            ctr_.rx_bytes += h.payload_len;
        }
        snd_->on_progress(now);
        if (++e.got == e.span) {
            e.done = true;
            advance_pending(now);
        }
        return;
    }
    ++ctr_.dropped;  // answers a READ we no longer wait for
}

void Qp::advance_pending(transport::TimePoint now) noexcept {
    bool any = false;
    std::uint32_t through = 0;
    while (pend_head_ != pend_tail_) {
        const Pending& e = pending_[pend_head_ % pending_.size()];
        if (!e.done) {
            break;
        }
        through = psn::add(e.psn, e.span - 1);
        ++pend_head_;
        any = true;
    }
    if (!any) {
        return;
    }
    // An ACK held back earlier may now cover more.
    if (ack_hint_valid_ && psn::after(ack_hint_, through)) {
        std::uint32_t hint = ack_hint_;
        if (pend_head_ != pend_tail_) {
            const Pending& front = pending_[pend_head_ % pending_.size()];
            if (!psn::before(hint, front.psn)) {
                hint = psn::sub(front.psn, 1);
            }
        } else {
            ack_hint_valid_ = false;
        }
        if (psn::after(hint, through)) {
            through = hint;
        }
    }
    snd_->on_ack(through, now);
}

}  // namespace tbv::verbs
