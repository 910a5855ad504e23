// SPDX-License-Identifier: Apache-2.0
// Queue pair: the verbs object (state machine, send and receive queues) and its protocol on the
// wire (requester and responder halves of RC; UC; UD).
//
// How a work request flows (DESIGN.md "How a verb flows"):
//   post_send: validate, resolve every SGE once (L_Key, PD, bounds → host pointer, MR reference),
//   copy inline data, append a WQE. Nothing else happens until progress.
//   pump (requester, from the device's progress): WQEs become frames in the reliability engine's
//   window (transport::Sender assigns PSNs); frames the engine releases are encoded straight into a
//   port's TX buffer, payload gathered from the SGEs (the one TX copy), round robin over the peer's
//   ports (striping), only where the port has credit.
//   on_frame (responder): peer binding, then transport::Receiver decides (accept, duplicate,
//   replay, drop, RNR); accepted payload is checked (R_Key, PD, access, bounds) and copied into
//   the MR or the receive WQE its SETH names (the one RX copy), in any order. Messages are
//   delivered in PSN order: receive completions, READ and atomic execution happen there.
//   on_frame (requester side): ACK/NAK/RNR NAK drive the Sender; READ responses and atomic ACKs
//   land in the WQE's local SGEs; completions leave in order.
//
// Storage (WQE rings, SGE arrays, inline buffers, reorder records) is allocated at creation; the
// hot path allocates nothing, throws nothing and makes no system call.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"
#include "transport/fabric.hpp"
#include "transport/reliability.hpp"
#include "verbs/cq.hpp"
#include "verbs/limits.hpp"
#include "verbs/mr.hpp"
#include "verbs/pd.hpp"
#include "verbs/qp_state.hpp"
#include "verbs/seg.hpp"

namespace tbv::verbs {

class Srq;

/// Per-QP counters (tbv status, tests).
struct QpCounters {
    std::uint64_t tx_frames = 0;
    std::uint64_t rx_frames = 0;
    std::uint64_t tx_bytes = 0;              ///< payload bytes sent (requests and READ responses)
    std::uint64_t rx_bytes = 0;              ///< payload bytes placed
    std::uint64_t no_route = 0;              ///< frames released while no port to the peer existed
    std::uint64_t remote_access_faults = 0;  ///< incoming requests refused (NAK'd)
    std::uint64_t wrong_peer = 0;            ///< frames from another peer / source QP (dropped)
    std::uint64_t dropped = 0;               ///< frames dropped for any other reason
    std::uint64_t replays = 0;               ///< duplicate READ/atomic answered again
    std::uint64_t uc_dropped_messages = 0;   ///< UC: messages lost to a gap (or without a WQE)
    std::uint64_t qkey_drops = 0;            ///< UD: datagrams with the wrong Q_Key
};

struct QpInit {
    QpType type = QpType::rc;
    Pd* pd = nullptr;
    Cq* send_cq = nullptr;
    Cq* recv_cq = nullptr;
    Srq* srq = nullptr;
    QpCaps cap{};
    bool sq_sig_all = false;
};

/// What a QP needs from its device context (all owned by the context, outliving the QP).
struct QpEnv {
    transport::Fabric* fabric = nullptr;
    MrTable* mrs = nullptr;
    DeviceLimits limits{};
    AsyncHandler async{};
    Gid gid{};             ///< the port's GID (ContextOptions::gid): UD GRHs
    bool roce_v2 = false;  ///< ContextOptions::gid_roce_v2
};

class Qp final : public transport::QpSink {
public:
    /// ibv_create_qp: EINVAL for bad caps (limits) or missing CQs; ENOMEM when out of QPNs.
    static Result<std::unique_ptr<Qp>> create(const QpEnv& env, const QpInit& init);
    ~Qp();
    Qp(const Qp&) = delete;
    Qp& operator=(const Qp&) = delete;

