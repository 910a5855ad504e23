// SPDX-License-Identifier: Apache-2.0
// The per-QP reliable-connection engine and per-rail software credits, as pure logic.
//
// Nothing here touches a ring or reads a clock: the caller passes `now` (a steady_clock time
// point) into every call that may start or check a timer, asks the engine what to transmit and
// reports what arrived. Storage is sized once in create(); no call after that allocates, throws
// or makes a system call. Rules and the reasons for them: docs/wire-protocol.md.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "tbv/result.hpp"
#include "transport/psn.hpp"

namespace tbv::transport {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = std::chrono::nanoseconds;

inline constexpr Duration kInfinite = Duration::max();

/// IB RNR NAK timer encoding (IBA vol. 1 table 45): 5-bit code → minimum wait, in µs.
/// Code 0 is the longest (655.36 ms); 1..31 grow from 0.01 ms to 491.52 ms.
inline constexpr std::array<std::uint32_t, 32> kRnrTimerUs = {
    655360, 10,    20,    30,    40,    60,     80,     120,    160,    240,    320,
    480,    640,   960,   1280,  1920,  2560,   3840,   5120,   7680,   10240,  15360,
    20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520,
};

/// Minimum RNR wait for a 5-bit timer code (the code is masked to 5 bits).
constexpr Duration rnr_timer(std::uint8_t code) noexcept {
    return std::chrono::microseconds(kRnrTimerUs[code & 0x1Fu]);
}

/// IB local ACK timeout: 4.096 µs × 2^timeout; 0 means infinite (never time out).
constexpr Duration ib_timeout(std::uint8_t timeout) noexcept {
    if (timeout == 0) {
        return kInfinite;
    }
    const unsigned t = timeout > 31 ? 31u : timeout;
    return Duration(std::int64_t{4096} << t);
}

static_assert(rnr_timer(1) == std::chrono::microseconds(10));
static_assert(rnr_timer(0) == std::chrono::microseconds(655360));
static_assert(ib_timeout(14) == Duration(4096LL << 14));  // ≈ 67 ms, perftest's default

// ---- sender ------------------------------------------------------------------------------------

enum class SenderStatus : std::uint8_t {
    ok,
    retry_exceeded,  ///< retry_cnt timeouts/NAK retries without progress → IBV_WC_RETRY_EXC_ERR
    rnr_retry_exceeded,  ///< rnr_retry RNR NAKs without progress → IBV_WC_RNR_RETRY_EXC_ERR
};

struct SenderConfig {
    std::uint32_t initial_psn = 0;  ///< the QP's sq_psn
    std::uint32_t window = 1024;    ///< frames pushed and not yet acknowledged (≤ 2^22)
    std::uint8_t timeout = 14;      ///< IB attribute: 4.096 µs × 2^timeout, 0 = infinite
    std::uint8_t retry_cnt = 7;     ///< 0..7
    std::uint8_t rnr_retry = 7;     ///< 0..7, 7 = retry forever
    /// Floor of the retransmit timeout (never below the IB timeout's own floor of the clamp).
    Duration min_rto = std::chrono::microseconds(200);
    /// RTO before the first RTT sample (clamped by the IB timeout).
    Duration initial_rto = std::chrono::milliseconds(1);
};

/// One frame the caller must put on a rail now.
struct TxFrame {
    std::uint32_t psn = 0;
    std::uint32_t span = 1;    ///< PSNs the frame consumes (a READ request: its response frames)
    std::uint64_t cookie = 0;  ///< the caller's handle (WQE, frame index) given to push()
    bool retransmit = false;   ///< sent before
    bool ack_request = false;  ///< set the ack-request flag in the header
};

class Sender {
public:
    static Result<std::unique_ptr<Sender>> create(const SenderConfig& cfg);

    enum class Push : std::uint8_t { ok, window_full, failed };

    /// Queues one frame of a message; it gets the next PSN (returned in `psn_out`).
    /// `last_of_message` marks the frame whose acknowledgement completes message `msg_id`.
    Push push(std::uint64_t cookie, std::uint64_t msg_id, bool last_of_message, std::uint32_t span,
              std::uint32_t* psn_out = nullptr) noexcept;

    /// The next frame to transmit (a go-back-N retransmission first, then new frames in PSN
    /// order). Returns false when there is nothing to send, the QP waits out an RNR timer or
    /// failed. The caller checks the rail's CreditGate before calling.
    bool next_tx(TimePoint now, TxFrame& out) noexcept;

