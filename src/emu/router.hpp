// SPDX-License-Identifier: Apache-2.0
// Router: the host router behind one emulated NHI (ref §12.4, §12.5; "ref §x" below is
// ../shared/docs/hardware/nhi-reference.md). It is the NHI's Fabric: TX ring 0 carries control
// packets into its control-packet engine, TX rings r ≥ 1 carry DMA frames into its path tables.
// Its USB4 ports join cables (wire.hpp) to another host's router.
//
// What it models, laid out like the AMD host of ref §1.4:
//   * router space CS_0..CS_26 + a TMU capability, router operations (0x33 buffer allocation);
//   * adapter 0 control, 1 NHI (the upstream adapter), 2k+2 / 2k+3 the two lane adapters of USB4
//     port k (lane capability, USB4 port capability), then USB3 down, PCIe down, 2 × DP IN
//     protocol adapters, then optional unimplemented adapters (error 2);
//   * path (HOPS) spaces with the pending bit after a disable;
//   * the control engine: CRC/length/PDF validation, route-0 reads and writes, forwarding through
//     lane adapters (LCK ⇒ error 15, no link ⇒ error 0), error replies to config requests from a
//     peer host (XDomain detection), XDomain PDF 6/7 delivery with route rewriting;
//   * hot-plug events re-sent every notification timeout until acked; the lane state machine,
//     downstream port reset and lane bonding;
//   * the data plane: frames follow only valid path entries, otherwise they are dropped and
//     counted; a TX batch is routed under one lock (paths.cpp);
//   * optionally (RouterConfig::link, link.hpp) the cable's rate and latency for the direction
//     into each USB4 port: data frames that arrive are held in a LinkPipe until their arrival
//     time and routed on when the router next runs (poll(), or the next frame arriving).
//
// Time: no thread. Timers advance in transmit() (doorbells) and poll() (EmuNhi::poll, i.e. every
// driver ring poll), against an injectable Clock.
//
// Locking: one mutex guards all router state. It is never held while calling out (into an NHI,
// a cable end or a peer router): work that leaves the router is collected in an outbox under the
// lock and sent after it is released, so two routers that call each other from two threads never
// deadlock. poll() takes it only when a deadline is due (the earliest one is published in an
// atomic whenever a section that may move it ends): a driver polling in a loop does not contend
// with the frames another thread routes through this router.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "emu/clock.hpp"
#include "emu/fabric.hpp"
#include "emu/link.hpp"
#include "emu/wire.hpp"
#include "hw/usb4_regs.hpp"

