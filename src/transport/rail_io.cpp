// SPDX-License-Identifier: Apache-2.0
#include "transport/rail_io.hpp"

#include <algorithm>
#include <cstring>

namespace tbv::transport {

const char* to_string(DropReason r) noexcept {
    switch (r) {
        case DropReason::crc: return "crc";
        case DropReason::overrun: return "overrun";
        case DropReason::malformed: return "malformed";
        case DropReason::no_qp: return "no_qp";
        case DropReason::wrong_peer: return "wrong_peer";
        case DropReason::bad_state: return "bad_state";
        case DropReason::qkey: return "qkey";
        case DropReason::no_recv: return "no_recv";
        case DropReason::count_: break;
    }
    return "?";
}

// ---- Port --------------------------------------------------------------------------------------

void Port::send_credit(bool ask) noexcept {
    // A probe needs no credit, only a TX buffer: after a long loss the reserve may be spent on
    // probes that were lost too, and a probe that finds the peer's ring full is dropped there,
    // costing nothing (the next frame's rail_seq covers it). Without this a path missing for
    // 16 probe intervals would leave the rail stopped for good.
    if (ask ? tx_free_ == 0 : !can_send(true)) {
        return;
    }
    wire::Header h{};
    h.opcode = wire::Opcode::credit;
    h.flags = ask ? wire::kFlagAckRequest : std::uint8_t{0};
    stamp(h);
    const std::size_t n = wire::encode_header(h, {tx_buffer(), wire::kMaxFrame});
    if (n != 0) {
        commit(static_cast<std::uint32_t>(n));
        ++ctr_.credit_frames;
    }
}

bool Port::receive(std::span<const std::byte> bytes, FrameHandler& h) noexcept {
    wire::Frame f{};
    if (wire::decode(bytes, f) != wire::Status::ok) {
        grant_.on_lost_frame();
        count_drop(DropReason::malformed);
        return true;
    }
    grant_.on_frame(f.header.rail_seq);
    gate_.on_credit(f.header.credit);
    if (starved_ && gate_.can_send_data()) {
        starved_ = false;  // the peer answered: no more probes
        next_probe_ = {};
        probe_gap_ = kCreditProbeFirst;
    }
    ++ctr_.rx_frames;
    ctr_.rx_bytes += bytes.size();
    if (f.header.opcode == wire::Opcode::credit) {
        asked_ |= (f.header.flags & wire::kFlagAckRequest) != 0;
        return true;
    }
    if (!h.on_frame(f, *this)) {
        parked_since_ = Clock::now();
        return false;
    }
    return true;
}

void Port::service(TimePoint now) noexcept {
    if (asked_ || credit_update_due()) {
        // An answer never asks back: two probing ports cannot ping-pong.
        asked_ = false;
        send_credit(false);
        return;
    }
    if (!starved_) {
        return;
    }
    if (next_probe_ == TimePoint{}) {
        next_probe_ = now + probe_gap_;  // the stall is seen now; credit usually comes first
        return;
    }
    if (now < next_probe_) {
        return;
    }
    ++ctr_.credit_probes;
    send_credit(true);
    probe_gap_ = std::min<std::chrono::microseconds>(probe_gap_ * 2, kCreditProbeMax);
    next_probe_ = now + probe_gap_;
}

bool Port::dispatch(std::span<const std::byte> bytes, FrameHandler& h, bool force) noexcept {
    wire::Frame f{};
    if (wire::decode(bytes, f) != wire::Status::ok) {
        return true;  // cannot happen: it decoded when it was received
    }
    if (h.on_frame(f, *this)) {
        return true;
    }
    if (force) {
        count_drop(DropReason::no_recv);
        return true;
    }
    return false;
}

// ---- RingPort ----------------------------------------------------------------------------------

Result<std::unique_ptr<RingPort>> RingPort::create(hw::Device& dev, nhi::TxRing& tx,
                                                   nhi::RxRing& rx, std::uint32_t peer_posted,
                                                   std::uint32_t id) {
    if (peer_posted <= kControlReserve || rx.buffer_size() < kSlot || rx.free_slots() == 0 ||
        tx.free_slots() == 0) {
        return fail(std::errc::invalid_argument);
    }
    auto txb =
        hw::DmaRegion::create(dev, std::size_t{tx.free_slots()} * kSlot, hw::DmaAccess::read);
    if (!txb) {
        return Failure{txb.error()};
    }
    auto rxb =
        hw::DmaRegion::create(dev, std::size_t{rx.free_slots()} * kSlot, hw::DmaAccess::write);
    if (!rxb) {
        return Failure{rxb.error()};
    }
    auto p = std::unique_ptr<RingPort>(
        new RingPort(tx, rx, std::move(*txb), std::move(*rxb), peer_posted, id));
    // Stock the RX ring: every buffer, in batches (one doorbell each).
    const unsigned n = rx.free_slots();
    std::array<nhi::RxBuffer, kPortBatch> b{};
    for (unsigned i = 0; i < n;) {
        unsigned k = 0;
        for (; k < b.size() && i < n; ++k, ++i) {
            b[k] = {p->rx_buf_.iova_at(std::size_t{i} * kSlot), i};
        }
        if (rx.post({b.data(), k}).posted != k) {
            return fail(std::errc::io_error);
        }
    }
    return p;
}

RingPort::RingPort(nhi::TxRing& tx, nhi::RxRing& rx, hw::DmaRegion txb, hw::DmaRegion rxb,
                   std::uint32_t peer_posted, std::uint32_t id) noexcept
    : Port(id, peer_posted, rx.free_slots()),
      tx_(tx),
      rx_(rx),
      tx_buf_(std::move(txb)),
      rx_buf_(std::move(rxb)) {
    const std::uint32_t n = tx.free_slots();
    free_.reserve(n);
    for (std::uint32_t i = n; i-- > 0;) {
        free_.push_back(i);
    }
    tx_free_ = n;
}

std::byte* RingPort::tx_buffer() noexcept {
    if (cur_ == kNone) {
        cur_ = free_.back();
        free_.pop_back();
    }
    return tx_buf_.data() + std::size_t{cur_} * kSlot;
}

RingPort::~RingPort() {
    // Stop before the regions unmap: nothing may DMA into memory that is going away.
    (void)tx_.stop();
    (void)rx_.stop();
}

void RingPort::commit(std::uint32_t len) noexcept {
    staged_[nstaged_++] = {tx_buf_.iova_at(std::size_t{cur_} * kSlot), len, 0, 0, false, cur_};
    cur_ = kNone;
    --tx_free_;
    ++ctr_.tx_frames;
    ctr_.tx_bytes += len;
    if (nstaged_ == staged_.size()) {
        flush();
    }
}

void RingPort::flush() noexcept {
    if (nstaged_ != 0) {
        // PDFs: thunderbolt-net's frame PDFs (SOF 1, EOF 2), which the RX ring's masks accept.
        for (unsigned i = 0; i < nstaged_; ++i) {
            staged_[i].sof_pdf = 1;
            staged_[i].eof_pdf = 2;
        }
        const nhi::PostResult r = tx_.post({staged_.data(), nstaged_});
        ++ctr_.doorbells;
        // The ring has a slot for every buffer, so a partial post only happens on a stopped ring;
        // those frames are lost like frames on an unplugged cable (the reliability layer resends).
        for (unsigned i = r.posted; i < nstaged_; ++i) {
            free_.push_back(static_cast<std::uint32_t>(staged_[i].cookie));
            ++tx_free_;
        }
        nstaged_ = 0;
    }
    reap();
}

void RingPort::reap() noexcept {
    std::array<std::uint64_t, kPortBatch> done{};
    for (;;) {
        const unsigned n = tx_.reap(done);
        for (unsigned i = 0; i < n; ++i) {
            free_.push_back(static_cast<std::uint32_t>(done[i]));
        }
        tx_free_ += n;
        if (n < done.size()) {
            break;
        }
    }
}

bool RingPort::handle(const nhi::RxCompletion& c, bool accounted, bool force,
                      FrameHandler& h) noexcept {
    const auto idx = static_cast<std::uint32_t>(c.cookie);
    const std::span<const std::byte> bytes{rx_buf_.data() + std::size_t{idx} * kSlot, c.length};
    if (accounted) {
        return dispatch(bytes, h, force);
    }
    if (c.crc_error) {
        grant_.on_lost_frame();
        count_drop(DropReason::crc);
        return true;
    }
    if (c.overrun) {
        grant_.on_lost_frame();
        count_drop(DropReason::overrun);
        return true;
    }
    return receive(bytes, h);
}

unsigned RingPort::poll(FrameHandler& h) noexcept {
    std::array<nhi::RxBuffer, kPortBatch> again{};
    unsigned na = 0;
    unsigned handled = 0;
    auto requeue = [&](const nhi::RxCompletion& c) {
        const auto idx = static_cast<std::uint32_t>(c.cookie);
        again[na++] = {rx_buf_.iova_at(std::size_t{idx} * kSlot), idx};
    };
    auto repost = [&] {
        // Every buffer taken goes straight back: the handler copied what it keeps.
        if (na != 0) {
            grant_.on_reposted(rx_.post({again.data(), na}).posted);
            na = 0;
        }
    };
    // Parked frames first, in order; the ring waits behind them.
    if (parked_pos_ < nparked_) {
        bool force = park_expired();
        while (parked_pos_ < nparked_) {
            const nhi::RxCompletion& c = parked_[parked_pos_];
            if (!handle(c, head_accounted_, force, h)) {
                head_accounted_ = true;
                repost();
                return handled;
            }
            requeue(c);
            ++parked_pos_;
            ++handled;
            head_accounted_ = false;
            force = false;
        }
        nparked_ = parked_pos_ = 0;
        // `again` holds one batch: the parked frames' buffers go back before a new batch is
        // polled (a full parked batch plus a full new one overflowed it, and the buffers past
        // its end were lost to the ring for good).
        repost();
    }
    std::array<nhi::RxCompletion, kPortBatch> c{};
    const unsigned n = rx_.poll(c);
    for (unsigned i = 0; i < n; ++i) {
        if (!handle(c[i], false, false, h)) {
            // Keep this frame (accounted) and the rest of the batch (not yet) for later.
            nparked_ = n - i;
            parked_pos_ = 0;
            head_accounted_ = true;
            std::copy(c.begin() + i, c.begin() + n, parked_.begin());
            break;
        }
        requeue(c[i]);
        ++handled;
    }
    repost();
    return handled;
}

// ---- LoopPort ----------------------------------------------------------------------------------

LoopPort::LoopPort(std::uint32_t id, std::uint32_t depth)
    : Port(id, depth, depth),
      depth_(depth),
      buf_(static_cast<std::size_t>(depth) * wire::kMaxFrame),
      len_(depth) {
    tx_free_ = depth;
}

void LoopPort::commit(std::uint32_t len) noexcept {
    len_[tail_ % depth_] = len;
    ++tail_;
    --tx_free_;
    ++ctr_.tx_frames;
    ctr_.tx_bytes += len;
}

unsigned LoopPort::poll(FrameHandler& h) noexcept {
    unsigned n = 0;
    // Only the frames queued when the poll started: a handler's answers wait for the next poll,
    // as they would on a cable.
    const std::uint32_t end = tail_;
    bool force = head_accounted_ && park_expired();
    while (head_ != end && n < kPortBatch) {
        const std::span<const std::byte> bytes{slot(head_), len_[head_ % depth_]};
        const bool taken = head_accounted_ ? dispatch(bytes, h, force) : receive(bytes, h);
        if (!taken) {
            head_accounted_ = true;  // stays at the head; the sender runs out of credit
            break;
        }
        head_accounted_ = false;
        force = false;
        ++head_;
        ++tx_free_;
        grant_.on_reposted(1);
        ++n;
    }
    return n;
}

}  // namespace tbv::transport