    /// Cumulative ACK: every PSN up to and including `psn` arrived.
    void on_ack(std::uint32_t psn, TimePoint now) noexcept;
    /// NAK (sequence error) at `psn`: everything before it arrived; go back to `psn`.
    void on_nak(std::uint32_t psn, TimePoint now) noexcept;
    /// RNR NAK at `psn` (everything before it arrived) with the responder's 5-bit timer code.
    void on_rnr_nak(std::uint32_t psn, std::uint8_t timer_code, TimePoint now) noexcept;

    /// Evidence that the oldest request is being answered without a cumulative ACK yet (READ
    /// response frames arriving in order): restarts the retransmit timer and forgives earlier
    /// timeouts, as an ACK would. A long READ must not time out while its data streams in.
    void on_progress(TimePoint now) noexcept;
    /// Runs the retransmit and RNR timers.
    void poll(TimePoint now) noexcept;
    /// When poll() next has something to do (kInfinite-like max() if nothing is armed).
    TimePoint next_deadline() const noexcept;

    /// Completed messages in order (each id once).
    bool pop_completion(std::uint64_t& msg_id) noexcept;

    SenderStatus status() const noexcept { return status_; }
    std::uint32_t next_psn() const noexcept { return next_psn_; }
    /// PSN of the oldest unacknowledged frame (next_psn() when idle).
    std::uint32_t oldest_psn() const noexcept {
        return head_ == tail_ ? next_psn_ : slots_[head_ % cap_].psn;
    }
    std::uint32_t unacked() const noexcept { return static_cast<std::uint32_t>(tail_ - head_); }
    bool window_full() const noexcept { return tail_ - head_ >= cap_; }
    bool idle() const noexcept { return head_ == tail_; }
    Duration rto() const noexcept { return rto_; }
    Duration srtt() const noexcept { return srtt_; }

    struct Counters {
        std::uint64_t frames_sent = 0;
        std::uint64_t retransmits = 0;
        std::uint64_t timeouts = 0;
        std::uint64_t naks = 0;
        std::uint64_t rnr_naks = 0;
        std::uint64_t rtt_samples = 0;
        std::uint64_t bogus_acks = 0;  ///< ACK/NAK for PSNs never sent (dropped)
    };
    const Counters& counters() const noexcept { return counters_; }

private:
    struct Slot {
        std::uint64_t cookie = 0;
        std::uint64_t msg_id = 0;
        TimePoint sent_at{};
        std::uint32_t psn = 0;
        std::uint32_t span = 1;
        std::uint8_t tx_count = 0;
        bool last = false;
    };

    explicit Sender(const SenderConfig& cfg);
    Slot& slot(std::uint64_t index) noexcept { return slots_[index % cap_]; }
    /// Index of the frame whose PSN range holds `p`, among sent frames; false if none.
    bool find_sent(std::uint32_t p, std::uint64_t& index) const noexcept;
    void retire_through(std::uint32_t psn, TimePoint now) noexcept;
    void rtt_sample(Duration rtt) noexcept;
    void go_back(std::uint64_t index) noexcept;
    bool count_retry() noexcept;
    Duration clamp_rto(Duration d) const noexcept;

