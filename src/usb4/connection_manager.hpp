// SPDX-License-Identifier: Apache-2.0
// ConnectionManager: the userspace replacement for the kernel's software CM, for one NHI and its
// host router. Once VFIO owns the controller nobody else enumerates the router, acks hot-plug
// events, finds the peer host or programs DMA paths; this does (ref §7–§9).
//
// It is an event loop: poll() drains the control channel's inbox (hot-plug events, XDomain
// requests and responses), answers the peer's XDomain requests at once, and advances one state
// machine per USB4 port:
//
//   down ─plug─▶ lane ─CL0, router error on route P─▶ uuid ─▶ properties ─▶ rails ─▶ up
//                  │                                     (peer without tbverbs: discovered)
//                  └─ a device router answered: not_xdomain         any step out of retries: failed
//                                                          (probed again after failed_retry)
//
// XDomain traffic never blocks: requests are sent and their answers arrive through the inbox, so
// two hosts driven by one thread (tests) or two processes both make progress. Config accesses to
// our own router are synchronous (the router answers them itself).
//
// A rail is one TX ring + one RX ring here and a DMA path each way (dma_path.hpp). The host with
// the larger UUID offers rails (rail_proto.hpp); the other accepts as many as it can match. Each
// side programs only its own router: RX entry at the lane adapter (our input HopID → our RX ring)
// and TX entry at the NHI adapter (our TX ring → the peer's input HopID), paths enabled last.
//
// Not thread safe: one thread owns a ConnectionManager, its channel and its rails' set-up.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"
#include "tbv/result.hpp"
#include "usb4/control_channel.hpp"
#include "usb4/hop_allocator.hpp"
#include "usb4/host_router.hpp"
#include "usb4/packets.hpp"
#include "usb4/properties.hpp"
#include "usb4/rail_proto.hpp"

namespace tbv::usb4 {

enum class LinkState : std::uint8_t {
    down,         ///< nothing plugged (or unplugged)
    lane,         ///< plugged: waiting for the lane to reach CL0, then probing the far side
    uuid,         ///< XDomain peer found: UUID exchange
    properties,   ///< reading the peer's property block
    rails,        ///< rail handshake under our protocol UUID
    up,           ///< rails programmed
    discovered,   ///< a peer without the tbverbs service (e.g. Linux thunderbolt-net): no rails
    not_xdomain,  ///< a device router answered: not a host-to-host link
    failed,       ///< gave up; `error` says why (replug to retry)
};
std::string_view to_string(LinkState s) noexcept;

struct Rail {
    unsigned index = 0;
    unsigned lane_adapter = 0;
    unsigned tx_ring = 0;        ///< our TX ring (= HopID at our NHI adapter)
    unsigned rx_ring = 0;        ///< our RX ring
    unsigned tx_hop = 0;         ///< HopID we transmit with (the peer's input HopID)
    unsigned rx_hop = 0;         ///< our input HopID on the lane adapter
    unsigned local_credits = 0;  ///< RX descriptors we keep posted
    unsigned peer_credits = 0;   ///< RX descriptors the peer keeps posted
    std::unique_ptr<nhi::TxRing> tx;
    std::unique_ptr<nhi::RxRing> rx;
};

struct Link {
    unsigned adapter = 0;     ///< lane 0 adapter of the USB4 port
    std::uint64_t route = 0;  ///< route to the far side (host router: the adapter number)
    LinkState state = LinkState::down;
    std::error_code error;  ///< why it failed
    LaneStatus lane;
    UuidDwords peer_uuid{};
    std::optional<HostInfo> peer;
    std::vector<Rail> rails;
    std::uint32_t session = 0;
    // Request pacing (internal).
    std::chrono::steady_clock::time_point deadline{};
    unsigned attempts = 0;
    PropertyAssembler assembler;
    bool initiator = false;
    std::vector<std::uint32_t> last_accept;  ///< replayed if the offer is retransmitted
    bool rails_announced = false;            ///< on_rails(up) was called for these rails
};

struct CmOptions {
    Clock* clock = nullptr;  ///< not owned; nullptr: steady clock
    /// XDomain request timeout and tries per state (Linux: 1000 ms, 10 tries, ref §8.4).
    std::chrono::nanoseconds xd_timeout = std::chrono::milliseconds(1000);
    unsigned xd_attempts = 10;
    /// Lane training wait (Linux tb_wait_for_port: 10 polls 100 ms apart).
    std::chrono::nanoseconds lane_poll = std::chrono::milliseconds(100);
    unsigned lane_polls = 10;
    unsigned rail_ring_size = 256;  ///< descriptors per rail ring (credits = size - 1)
    /// MSI-X vector of the rails' RX rings, routed but masked (RingConfig::irq_masked): the
    /// transport's owner unmasks them to sleep until a frame comes. nullopt: polled only.
    std::optional<unsigned> rail_rx_irq_vector;
    /// A failed link starts discovery again after this long while its lane stays up (a peer
    /// process that was slow, busy or restarting gets another chance without a replug);
    /// zero keeps it failed until the cable is replugged.
    std::chrono::nanoseconds failed_retry = std::chrono::seconds(1);
    unsigned max_rails_per_link = kMaxRailsPerLink;
    HostInfo host{};  ///< what we publish (a tbverbs service is added if missing)
    /// One line per discovery step (tbv status --trace, bug reports).
    std::function<void(std::string_view)> trace;
    /// The transport's hook: called with `up` = true once a link's rails are programmed (before an
    /// acceptor answers, so its RX rings can be stocked first), and with false when they go away
    /// (after the paths are disabled, before the rings are destroyed: stop them and reclaim
    /// buffers here). Called from poll() on the CM's thread.
    std::function<void(Link&, bool up)> on_rails;
};

struct CmCounters {
    std::uint64_t events = 0;
    std::uint64_t xd_requests_served = 0;
    std::uint64_t xd_requests_sent = 0;
    std::uint64_t xd_unexpected = 0;  ///< well-formed but not for any link state: dropped
    std::uint64_t xd_malformed = 0;   ///< failed to decode: dropped
    std::uint64_t rail_offers = 0;
    std::uint64_t path_writes = 0;
};

class ConnectionManager {
public:
    /// Enumerates the host router and returns a CM with every USB4 port down. The CM asks for
    /// the current link state of each port once, so a cable plugged before start-up is found.
    static Result<std::unique_ptr<ConnectionManager>> create(nhi::Nhi& nhi, ControlChannel& ch,
                                                             CmOptions opts = {});
    ~ConnectionManager();  ///< tears rails down (paths first, then rings)
    ConnectionManager(const ConnectionManager&) = delete;
    ConnectionManager& operator=(const ConnectionManager&) = delete;