namespace tbv::emu {

class EmuNhi;

struct RouterConfig {
    std::uint16_t vendor = 0x0438;  ///< AMD host router 0x0438:0x020e (ref §1.4)
    std::uint16_t device = 0x020e;
    std::uint64_t uid = 0x0438'020e'0000'0001;   ///< ROUTER_CS_7..8
    unsigned usb4_ports = 1;                     ///< 1 or 2 (lane adapters 2–3, 4–5)
    bool protocol_adapters = true;               ///< USB3 down, PCIe down, 2 × DP IN
    unsigned unimplemented_adapters = 0;         ///< extra adapters that answer error 2
    unsigned lane_max_hop = 31;                  ///< ADP_CS_5 max in/out HopID of lane adapters
    unsigned lane_total_buffers = 128;           ///< ADP_CS_4 (ref §1.4)
    unsigned ctl_credits = 2;                    ///< lane path entry 0 initial credits
    std::uint32_t speed = hw::usb4::kSpeedGen3;  ///< LANE_ADP_CS_1 current speed once up
    bool buffer_alloc_op = true;                 ///< answer router op 0x33 (else ONS)
    std::uint32_t ba_max_hi = 32;                ///< baMaxHI (DMA credits, ref §1.4)
    bool enabled_at_boot = false;  ///< CS_3.valid set by "firmware" (AMD does, ref §7.2)
    // Timing knobs (ref §12.6).
    std::chrono::nanoseconds training_delay = std::chrono::milliseconds(10);
    std::chrono::nanoseconds bonding_delay = std::chrono::milliseconds(10);
    /// Event re-send period when ROUTER_CS_4 notification timeout is 0.
    std::chrono::nanoseconds default_notification_timeout = std::chrono::milliseconds(100);
    /// A disabled path entry reads pending = 1 for this many reads of it or this long, whichever
    /// ends first.
    unsigned pending_reads = 2;
    std::chrono::nanoseconds pending_time = std::chrono::milliseconds(1);
    const Clock* clock = nullptr;  ///< nullptr: Clock::steady()
    /// Link model: gen/lanes/latency shape the direction into each USB4 port (off by default).
    LinkConfig link{};
};

/// Every drop and every event the router counts (a snapshot from Router::counters()).
struct RouterCounters {
    // Control packets from the local NHI (TX ring 0).
    std::uint64_t ctl_from_nhi = 0;
    std::uint64_t ctl_crc_drops = 0;          ///< bad CRC (from the NHI or the cable)
    std::uint64_t ctl_malformed_drops = 0;    ///< length, reserved bits, SOF != EOF, bad fields
    std::uint64_t ctl_unexpected_drops = 0;   ///< valid packet with nothing to do (unknown PDF…)
    std::uint64_t reads = 0;                  ///< route-0 config reads answered with data
    std::uint64_t writes = 0;                 ///< route-0 config writes done
    std::uint64_t error_replies = 0;          ///< error packets sent to a CM (ours or the peer's)
    std::uint64_t forwarded = 0;              ///< control packets sent out a lane adapter
    std::uint64_t from_peer = 0;              ///< control packets passed up from a lane adapter
    std::uint64_t xdomain_config_errors = 0;  ///< peer CM config requests refused (XDomain hint)
    std::uint64_t router_ops = 0;
    // Events (ref §5.6).
    std::uint64_t events_sent = 0;  ///< first transmissions
    std::uint64_t events_resent = 0;
    std::uint64_t event_acks = 0;
    std::uint64_t stray_acks = 0;  ///< ack matching no pending event
    std::uint64_t notify_acks = 0;
    std::uint64_t nhi_refused = 0;  ///< EmuNhi::receive did not deliver (ring 0 or data)
    // Data plane (ref §12.5).
    std::uint64_t data_tx = 0;               ///< frames sent on the cable
    std::uint64_t data_rx = 0;               ///< frames handed to the NHI
    std::uint64_t data_no_path_drops = 0;    ///< NHI or lane entry invalid / not routable
    std::uint64_t data_link_down_drops = 0;  ///< out lane or in lane not in CL0, no cable
    // Link model (RouterConfig::link).
    std::uint64_t link_in_flight_drops = 0;  ///< on the cable when it was pulled: lost
    std::uint64_t link_overflow_drops = 0;   ///< more in flight than LinkPipe::kCapacity
    // Link.
    std::uint64_t link_ups = 0;
    std::uint64_t link_downs = 0;
    std::uint64_t port_resets = 0;  ///< DPR assertions
};

class Router final : public Fabric, public CableSink {
public:
    /// Builds the power-on router state and attaches to `nhi` (nhi.attach(this)).
    Router(EmuNhi& nhi, RouterConfig cfg = {});
    ~Router() override;  ///< detaches from the NHI and from any cable end

    // ---- Fabric (called by the NHI) ----
    void transmit(EmuNhi& from, unsigned ring, const FrameView& frame) noexcept override;
    /// Data rings: routed under one lock per batch, sent in one CableEnd::send_batch.
    void transmit_batch(EmuNhi& from, unsigned ring,
                        std::span<const FrameView> frames) noexcept override;
    void poll(EmuNhi& from) noexcept override;
    /// Sleeping NHI (EmuNhi's RX helper): the first cable end whose far end is in another process
    /// is waited on (its doorbell); frames the link model holds wake it when they fall due.
    /// Input on a second such end does not end a wait (its poll still takes it in).
    bool set_inbound_wakeups(bool on) noexcept override;
    bool wait_inbound(const std::atomic<bool>& abort,
                      std::chrono::nanoseconds timeout) noexcept override;
    void wake_inbound() noexcept override;

    // ---- CableSink (called by a cable) ----
    void cable_receive(unsigned port, const WirePacket& p) noexcept override;
    /// Runs of data frames: routed under one lock, delivered with EmuNhi::receive_batch.
    void cable_receive_batch(unsigned port, std::span<const WirePacket> ps) noexcept override;
    void cable_changed(unsigned port) noexcept override;

    /// Plugs `end` into USB4 port `port` (nullptr or disconnect_port unplugs). The link trains
    /// once the end reports a peer. Not from inside a cable or fabric call. Holds the NHI's RX
    /// helper out of wait_inbound()/poll() meanwhile, so the previous end may be destroyed once
    /// this returns.
    void connect_port(unsigned port, CableEnd* end) noexcept;
    void disconnect_port(unsigned port) noexcept { connect_port(port, nullptr); }

    /// Runs the timers, hands on the frames the link model held that have arrived, and runs the
    /// cable ends' poll (also done by EmuNhi::poll).
    void poll() noexcept;