    SenderConfig cfg_;
    std::vector<Slot> slots_;
    std::vector<std::uint64_t> completions_;
    std::uint64_t cap_ = 0;
    std::uint64_t head_ = 0;      ///< oldest unacknowledged frame
    std::uint64_t send_ = 0;      ///< next frame to (re)transmit
    std::uint64_t sent_max_ = 0;  ///< one past the highest frame ever transmitted
    std::uint64_t tail_ = 0;      ///< one past the newest pushed frame
    std::uint64_t comp_head_ = 0;
    std::uint64_t comp_tail_ = 0;
    std::uint32_t next_psn_ = 0;
    SenderStatus status_ = SenderStatus::ok;
    Duration max_rto_ = kInfinite;
    Duration rto_{};
    Duration srtt_{};
    Duration rttvar_{};
    bool have_rtt_ = false;
    bool timer_armed_ = false;
    TimePoint deadline_{};
    bool rnr_wait_ = false;
    TimePoint rnr_until_{};
    std::uint8_t retries_ = 0;
    TimePoint retry_epoch_{};  ///< last progress or counted retry (see poll())
    std::uint8_t rnr_retries_ = 0;
    bool nak_seen_ = false;
    std::uint32_t last_nak_psn_ = 0;
    TimePoint last_nak_at_{};
    Counters counters_{};
};

// ---- receiver ----------------------------------------------------------------------------------

struct ReceiverConfig {
    std::uint32_t initial_psn = 0;  ///< the QP's rq_psn
    /// Reorder window in PSNs (power of two, ≤ 2^22): frames up to this far ahead of the expected
    /// PSN are accepted and remembered in a bitmap (striping over rails reorders frames).
    std::uint32_t window = 1024;
    std::uint32_t ack_every = 16;  ///< coalesce: one ACK per this many in-order frames
    Duration ack_delay = std::chrono::microseconds(20);  ///< ...or this long after the first
    /// NAK a hole once this many frames beyond it were accepted, or once it is this old.
    std::uint32_t nak_after = 32;
    Duration reorder_timeout = std::chrono::microseconds(100);
    std::uint8_t min_rnr_timer = 1;  ///< 5-bit code sent in RNR NAKs
};

struct RxFrameInfo {
    std::uint32_t psn = 0;
    std::uint32_t span = 1;        ///< PSNs this frame covers (READ request: response count)
    bool last_of_message = false;  ///< completes a message when delivered in order
    bool ack_request = false;
    bool replayable = false;    ///< READ request or atomic: a duplicate needs its stored result
    bool no_rx_buffer = false;  ///< caller: this frame needs a receive WQE and none is posted
};

enum class RxVerdict : std::uint8_t {
    accept,     ///< new: place the payload (it may be ahead of the in-order point)
    duplicate,  ///< already received: drop (an ACK is scheduled)
    replay,     ///< duplicate READ/atomic: the caller resends the stored response
    drop,       ///< outside the window or after an RNR/gap: drop without placing
    rnr,        ///< no receive buffer: an RNR NAK is scheduled
};

enum class ControlKind : std::uint8_t { none, ack, nak, rnr_nak };

/// The control frame the receiver wants on the wire (opcodes ack, nak, rnr_nak).
struct Control {
    ControlKind kind = ControlKind::none;
    std::uint32_t psn = 0;      ///< ACK: last in-order PSN; NAK/RNR NAK: the expected PSN
    std::uint8_t syndrome = 0;  ///< NAK code 0 (sequence error) or the RNR timer code
    std::uint32_t msn = 0;      ///< messages completed (24 bits)
};

class Receiver {
public:
    static Result<std::unique_ptr<Receiver>> create(const ReceiverConfig& cfg);

    RxVerdict on_frame(const RxFrameInfo& f, TimePoint now) noexcept;
    /// Runs the ACK-delay and gap timers.
    void poll(TimePoint now) noexcept;
    /// The control frame to send now, if any (consumes it).
    bool take_control(Control& out, TimePoint now) noexcept;
    /// When poll()/take_control() next may produce something (max() if nothing pending).
    TimePoint next_deadline() const noexcept;
    /// Messages delivered in order: the PSN of each message's last frame, once each.
    bool pop_delivered(std::uint32_t& last_psn) noexcept;

    std::uint32_t expected_psn() const noexcept { return expected_; }
    std::uint32_t msn() const noexcept { return msn_; }

    struct Counters {
        std::uint64_t accepted = 0;
        std::uint64_t out_of_order = 0;
        std::uint64_t duplicates = 0;
        std::uint64_t dropped = 0;
        std::uint64_t naks = 0;
        std::uint64_t rnr_naks = 0;
        std::uint64_t acks = 0;
    };
    const Counters& counters() const noexcept { return counters_; }

private:
    explicit Receiver(const ReceiverConfig& cfg);
    bool test(std::vector<std::uint64_t>& bits, std::uint32_t p) const noexcept;
    void set(std::vector<std::uint64_t>& bits, std::uint32_t p, bool v) noexcept;
    void advance(TimePoint now) noexcept;
    void clear_from(std::uint32_t p) noexcept;
    void check_gap(TimePoint now) noexcept;

