// SPDX-License-Identifier: Apache-2.0
#include "emu/irq.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

namespace tbv::emu {

using namespace hw::nhi;

namespace {

/// Bits of bitmap dword `k` that name a source below `nbits` (the others read 0, ignore writes).
constexpr std::uint32_t valid_bits(unsigned k, unsigned nbits) noexcept {
    const unsigned first = 32u * k;
    if (nbits >= first + 32u) {
        return ~0u;
    }
    return nbits <= first ? 0u : (1u << (nbits - first)) - 1u;
}

/// Nibbles of vector-allocation dword `k` that belong to an existing ring interrupt.
constexpr std::uint32_t valid_nibbles(unsigned k, unsigned sources) noexcept {
    const unsigned first = 8u * k;
    if (sources >= first + 8u) {
        return ~0u;
    }
    return sources <= first ? 0u : (1u << (4u * (sources - first))) - 1u;
}

/// Index of the dword of `base` that `offset` addresses, if it is one of `count` dwords there.
std::optional<unsigned> dword_in(std::uint32_t offset, std::uint32_t base,
                                 unsigned count) noexcept {
    if (offset < base || offset - base >= 4u * count) {
        return std::nullopt;
    }
    return (offset - base) / 4u;
}

void close_all(std::vector<int>& fds) noexcept {
    for (int fd : fds) {
        if (fd >= 0) {
            ::close(fd);
        }
    }
    fds.clear();
}

}  // namespace

IrqBlock::IrqBlock(unsigned hop_count, unsigned vectors, const std::atomic<bool>& bus_master,
                   const std::atomic<bool>& gone, CounterSet& counters)
    : hop_count_(hop_count),
      vectors_(vectors),
      bus_master_(bus_master),
      gone_(gone),
      ctr_(counters),
      notify_(notify_dwords(hop_count), 0),
      enable_(enable_dwords(hop_count), 0),
      vec_alloc_(vec_alloc_dwords(hop_count), 0) {}

IrqBlock::~IrqBlock() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (helper_.joinable()) {
        helper_.join();
    }
    close_all(fds_);
}

// ---- registers ------------------------------------------------------------------------------

bool IrqBlock::status_clears_on_read_locked() const noexcept {
    return DMA_MISC_DISABLE_AUTO_CLEAR::get(dma_misc_) == 0;
}

bool IrqBlock::auto_clear_on_message_locked() const noexcept {
    return status_clears_on_read_locked() && DMA_MISC_INT_AUTO_CLEAR::get(dma_misc_) != 0;
}

std::optional<std::uint32_t> IrqBlock::read(std::uint32_t offset) noexcept {
    const unsigned nd = notify_dwords(hop_count_);
    const unsigned ed = enable_dwords(hop_count_);
    std::lock_guard lk(mu_);
    // NOTIFY is decoded before INT_CLEAR: above H = 21 the two ranges overlap and Linux then only
    // uses clear-on-read (ref §2.4 note), so reads there must reach the status.
    if (auto k = dword_in(offset, REG_RING_NOTIFY_BASE, nd)) {
        const std::uint32_t v = notify_[*k];
        if (status_clears_on_read_locked()) {
            notify_[*k] = 0;
        }
        return v;
    }
    if (dword_in(offset, REG_RING_INT_CLEAR, nd)) {
        return 0u;  // write-only
    }
    if (auto k = dword_in(offset, REG_RING_INTERRUPT_BASE, ed)) {
        return enable_[*k];
    }
    if (dword_in(offset, REG_RING_INTERRUPT_MASK_CLEAR_BASE, ed)) {
        return 0u;  // write-only
    }
    if (auto k = dword_in(offset, REG_INT_THROTTLING_RATE, kMaxMsixVectors)) {
        return throttle_[*k];
    }
    if (auto k = dword_in(offset, REG_INT_VEC_ALLOC_BASE, vec_alloc_dwords(hop_count_))) {
        return vec_alloc_[*k];
    }
    if (offset == REG_DMA_MISC) {
        return dma_misc_;
    }
    return std::nullopt;
}

