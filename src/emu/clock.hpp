// SPDX-License-Identifier: Apache-2.0
// Time for the emulated router and cables (style B7: "timers use an injectable Clock, tests never
// sleep"). Nothing in the model waits for time to pass: timed behaviour (link training, event
// re-sends, path drains, bonding) is advanced whenever the driver interacts or polls, by comparing
// deadlines against now().
#pragma once

#include <atomic>
#include <chrono>
#include <limits>

namespace tbv::emu {

class Clock {
public:
    using Duration = std::chrono::nanoseconds;
    Clock() = default;
    Clock(const Clock&) = delete;
    Clock& operator=(const Clock&) = delete;
    virtual ~Clock() = default;

    /// Monotonic time since an arbitrary epoch. Thread safe.
    virtual Duration now() const noexcept = 0;

    /// The process-wide steady_clock instance (the default everywhere).
    static const Clock& steady() noexcept;
};

/// A frame's send time that nobody recorded (FrameView::sent_at, WirePacket::sent_at): the link
/// model (link.hpp) then takes the time the frame reached it.
inline constexpr Clock::Duration::rep kNoStamp = std::numeric_limits<Clock::Duration::rep>::min();

/// A clock that only moves when told to: deterministic tests.
class ManualClock final : public Clock {
public:
    Duration now() const noexcept override {
        return Duration{now_ns_.load(std::memory_order_acquire)};
    }
    void advance(Duration d) noexcept { now_ns_.fetch_add(d.count(), std::memory_order_acq_rel); }

private:
    std::atomic<Duration::rep> now_ns_{0};
};

}  // namespace tbv::emu