    std::uint32_t qpn() const noexcept { return qpn_; }
    QpType type() const noexcept { return sm_.type(); }
    QpState state() const noexcept { return sm_.state(); }
    const QpAttr& attr() const noexcept { return sm_.attr(); }
    const QpCaps& caps() const noexcept { return caps_; }
    const QpCounters& counters() const noexcept { return ctr_; }
    const transport::Sender* sender() const noexcept { return snd_.get(); }
    const transport::Receiver* receiver() const noexcept { return rcv_.get(); }
    Pd& pd() const noexcept { return *init_.pd; }
    Srq* srq() const noexcept { return init_.srq; }
    bool uses(const Cq* cq) const noexcept { return init_.send_cq == cq || init_.recv_cq == cq; }

    /// ibv_modify_qp (all-or-nothing). Entering RTR binds the QP to its peer and starts the
    /// receiver; RTS starts the sender; ERR flushes; RESET empties everything.
    Result<void> modify(const QpAttr& attr, std::uint32_t mask);
    /// ibv_post_send / ibv_post_recv: on failure `bad` points at the first WR not posted.
    Result<void> post_send(const SendWr& wr, const SendWr** bad) noexcept;
    Result<void> post_recv(const RecvWr& wr, const RecvWr** bad) noexcept;

    /// The MR is being deregistered: drop queued answers that would read or write it.
    void revoke(const Mr* mr) noexcept;
    /// Progress: timers, new frames, completions. Returns whether anything happened.
    bool pump(transport::TimePoint now) noexcept;
    /// Whether pump() has anything to do (WQEs queued, frames unacknowledged, responses owed).
    bool busy() const noexcept;
    /// In SQD and WQEs that had begun when it was entered are still outstanding
    /// (ibv_qp_attr.sq_draining).
    bool sq_draining() const noexcept;

    bool on_frame(const transport::wire::Frame& f, transport::Port& from) noexcept override;

private:
    friend class Srq;
    struct SendWqe {
        std::uint64_t wr_id = 0;
        std::uint64_t raddr = 0;
        std::uint64_t cmp = 0, swap = 0;
        std::uint32_t rkey = 0;
        std::uint32_t imm = 0;
        std::uint32_t len = 0;     ///< message bytes
        std::uint32_t nseg = 0;    ///< resolved SGEs in sq_segs_ (inline: 0)
        std::uint32_t ssn = 0;     ///< SEND / WRITE_WITH_IMM: receive sequence number
        std::uint32_t frames = 0;  ///< frames in the Sender (READ: one request per chunk)
        std::uint32_t rqpn = 0;    ///< UD: destination QP, Q_Key, and peer (from the AH)
        std::uint32_t qkey = 0;
        transport::Peer* dst = nullptr;
        std::uint32_t flow_label = 0;  ///< UD with a GRH (the AH's is_global): its fields
        std::uint8_t traffic_class = 0;
        std::uint8_t hop_limit = 0;
        bool grh = false;
        WrOpcode op = WrOpcode::send;
        WcStatus status = WcStatus::success;  ///< a local error found at post time
        bool signaled = false;
        bool solicited = false;
        bool fence = false;
        bool is_inline = false;
    };
    struct RecvWqe {
        std::uint64_t wr_id = 0;
        std::uint32_t nseg = 0;
        std::uint32_t total = 0;  ///< bytes the SGEs hold
        Seg* segs = nullptr;      ///< in rq_segs_ (or the SRQ's)
        Srq* srq = nullptr;       ///< set when taken from an SRQ (its slot goes back there)
        std::uint32_t srq_slot = 0;
        bool bound = false;
        std::uint32_t ssn = 0;
        WcStatus status = WcStatus::success;
    };
    /// An outstanding READ chunk or atomic of ours (requester), oldest first.
    struct Pending {
        std::uint64_t seq = 0;     ///< WQE sequence
        std::uint32_t psn = 0;     ///< request PSN
        std::uint32_t span = 1;    ///< PSNs (response frames)
        std::uint32_t got = 0;     ///< response frames received in order
        std::uint32_t offset = 0;  ///< chunk's byte offset in the WQE's local buffer
        std::uint32_t len = 0;
        bool done = false;
    };
    /// A READ or atomic the peer asked of us (responder), executed in PSN order.
    struct Response {
        std::uint64_t va = 0;
        std::uint64_t cmp = 0, swap_add = 0;
        std::uint64_t orig = 0;  ///< atomic result (kept for replays)
        std::uint32_t rkey = 0;
        std::uint32_t psn = 0;
        std::uint32_t len = 0;
        std::uint32_t sent = 0;  ///< response frames sent
        transport::wire::Opcode op = transport::wire::Opcode::read_request;
        bool ready = false;               ///< delivered in order: may execute
        bool executed = false;            ///< atomic done (orig valid)
        std::byte* host = nullptr;        ///< checked target in the MR (READ source, atomic word)
        Mr* mr = nullptr;                 ///< referenced while the response is owed
        transport::Port* port = nullptr;  ///< READ: every response frame on one port
        bool revoked = false;             ///< its MR was deregistered: dropped unanswered
    };
    /// What the responder needs when a message is delivered, by the PSN of its last frame.
    struct MsgRecord {
        std::uint32_t psn = 0;
        std::uint32_t ssn = 0;
        std::uint32_t len = 0;
        std::uint32_t imm = 0;
        std::uint8_t kind = 0;  ///< 0 none, 1 SEND, 2 WRITE_WITH_IMM, 3 READ/atomic
        bool has_imm = false;
        bool solicited = false;
        bool valid = false;
    };

