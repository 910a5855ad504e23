// SPDX-License-Identifier: Apache-2.0
// Completion queue: a fixed-capacity ring of work completions with one producer (the progress
// engine) and one consumer (poll_cq). Storage is allocated once at creation; push and poll never
// allocate, throw or make a system call.
//
// Overflow (IB "CQ overrun"): when a completion arrives and the ring is full, the completion is
// lost, the CQ enters the error state, and an IBV_EVENT_CQ_ERR async event is raised once through
// the handler. From then on every push is refused (the transport moves the QPs that feed this CQ
// to ERR, raising IBV_EVENT_QP_FATAL for each); completions queued before the overrun can still be
// polled, so an application sees everything that was delivered before the event. The transport is
// expected to prevent overruns in normal operation by bounding outstanding WRs by the CQ's size
// (as IB requires of the consumer); this path exists so a mis-sized CQ is reported, not silently
// corrupted.
//
// Memory ordering: the producer writes the entry, then publishes head_ with a release store; the
// consumer reads head_ with acquire, copies entries, then publishes tail_ with release, which the
// producer reads with acquire before reusing a slot. head_ and tail_ live on their own cache lines.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"
#include "verbs/comp_channel.hpp"
#include "verbs/limits.hpp"

namespace tbv::verbs {

/// Where affiliated async events go (the device context's event queue). `object` identifies the
/// CQ or QP (its handle). Called on the producer's thread; must not block.
struct AsyncHandler {
    void (*fn)(void* ctx, AsyncEventType type, std::uint32_t object) noexcept = nullptr;
    void* ctx = nullptr;

    void operator()(AsyncEventType type, std::uint32_t object) const noexcept {
        if (fn != nullptr) {
            fn(ctx, type, object);
        }
    }
};

class Cq {
public:
    /// ibv_create_cq: 1 ≤ cqe ≤ limits.max_cqe (EINVAL otherwise; ENOMEM). The ring holds at least
    /// cqe entries (rounded up to a power of two; capacity() is what ibv_create_cq reports back).
    static Result<std::unique_ptr<Cq>> create(std::uint32_t cqe, const DeviceLimits& limits,
                                              std::uint32_t handle = 0, AsyncHandler async = {});

    Cq(const Cq&) = delete;
    Cq& operator=(const Cq&) = delete;

    std::uint32_t capacity() const noexcept { return mask_ + 1; }
    std::uint32_t handle() const noexcept { return handle_; }

    /// Producer: appends a completion. false if the CQ overran now or earlier (see above).
    /// `solicited`: the completion of a message the sender marked solicited (wakes a CQ armed
    /// for solicited events only; errors wake it too).
    bool push(const Wc& wc, bool solicited = false) noexcept;

    /// ibv_req_notify_cq: the next completion (solicited_only: the next solicited or error one)
    /// signals `channel` once. EINVAL without a channel.
    Result<void> arm(bool solicited_only) noexcept;
    void set_channel(CompChannel* ch) noexcept { channel_ = ch; }
    CompChannel* channel() const noexcept { return channel_; }

    /// Consumer: moves up to out.size() completions, oldest first, into out; returns how many.
    std::uint32_t poll(std::span<Wc> out) noexcept;

    /// Completions queued (exact from either side's own thread, a snapshot otherwise).
    std::uint32_t size() const noexcept {
        return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
    }
    bool in_error() const noexcept { return error_.load(std::memory_order_acquire); }
    /// Completions lost to overruns.
    std::uint64_t lost() const noexcept { return lost_.load(std::memory_order_relaxed); }

private:
    Cq(std::uint32_t capacity, std::uint32_t handle, AsyncHandler async,
       std::unique_ptr<Wc[]> ring);

    // Producer-owned line.
    alignas(64) std::atomic<std::uint32_t> head_{0};
    std::atomic<bool> error_{false};
    std::atomic<std::uint64_t> lost_{0};
    // Consumer-owned line.
    alignas(64) std::atomic<std::uint32_t> tail_{0};
    // Read-only after creation.
    alignas(64) std::uint32_t mask_;
    std::uint32_t handle_;
    AsyncHandler async_;
    CompChannel* channel_ = nullptr;
    std::atomic<std::uint8_t> armed_{0};  ///< 0 no, 1 any completion, 2 solicited only
    std::unique_ptr<Wc[]> ring_;
};

}  // namespace tbv::verbs