    // ---- adapter numbering ----
    static constexpr unsigned kControlAdapter = 0;
    static constexpr unsigned kNhiAdapter = 1;
    unsigned lane_adapter(unsigned port, unsigned lane) const noexcept {
        return 2 + 2 * port + lane;
    }
    unsigned max_adapter() const noexcept { return static_cast<unsigned>(adapters_.size()) - 1; }
    unsigned usb4_ports() const noexcept { return cfg_.usb4_ports; }
    EmuNhi& nhi() noexcept { return nhi_; }
    const RouterConfig& config() const noexcept { return cfg_; }

    // ---- inspection (tests, `tbv status`) ----
    RouterCounters counters() const;
    /// Data frames the link model holds on the way into USB4 port `port` (0 with it off).
    std::size_t link_in_flight(unsigned port) const noexcept;
    /// A dword of a config space as the CM would read it (no side effects: a read here does not
    /// drain a pending bit). nullopt if not implemented.
    std::optional<std::uint32_t> peek(hw::usb4::Space space, unsigned adapter,
                                      unsigned offset) const;
    struct PathEntry {
        bool valid = false;
        unsigned out_adapter = 0;
        unsigned out_hop = 0;
        unsigned credits = 0;
        bool pending = false;
    };
    /// Path entry `hop` of `adapter` (ingress), nullopt if out of range.
    std::optional<PathEntry> path_entry(unsigned adapter, unsigned hop) const;
    hw::usb4::LaneState lane_state(unsigned adapter) const;
    unsigned lane_width(unsigned adapter) const;  ///< LANE_ADP_CS_1 current width
    unsigned pending_events() const;              ///< unacked hot-plug events
    static constexpr unsigned kLaneCap = 0x08;    ///< lane capability offset in a lane adapter
    static constexpr unsigned kUsb4Cap = 0x0c;    ///< USB4 port capability offset
    static constexpr unsigned kProtocolCap = 0x08;
    static constexpr unsigned kTmuCap = 0x1c;  ///< router space: first (TMU) capability

private:
    using Time = Clock::Duration;

    struct Adapter {
        hw::usb4::AdapterType type = hw::usb4::AdapterType::inactive;
        bool implemented = false;
        std::vector<std::uint32_t> space;  ///< adapter config space
        std::vector<std::uint32_t> wmask;  ///< writable bits per dword
        std::vector<std::uint32_t> path;   ///< 2 dwords per HopID 0..max in
        std::vector<unsigned> pending_reads;
        std::vector<Time> pending_until;
        bool has_path_space = false;
        // Lane adapters only.
        bool lane = false;
        unsigned port = 0;
        unsigned lane_index = 0;
        Time train_until{};
        bool trained = false;  ///< local training done; CL0 once the peer's lane is too
    };
    struct Port {
        CableEnd* end = nullptr;
        bool peer_present = false;
        PortStatus peer{};
        std::optional<PortStatus> sent;  ///< last status sent to the peer
        bool bonded = false;
        std::optional<Time> bond_at;
    };
    struct PendingEvent {
        unsigned adapter = 0;
        bool unplug = false;
        Time next{};
    };
    /// Work that leaves the router, done after the lock is released.
    struct Outbox {
        struct ToNhi {
            unsigned pdf;
            std::vector<std::uint32_t> dwords;
        };
        struct ToCable {
            CableEnd* end;
            WirePacket pkt;  ///< data points into bytes
            std::vector<std::byte> bytes;
        };
        std::vector<ToNhi> nhi;
        std::vector<ToCable> cable;
    };

    // router_spaces.cpp: power-on layout and config space access.
    void build_spaces();
    Adapter make_lane_adapter(unsigned number, unsigned port, unsigned lane) const;
    Adapter make_protocol_adapter(unsigned number, hw::usb4::AdapterType type) const;
    void init_adapter_header(Adapter& a, unsigned number, unsigned max_hop) const;
    /// Config read: data or an error code (ref §5.5).
    std::optional<hw::usb4::ErrorCode> read_space(hw::usb4::Space space, unsigned adapter,
                                                  unsigned offset, unsigned len, std::uint32_t* out,
                                                  Time now);
    std::optional<hw::usb4::ErrorCode> write_space(hw::usb4::Space space, unsigned adapter,
                                                   unsigned offset,
                                                   std::span<const std::uint32_t> data, Time now,
                                                   Outbox& out);
    std::optional<hw::usb4::ErrorCode> check_adapter(unsigned adapter) const;
    void write_router_dword(unsigned off, std::uint32_t value);
    void write_adapter_dword(unsigned adapter, unsigned off, std::uint32_t value, Time now,
                             Outbox& out);
    void write_path_dword(unsigned adapter, unsigned off, std::uint32_t value, Time now);
    void run_router_op();
    void clear_paths(unsigned adapter);