bool IrqBlock::write(std::uint32_t offset, std::uint32_t value) noexcept {
    const unsigned nd = notify_dwords(hop_count_);
    const unsigned ed = enable_dwords(hop_count_);
    std::lock_guard lk(mu_);
    if (auto k = dword_in(offset, REG_RING_INT_CLEAR, nd)) {
        notify_[*k] &= ~value;  // W1C (ref §2.4, §10)
        return true;
    }
    if (dword_in(offset, REG_RING_NOTIFY_BASE, nd)) {
        return true;  // status is read-only
    }
    // ENABLE before MASK_CLEAR: they overlap only above H = 32, where ENABLE must stay reachable.
    if (auto k = dword_in(offset, REG_RING_INTERRUPT_BASE, ed)) {
        enable_[*k] = value & valid_bits(*k, 2u * hop_count_);
        return true;
    }
    if (auto k = dword_in(offset, REG_RING_INTERRUPT_MASK_CLEAR_BASE, ed)) {
        enable_[*k] &= ~value;  // ref §2.1: write 1 = disable that enable bit
        return true;
    }
    if (auto k = dword_in(offset, REG_INT_THROTTLING_RATE, kMaxMsixVectors)) {
        throttle_[*k] = value;
        // A held-back message now waits for the new interval: recompute and wake the helper.
        Vector& v = vec_[*k];
        if (v.deferred) {
            v.due = v.last_sent + gap_locked(*k);
            cv_.notify_all();
        }
        return true;
    }
    if (auto k = dword_in(offset, REG_INT_VEC_ALLOC_BASE, vec_alloc_dwords(hop_count_))) {
        vec_alloc_[*k] = value & valid_nibbles(*k, 2u * hop_count_);
        return true;
    }
    if (offset == REG_DMA_MISC) {
        dma_misc_ = value;
        return true;
    }
    return false;
}

void IrqBlock::power_on() noexcept {
    std::lock_guard lk(mu_);
    std::fill(notify_.begin(), notify_.end(), 0u);
    std::fill(enable_.begin(), enable_.end(), 0u);
    std::fill(vec_alloc_.begin(), vec_alloc_.end(), 0u);
    throttle_.fill(0);
    dma_misc_ = 0;
    vec_.fill(Vector{});  // drops held-back messages; the helper finds nothing to do
}

// ---- events and messages -----------------------------------------------------------------------

bool IrqBlock::bit_set(const std::vector<std::uint32_t>& map, unsigned bit) const noexcept {
    return (map[bit / 32u] & bitmap_mask(bit)) != 0;
}

unsigned IrqBlock::vector_of_locked(unsigned irq_index) const noexcept {
    return (vec_alloc_[irq_index / 8u] >> vec_alloc_shift(irq_index)) & kVecAllocMask;
}

bool IrqBlock::deliverable_locked(unsigned vector) const noexcept {
    // An MSI-X message is a memory write by the device: no bus mastering, no message.
    return !gone_.load(std::memory_order_acquire) && bus_master_.load(std::memory_order_acquire) &&
           vector < fds_.size() && fds_[vector] >= 0;
}

IrqBlock::Clock::duration IrqBlock::gap_locked(unsigned vector) const noexcept {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::nanoseconds(std::uint64_t{throttle_[vector]} * kThrottleUnitNs));
}

void IrqBlock::send_locked(unsigned vector, Clock::time_point now) noexcept {
    Vector& v = vec_[vector];
    v.last_sent = now;
    v.ever_sent = true;
    v.deferred = false;  // this message also covers any held-back one
    ctr_.add<&NhiCounters::irqs_fired>();
    if (auto_clear_on_message_locked()) {
        clear_sources_locked(vector);
    }
    // The message goes last: whoever wakes on it must already see the state it announces.
    const std::uint64_t one = 1;
    // EFD_NONBLOCK: the only failure is a counter at its maximum, which still reads as pending.
    (void)!::write(fds_[vector], &one, sizeof one);
}

void IrqBlock::clear_sources_locked(unsigned vector) noexcept {
    for (unsigned i = 0; i < 2u * hop_count_; ++i) {
        if (vector_of_locked(i) == vector && bit_set(enable_, i)) {
            notify_[i / 32u] &= ~bitmap_mask(i);
        }
    }
}

