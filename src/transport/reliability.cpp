// SPDX-License-Identifier: Apache-2.0
// Reliable-connection engine: sender window with go-back-N from the NAK'd PSN, RTT-derived
// retransmit timer (Karn), RNR waits; receiver with a reorder bitmap, one NAK per gap and
// coalesced ACKs. Rules: docs/wire-protocol.md "Reliability".
#include "transport/reliability.hpp"

#include <algorithm>
#include <bit>

namespace tbv::transport {

namespace {

constexpr std::uint32_t kMaxWindow = 1u << 22;
constexpr Duration kMaxBackoff = std::chrono::seconds(1);

}  // namespace

// ---- sender ------------------------------------------------------------------------------------

Result<std::unique_ptr<Sender>> Sender::create(const SenderConfig& cfg) {
    if (cfg.window == 0 || cfg.window > kMaxWindow || !psn::valid(cfg.initial_psn) ||
        cfg.retry_cnt > 7 || cfg.rnr_retry > 7 || cfg.timeout > 31 ||
        cfg.min_rto <= Duration::zero() || cfg.initial_rto <= Duration::zero()) {
        return fail(std::errc::invalid_argument);
    }
    return std::unique_ptr<Sender>(new Sender(cfg));
}

Sender::Sender(const SenderConfig& cfg)
    : cfg_(cfg),
      slots_(cfg.window),
      completions_(cfg.window),
      cap_(cfg.window),
      next_psn_(cfg.initial_psn),
      max_rto_(ib_timeout(cfg.timeout)) {
    rto_ = clamp_rto(cfg.initial_rto);
}

Duration Sender::clamp_rto(Duration d) const noexcept {
    // Bounded above by the IB timeout; below by min_rto, unless the IB timeout is smaller still.
    const Duration lo = std::min(cfg_.min_rto, max_rto_);
    return std::clamp(d, lo, max_rto_);
}

Sender::Push Sender::push(std::uint64_t cookie, std::uint64_t msg_id, bool last_of_message,
                          std::uint32_t span, std::uint32_t* psn_out) noexcept {
    if (status_ != SenderStatus::ok) {
        return Push::failed;
    }
    if (span == 0 || span > kMaxWindow) {
        return Push::failed;
    }
    if (window_full()) {
        return Push::window_full;
    }
    Slot& s = slot(tail_);
    s = Slot{};
    s.cookie = cookie;
    s.msg_id = msg_id;
    s.psn = next_psn_;
    s.span = span;
    s.last = last_of_message;
    if (psn_out != nullptr) {
        *psn_out = next_psn_;
    }
    next_psn_ = psn::add(next_psn_, span);
    ++tail_;
    return Push::ok;
}

bool Sender::next_tx(TimePoint now, TxFrame& out) noexcept {
    if (status_ != SenderStatus::ok || send_ == tail_) {
        return false;
    }
    if (rnr_wait_) {
        if (now < rnr_until_) {
            return false;
        }
        rnr_wait_ = false;
    }
    Slot& s = slot(send_);
    out.psn = s.psn;
    out.span = s.span;
    out.cookie = s.cookie;
    out.retransmit = s.tx_count > 0;
    ++send_;
    // Ask for an ACK when the queue drains here, the window is half used, or on a
    // retransmission (the sender needs to hear quickly whether recovery worked).
    out.ack_request = send_ == tail_ || out.retransmit || (send_ - head_) * 2 >= cap_ || s.span > 1;
    if (s.tx_count < 0xFF) {
        ++s.tx_count;
    }
    s.sent_at = now;
    if (send_ > sent_max_) {
        sent_max_ = send_;
    }
    ++counters_.frames_sent;
    if (out.retransmit) {
        ++counters_.retransmits;
    }
    if (!timer_armed_) {
        timer_armed_ = true;
        deadline_ = now + rto_;
        retry_epoch_ = now;  // the retry budget runs from the first unanswered transmission
    }
    return true;
}

bool Sender::find_sent(std::uint32_t p, std::uint64_t& index) const noexcept {
    if (head_ == sent_max_) {
        return false;
    }
    const std::uint32_t base = slots_[head_ % cap_].psn;
    const std::uint32_t d = psn::distance(base, p);
    const std::uint32_t span_total = psn::distance(base, next_psn_);
    if (d >= span_total) {
        return false;
    }
    // Frames usually span one PSN: jump straight there, then walk (READ requests span more).
    std::uint64_t i = head_ + std::min<std::uint64_t>(d, sent_max_ - head_ - 1);
    while (i > head_ && psn::after(slots_[i % cap_].psn, p)) {
        --i;
    }
    while (i + 1 < sent_max_ && psn::before_eq(slots_[(i + 1) % cap_].psn, p)) {
        ++i;
    }
    const Slot& s = slots_[i % cap_];
    if (!psn::in_window(p, s.psn, s.span) || i >= sent_max_) {
        return false;
    }
    index = i;
    return true;
}

void Sender::rtt_sample(Duration rtt) noexcept {
    // RFC 6298 smoothing: SRTT += (R - SRTT)/8, RTTVAR += (|SRTT - R| - RTTVAR)/4.
    ++counters_.rtt_samples;
    if (!have_rtt_) {
        srtt_ = rtt;
        rttvar_ = rtt / 2;
        have_rtt_ = true;
    } else {
        const Duration err = rtt > srtt_ ? rtt - srtt_ : srtt_ - rtt;
        rttvar_ += (err - rttvar_) / 4;
        srtt_ += (rtt - srtt_) / 8;
    }
    rto_ = clamp_rto(srtt_ + 4 * rttvar_);
}

void Sender::retire_through(std::uint32_t p, TimePoint now) noexcept {
    bool progress = false;
    bool sampled = false;
    Duration sample{};
    while (head_ < sent_max_) {
        Slot& s = slot(head_);
        const std::uint32_t end = psn::add(s.psn, s.span - 1);
        if (!psn::before_eq(end, p)) {
            break;
        }
        // Karn's rule: only frames transmitted exactly once give an RTT sample.
        if (s.tx_count == 1) {
            sampled = true;
            sample = now - s.sent_at;
        }
        if (s.last) {
            completions_[comp_tail_ % cap_] = s.msg_id;
            ++comp_tail_;
        }
        ++head_;
        progress = true;
    }
    if (!progress) {
        return;
    }
    if (send_ < head_) {
        send_ = head_;
    }
    if (sampled) {
        rtt_sample(sample);
    }
    retries_ = 0;
    rnr_retries_ = 0;
    retry_epoch_ = now;
    if (head_ == sent_max_) {
        timer_armed_ = false;
    } else {
        timer_armed_ = true;
        deadline_ = now + rto_;
    }
}

void Sender::on_ack(std::uint32_t p, TimePoint now) noexcept {
    if (status_ != SenderStatus::ok) {
        return;
    }
    if (head_ == sent_max_) {
        return;  // nothing outstanding: a duplicate or stale ACK
    }
    // Valid ACKs name a PSN in [head.psn - 1, last sent PSN].
    const std::uint32_t base = slot(head_).psn;
    const Slot& last = slot(sent_max_ - 1);
    const std::uint32_t top = psn::add(last.psn, last.span - 1);
    if (psn::before(p, psn::sub(base, 1)) || psn::after(p, top)) {
        if (psn::after(p, top)) {
            ++counters_.bogus_acks;
        }
        return;
    }
    retire_through(p, now);
}

bool Sender::count_retry() noexcept {
    if (max_rto_ == kInfinite) {
        return true;  // IB timeout 0: the requester never gives up
    }
    ++retries_;
    if (retries_ > cfg_.retry_cnt) {
        status_ = SenderStatus::retry_exceeded;
        return false;
    }
    return true;
}

void Sender::go_back(std::uint64_t index) noexcept {
    if (index < send_) {
        send_ = index;
    }
}

void Sender::on_nak(std::uint32_t p, TimePoint now) noexcept {
    if (status_ != SenderStatus::ok) {
        return;
    }
    std::uint64_t index = 0;
    if (!find_sent(p, index)) {
        if (head_ != sent_max_ && psn::after(p, slot(head_).psn)) {
            ++counters_.bogus_acks;
        }
        return;
    }
    ++counters_.naks;
    retire_through(psn::sub(p, 1), now);
    // One recovery per gap: a duplicated or late NAK for a PSN we already went back to within
    // the last RTO is ignored.
    if (nak_seen_ && last_nak_psn_ == p && now - last_nak_at_ < rto_) {
        return;
    }
    nak_seen_ = true;
    last_nak_psn_ = p;
    last_nak_at_ = now;
    if (!count_retry()) {
        return;
    }
    go_back(index < head_ ? head_ : index);
    timer_armed_ = true;
    deadline_ = now + rto_;
}

void Sender::on_rnr_nak(std::uint32_t p, std::uint8_t timer_code, TimePoint now) noexcept {
    if (status_ != SenderStatus::ok) {
        return;
    }
    std::uint64_t index = 0;
    if (!find_sent(p, index)) {
        return;
    }
    if (rnr_wait_ && index == head_ && send_ == head_) {
        return;  // duplicate of the RNR NAK we are already waiting out
    }
    ++counters_.rnr_naks;
    retire_through(psn::sub(p, 1), now);
    if (cfg_.rnr_retry != 7) {
        ++rnr_retries_;
        if (rnr_retries_ > cfg_.rnr_retry) {
            status_ = SenderStatus::rnr_retry_exceeded;
            return;
        }
    }
    go_back(index < head_ ? head_ : index);
    rnr_wait_ = true;
    rnr_until_ = now + rnr_timer(timer_code);
    // The retransmit timer restarts when the wait is over.
    timer_armed_ = true;
    deadline_ = rnr_until_ + rto_;
}

void Sender::on_progress(TimePoint now) noexcept {
    if (status_ != SenderStatus::ok) {
        return;
    }
    retries_ = 0;
    retry_epoch_ = now;
    if (timer_armed_) {
        deadline_ = now + rto_;
    }
}

void Sender::poll(TimePoint now) noexcept {
    if (status_ != SenderStatus::ok) {
        return;
    }
    if (rnr_wait_ && now >= rnr_until_) {
        rnr_wait_ = false;
    }
    if (!timer_armed_ || now < deadline_ || head_ == sent_max_) {
        return;
    }
    // Retransmit timeout: go back to the oldest unacknowledged frame and back off. The RTO
    // follows the measured RTT and is usually far below the IB timeout T; such early
    // retransmissions are free. A retry is counted against retry_cnt only once T has passed
    // without progress since the last counted one, so a QP gives up after about
    // (retry_cnt + 1) × T, as the IB attributes promise (a 50 ms unplug must not kill a QP
    // whose T is 67 ms).
    ++counters_.timeouts;
    if (now - retry_epoch_ >= max_rto_) {
        retry_epoch_ = now;
        if (!count_retry()) {
            return;
        }
    }
    go_back(head_);
    // Exponential backoff up to the IB timeout; with timeout 0 (infinite) the requester keeps
    // probing, at most kMaxBackoff apart.
    const Duration ceiling = max_rto_ == kInfinite ? kMaxBackoff : max_rto_;
    rto_ = rto_ >= ceiling / 2 ? std::max(rto_, ceiling) : clamp_rto(rto_ * 2);
    deadline_ = now + rto_;
}

TimePoint Sender::next_deadline() const noexcept {
    TimePoint t = TimePoint::max();
    if (status_ != SenderStatus::ok) {
        return t;
    }
    if (timer_armed_ && head_ != sent_max_) {
        t = deadline_;
    }
    if (rnr_wait_) {
        t = std::min(t, rnr_until_);
    }
    return t;
}

bool Sender::pop_completion(std::uint64_t& msg_id) noexcept {
    if (comp_head_ == comp_tail_) {
        return false;
    }
    msg_id = completions_[comp_head_ % cap_];
    ++comp_head_;
    return true;
}

// ---- receiver ----------------------------------------------------------------------------------

Result<std::unique_ptr<Receiver>> Receiver::create(const ReceiverConfig& cfg) {
    if (cfg.window < 64 || cfg.window > kMaxWindow || !std::has_single_bit(cfg.window) ||
        !psn::valid(cfg.initial_psn) || cfg.ack_every == 0 || cfg.nak_after == 0 ||
        cfg.min_rnr_timer > 31) {
        return fail(std::errc::invalid_argument);
    }
    return std::unique_ptr<Receiver>(new Receiver(cfg));
}

Receiver::Receiver(const ReceiverConfig& cfg)
    : cfg_(cfg),
      have_(cfg.window / 64),
      last_(cfg.window / 64),
      delivered_(cfg.window),
      expected_(cfg.initial_psn),
      highest_(cfg.initial_psn) {}

bool Receiver::test(std::vector<std::uint64_t>& bits, std::uint32_t p) const noexcept {
    const std::uint32_t i = p & (cfg_.window - 1);
    return ((bits[i / 64] >> (i % 64)) & 1u) != 0;
}

void Receiver::set(std::vector<std::uint64_t>& bits, std::uint32_t p, bool v) noexcept {
    const std::uint32_t i = p & (cfg_.window - 1);
    const std::uint64_t m = std::uint64_t{1} << (i % 64);
    if (v) {
        bits[i / 64] |= m;
    } else {
        bits[i / 64] &= ~m;
    }
}

void Receiver::advance(TimePoint now) noexcept {
    const std::uint32_t before = expected_;
    while (test(have_, expected_)) {
        set(have_, expected_, false);
        if (test(last_, expected_)) {
            set(last_, expected_, false);
            // At most `window` undelivered entries can exist: each holds a distinct PSN of
            // the window; the caller drains them after each frame.
            if (del_tail_ - del_head_ < cfg_.window) {
                delivered_[del_tail_ % cfg_.window] = expected_;
                ++del_tail_;
            }
            msn_ = psn::add(msn_, 1);
        }
        expected_ = psn::add(expected_, 1);
        if (unacked_ == 0) {
            first_unacked_ = now;
        }
        ++unacked_;
    }
    if (expected_ != before) {
        // The hole (if any) moved: its NAK state starts over, and a NAK decided for the old
        // hole but not sent yet is moot (sent now it would name a PSN the sender never sent,
        // be ignored, and take the place of the ACK that is due).
        nak_sent_ = false;
        nak_pending_ = false;
        ooo_ = 0;
        if (psn::before(expected_, highest_)) {
            gap_since_ = now;
            // Count what is already held beyond the new hole.
            std::uint32_t held = 0;
            for (std::uint32_t p = expected_; p != highest_; p = psn::add(p, 1)) {
                held += test(have_, p) ? 1u : 0u;
            }
            ooo_ = held;
        } else {
            highest_ = expected_;
        }
    }
}

void Receiver::clear_from(std::uint32_t p) noexcept {
    for (std::uint32_t q = p; q != highest_; q = psn::add(q, 1)) {
        set(have_, q, false);
        set(last_, q, false);
    }
    if (psn::before(p, highest_)) {
        highest_ = p;
    }
    ooo_ = 0;
}

void Receiver::check_gap(TimePoint now) noexcept {
    if (nak_sent_ || in_rnr_ || !psn::before(expected_, highest_)) {
        return;
    }
    if (ooo_ >= cfg_.nak_after || now - gap_since_ >= cfg_.reorder_timeout) {
        nak_pending_ = true;
        nak_sent_ = true;
    }
}

RxVerdict Receiver::on_frame(const RxFrameInfo& f, TimePoint now) noexcept {
    const std::int32_t d = psn::diff(f.psn, expected_);
    if (d < 0) {
        // Old PSN: the sender missed our ACK. Re-ACK (coalesced into one control frame).
        ++counters_.duplicates;
        ack_now_ = true;
        return f.replayable ? RxVerdict::replay : RxVerdict::duplicate;
    }
    const auto ud = static_cast<std::uint32_t>(d);
    if (f.span == 0 || ud + f.span > cfg_.window) {
        ++counters_.dropped;
        if (!nak_sent_ && !in_rnr_) {
            nak_pending_ = true;
            nak_sent_ = true;
        }
        return RxVerdict::drop;
    }
    if (in_rnr_) {
        if (ud != 0) {
            ++counters_.dropped;
            return RxVerdict::drop;
        }
        in_rnr_ = false;  // the retry of the RNR'd frame
    }
    if (test(have_, f.psn)) {
        ++counters_.duplicates;
        return RxVerdict::duplicate;
    }
    if (f.no_rx_buffer) {
        if (ud != 0) {
            // Not our turn yet: drop quietly; the in-order retry decides about the RNR NAK.
            ++counters_.dropped;
            return RxVerdict::drop;
        }
        ++counters_.rnr_naks;
        clear_from(expected_);
        in_rnr_ = true;
        rnr_pending_ = true;
        nak_pending_ = false;
        return RxVerdict::rnr;
    }
    for (std::uint32_t i = 0; i < f.span; ++i) {
        set(have_, psn::add(f.psn, i), true);
    }
    if (f.last_of_message) {
        set(last_, psn::add(f.psn, f.span - 1), true);
    }
    ++counters_.accepted;
    const std::uint32_t end = psn::add(f.psn, f.span);
    if (psn::after(end, highest_)) {
        highest_ = end;
    }
    if (f.ack_request) {
        ack_now_ = true;
    }
    if (ud == 0) {
        advance(now);
    } else {
        ++counters_.out_of_order;
        if (ooo_ == 0 && !nak_sent_) {
            gap_since_ = now;
        }
        ++ooo_;
    }
    check_gap(now);
    return RxVerdict::accept;
}

void Receiver::poll(TimePoint now) noexcept {
    check_gap(now);
}

bool Receiver::take_control(Control& out, TimePoint now) noexcept {
    check_gap(now);
    out.msn = msn_;
    if (rnr_pending_) {
        rnr_pending_ = false;
        ack_now_ = false;
        unacked_ = 0;
        out.kind = ControlKind::rnr_nak;
        out.psn = expected_;
        out.syndrome = cfg_.min_rnr_timer;
        return true;
    }
    if (nak_pending_) {
        nak_pending_ = false;
        ack_now_ = false;
        unacked_ = 0;
        ++counters_.naks;
        out.kind = ControlKind::nak;
        out.psn = expected_;
        out.syndrome = 0;  // PSN sequence error
        return true;
    }
    const bool due = ack_now_ || unacked_ >= cfg_.ack_every ||
                     (unacked_ > 0 && now - first_unacked_ >= cfg_.ack_delay);
    if (!due) {
        return false;
    }
    ack_now_ = false;
    unacked_ = 0;
    ++counters_.acks;
    out.kind = ControlKind::ack;
    out.psn = psn::sub(expected_, 1);
    out.syndrome = 0;
    return true;
}

TimePoint Receiver::next_deadline() const noexcept {
    TimePoint t = TimePoint::max();
    if (rnr_pending_ || nak_pending_ || ack_now_) {
        return TimePoint::min();
    }
    if (unacked_ > 0) {
        t = first_unacked_ + cfg_.ack_delay;
    }
    if (!nak_sent_ && !in_rnr_ && psn::before(expected_, highest_)) {
        t = std::min(t, gap_since_ + cfg_.reorder_timeout);
    }
    return t;
}

bool Receiver::pop_delivered(std::uint32_t& last_psn) noexcept {
    if (del_head_ == del_tail_) {
        return false;
    }
    last_psn = delivered_[del_head_ % cfg_.window];
    ++del_head_;
    return true;
}

}  // namespace tbv::transport
