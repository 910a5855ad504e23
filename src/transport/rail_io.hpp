// SPDX-License-Identifier: Apache-2.0
// Port: one way to move frames to one peer, with software credits (docs/wire-protocol.md,
// "Rail credits"). Two kinds:
//
//  * RingPort — a rail the connection manager brought up: a TX ring and an RX ring with a DMA path
//    each way. It owns the rail's frame buffers (one DMA region per direction, mapped once at
//    attach): senders encode a frame straight into a TX buffer, commit it, and flush() posts every
//    committed frame with one barrier and one doorbell. poll() hands received frames to a callback
//    while they sit in the RX buffers (the callback copies what it keeps) and re-posts the buffers
//    in one batch.
//  * LoopPort — the device talking to itself (a QP connected to a QP of the same device, as any
//    HCA allows): the same interface over an in-memory FIFO, so loopback traffic goes through the
//    same decoder, checks and reliability engine as cable traffic.
//
// Credits: every frame carries our rail sequence number and our current RX limit; a sender may
// only put a data frame on a port while the peer's advertised limit allows it, and a control frame
// (ACK/NAK/CREDIT) while the limit plus a reserve of kControlReserve descriptors allows it, so no
// frame ever finds the peer's RX ring empty (DESIGN.md: an empty RX ring drops silently).
//
// Hot path (stamp/tx_buffer/commit/flush/poll): no allocation, no system call, no exception. One
// thread at a time (the device context's progress lock).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "hw/dma_region.hpp"
#include "nhi/ring.hpp"
#include "tbv/result.hpp"
#include "transport/reliability.hpp"
#include "transport/wire.hpp"

namespace tbv::transport {

/// RX descriptors of every port kept back for control frames (never advertised for data).
inline constexpr std::uint32_t kControlReserve = 16;
/// A port out of data credit asks the peer for its limit (a CREDIT frame with the ACK-request
/// flag, from the control reserve) after this long, then at doubling intervals up to
/// kCreditProbeMax. Needed when every frame the peer could have answered was lost: data sent
/// before the peer's DMA path existed (an accept lost, the acceptor sending at once) leaves the
/// peer with nothing received and so nothing to advertise, while we wait for its credit.
inline constexpr std::chrono::microseconds kCreditProbeFirst{500};
inline constexpr std::chrono::milliseconds kCreditProbeMax{64};
/// Frames handed to the ring (or taken from it) per call.
inline constexpr unsigned kPortBatch = 32;

/// Why a received frame was dropped before reaching a QP (counted per port).
enum class DropReason : std::uint8_t {
    crc,         ///< the NHI flagged a link CRC error in the frame
    overrun,     ///< longer than an RX buffer (truncated)
    malformed,   ///< wire::decode refused it
    no_qp,       ///< no QP with that number
    wrong_peer,  ///< the QP is connected elsewhere (another peer, or another source QP)
    bad_state,   ///< the QP cannot take frames in its state
    qkey,        ///< UD: Q_Key mismatch
    no_recv,     ///< UD: no receive WQE posted for kUdStarveLimit (the frame waited parked)
    count_,
};
const char* to_string(DropReason r) noexcept;

struct PortCounters {
    std::uint64_t tx_frames = 0;
    std::uint64_t tx_bytes = 0;
    std::uint64_t rx_frames = 0;
    std::uint64_t rx_bytes = 0;
    std::uint64_t credit_stalls = 0;  ///< a sender found no data credit on this port
    std::uint64_t credit_frames = 0;  ///< CREDIT-only frames sent (probes included)
    std::uint64_t credit_probes = 0;  ///< of those, probes: out of data credit, asking the peer
    std::uint64_t doorbells = 0;
    std::array<std::uint64_t, static_cast<std::size_t>(DropReason::count_)> drops{};
};

/// How long a port keeps a frame its handler refuses (a UD datagram whose QP has no receive WQE
/// posted) before dropping it. While a frame is parked its RX buffer is not re-posted and the
/// port stops taking frames, so the credit scheme pauses the sender instead of the frame being
/// lost. The QP itself drops a datagram once it has had no receive for 20 ms straight
/// (verbs::kUdStarveLimit); this is only the backstop bounding how long any handler can hold up
/// the rail, long enough that a process descheduled between two polls never trips it.
inline constexpr std::chrono::milliseconds kParkLimit{1000};

class Port;
/// Receives every well-formed frame a port polled (the payload is only valid during the call).
class FrameHandler {
public:
    /// false: the frame cannot be taken now (nothing about it was changed); the port keeps it
    /// and offers it again on its next poll.
    virtual bool on_frame(const wire::Frame& f, Port& from) noexcept = 0;

protected:
    ~FrameHandler() = default;
};

class Port {
public:
    Port(const Port&) = delete;
    Port& operator=(const Port&) = delete;
    virtual ~Port() = default;

