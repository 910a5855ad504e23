// SPDX-License-Identifier: Apache-2.0
// Cable: an in-process USB4 cable between USB4 port `a_port` of router A and `b_port` of router B,
// lane 0 to lane 0 and lane 1 to lane 1 (ref §12.5). Delivery is direct: a packet sent by one
// router is handed to the other in the sender's thread. Thread safe: the two hosts may be driven
// from two threads. A batch of data frames (CableEnd::send_batch) takes the cable's lock once.
//
// Fault injection: drop / duplicate / corrupt probabilities for control packets and data frames
// (seeded RNG, so a failing run can be repeated), plug/unplug, and unplug_for() which plugs back
// in when the cable's clock passes the deadline (checked when either router polls). The scheduled
// unplug of FaultConfig pulls a plugged cable only: one unplugged by hand when it comes due stays
// unplugged (the schedule is used up). Corrupting a
// control packet flips a bit, so the receiving router's CRC check drops it; corrupting a data
// frame flips a bit and sets the crc_error flag, which the receiving NHI reports as CRC_ERROR.
// FaultConfig (faults.hpp) also comes from TBV_EMU_FAULTS, applied by EmuHost::connect.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <span>

#include "emu/clock.hpp"
#include "emu/faults.hpp"
#include "emu/wire.hpp"

namespace tbv::emu {

class Router;

struct CableStats {
    std::uint64_t control = 0;  ///< control packets delivered
    std::uint64_t data = 0;     ///< data frames delivered (duplicates included)
    std::uint64_t status = 0;
    std::uint64_t dropped = 0;  ///< lost by fault injection
    std::uint64_t duplicated = 0;
    std::uint64_t corrupted = 0;
    std::uint64_t unplugged_drops = 0;  ///< sent while unplugged
};

class Cable {
public:
    /// Joins the two ports (Router::connect_port on both) and plugs in if `plugged`. Destroy it
    /// before either router.
    Cable(Router& a, unsigned a_port, Router& b, unsigned b_port, bool plugged = true,
          const Clock* clock = nullptr);
    ~Cable();
    Cable(const Cable&) = delete;
    Cable& operator=(const Cable&) = delete;

    void plug() noexcept;
    void unplug() noexcept;
    /// Unplugs now and plugs back in once `d` has passed on the cable's clock.
    void unplug_for(std::chrono::nanoseconds d) noexcept;
    bool plugged() const noexcept { return plugged_.load(std::memory_order_acquire); }

    void set_faults(const FaultConfig& f);
    CableStats stats() const;

private:
    class End final : public CableEnd {
    public:
        End(Cable& c, unsigned side) : cable_(c), side_(side) {}
        void bind(CableSink* sink, unsigned port) noexcept override;
        void send(const WirePacket& p) noexcept override;
        void send_batch(std::span<const WirePacket> ps) noexcept override;
        bool peer_present() const noexcept override { return cable_.plugged(); }
        void poll() noexcept override { cable_.check_replug(); }

        std::atomic<CableSink*> sink{nullptr};
        std::atomic<unsigned> port{0};

    private:
        Cable& cable_;
        const unsigned side_;
    };

    void carry(unsigned from_side, const WirePacket& p) noexcept;
    /// A batch: one lock for the plug state and the counters, one cable_receive_batch. With
    /// drop/dup/corrupt active, packet by packet through carry() (same RNG sequence).
    void carry_batch(unsigned from_side, std::span<const WirePacket> ps) noexcept;
    void notify() noexcept;
    void check_replug() noexcept;

    Router& a_;
    Router& b_;
    const unsigned a_port_, b_port_;
    const Clock& clock_;
    End ends_[2];
    std::atomic<bool> plugged_{false};
    std::atomic<bool> replug_pending_{false};
    std::atomic<Clock::Duration::rep> replug_at_{0};
    /// A scheduled unplug is configured and has not happened (written under mu_): polls that
    /// find it false skip the lock.
    std::atomic<bool> schedule_armed_{false};

    mutable std::mutex mu_;  ///< leaf: faults, RNG, stats
    FaultInjector faults_;
    bool unplug_done_ = false;                   ///< the scheduled unplug has happened
    std::optional<Clock::Duration> plugged_at_;  ///< first plug() (FaultConfig::unplug_after)
    CableStats stats_{};
};

}  // namespace tbv::emu
