// SPDX-License-Identifier: Apache-2.0
// Router: construction, the Fabric and CableSink entry points, the lane state machine, hot-plug
// events and timers. Config spaces are in router_spaces.cpp, the control engine in
// control_engine.cpp, the data plane in paths.cpp.
//
// Lane model (ref §6.3, §12.4): a lane adapter wants a link when its port has a cable end with a
// peer present, neither end holds DPR, and neither end disabled that lane (LD). Wanting a link
// from state 0/7 starts training (state 1); after `training_delay` it reaches CL0 (state 2) with
// the configured speed and width x1, once the far end has finished training that lane too
// (PortStatus::laneN_trained): both ends reach CL0 together, even in two processes. Losing it gives
// state 7 (state 0 if LD is set). Events: entering CL0 queues a plug event, leaving the up states
// an unplug event, for adapters with DHP = 0 only. A newer event for an adapter replaces an unacked
// older one (the CM learns the latest state). Bonding: both ends request it (LB + target width dual
// on both lanes, lane 1 enabled) and both lanes are up ⇒ after `bonding_delay` both lanes report
// width x2.
#include "emu/router.hpp"

#include <algorithm>

#include "emu/nhi.hpp"

namespace tbv::emu {

using namespace hw::usb4;

Router::Router(EmuNhi& nhi, RouterConfig cfg)
    : nhi_(nhi),
      cfg_([&] {
          cfg.usb4_ports = std::clamp(cfg.usb4_ports, 1u, 2u);
          cfg.lane_max_hop = std::clamp(cfg.lane_max_hop, kMinLaneHopId, 0x7ffu);
          return cfg;
      }()),
      clock_(cfg_.clock != nullptr ? *cfg_.clock : Clock::steady()) {
    build_spaces();
    ports_.resize(cfg_.usb4_ports);
    if (cfg_.link.cable_on()) {
        for (unsigned p = 0; p < cfg_.usb4_ports; ++p) {
            link_in_[p] = std::make_unique<LinkPipe>(cfg_.link);
        }
    }
    nhi_.attach(this);
}

Router::~Router() {
    if (nhi_.fabric() == this) {
        nhi_.attach(nullptr);
    }
    for (unsigned p = 0; p < ports_.size(); ++p) {
        if (ports_[p].end != nullptr) {
            ports_[p].end->bind(nullptr, p);
        }
    }
}

// ---- entry points ------------------------------------------------------------------------------

void Router::transmit(EmuNhi& from, unsigned ring, const FrameView& frame) noexcept {
    (void)from;
    if (ring != 0) {
        data_from_nhi(ring, std::span<const FrameView>(&frame, 1));
        return;
    }
    Outbox out;
    {
        TimedLock lk(*this);
        const Time t = now();
        advance(t, out);  // a doorbell is an interaction: let time-based state catch up first
        control_from_nhi(frame, t, out);
    }
    flush(out);
}

void Router::transmit_batch(EmuNhi& from, unsigned ring,
                            std::span<const FrameView> frames) noexcept {
    if (ring == 0) {
        Fabric::transmit_batch(from, ring, frames);  // control packets, one by one
        return;
    }
    data_from_nhi(ring, frames);
}

void Router::poll(EmuNhi& from) noexcept {
    (void)from;
    poll();
}

void Router::poll() noexcept {
    const Time t = now();
    for (unsigned p = 0; p < link_in_.size(); ++p) {
        if (link_in_[p] && link_in_[p]->due(t)) {
            release_link(p, t);  // link model: frames whose arrival time has come
        }
    }
    if (t.count() >= due_hint_.load(std::memory_order_acquire)) {
        Outbox out;
        {
            TimedLock lk(*this);
            advance(t, out);
        }
        flush(out);
    }
    for (const auto& e : ends_hint_) {
        if (CableEnd* const end = e.load(std::memory_order_acquire)) {
            end->poll();
        }
    }
}

// ---- a sleeping NHI ----------------------------------------------------------------------------

InboundSignal* Router::inbound_end() const noexcept {
    for (const auto& e : ends_hint_) {
        if (CableEnd* const end = e.load(std::memory_order_acquire)) {
            if (InboundSignal* const sig = end->inbound_signal()) {
                return sig;
            }
        }
    }
    return nullptr;
}

std::optional<Router::Time> Router::next_link_arrival() const noexcept {
    std::optional<Time> first;
    for (const auto& pipe : link_in_) {
        if (pipe) {
            if (const auto t = pipe->next_arrival(); t && (!first || *t < *first)) {
                first = t;
            }
        }
    }
    return first;
}

bool Router::set_inbound_wakeups(bool on) noexcept {
    {
        std::lock_guard lk(wakeups_mu_);
        inbound_wakeups_.store(on, std::memory_order_release);
        for (const auto& e : ends_hint_) {
            if (CableEnd* const end = e.load(std::memory_order_acquire)) {
                if (InboundSignal* const sig = end->inbound_signal()) {
                    sig->want_wakeups(on);
                }
            }
        }
    }
    return on && next_link_arrival().has_value();
}

bool Router::wait_inbound(const std::atomic<bool>& abort,
                          std::chrono::nanoseconds timeout) noexcept {
    InboundSignal* const sig = inbound_end();
    if (sig == nullptr && !cfg_.link.cable_on()) {
        return false;  // every frame comes in the sender's thread: nothing to wait for
    }
    std::unique_lock lk(wait_mu_);
    // Both wake-up signals are read before `abort` (see Fabric::wait_inbound).
    const std::uint64_t seen_local = wait_gen_;
    const std::uint32_t seen = sig != nullptr ? sig->inbound_seq() : 0;
    if (abort.load(std::memory_order_seq_cst)) {
        return true;
    }
    if (inbound_wakeups_.load(std::memory_order_acquire)) {
        if (sig != nullptr && sig->inbound_pending()) {
            // Already there: poll. Once per doorbell count: if it is still there on the next
            // call with no send in between, another thread is taking it in (or the cable is
            // pulled and it waits to be dropped), so sleep until the next send instead of
            // spinning.
            if (!pending_reported_ || pending_seq_ != seen) {
                pending_reported_ = true;
                pending_seq_ = seen;
                return true;
            }
        } else {
            pending_reported_ = false;
        }
        if (const auto due = next_link_arrival()) {
            const Time left = *due - now();
            if (left <= Time::zero()) {
                return true;
            }
            timeout = std::min(timeout, left);
        }
    }
    if (sig != nullptr) {
        lk.unlock();
        sig->wait_inbound(seen, timeout);  // wake_inbound() rings this doorbell too
    } else {
        wait_cv_.wait_for(lk, timeout, [&] { return wait_gen_ != seen_local; });
    }
    return true;
}

void Router::wake_inbound() noexcept {
    {
        std::lock_guard lk(wait_mu_);
        ++wait_gen_;
    }
    wait_cv_.notify_all();
    for (const auto& e : ends_hint_) {
        if (CableEnd* const end = e.load(std::memory_order_acquire)) {
            if (InboundSignal* const sig = end->inbound_signal()) {
                sig->wake_local();
            }
        }
    }
}

void Router::publish_locked() noexcept {
    due_hint_.store(next_due_.count(), std::memory_order_release);
    for (unsigned p = 0; p < ports_.size(); ++p) {
        ends_hint_[p].store(ports_[p].end, std::memory_order_release);
    }
}

void Router::cable_receive(unsigned port, const WirePacket& p) noexcept {
    switch (p.kind) {
        case WireKind::data: data_arrived(port, std::span<const WirePacket>(&p, 1)); return;
        case WireKind::control: {
            Outbox out;
            {
                TimedLock lk(*this);
                advance(now(), out);
                control_from_cable(port, p, out);
            }
            flush(out);
            return;
        }
        case WireKind::status: {
            Outbox out;
            {
                TimedLock lk(*this);
                if (port < ports_.size()) {
                    const Time t = now();
                    advance(t, out);  // our own training may be due: answer with it
                    ports_[port].peer = p.status;
                    refresh_port(port, t, out);
                }
            }
            flush(out);
            return;
        }
    }
}

void Router::cable_receive_batch(unsigned port, std::span<const WirePacket> ps) noexcept {
    while (!ps.empty()) {
        std::size_t n = 0;
        while (n < ps.size() && ps[n].kind == WireKind::data) {
            ++n;
        }
        if (n == 0) {
            cable_receive(port, ps.front());  // control and link status: one by one
            n = 1;
        } else {
            data_arrived(port, ps.first(n));
        }
        ps = ps.subspan(n);
    }
}

void Router::cable_changed(unsigned port) noexcept {
    Outbox out;
    bool gone = false;
    {
        TimedLock lk(*this);
        if (port >= ports_.size()) {
            return;
        }
        Port& pt = ports_[port];
        const bool present = pt.end != nullptr && pt.end->peer_present();
        gone = !present;
        if (present != pt.peer_present) {
            pt.peer_present = present;
            pt.sent.reset();  // a (re)appearing peer needs our status again
            if (!present) {
                pt.peer = {};
            }
        }
        refresh_port(port, now(), out);
    }
    flush(out);
    if (gone) {
        drop_in_flight(port);
    }
}

void Router::drop_in_flight(unsigned port) noexcept {
    // Link model: frames on a cable that was pulled (or whose far end died) never arrive. Outside
    // mu_: a pipe's locks come first (router.hpp).
    if (port < link_in_.size() && link_in_[port]) {
        if (const std::size_t lost = link_in_[port]->clear(); lost != 0) {
            std::lock_guard lk(mu_);
            ctr_.link_in_flight_drops += lost;
        }
    }
}

void Router::connect_port(unsigned port, CableEnd* end) noexcept {
    if (port >= ports_.size()) {
        return;
    }
    // The NHI's RX helper may be asleep on the old end's doorbell or polling it: keep it out
    // until the new end is published (the caller may destroy the old end when we return).
    const EmuNhi::RxHelperHold hold = nhi_.hold_rx_helper();
    CableEnd* old = nullptr;
    {
        std::lock_guard lk(mu_);
        old = ports_[port].end;
    }
    if (old == end) {
        return;
    }
    if (old != nullptr) {
        old->bind(nullptr, port);
        if (InboundSignal* sig = old->inbound_signal()) {
            sig->want_wakeups(false);
        }
    }
    Outbox out;
    {
        TimedLock lk(*this);
        Port& pt = ports_[port];
        pt.end = end;
        pt.peer_present = false;
        pt.peer = {};
        pt.sent.reset();
        refresh_port(port, now(), out);  // link down on the old cable
    }
    flush(out);
    drop_in_flight(port);  // what was on the old cable
    if (end != nullptr) {
        if (InboundSignal* sig = end->inbound_signal()) {
            std::lock_guard lk(wakeups_mu_);
            sig->want_wakeups(inbound_wakeups_.load(std::memory_order_relaxed));
        }
        end->bind(this, port);
        cable_changed(port);
    }
}

// ---- lanes, ports, events -------------------------------------------------------------------

bool Router::lane_is_up(const Adapter& a) const {
    return a.lane && lane_up(LANE1_STATE::get(lane_cs1(a)));
}

PortStatus Router::local_status(unsigned port) const {
    const Adapter& l0 = adapters_[lane_adapter(port, 0)];
    const Adapter& l1 = adapters_[lane_adapter(port, 1)];
    PortStatus s;
    s.in_reset = PORT19_DPR::get(l0.space[kUsb4Cap + PORT_CS_19]) != 0 ||
                 PORT19_DPR::get(l1.space[kUsb4Cap + PORT_CS_19]) != 0;
    s.lane0_enabled = LANE1_LD::get(lane_cs1(l0)) == 0;
    s.lane1_enabled = LANE1_LD::get(lane_cs1(l1)) == 0;
    s.bond_request = LANE1_LB::get(lane_cs1(l0)) != 0 &&
                     LANE1_TARGET_WIDTH::get(lane_cs1(l0)) == kTargetWidthDual &&
                     LANE1_TARGET_WIDTH::get(lane_cs1(l1)) == kTargetWidthDual && s.lane1_enabled;
    s.lane0_trained = l0.trained;
    s.lane1_trained = l1.trained;
    return s;
}

void Router::refresh_port(unsigned port, Time t, Outbox& out) {
    Port& pt = ports_[port];
    const PortStatus me = local_status(port);
    if (pt.end != nullptr && pt.peer_present && (!pt.sent || *pt.sent != me)) {
        Outbox::ToCable c{pt.end, {}, {}};
        c.pkt.kind = WireKind::status;
        c.pkt.status = me;
        out.cable.push_back(std::move(c));
        pt.sent = me;
    }
    const bool link = pt.end != nullptr && pt.peer_present && !me.in_reset && !pt.peer.in_reset;
    for (unsigned l = 0; l < 2; ++l) {
        Adapter& a = adapters_[lane_adapter(port, l)];
        const bool ld = LANE1_LD::get(lane_cs1(a)) != 0;
        const bool peer_enabled = l == 0 ? pt.peer.lane0_enabled : pt.peer.lane1_enabled;
        const auto state = static_cast<LaneState>(LANE1_STATE::get(lane_cs1(a)));
        const bool peer_trained = l == 0 ? pt.peer.lane0_trained : pt.peer.lane1_trained;
        if (link && !ld && peer_enabled) {
            if (state == LaneState::disabled || state == LaneState::unplugged) {
                set_lane_state(a, LaneState::training, t, out);
                a.trained = false;
                a.train_until = t + cfg_.training_delay;
                next_due_ = std::min(next_due_, a.train_until);
            } else if (state == LaneState::training && a.trained && peer_trained) {
                set_lane_state(a, LaneState::cl0, t, out);
            }
        } else {
            a.trained = false;
            const LaneState target = ld ? LaneState::disabled : LaneState::unplugged;
            if (state != target) {
                set_lane_state(a, target, t, out);
            }
        }
    }
    // Bonding (ref §12.4): both ends asked for it and both lanes are up.
    const bool can_bond = me.bond_request && pt.peer.bond_request &&
                          lane_is_up(adapters_[lane_adapter(port, 0)]) &&
                          lane_is_up(adapters_[lane_adapter(port, 1)]);
    if (!can_bond) {
        pt.bond_at.reset();
        if (pt.bonded) {
            pt.bonded = false;
            for (unsigned l = 0; l < 2; ++l) {
                Adapter& a = adapters_[lane_adapter(port, l)];
                if (lane_is_up(a)) {
                    lane_cs1(a) = LANE1_CURRENT_WIDTH::set(lane_cs1(a), 1);
                }
            }
        }
    } else if (!pt.bonded && !pt.bond_at) {
        pt.bond_at = t + cfg_.bonding_delay;
        next_due_ = std::min(next_due_, *pt.bond_at);
    }
}

void Router::set_lane_state(Adapter& a, LaneState s, Time t, Outbox& out) {
    std::uint32_t& cs1 = lane_cs1(a);
    const std::uint32_t old = LANE1_STATE::get(cs1);
    const auto v = static_cast<std::uint32_t>(s);
    cs1 = LANE1_STATE::set(cs1, v);
    if (lane_up(v)) {
        cs1 = LANE1_CURRENT_SPEED::set(cs1, cfg_.speed);
        cs1 = LANE1_CURRENT_WIDTH::set(cs1, ports_[a.port].bonded ? 2 : 1);
    } else {
        cs1 = LANE1_CURRENT_SPEED::set(cs1, 0);
        cs1 = LANE1_CURRENT_WIDTH::set(cs1, 0);
    }
    const unsigned adapter = lane_adapter(a.port, a.lane_index);
    if (!lane_up(old) && lane_up(v)) {
        ++ctr_.link_ups;
        queue_event(adapter, false, t, out);
    } else if (lane_up(old) && !lane_up(v)) {
        ++ctr_.link_downs;
        queue_event(adapter, true, t, out);
    }
}

Router::Time Router::notification_timeout() const {
    const std::uint32_t ms = CS4_NOTIFICATION_TIMEOUT::get(router_space_[ROUTER_CS_4]);
    if (ms == 0) {
        return cfg_.default_notification_timeout;
    }
    return std::chrono::milliseconds(ms);
}

void Router::queue_event(unsigned adapter, bool unplug, Time t, Outbox& out) {
    if (ADP5_DHP::get(adapters_[adapter].space[ADP_CS_5]) != 0) {
        return;  // ref §5.6: only adapters with hot plug enabled report
    }
    std::erase_if(events_, [&](const PendingEvent& e) { return e.adapter == adapter; });
    PendingEvent ev{adapter, unplug, t + notification_timeout()};
    send_event(ev, false, out);
    next_due_ = std::min(next_due_, ev.next);
    events_.push_back(ev);
}

void Router::advance(Time t, Outbox& out) {
    if (t < next_due_) {
        return;
    }
    next_due_ = Time::max();
    std::array<bool, 2> trained{};
    for (Adapter& a : adapters_) {
        if (a.lane &&
            LANE1_STATE::get(lane_cs1(a)) == static_cast<std::uint32_t>(LaneState::training)) {
            if (!a.trained && t >= a.train_until) {
                a.trained = true;  // CL0 once the far end has trained too (refresh_port)
                trained[a.port] = true;
            } else {
                next_due_ = std::min(next_due_, a.train_until);
            }
        }
        // Pending bits end after pending_time even if nobody reads them.
        for (std::size_t h = 0; h < a.pending_until.size(); ++h) {
            std::uint32_t& dw1 = a.path[h * kPathEntryDwords + 1];
            if (PATH1_PENDING::get(dw1) != 0) {
                if (t >= a.pending_until[h]) {
                    dw1 = PATH1_PENDING::set(dw1, 0);
                } else {
                    next_due_ = std::min(next_due_, a.pending_until[h]);
                }
            }
        }
    }
    for (unsigned p = 0; p < ports_.size(); ++p) {
        Port& pt = ports_[p];
        if (trained[p]) {
            refresh_port(p, t, out);  // tell the peer; CL0 if it is done too
        }
        if (pt.bond_at) {
            if (t >= *pt.bond_at) {
                pt.bond_at.reset();
                pt.bonded = true;
                for (unsigned l = 0; l < 2; ++l) {
                    Adapter& a = adapters_[lane_adapter(p, l)];
                    lane_cs1(a) = LANE1_CURRENT_WIDTH::set(lane_cs1(a), 2);
                }
            } else {
                next_due_ = std::min(next_due_, *pt.bond_at);
            }
        }
    }
    // Unacked events are re-sent every notification timeout (ref §5.6 [inferred]).
    const Time period = notification_timeout();
    for (PendingEvent& ev : events_) {
        if (t >= ev.next) {
            send_event(ev, true, out);
            ev.next = t + period;
        }
        next_due_ = std::min(next_due_, ev.next);
    }
}

// ---- inspection ---------------------------------------------------------------------------------

RouterCounters Router::counters() const {
    std::lock_guard lk(mu_);
    return ctr_;
}

std::optional<std::uint32_t> Router::peek(Space space, unsigned adapter, unsigned offset) const {
    std::lock_guard lk(mu_);
    switch (space) {
        case Space::router:
            if (offset < router_space_.size()) {
                return router_space_[offset];
            }
            return std::nullopt;
        case Space::adapter:
            if (adapter < adapters_.size() && adapters_[adapter].implemented &&
                offset < adapters_[adapter].space.size()) {
                return adapters_[adapter].space[offset];
            }
            return std::nullopt;
        case Space::path:
            if (adapter < adapters_.size() && offset < adapters_[adapter].path.size()) {
                return adapters_[adapter].path[offset];
            }
            return std::nullopt;
        case Space::counters: return std::nullopt;
    }
    return std::nullopt;
}

std::optional<Router::PathEntry> Router::path_entry(unsigned adapter, unsigned hop) const {
    std::lock_guard lk(mu_);
    if (adapter >= adapters_.size() ||
        std::size_t{hop} * kPathEntryDwords + 1 >= adapters_[adapter].path.size()) {
        return std::nullopt;
    }
    const std::uint32_t dw0 = adapters_[adapter].path[hop * kPathEntryDwords];
    const std::uint32_t dw1 = adapters_[adapter].path[hop * kPathEntryDwords + 1];
    return PathEntry{PATH0_VALID::get(dw0) != 0, PATH0_OUT_ADAPTER::get(dw0),
                     PATH0_OUT_HOP::get(dw0), PATH0_CREDITS::get(dw0),
                     PATH1_PENDING::get(dw1) != 0};
}

LaneState Router::lane_state(unsigned adapter) const {
    std::lock_guard lk(mu_);
    if (adapter >= adapters_.size() || !adapters_[adapter].lane) {
        return LaneState::disabled;
    }
    return static_cast<LaneState>(LANE1_STATE::get(lane_cs1(adapters_[adapter])));
}

unsigned Router::lane_width(unsigned adapter) const {
    std::lock_guard lk(mu_);
    if (adapter >= adapters_.size() || !adapters_[adapter].lane) {
        return 0;
    }
    return LANE1_CURRENT_WIDTH::get(lane_cs1(adapters_[adapter]));
}

unsigned Router::pending_events() const {
    std::lock_guard lk(mu_);
    return static_cast<unsigned>(events_.size());
}

}  // namespace tbv::emu