    ReceiverConfig cfg_;
    std::vector<std::uint64_t> have_;  ///< bitmap: PSN received (index = psn mod window)
    std::vector<std::uint64_t> last_;  ///< bitmap: PSN ends a message
    std::vector<std::uint32_t> delivered_;
    std::uint64_t del_head_ = 0;
    std::uint64_t del_tail_ = 0;
    std::uint32_t expected_ = 0;
    std::uint32_t highest_ = 0;  ///< one past the highest PSN accepted (== expected_ if no gap)
    std::uint32_t msn_ = 0;
    std::uint32_t ooo_ = 0;  ///< frames accepted beyond the current hole
    TimePoint gap_since_{};
    bool nak_sent_ = false;  ///< a NAK for the current expected PSN went out
    bool nak_pending_ = false;
    bool rnr_pending_ = false;
    bool in_rnr_ = false;  ///< RNR NAK sent for expected_: drop until it is retried
    bool ack_now_ = false;
    std::uint32_t unacked_ = 0;
    TimePoint first_unacked_{};
    Counters counters_{};
};

// ---- rail credits ------------------------------------------------------------------------------

/// Our view of the peer's RX ring on one rail (one per rail, shared by every QP using it).
///
/// Every frame on a rail carries the sender's rail sequence number (a per-rail frame counter,
/// low 16 bits on the wire). The peer advertises a limit L in the 16-bit credit field of every
/// frame it sends back: frames with rail sequence < L may be sent as data; control frames (ACK,
/// NAK, RNR NAK, CREDIT) may also use a reserve R: sequence < L + R. The peer computes
/// L = (sequence after the last frame it received) + (descriptors posted and free) - R, so L + R
/// never exceeds what its ring can take: no frame finds the ring dry. A rail is FIFO, so a frame
/// lost on the wire is forgotten as soon as a later frame arrives (no credit leaks), and a lost or
/// duplicated update is harmless (the limit only grows).
class CreditGate {
public:
    CreditGate(std::uint32_t initial_limit, std::uint32_t control_reserve) noexcept
        : limit_(initial_limit), reserve_(control_reserve) {}

    bool can_send_data() const noexcept { return ahead(limit_, seq_); }
    bool can_send_control() const noexcept { return ahead(limit_ + reserve_, seq_); }
    std::uint32_t data_credits() const noexcept { return ahead(limit_, seq_) ? limit_ - seq_ : 0; }
    /// Takes the next rail sequence number for a frame about to be sent (the header's rail_seq).
    std::uint16_t on_sent() noexcept { return static_cast<std::uint16_t>(seq_++); }
    /// A received frame's credit field (low 16 bits of the peer's limit); stale values ignored.
    void on_credit(std::uint16_t limit16) noexcept {
        const auto d = static_cast<std::uint16_t>(limit16 - static_cast<std::uint16_t>(limit_));
        if (d != 0 && d < 0x8000u) {
            limit_ += d;
        }
    }
    std::uint32_t sent() const noexcept { return seq_; }
    std::uint32_t limit() const noexcept { return limit_; }

private:
    static bool ahead(std::uint32_t a, std::uint32_t b) noexcept {
        return static_cast<std::int32_t>(a - b) > 0;
    }
    std::uint32_t seq_ = 0;
    std::uint32_t limit_;
    std::uint32_t reserve_;
};

/// Our RX ring on one rail: what we advertise to the peer (ring size < 32768).
class CreditGrant {
public:
    /// `posted` descriptors are on the ring at start; `reserve` of them are for control frames
    /// and never advertised for data. The peer's CreditGate starts at posted - reserve.
    CreditGrant(std::uint32_t posted, std::uint32_t reserve) noexcept
        : free_(posted), reserve_(reserve), advertised_(posted - reserve) {}

    static constexpr std::uint32_t initial_limit(std::uint32_t posted,
                                                 std::uint32_t reserve) noexcept {
        return posted - reserve;
    }

    /// A frame arrived on the rail (it used one descriptor), carrying `rail_seq`.
    void on_frame(std::uint16_t rail_seq) noexcept {
        if (free_ > 0) {
            --free_;
        }
        const auto d = static_cast<std::uint16_t>(rail_seq - static_cast<std::uint16_t>(next_));
        if (d < 0x8000u) {
            next_ += d + 1u;  // frames between were lost on the wire: forget them
        }
    }
    /// A descriptor was used by a frame we cannot read (CRC error, truncated, malformed): its
    /// rail sequence is unknown, the next good frame's sequence covers it.
    void on_lost_frame() noexcept {
        if (free_ > 0) {
            --free_;
        }
    }
    /// Descriptors re-posted after their frames were consumed.
    void on_reposted(std::uint32_t n) noexcept { free_ += n; }
    std::uint32_t limit() const noexcept { return next_ + free_ - reserve_; }
    std::uint32_t free() const noexcept { return free_; }
    /// Value for the credit field of the next frame we send on this rail.
    std::uint16_t credit_field() noexcept {
        advertised_ = limit();
        return static_cast<std::uint16_t>(advertised_);
    }
    /// True when the peer has not heard about at least `threshold` credits: send a CREDIT frame
    /// if no other frame is going out on this rail.
    bool update_due(std::uint32_t threshold) const noexcept {
        return static_cast<std::int32_t>(limit() - advertised_) >=
               static_cast<std::int32_t>(threshold);
    }

private:
    std::uint32_t next_ = 0;  ///< rail sequence after the last frame received
    std::uint32_t free_;
    std::uint32_t reserve_;
    std::uint32_t advertised_;
};

}  // namespace tbv::transport
