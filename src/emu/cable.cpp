// SPDX-License-Identifier: Apache-2.0
#include "emu/cable.hpp"

#include <array>
#include <cstring>

#include "emu/router.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::emu {

Cable::Cable(Router& a, unsigned a_port, Router& b, unsigned b_port, bool plugged,
             const Clock* clock)
    : a_(a),
      b_(b),
      a_port_(a_port),
      b_port_(b_port),
      clock_(clock != nullptr ? *clock : Clock::steady()),
      ends_{End(*this, 0), End(*this, 1)} {
    a_.connect_port(a_port_, &ends_[0]);
    b_.connect_port(b_port_, &ends_[1]);
    if (plugged) {
        plug();
    }
}

Cable::~Cable() {
    plugged_.store(false, std::memory_order_release);
    a_.disconnect_port(a_port_);
    b_.disconnect_port(b_port_);
}

void Cable::End::bind(CableSink* s, unsigned p) noexcept {
    port.store(p, std::memory_order_relaxed);
    sink.store(s, std::memory_order_release);
}

void Cable::End::send(const WirePacket& p) noexcept {
    cable_.carry(side_, p);
}

void Cable::End::send_batch(std::span<const WirePacket> ps) noexcept {
    cable_.carry_batch(side_, ps);
}

void Cable::notify() noexcept {
    for (const End& e : ends_) {
        if (CableSink* s = e.sink.load(std::memory_order_acquire)) {
            s->cable_changed(e.port.load(std::memory_order_relaxed));
        }
    }
}

void Cable::plug() noexcept {
    replug_pending_.store(false, std::memory_order_release);
    if (!plugged_.exchange(true, std::memory_order_acq_rel)) {
        {
            std::lock_guard lk(mu_);
            if (!plugged_at_) {
                plugged_at_ = clock_.now();  // FaultConfig::unplug_after counts from here
            }
        }
        notify();
    }
}

void Cable::unplug() noexcept {
    replug_pending_.store(false, std::memory_order_release);
    if (plugged_.exchange(false, std::memory_order_acq_rel)) {
        notify();
    }
}

void Cable::unplug_for(std::chrono::nanoseconds d) noexcept {
    unplug();
    replug_at_.store((clock_.now() + d).count(), std::memory_order_relaxed);
    replug_pending_.store(true, std::memory_order_release);
}

void Cable::check_replug() noexcept {
    // The scheduled unplug of FaultConfig (TBV_EMU_FAULTS unplug_ms): once, unplug_after after
    // the first plug. Every poll of either router comes here: without a schedule armed it costs
    // two atomic loads, no lock and no clock read.
    std::optional<std::chrono::milliseconds> pull;
    if (schedule_armed_.load(std::memory_order_acquire)) {
        std::lock_guard lk(mu_);
        const auto now = clock_.now();
        const FaultConfig& f = faults_.config();
        if (!unplug_done_ && f.unplug.count() > 0 && plugged_at_ &&
            now - *plugged_at_ >= std::chrono::duration_cast<Clock::Duration>(f.unplug_after)) {
            unplug_done_ = true;
            schedule_armed_.store(false, std::memory_order_relaxed);
            pull = f.unplug;
        }
    }
    if (pull) {
        // Only a plugged cable can be pulled, and only this pull is undone later: a cable the
        // user unplugged meanwhile (unplug(), unplug_for()) is left as the user left it.
        if (plugged_.exchange(false, std::memory_order_acq_rel)) {
            replug_at_.store((clock_.now() + *pull).count(), std::memory_order_relaxed);
            replug_pending_.store(true, std::memory_order_release);
            notify();
        }
        return;
    }
    if (!replug_pending_.load(std::memory_order_acquire) ||
        clock_.now().count() < replug_at_.load(std::memory_order_relaxed)) {
        return;
    }
    if (replug_pending_.exchange(false, std::memory_order_acq_rel)) {
        plug();
    }
}

void Cable::set_faults(const FaultConfig& f) {
    std::lock_guard lk(mu_);
    faults_.configure(f);
    unplug_done_ = false;
    schedule_armed_.store(f.unplug.count() > 0, std::memory_order_release);
}

CableStats Cable::stats() const {
    std::lock_guard lk(mu_);
    return stats_;
}

void Cable::carry(unsigned from_side, const WirePacket& p) noexcept {
    const End& to = ends_[1 - from_side];
    CableSink* const sink = to.sink.load(std::memory_order_acquire);
    const unsigned port = to.port.load(std::memory_order_relaxed);
    bool drop = false, dup = false, corrupt = false;
    {
        std::lock_guard lk(mu_);
        if (!plugged() || sink == nullptr) {
            ++stats_.unplugged_drops;
            return;
        }
        const auto v = faults_.decide(p.kind);
        drop = v.drop;
        corrupt = v.corrupt;
        dup = v.dup;
        if (drop) {
            ++stats_.dropped;
            return;
        }
        stats_.corrupted += corrupt ? 1 : 0;
        stats_.duplicated += dup ? 1 : 0;
        const std::uint64_t n = dup ? 2 : 1;
        switch (p.kind) {
            case WireKind::control: stats_.control += n; break;
            case WireKind::data: stats_.data += n; break;
            case WireKind::status: stats_.status += n; break;
        }
    }
    if (corrupt && !p.data.empty()) {
        std::array<std::byte, hw::nhi::kMaxFrameSize> bad;
        const WirePacket q = FaultInjector::corrupted(p, bad);
        sink->cable_receive(port, q);
        if (dup) {
            sink->cable_receive(port, q);
        }
        return;
    }
    sink->cable_receive(port, p);
    if (dup) {
        sink->cable_receive(port, p);
    }
}

void Cable::carry_batch(unsigned from_side, std::span<const WirePacket> ps) noexcept {
    const End& to = ends_[1 - from_side];
    CableSink* const sink = to.sink.load(std::memory_order_acquire);
    const unsigned port = to.port.load(std::memory_order_relaxed);
    bool one_by_one = false;
    {
        std::lock_guard lk(mu_);
        if (!plugged() || sink == nullptr) {
            stats_.unplugged_drops += ps.size();
            return;
        }
        one_by_one = faults_.active();
        if (!one_by_one) {
            for (const WirePacket& p : ps) {
                switch (p.kind) {
                    case WireKind::control: ++stats_.control; break;
                    case WireKind::data: ++stats_.data; break;
                    case WireKind::status: ++stats_.status; break;
                }
            }
        }
    }
    if (one_by_one) {
        for (const WirePacket& p : ps) {
            carry(from_side, p);  // each packet rolls its own faults, in order
        }
        return;
    }
    sink->cable_receive_batch(port, ps);
}

}  // namespace tbv::emu