    /// Whether a frame may go out now (credit, a free TX buffer and ring slot). A false for data
    /// counts a credit stall.
    bool can_send(bool control) noexcept {
        const bool credit = control ? gate_.can_send_control() : gate_.can_send_data();
        if (credit && tx_free_ > 0) {
            return true;
        }
        if (!control) {
            ++ctr_.credit_stalls;
            starved_ = !credit;  // see service(): the peer may have nothing to answer
        }
        return false;
    }
    /// Fills the rail fields of a header that is about to be encoded into tx_buffer().
    void stamp(wire::Header& h) noexcept {
        h.rail_seq = gate_.on_sent();
        h.credit = grant_.credit_field();
    }
    /// Where the next frame is encoded (kMaxFrame bytes); only after can_send() returned true.
    virtual std::byte* tx_buffer() noexcept = 0;
    /// The frame in tx_buffer() is complete (len bytes); it goes out at the next flush().
    virtual void commit(std::uint32_t len) noexcept = 0;
    /// Posts committed frames (one doorbell) and takes back completed TX buffers.
    virtual void flush() noexcept = 0;
    /// Receives up to kPortBatch frames, dispatching each to `h`; returns the number polled.
    virtual unsigned poll(FrameHandler& h) noexcept = 0;

    /// A CREDIT frame is worth sending (the peer has not heard of a quarter of our ring).
    bool credit_update_due() const noexcept { return grant_.update_due(update_threshold_); }
    /// Sends a CREDIT-only frame if a control credit is available; `ask`: a probe, which the peer
    /// answers with its own credit, sent with or without credit (see rail_io.cpp).
    void send_credit(bool ask = false) noexcept;
    /// Once per progress round, before flush(): the CREDIT frame the peer is owed (a quarter of
    /// our ring unannounced, or it asked), or a probe while we have been out of data credit.
    void service(TimePoint now) noexcept;
    /// When service() has a probe to send (TimePoint::max(): none; min(): schedule one now).
    TimePoint probe_due() const noexcept {
        return !starved_                    ? TimePoint::max()
               : next_probe_ == TimePoint{} ? TimePoint::min()
                                            : next_probe_;
    }

    void count_drop(DropReason r) noexcept { ++ctr_.drops[static_cast<std::size_t>(r)]; }
    const PortCounters& counters() const noexcept { return ctr_; }
    std::uint32_t id() const noexcept { return id_; }
    /// LID of the host at the other end (set by the fabric; the device's own LID for loopback).
    std::uint16_t peer_lid() const noexcept { return peer_lid_; }
    void set_peer_lid(std::uint16_t lid) noexcept { peer_lid_ = lid; }
    std::uint32_t data_credits() const noexcept { return gate_.data_credits(); }
    /// A frame was refused and waits at the head of this port (see kParkLimit).
    bool holding() const noexcept { return head_accounted_; }
    /// When the waiting frame was first refused (meaningful while holding()).
    TimePoint held_since() const noexcept { return parked_since_; }

protected:
    Port(std::uint32_t id, std::uint32_t peer_posted, std::uint32_t local_posted) noexcept
        : gate_(CreditGrant::initial_limit(peer_posted, kControlReserve), kControlReserve),
          grant_(local_posted, kControlReserve),
          update_threshold_(local_posted / 4 == 0 ? 1 : local_posted / 4),
          id_(id) {}
    /// Credit bookkeeping and dispatch of one received frame's bytes; false if the handler
    /// refused it (the bookkeeping is done: offer it again with dispatch()).
    bool receive(std::span<const std::byte> bytes, FrameHandler& h) noexcept;
    /// Dispatch only, for a frame receive() already accounted; `force`: drop it if refused.
    bool dispatch(std::span<const std::byte> bytes, FrameHandler& h, bool force) noexcept;
    bool park_expired() const noexcept { return Clock::now() - parked_since_ > kParkLimit; }