    // control_engine.cpp
    void control_from_nhi(const FrameView& frame, Time now, Outbox& out);
    void control_from_cable(unsigned port, const WirePacket& p, Outbox& out);
    void reply_error(std::uint64_t route, hw::usb4::ErrorCode code, unsigned adapter, Outbox& out);
    void handle_ack(std::uint32_t dw2);
    void send_event(PendingEvent& ev, bool resend, Outbox& out);

    // router.cpp: lanes, ports, events, timers.
    void advance(Time now, Outbox& out);
    void refresh_port(unsigned port, Time now, Outbox& out);
    PortStatus local_status(unsigned port) const;
    void set_lane_state(Adapter& a, hw::usb4::LaneState s, Time now, Outbox& out);
    void queue_event(unsigned adapter, bool unplug, Time now, Outbox& out);
    void flush(Outbox& out) noexcept;
    Time notification_timeout() const;
    std::uint32_t& lane_cs1(Adapter& a) { return a.space[kLaneCap + 1]; }
    const std::uint32_t& lane_cs1(const Adapter& a) const { return a.space[kLaneCap + 1]; }
    bool lane_is_up(const Adapter& a) const;
    Time now() const noexcept { return clock_.now(); }

    // paths.cpp: data plane.
    void data_from_nhi(unsigned ring, std::span<const FrameView> frames) noexcept;
    void data_from_cable(unsigned port, std::span<const WirePacket> ps) noexcept;
    /// Data frames from the cable: into the port's LinkPipe (link model on) or straight on.
    void data_arrived(unsigned port, std::span<const WirePacket> ps) noexcept;
    /// Routes on what the port's LinkPipe holds that has arrived by `t`.
    void release_link(unsigned port, Time t) noexcept;
    /// Drops what the port's LinkPipe holds (the cable went away), counted.
    void drop_in_flight(unsigned port) noexcept;

    /// mu_, for a section that may move a deadline or a port's cable end: when it ends (still
    /// under the lock) next_due_ and the ends are published for poll()'s lock-free check.
    class TimedLock {
    public:
        explicit TimedLock(Router& r) : r_(r), lk_(r.mu_) {}
        ~TimedLock() { r_.publish_locked(); }
        TimedLock(const TimedLock&) = delete;
        TimedLock& operator=(const TimedLock&) = delete;

    private:
        Router& r_;
        std::lock_guard<std::mutex> lk_;
    };
    void publish_locked() noexcept;
    /// RX ring a data packet from `port` goes to, or 0 (dropped and counted). mu_ held.
    unsigned ingress_ring_locked(unsigned port, const WirePacket& p) noexcept;

    EmuNhi& nhi_;
    const RouterConfig cfg_;
    const Clock& clock_;

    mutable std::mutex mu_;
    std::vector<std::uint32_t> router_space_;
    std::vector<std::uint32_t> router_wmask_;
    std::vector<Adapter> adapters_;
    std::vector<Port> ports_;
    std::vector<PendingEvent> events_;
    Time next_due_ = Time::max();  ///< earliest deadline advance() must act on
    RouterCounters ctr_{};
    // Published copies (TimedLock) for poll(), which reads them without the lock.
    std::atomic<Time::rep> due_hint_{Time::max().count()};
    std::array<std::atomic<CableEnd*>, 2> ends_hint_{};
    /// The link model's direction into each USB4 port; null when off. Fixed at construction.
    /// Lock order: a pipe's locks before mu_ (release_link routes under mu_), never the reverse.
    std::array<std::unique_ptr<LinkPipe>, 2> link_in_{};

    // Sleeping NHI (wait_inbound). Leaves: nothing else is locked under them.
    InboundSignal* inbound_end() const noexcept;
    std::optional<Time> next_link_arrival() const noexcept;
    std::atomic<bool> inbound_wakeups_{false};  ///< set_inbound_wakeups(true) in force
    std::mutex wakeups_mu_;  ///< orders set_inbound_wakeups with a cable end being plugged
    std::mutex wait_mu_;     ///< with wait_cv_: waits with no cable doorbell (link model only)
    std::condition_variable wait_cv_;
    std::uint64_t wait_gen_ = 0;     ///< wait_mu_; bumped by wake_inbound()
    bool pending_reported_ = false;  ///< wait_mu_; input waiting was reported at pending_seq_
    std::uint32_t pending_seq_ = 0;  ///< wait_mu_
};

}  // namespace tbv::emu