    Qp(const QpEnv& env, const QpInit& init);
    Result<void> allocate();

    // qp.cpp: control path.
    Result<void> enter_rtr();
    Result<void> enter_rts();
    void enter_sqd() noexcept;
    /// End of the WQEs the requester may start now (sq_stop_ in SQD).
    std::uint64_t sq_limit() const noexcept;
    void check_drained() noexcept;
    void to_error() noexcept;
    void flush_all() noexcept;
    void reset_queues() noexcept;
    void complete_send(SendWqe& w, WcStatus st) noexcept;
    void complete_recv(RecvWqe& r, WcStatus st, std::uint32_t byte_len, std::uint32_t imm,
                       bool has_imm, bool rdma_imm, bool solicited = false,
                       const transport::Port* ud_from = nullptr, std::uint32_t ud_src_qp = 0,
                       bool ud_grh = false) noexcept;
    void release(Seg* segs, std::uint32_t n) noexcept;
    void flush_bound() noexcept;     ///< SRQ WQEs held by this QP complete with WR_FLUSH_ERR
    void drop_responses() noexcept;  ///< answers owed to the peer are dropped, MR refs released
    void drop_bound() noexcept;      ///< ...or go back to the SRQ unused (RESET, destroy)

    // qp_requester.cpp
    bool push_frames(transport::TimePoint now) noexcept;
    bool transmit(transport::TimePoint now) noexcept;
    void build_request(const transport::TxFrame& tf, transport::Port& port) noexcept;
    bool retire(transport::TimePoint now) noexcept;
    void on_ack_frame(const transport::wire::Frame& f, transport::TimePoint now) noexcept;
    void on_read_response(const transport::wire::Frame& f, transport::TimePoint now) noexcept;
    void ack_through(std::uint32_t psn, transport::TimePoint now) noexcept;
    void advance_pending(transport::TimePoint now) noexcept;

    // qp_unreliable.cpp: UC and UD.
    bool pump_unreliable() noexcept;
    void on_frame_uc(const transport::wire::Frame& f, transport::Port& from) noexcept;
    /// false: no receive WQE posted yet (the port keeps the datagram for a while).
    bool on_frame_ud(const transport::wire::Frame& f, transport::Port& from) noexcept;
    RecvWqe* next_recv() noexcept;  ///< the receive WQE the next message takes (UC/UD)
    void consume_recv() noexcept;   ///< ...and its removal once completed
    transport::Port* uc_port() noexcept;

    // qp_responder.cpp
    void on_request(const transport::wire::Frame& f, transport::Port& from,
                    transport::TimePoint now) noexcept;