    TimePoint parked_since_{};
    bool head_accounted_ = false;  ///< the head frame was received and refused (parked)
    bool starved_ = false;         ///< a data frame found no credit; cleared by credit arriving
    bool asked_ = false;           ///< the peer probed us: answer with a CREDIT frame
    TimePoint next_probe_{};       ///< while starved_: when to probe (zero: not yet scheduled)
    std::chrono::microseconds probe_gap_{kCreditProbeFirst};

    CreditGate gate_;
    CreditGrant grant_;
    std::uint32_t update_threshold_;
    std::uint32_t tx_free_ = 0;
    std::uint32_t id_;
    std::uint16_t peer_lid_ = 0;
    PortCounters ctr_{};
};

/// A rail: its rings belong to the connection manager, its buffers to this object.
class RingPort final : public Port {
public:
    /// Maps the buffers and stocks the RX ring completely. `peer_posted` is what the peer said it
    /// keeps posted (Rail::peer_credits).
    static Result<std::unique_ptr<RingPort>> create(hw::Device& dev, nhi::TxRing& tx,
                                                    nhi::RxRing& rx, std::uint32_t peer_posted,
                                                    std::uint32_t id);
    /// Stops both rings (the buffers must not be reachable by the device when they are freed).
    ~RingPort() override;

    std::byte* tx_buffer() noexcept override;
    void commit(std::uint32_t len) noexcept override;
    void flush() noexcept override;
    unsigned poll(FrameHandler& h) noexcept override;

private:
    static constexpr std::size_t kSlot = wire::kMaxFrame;
    RingPort(nhi::TxRing& tx, nhi::RxRing& rx, hw::DmaRegion txb, hw::DmaRegion rxb,
             std::uint32_t peer_posted, std::uint32_t id) noexcept;
    void reap() noexcept;
    /// Handles one completion; false if it was refused and must stay (see kParkLimit).
    bool handle(const nhi::RxCompletion& c, bool accounted, bool force, FrameHandler& h) noexcept;

    nhi::TxRing& tx_;
    nhi::RxRing& rx_;
    hw::DmaRegion tx_buf_;
    hw::DmaRegion rx_buf_;
    static constexpr std::uint32_t kNone = ~0u;
    std::vector<std::uint32_t> free_;  ///< free TX buffer indices (stack, never reallocates)
    std::uint32_t cur_ = kNone;        ///< buffer tx_buffer() handed out, not yet committed
    std::array<nhi::TxFrame, kPortBatch> staged_{};
    unsigned nstaged_ = 0;
    // Frames polled but not taken yet, in order: the first was accounted (and refused), the
    // rest of its batch not yet.
    std::array<nhi::RxCompletion, kPortBatch> parked_{};
    unsigned nparked_ = 0;
    unsigned parked_pos_ = 0;
};

/// Loopback: frames committed are received by the same device's next poll().
class LoopPort final : public Port {
public:
    explicit LoopPort(std::uint32_t id, std::uint32_t depth = 256);

    std::byte* tx_buffer() noexcept override { return slot(tail_); }
    void commit(std::uint32_t len) noexcept override;
    void flush() noexcept override {}
    unsigned poll(FrameHandler& h) noexcept override;

private:
    std::byte* slot(std::uint32_t i) noexcept {
        return buf_.data() + static_cast<std::size_t>(i % depth_) * wire::kMaxFrame;
    }
    std::uint32_t depth_;
    std::vector<std::byte> buf_;
    std::vector<std::uint32_t> len_;
    std::uint32_t head_ = 0;  ///< next frame to receive
    std::uint32_t tail_ = 0;  ///< next slot to fill
};

}  // namespace tbv::transport