    /// Handles everything that arrived and every timer that expired. Call it often.
    void poll();

    const HostRouter& router() const noexcept { return router_; }
    UuidDwords uuid() const noexcept { return router_.uuid(); }
    const std::vector<Link>& links() const noexcept { return links_; }
    Link* link(unsigned adapter) noexcept;
    const CmCounters& counters() const noexcept { return ctr_; }

private:
    ConnectionManager(nhi::Nhi& nhi, ControlChannel& ch, CmOptions opts);

    // connection_manager.cpp: ports, events, probing, teardown.
    void on_hot_plug(const HotPlugEvent& e);
    void advance(Link& l, Clock::time_point now);
    void probe(Link& l, Clock::time_point now);
    void teardown(Link& l);
    void fail_link(Link& l, std::error_code ec, std::string_view why);
    void log(const Link& l, std::string_view msg) const;
    Clock::time_point now() const noexcept { return clock_->now(); }

    // xdomain.cpp: discovery requests and our answers to the peer's.
    void on_xdomain(const ControlPacket& p);
    void serve_discovery(Link& l, const XdomainPacket& p, const XdMessage& m);
    void on_discovery_response(Link& l, const XdMessage& m);
    void send_discovery(Link& l, const XdMessage& m, unsigned seq);
    void request_next(Link& l);

    // rails.cpp: the rail handshake and path programming.
    void on_rail_packet(Link& l, const XdomainPacket& p);
    void send_offer(Link& l);
    Result<void> prepare_rails(Link& l, unsigned count);
    Result<void> program_rails(Link& l);
    void release_rails(Link& l);
    void announce_rails(Link& l);
    Result<void> deactivate_path(unsigned adapter, unsigned hop);
    void send_rail(Link& l, Pdf pdf, RailMsg type, const RailMessage& m, unsigned seq);

    nhi::Nhi& nhi_;
    ControlChannel& ch_;
    CmOptions opts_;
    SteadyClock steady_;
    Clock* clock_;
    HostRouter router_;
    std::vector<std::uint32_t> properties_;  ///< our encoded property block
    std::uint32_t generation_ = 1;
    std::vector<Link> links_;
    std::vector<HopIdAllocator> hops_;  ///< per link, input HopIDs of its lane adapter
    CmCounters ctr_{};
};

}  // namespace tbv::usb4