bool IrqBlock::source_enabled_locked(unsigned vector) const noexcept {
    for (unsigned i = 0; i < 2u * hop_count_; ++i) {
        if (vector_of_locked(i) == vector && bit_set(enable_, i)) {
            return true;
        }
    }
    return false;
}

void IrqBlock::raise(IrqKind kind, unsigned ring) noexcept {
    if (ring >= hop_count_) {
        return;
    }
    const unsigned bit = irq_bit(kind, ring, hop_count_);
    std::lock_guard lk(mu_);
    notify_[bit / 32u] |= bitmap_mask(bit);
    if (kind == IrqKind::rx_overflow) {
        return;  // ref §2.4: overflow has no enable bit and no vector
    }
    if (!bit_set(enable_, bit)) {
        ctr_.add<&NhiCounters::irqs_masked>();
        return;
    }
    const unsigned vector = vector_of_locked(bit);
    if (!deliverable_locked(vector)) {
        ctr_.add<&NhiCounters::irqs_masked>();
        return;
    }
    const Clock::time_point now = Clock::now();
    const Vector& v = vec_[vector];
    if (!v.ever_sent || now - v.last_sent >= gap_locked(vector)) {
        send_locked(vector, now);
        return;
    }
    ctr_.add<&NhiCounters::irqs_throttled>();
    defer_locked(vector);
}

bool IrqBlock::rx_armed() const noexcept {
    std::lock_guard lk(mu_);
    for (unsigned r = 0; r < hop_count_; ++r) {
        const unsigned bit = irq_bit(IrqKind::rx, r, hop_count_);
        if (bit_set(enable_, bit) && deliverable_locked(vector_of_locked(bit))) {
            return true;
        }
    }
    return false;
}

void IrqBlock::defer_locked(unsigned vector) noexcept {
    Vector& v = vec_[vector];
    if (v.deferred) {
        return;  // coalesced into the message already waiting
    }
    if (!helper_.joinable()) {
        try {
            helper_ = std::thread([this] { helper_main(); });
        } catch (const std::system_error&) {
            // No thread: sending now breaks only the moderation, never loses the event.
            send_locked(vector, Clock::now());
            return;
        }
    }
    v.deferred = true;
    v.due = v.last_sent + gap_locked(vector);
    cv_.notify_all();
}

void IrqBlock::helper_main() noexcept {
    std::unique_lock lk(mu_);
    while (!stop_) {
        const Clock::time_point now = Clock::now();
        std::optional<Clock::time_point> next;
        for (unsigned i = 0; i < vec_.size(); ++i) {
            Vector& v = vec_[i];
            if (!v.deferred) {
                continue;
            }
            if (v.due <= now) {
                v.deferred = false;
                // A ring masked meanwhile (NAPI-style polling) gets no message; a cleared status
                // does not cancel it (see the header).
                if (deliverable_locked(i) && source_enabled_locked(i)) {
                    send_locked(i, now);
                } else {
                    ctr_.add<&NhiCounters::irqs_masked>();
                }
            } else if (!next || v.due < *next) {
                next = v.due;
            }
        }
        // Block until the earliest deadline or a change (new deferral, throttle write, stop).
        if (next) {
            cv_.wait_until(lk, *next);
        } else {
            cv_.wait(lk);
        }
    }
}

// ---- vectors --------------------------------------------------------------------------------

Result<void> IrqBlock::enable_vectors(unsigned count) {
    if (count == 0 || count > vectors_) {
        return fail(std::errc::invalid_argument);
    }
    std::vector<int> fresh;
    fresh.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            close_all(fresh);
            return fail_errno(err);
        }
        fresh.push_back(fd);
    }
    {
        std::lock_guard lk(mu_);
        std::swap(fds_, fresh);
    }
    close_all(fresh);  // the previous set, closed outside the lock
    return ok();
}

void IrqBlock::disable_vectors() noexcept {
    std::vector<int> old;
    {
        std::lock_guard lk(mu_);
        std::swap(fds_, old);
    }
    close_all(old);
}

int IrqBlock::eventfd(unsigned vector) const noexcept {
    std::lock_guard lk(mu_);
    return vector < fds_.size() ? fds_[vector] : -1;
}

}  // namespace tbv::emu
