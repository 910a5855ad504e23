// SPDX-License-Identifier: Apache-2.0
// Completion queue ring (contract in cq.hpp).
#include "verbs/cq.hpp"

#include <bit>
#include <new>
#include <utility>

namespace tbv::verbs {

Cq::Cq(std::uint32_t capacity, std::uint32_t handle, AsyncHandler async, std::unique_ptr<Wc[]> ring)
    : mask_(capacity - 1), handle_(handle), async_(async), ring_(std::move(ring)) {}

Result<std::unique_ptr<Cq>> Cq::create(std::uint32_t cqe, const DeviceLimits& limits,
                                       std::uint32_t handle, AsyncHandler async) {
    if (cqe == 0 || cqe > limits.max_cqe || cqe > (1u << 31)) {
        return fail(std::errc::invalid_argument);
    }
    const std::uint32_t capacity = std::bit_ceil(cqe);
    std::unique_ptr<Wc[]> ring(new (std::nothrow) Wc[capacity]);
    if (!ring) {
        return fail(std::errc::not_enough_memory);
    }
    return std::unique_ptr<Cq>(new Cq(capacity, handle, async, std::move(ring)));
}

Result<void> Cq::arm(bool solicited_only) noexcept {
    if (channel_ == nullptr) {
        return fail(std::errc::invalid_argument);
    }
    const std::uint8_t want = solicited_only ? 2 : 1;
    // Arming for "any" overrides an earlier "solicited only" (IB: the broader request wins).
    std::uint8_t cur = armed_.load(std::memory_order_relaxed);
    if (cur != 1) {
        armed_.store(want, std::memory_order_release);
    }
    return ok();
}

bool Cq::push(const Wc& wc, bool solicited) noexcept {
    if (error_.load(std::memory_order_relaxed)) {
        lost_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    const std::uint32_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_.load(std::memory_order_acquire) > mask_) {
        lost_.fetch_add(1, std::memory_order_relaxed);
        error_.store(true, std::memory_order_release);
        async_(AsyncEventType::cq_err, handle_);
        return false;
    }
    ring_[head & mask_] = wc;
    head_.store(head + 1, std::memory_order_release);
    const std::uint8_t armed = armed_.load(std::memory_order_acquire);
    if (armed != 0 && (armed == 1 || solicited || wc.status != WcStatus::success)) {
        armed_.store(0, std::memory_order_relaxed);
        channel_->notify(handle_);
    }
    return true;
}

std::uint32_t Cq::poll(std::span<Wc> out) noexcept {
    const std::uint32_t tail = tail_.load(std::memory_order_relaxed);
    const std::uint32_t avail = head_.load(std::memory_order_acquire) - tail;
    const auto n = static_cast<std::uint32_t>(avail < out.size() ? avail : out.size());
    for (std::uint32_t i = 0; i < n; ++i) {
        out[i] = ring_[(tail + i) & mask_];
    }
    tail_.store(tail + n, std::memory_order_release);
    return n;
}

}  // namespace tbv::verbs