    RecvWqe* recv_for(std::uint32_t ssn) noexcept;
    void deliver() noexcept;
    bool responses_full() const noexcept { return resp_tail_ - resp_head_ >= responses_.size(); }
    bool port_alive(const transport::Port* p) const noexcept;
    bool respond(transport::TimePoint now) noexcept;
    void send_control(transport::TimePoint now) noexcept;
    bool queue_response(const transport::wire::Frame& f, const AccessCheck& target,
                        bool ready) noexcept;
    void send_nak(transport::wire::NakCode code, std::uint32_t psn) noexcept;
    bool send_atomic_ack(std::uint32_t psn, std::uint64_t orig) noexcept;

    // Set at creation.
    QpEnv env_;
    QpInit init_;
    QpCaps caps_{};
    QpStateMachine sm_;
    std::uint32_t qpn_ = 0;
    QpCounters ctr_{};

    // Connection (set at RTR).
    transport::Peer* peer_ = nullptr;
    std::uint32_t dest_qpn_ = 0;
    std::unique_ptr<transport::Sender> snd_;
    std::unique_ptr<transport::Receiver> rcv_;

    // Send queue: ring of WQEs; [sq_done_, sq_push_) have frames in the Sender,
    // [sq_push_, sq_tail_) wait. Sequence numbers are monotonic; index = seq % size.
    std::vector<SendWqe> sq_;
    std::vector<Seg> sq_segs_;          ///< max_send_sge per WQE
    std::vector<std::byte> sq_inline_;  ///< max_inline per WQE
    std::uint64_t sq_done_ = 0, sq_push_ = 0, sq_tail_ = 0;
    std::uint32_t push_frame_ = 0;  ///< next frame of WQE sq_push_ to push
    // SQD (IB 10.3.1 "Send Queue Drain"): the WQEs before sq_stop_ had begun when the QP
    // entered SQD and are finished; later ones wait for the return to RTS.
    std::uint64_t sq_stop_ = 0;
    bool drain_notify_ = false;     ///< raise IBV_EVENT_SQ_DRAINED once sq_stop_ is reached
    std::uint32_t ssn_tx_ = 0;      ///< next receive sequence number we send
    std::vector<Pending> pending_;  ///< ring, capacity max_rd_atomic
    std::uint32_t pend_head_ = 0, pend_tail_ = 0;
    std::uint32_t rd_limit_ = 1;  ///< max_rd_atomic (at least 1)
    bool ack_hint_valid_ = false;
    std::uint32_t ack_hint_ = 0;  ///< highest ACK seen while a READ/atomic held it back

    // Receive queue.
    std::vector<RecvWqe> rq_;
    std::vector<Seg> rq_segs_;
    std::uint64_t rq_head_ = 0, rq_tail_ = 0;
    // UD: since when datagrams found no receive WQE (see kUdStarveLimit).
    bool ud_starved_ = false;
    transport::TimePoint ud_starved_since_{};
    std::uint32_t ssn_rx_ = 0;    ///< SSN of the oldest receive WQE not yet completed
    std::vector<RecvWqe> bound_;  ///< SRQ WQEs taken for messages in flight (by SSN)

    // UC/UD (no reliability engine): next PSN to send / expected, message in progress.
    std::uint32_t uc_tx_psn_ = 0;
    std::uint32_t uc_rx_psn_ = 0;
    std::uint32_t uc_msg_psn_ = 0;
    bool uc_in_msg_ = false;
    std::uint32_t qkey_ = 0;

    // Responder: records of accepted last frames (by PSN), READ/atomic work, atomic results.
    std::vector<MsgRecord> records_;
    std::vector<Response> responses_;
    std::uint32_t resp_head_ = 0, resp_tail_ = 0;
    /// Results of executed atomics, for duplicates (IB: an atomic never runs twice).
    struct AtomicResult {
        std::uint32_t psn = 0;
        std::uint64_t orig = 0;
        bool valid = false;
    };
    std::array<AtomicResult, 16> atomics_{};
    std::uint32_t atomic_next_ = 0;
};

}  // namespace tbv::verbs
