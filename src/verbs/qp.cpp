// SPDX-License-Identifier: Apache-2.0
// QP control path: creation, modify (RTR binds the peer, RTS starts the sender), posting, and
// completion/flush. The wire halves are in qp_requester.cpp and qp_responder.cpp.
#include "verbs/qp.hpp"

#include <algorithm>
#include <cstring>

#include "verbs/ah.hpp"
#include "verbs/qp_wire.hpp"
#include "verbs/srq.hpp"

namespace tbv::verbs {

namespace wire = transport::wire;

Result<std::unique_ptr<Qp>> Qp::create(const QpEnv& env, const QpInit& init) {
    if (env.fabric == nullptr || env.mrs == nullptr || init.pd == nullptr ||
        init.send_cq == nullptr || (init.recv_cq == nullptr)) {
        return fail(std::errc::invalid_argument);
    }
    QpCaps caps = init.cap;
    if (init.srq != nullptr) {
        caps.max_recv_wr = 0;
        caps.max_recv_sge = 0;
    }
    if (auto c = check_caps(caps, env.limits); !c) {
        return Failure{c.error()};
    }
    auto qp = std::unique_ptr<Qp>(new Qp(env, init));
    qp->caps_ = caps;
    if (auto a = qp->allocate(); !a) {
        return Failure{a.error()};
    }
    auto qpn = env.fabric->add_qp(*qp);
    if (!qpn) {
        return Failure{qpn.error()};
    }
    qp->qpn_ = *qpn;
    init.pd->retain();
    return qp;
}

Qp::Qp(const QpEnv& env, const QpInit& init) : env_(env), init_(init), sm_(init.type, env.limits) {}

Qp::~Qp() {
    if (qpn_ != 0) {
        env_.fabric->remove_qp(qpn_);
        init_.pd->release();
    }
    reset_queues();
}

Result<void> Qp::allocate() {
    // Sizes as reported back by ibv_create_qp: at least what was asked, never below 1.
    caps_.max_send_wr = std::max(caps_.max_send_wr, 1u);
    caps_.max_send_sge = std::max(caps_.max_send_sge, 1u);
    if (init_.srq == nullptr) {
        caps_.max_recv_wr = std::max(caps_.max_recv_wr, 1u);
        caps_.max_recv_sge = std::max(caps_.max_recv_sge, 1u);
    }
    sq_.resize(caps_.max_send_wr);
    sq_segs_.resize(std::size_t{caps_.max_send_wr} * caps_.max_send_sge);
    sq_inline_.resize(std::size_t{caps_.max_send_wr} * caps_.max_inline_data);
    rq_.resize(caps_.max_recv_wr);
    rq_segs_.resize(std::size_t{caps_.max_recv_wr} * caps_.max_recv_sge);
    for (std::size_t i = 0; i < rq_.size(); ++i) {
        rq_[i].segs = rq_segs_.data() + i * caps_.max_recv_sge;
    }
    records_.resize(kRecordRing);
    if (init_.srq != nullptr) {
        bound_.resize(kBindRing);
    }
    responses_.resize(std::size_t{env_.limits.max_qp_rd_atom} * 2);
    pending_.resize(env_.limits.max_qp_init_rd_atom);
    return ok();
}

// ---- modify ------------------------------------------------------------------------------------

Result<void> Qp::modify(const QpAttr& attr, std::uint32_t mask) {
    const QpState before = sm_.state();
    if (auto r = sm_.modify(attr, mask); !r) {
        return r;
    }
    const QpState now = sm_.state();
    if (now == before) {
        return ok();
    }
    switch (now) {
        case QpState::reset: reset_queues(); break;
        case QpState::rtr:
            if (auto r = enter_rtr(); !r) {
                // All-or-nothing: put the state machine back (only a move from INIT gets here).
                QpAttr back{};
                back.qp_state = QpState::reset;
                (void)sm_.modify(back, kQpState);
                reset_queues();
                return r;
            }
            break;
        case QpState::rts:
            if (before == QpState::rtr) {
                if (auto r = enter_rts(); !r) {
                    to_error();
                    return r;
                }
            }
            break;
        case QpState::sqd: enter_sqd(); break;
        case QpState::err: to_error(); break;
        default: break;
    }
    return ok();
}

void Qp::enter_sqd() noexcept {
    // A message already partly on the wire is finished (a receiver cannot take half of it);
    // the ones not begun stay queued.
    sq_stop_ = sq_push_ + (push_frame_ != 0 ? 1 : 0);
    drain_notify_ = sm_.attr().en_sqd_async_notify != 0;
    check_drained();
}

std::uint64_t Qp::sq_limit() const noexcept {
    return sm_.state() == QpState::sqd ? sq_stop_ : sq_tail_;
}

bool Qp::sq_draining() const noexcept {
    return sm_.state() == QpState::sqd && sq_done_ < sq_stop_;
}

void Qp::check_drained() noexcept {
    if (drain_notify_ && sm_.state() == QpState::sqd && sq_done_ >= sq_stop_) {
        drain_notify_ = false;
        ud_starved_ = false;
        env_.async(AsyncEventType::sq_drained, qpn_);
    }
}

Result<void> Qp::enter_rtr() {
    const QpAttr& a = sm_.attr();
    qkey_ = a.qkey;
    if (type() == QpType::ud) {
        return ok();  // datagrams: no peer, no sequence
    }
    peer_ = env_.fabric->peer(a.ah_attr.dlid);
    if (peer_ == nullptr) {
        return fail(std::errc::invalid_argument);  // LID 0: no such destination
    }
    dest_qpn_ = a.dest_qp_num;
    if (type() == QpType::uc) {
        uc_rx_psn_ = a.rq_psn;
        uc_in_msg_ = false;
        return ok();
    }
    transport::ReceiverConfig rc;
    rc.initial_psn = a.rq_psn;
    rc.window = kPsnWindow;
    rc.min_rnr_timer = a.min_rnr_timer;
    // Striping reorders by up to a poll batch per port and more when a port lags: NAK a hole
    // only once it is clearly a loss, or every rail switch would look like one (counters
    // showed ~47% retransmissions on a clean two-rail cable with 32 frames / 100 µs).
    rc.nak_after = kPsnWindow / 4;
    rc.reorder_timeout = std::chrono::microseconds(500);
    auto r = transport::Receiver::create(rc);
    if (!r) {
        return Failure{r.error()};
    }
    rcv_ = std::move(*r);
    for (auto& m : records_) {
        m = MsgRecord{};
    }
    ssn_rx_ = 0;
    return ok();
}

Result<void> Qp::enter_rts() {
    const QpAttr& a = sm_.attr();
    if (type() != QpType::rc) {
        uc_tx_psn_ = a.sq_psn;
        return ok();
    }
    transport::SenderConfig sc;
    sc.initial_psn = a.sq_psn;
    sc.window = kSendWindow;
    sc.timeout = a.timeout;
    sc.retry_cnt = a.retry_cnt;
    sc.rnr_retry = a.rnr_retry;
    auto s = transport::Sender::create(sc);
    if (!s) {
        return Failure{s.error()};
    }
    snd_ = std::move(*s);
    rd_limit_ = std::clamp<std::uint32_t>(a.max_rd_atomic, 1, env_.limits.max_qp_init_rd_atom);
    ssn_tx_ = 0;
    return ok();
}

// ---- posting -----------------------------------------------------------------------------------

Result<void> Qp::post_send(const SendWr& first, const SendWr** bad) noexcept {
    for (const SendWr* wr = &first; wr != nullptr; wr = wr->next) {
        auto fail_at = [&](std::errc e) {
            if (bad != nullptr) {
                *bad = wr;
            }
            return fail(e);
        };
        if (!sm_.accepts_send()) {
            return fail_at(std::errc::invalid_argument);
        }
        if (sq_tail_ - sq_done_ >= sq_.size()) {
            return fail_at(std::errc::not_enough_memory);
        }
        const auto op = static_cast<unsigned>(wr->opcode);
        const bool atomic = wr->opcode == WrOpcode::atomic_cmp_and_swp ||
                            wr->opcode == WrOpcode::atomic_fetch_and_add;
        const bool send_op = wr->opcode == WrOpcode::send || wr->opcode == WrOpcode::send_with_imm;
        const bool type_ok = type() == QpType::rc ? true
                             : type() == QpType::ud
                                 ? send_op
                                 : send_op || wr->opcode == WrOpcode::rdma_write ||
                                       wr->opcode == WrOpcode::rdma_write_with_imm;
        if (!type_ok) {
            return fail_at(std::errc::invalid_argument);  // e.g. a READ on UC, a WRITE on UD
        }
        if (type() == QpType::ud && (wr->ah == nullptr || &wr->ah->pd() != init_.pd)) {
            return fail_at(std::errc::invalid_argument);
        }
        if (op > static_cast<unsigned>(WrOpcode::atomic_fetch_and_add) ||
            (wr->send_flags & ~kSendFlagsKnown) != 0 || wr->num_sge > caps_.max_send_sge ||
            (wr->num_sge != 0 && wr->sg_list == nullptr)) {
            return fail_at(std::errc::invalid_argument);
        }
        std::uint64_t total = 0;
        for (std::uint32_t i = 0; i < wr->num_sge; ++i) {
            total += wr->sg_list[i].length;
        }
        const bool inl = (wr->send_flags & kSendInline) != 0;
        const bool reads = wr->opcode == WrOpcode::rdma_read || atomic;
        if (total > wire::kMaxMessage || (inl && (reads || total > caps_.max_inline_data)) ||
            (type() == QpType::ud && total > kUdMtu) ||
            (atomic && (total != 8 || (wr->remote_addr & 7u) != 0))) {
            return fail_at(std::errc::invalid_argument);
        }
        const std::uint64_t seq = sq_tail_;
        SendWqe& w = sq_[seq % sq_.size()];
        w = SendWqe{};
        w.wr_id = wr->wr_id;
        w.op = wr->opcode;
        w.raddr = wr->remote_addr;
        w.rkey = wr->rkey;
        w.cmp = wr->compare_add;
        w.swap = wr->swap;
        w.imm = wr->imm_data;
        w.len = static_cast<std::uint32_t>(total);
        w.signaled = init_.sq_sig_all || (wr->send_flags & kSendSignaled) != 0;
        w.solicited = (wr->send_flags & kSendSolicited) != 0;
        w.fence = (wr->send_flags & kSendFence) != 0;
        w.is_inline = inl && total != 0;
        if (type() == QpType::ud) {
            w.dst = wr->ah->peer();
            w.rqpn = wr->remote_qpn;
            // IB: a Q_Key with the high bit set means "use the QP's own Q_Key".
            w.qkey = (wr->remote_qkey & 0x8000'0000u) != 0 ? sm_.attr().qkey : wr->remote_qkey;
            // A global AH sends a GRH; its fields are copied at post time, as the rest of the AH.
            const AddressVector& av = wr->ah->av();
            if (av.is_global) {
                w.grh = true;
                w.flow_label = av.flow_label & wire::kFlowLabelMask;  // 20 bits, as on the wire
                w.traffic_class = av.traffic_class;
                w.hop_limit = av.hop_limit;
            }
        }
        Seg* segs = sq_segs_.data() + (seq % sq_.size()) * caps_.max_send_sge;
        if (w.is_inline) {
            std::byte* dst = sq_inline_.data() + (seq % sq_.size()) * caps_.max_inline_data;
            for (std::uint32_t i = 0; i < wr->num_sge; ++i) {
                const Sge& g = wr->sg_list[i];
                if (g.length != 0) {
                    std::memcpy(dst, reinterpret_cast<const void*>(g.addr), g.length);
                    dst += g.length;
                }
            }
        } else {
            // READ and atomic destinations are written by us: they need local write.
            const std::uint32_t need = reads ? kAccessLocalWrite : 0;
            for (std::uint32_t i = 0; i < wr->num_sge; ++i) {
                const Sge& g = wr->sg_list[i];
                const AccessCheck c =
                    env_.mrs->check_local(g.lkey, *init_.pd, g.addr, g.length, need);
                if (!c) {
                    w.status = WcStatus::loc_prot_err;
                    break;
                }
                c.target.mr->acquire();
                segs[w.nseg++] = {c.target.host, g.length, c.target.mr};
            }
        }
        const std::uint32_t n = w.len == 0 ? 1 : (w.len + kSegment - 1) / kSegment;
        w.frames = w.op == WrOpcode::rdma_read
                       ? (w.len == 0 ? 1 : (w.len + kReadChunk - 1) / kReadChunk)
                   : atomic ? 1
                            : n;
        if (w.op == WrOpcode::send || w.op == WrOpcode::send_with_imm ||
            w.op == WrOpcode::rdma_write_with_imm) {
            w.ssn = ssn_tx_;
            ssn_tx_ = transport::psn::add(ssn_tx_, 1);
        }
        ++sq_tail_;
        if (sm_.state() == QpState::err || sm_.state() == QpState::sqe) {
            flush_all();
        }
    }
    return ok();
}

Result<void> Qp::post_recv(const RecvWr& first, const RecvWr** bad) noexcept {
    for (const RecvWr* wr = &first; wr != nullptr; wr = wr->next) {
        auto fail_at = [&](std::errc e) {
            if (bad != nullptr) {
                *bad = wr;
            }
            return fail(e);
        };
        if (init_.srq != nullptr || !sm_.accepts_recv() || wr->num_sge > caps_.max_recv_sge ||
            (wr->num_sge != 0 && wr->sg_list == nullptr)) {
            return fail_at(std::errc::invalid_argument);
        }
        if (rq_tail_ - rq_head_ >= rq_.size()) {
            return fail_at(std::errc::not_enough_memory);
        }
        RecvWqe& r = rq_[rq_tail_ % rq_.size()];
        Seg* segs = r.segs;
        r = RecvWqe{};
        r.segs = segs;
        r.wr_id = wr->wr_id;
        if (!resolve_recv(*env_.mrs, *init_.pd, *wr, r.segs, r.nseg, r.total)) {
            r.status = WcStatus::loc_prot_err;
        }
        ++rq_tail_;
        if (sm_.state() == QpState::err) {
            flush_all();
        }
    }
    return ok();
}

// ---- completions -------------------------------------------------------------------------------

void Qp::release(Seg* segs, std::uint32_t n) noexcept {
    for (std::uint32_t i = 0; i < n; ++i) {
        if (segs[i].mr != nullptr) {
            segs[i].mr->release();
            segs[i].mr = nullptr;
        }
    }
}

void Qp::complete_send(SendWqe& w, WcStatus st) noexcept {
    const std::uint64_t seq = sq_done_;
    release(sq_segs_.data() + (seq % sq_.size()) * caps_.max_send_sge, w.nseg);
    w.nseg = 0;
    ++sq_done_;
    if (!w.signaled && st == WcStatus::success) {
        return;
    }
    Wc wc{};
    wc.wr_id = w.wr_id;
    wc.status = st;
    wc.opcode = wc_opcode(w.op);
    wc.qp_num = qpn_;
    wc.byte_len = (w.op == WrOpcode::rdma_read) ? w.len
                  : (w.op == WrOpcode::atomic_cmp_and_swp || w.op == WrOpcode::atomic_fetch_and_add)
                      ? 8u
                      : w.len;
    if (!init_.send_cq->push(wc) && sm_.state() != QpState::err) {
        env_.async(AsyncEventType::qp_fatal, qpn_);
        to_error();
    }
}

void Qp::complete_recv(RecvWqe& r, WcStatus st, std::uint32_t byte_len, std::uint32_t imm,
                       bool has_imm, bool rdma_imm, bool solicited, const transport::Port* ud_from,
                       std::uint32_t ud_src_qp, bool ud_grh) noexcept {
    release(r.segs, r.nseg);
    r.nseg = 0;
    Wc wc{};
    wc.wr_id = r.wr_id;
    wc.status = st;
    wc.opcode = rdma_imm ? WcOpcode::recv_rdma_with_imm : WcOpcode::recv;
    wc.qp_num = qpn_;
    // A datagram reports its own sender; a connected QP its peer.
    wc.src_qp = ud_from != nullptr ? ud_src_qp : dest_qpn_;
    wc.byte_len = byte_len;
    if (has_imm) {
        wc.imm_data = imm;
        wc.wc_flags |= kWcWithImm;
    }
    if (ud_grh) {
        wc.wc_flags |= kWcGrh;  // the receive buffer's first 40 bytes hold the GRH
    }
    if (ud_from != nullptr) {
        wc.slid = ud_from->peer_lid();
    } else if (peer_ != nullptr) {
        wc.slid = peer_->lid;
    }
    if (r.srq != nullptr) {
        r.srq->give_back(r.srq_slot);
        r.srq = nullptr;
    }
    if (!init_.recv_cq->push(wc, solicited) && sm_.state() != QpState::err) {
        env_.async(AsyncEventType::qp_fatal, qpn_);
        to_error();
    }
}

void Qp::to_error() noexcept {
    sm_.set_error();
    flush_all();
}

void Qp::flush_all() noexcept {
    // Everything not completed yet completes with WR_FLUSH_ERR, in order, signaled or not.
    while (sq_done_ != sq_tail_) {
        complete_send(sq_[sq_done_ % sq_.size()], WcStatus::wr_flush_err);
    }
    sq_push_ = sq_tail_;
    push_frame_ = 0;
    pend_head_ = pend_tail_ = 0;
    while (rq_head_ != rq_tail_) {
        RecvWqe& r = rq_[rq_head_ % rq_.size()];
        complete_recv(r, WcStatus::wr_flush_err, 0, 0, false, false);
        ++rq_head_;
    }
    flush_bound();
    drop_responses();
}

void Qp::reset_queues() noexcept {
    for (std::uint64_t s = sq_done_; s != sq_tail_; ++s) {
        SendWqe& w = sq_[s % sq_.size()];
        release(sq_segs_.data() + (s % sq_.size()) * caps_.max_send_sge, w.nseg);
    }
    for (std::uint64_t s = rq_head_; s != rq_tail_; ++s) {
        RecvWqe& r = rq_[s % rq_.size()];
        release(r.segs, r.nseg);
    }
    drop_bound();
    sq_done_ = sq_push_ = sq_tail_ = sq_stop_ = 0;
    drain_notify_ = false;
    rq_head_ = rq_tail_ = 0;
    push_frame_ = 0;
    pend_head_ = pend_tail_ = 0;
    drop_responses();
    snd_.reset();
    rcv_.reset();
    peer_ = nullptr;
}

// ---- progress ----------------------------------------------------------------------------------

bool Qp::busy() const noexcept {
    return sq_done_ != sq_tail_ || resp_head_ != resp_tail_ ||
           (rcv_ && rcv_->next_deadline() != transport::TimePoint::max());
}

bool Qp::pump(transport::TimePoint now) noexcept {
    const QpState st = sm_.state();
    if (type() != QpType::rc) {
        if (st != QpState::rts && st != QpState::sqd) {
            return false;
        }
        const bool did = pump_unreliable();
        check_drained();
        return did;
    }
    bool did = false;
    if (rcv_ && (st == QpState::rtr || st == QpState::rts || st == QpState::sqd)) {
        rcv_->poll(now);
        did |= respond(now);
        send_control(now);
    }
    if (snd_ && (st == QpState::rts || st == QpState::sqd)) {
        snd_->poll(now);
        did |= push_frames(now);  // up to sq_limit(): in SQD only a message already begun
        did |= transmit(now);
        did |= retire(now);
        check_drained();
    }
    return did;
}

bool Qp::on_frame(const wire::Frame& f, transport::Port& from) noexcept {
    if (type() == QpType::ud) {
        return on_frame_ud(f, from);  // datagrams come from anyone; the Q_Key decides
    }
    // Peer binding: the frame must come from the peer this QP is connected to (a port whose far
    // end has the QP's destination LID) and from the connected QP.
    if (peer_ == nullptr || from.peer_lid() != peer_->lid || f.header.src_qpn != dest_qpn_) {
        ++ctr_.wrong_peer;
        from.count_drop(transport::DropReason::wrong_peer);
        return true;
    }
    const QpState st = sm_.state();
    if (st == QpState::reset || st == QpState::init || st == QpState::err) {
        ++ctr_.dropped;
        from.count_drop(transport::DropReason::bad_state);
        return true;
    }
    ++ctr_.rx_frames;
    if (type() == QpType::uc) {
        on_frame_uc(f, from);
        return true;
    }
    const auto now = transport::Clock::now();
    if (is_response(f.header.opcode)) {
        if (!snd_) {
            ++ctr_.dropped;
            return true;
        }
        if (f.header.opcode == wire::Opcode::read_response_first ||
            f.header.opcode == wire::Opcode::read_response_middle ||
            f.header.opcode == wire::Opcode::read_response_last ||
            f.header.opcode == wire::Opcode::read_response_only) {
            on_read_response(f, now);
        } else {
            on_ack_frame(f, now);
        }
        return true;
    }
    on_request(f, from, now);
    return true;
}

}  // namespace tbv::verbs
