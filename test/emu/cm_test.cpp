// SPDX-License-Identifier: Apache-2.0
// The connection manager end to end on two emulated hosts, everything through ring 0 and the
// router model (no shortcuts): enumeration, plug → XDomain found → UUIDs and properties exchanged
// → rails negotiated → paths programmed (checked against the router tables) → frames flow on
// every rail; unplug → rails down and paths cleared; replug → rails back; two cables to one peer;
// a peer that stops answering → timeout with a clear error.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "emu/host.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/frame_pool.hpp"
#include "nhi/nhi.hpp"
#include "usb4/connection_manager.hpp"
#include "usb4/control_channel.hpp"

using namespace tbv;
using namespace std::chrono_literals;
using usb4::LinkState;

namespace {

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

/// One host's driver stack: Nhi, ring 0, channel, connection manager.
struct Stack {
    Stack(emu::EmuHost& host, usb4::CmOptions opts, std::vector<std::string>* trace = nullptr)
        : nhi(take(nhi::Nhi::open(host.nhi()))),
          ring(take(nhi::ControlRing::create(*nhi))),
          ch(take(usb4::ControlChannel::create(*ring))) {
        if (trace != nullptr) {
            opts.trace = [trace, name = host.name()](std::string_view line) {
                trace->push_back(name + ": " + std::string(line));
            };
        }
        cm = take(usb4::ConnectionManager::create(*nhi, *ch, std::move(opts)));
    }
    // Destruction order: CM (tears rails down) before the channel, ring and Nhi.
    std::unique_ptr<nhi::Nhi> nhi;
    std::unique_ptr<nhi::ControlRing> ring;
    std::unique_ptr<usb4::ControlChannel> ch;
    std::unique_ptr<usb4::ConnectionManager> cm;

    usb4::Link& port(unsigned i = 0) { return const_cast<usb4::Link&>(cm->links().at(i)); }
};

emu::HostConfig host_cfg(const char* name, std::uint64_t uid, unsigned ports = 1) {
    emu::HostConfig c;
    c.name = name;
    c.uid = uid;
    c.router.usb4_ports = ports;
    c.router.training_delay = 2ms;
    return c;
}

usb4::CmOptions fast_opts() {
    usb4::CmOptions o;
    o.xd_timeout = 20ms;
    o.lane_poll = 2ms;
    o.lane_polls = 200;
    o.rail_ring_size = 16;
    return o;
}

/// Polls both CMs until `done` holds or a generous real-time deadline passes (never hangs).
template <typename Pred>
bool run_until(Stack& a, Stack& b, Pred done, std::chrono::seconds limit = 20s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        a.cm->poll();
        b.cm->poll();
        if (done()) {
            return true;
        }
    }
    return false;
}

/// Sends one frame on rail `k` from `from` to `to` and checks it arrives intact.
bool frame_flows(Stack& from, Stack& to, emu::EmuHost& from_host, emu::EmuHost& to_host,
                 unsigned link, unsigned k, unsigned seed) {
    usb4::Rail& tx = from.port(link).rails.at(k);
    usb4::Rail& rx = to.port(link).rails.at(k);
    auto src = take(nhi::FramePool::create(from_host.nhi(), 1, 4096, hw::DmaAccess::read));
    auto dst = take(nhi::FramePool::create(to_host.nhi(), 1, 4096, hw::DmaAccess::write));
    for (unsigned i = 0; i < 1000; ++i) {
        src.data(0)[i] = static_cast<std::byte>(seed + i);
    }
    const nhi::RxBuffer b{dst.iova(0), 0};
    if (rx.rx->post({&b, 1}).posted != 1) {
        return false;
    }
    const nhi::TxFrame f{src.iova(0), 1000, 1, 2, false, 0};
    if (tx.tx->post({&f, 1}).posted != 1) {
        return false;
    }
    nhi::RxCompletion c;
    if (rx.rx->poll({&c, 1}) != 1 || c.length != 1000) {
        return false;
    }
    std::array<std::uint64_t, 4> done{};
    (void)tx.tx->reap(done);
    return std::memcmp(src.data(0), dst.data(0), 1000) == 0;
}

/// The discovery trace goes to stderr, and only for a failing test: stdout is the TAP stream.
void dump(const std::vector<std::string>& trace) {
    for (const auto& l : trace) {
        std::fprintf(stderr, "%s\n", l.c_str());
    }
}

bool both_up(Stack& a, Stack& b, unsigned link = 0) {
    return a.port(link).state == LinkState::up && b.port(link).state == LinkState::up;
}

}  // namespace

TEST_CASE("CM enumerates the host router", "[emu][cm]") {
    emu::EmuHost host(host_cfg("a", 0x1111'0000'0000'0001));
    Stack s(host, fast_opts());
    CHECK(s.cm->router().vendor() == 0x0438);
    CHECK(s.cm->router().device() == 0x020e);
    CHECK(s.cm->router().nhi_adapter() == 1);
    CHECK(s.cm->router().uid() == 0x1111'0000'0000'0001u);
    REQUIRE(s.cm->router().usb4_ports() == std::vector<unsigned>{2});
    CHECK(s.cm->router().ba_max_hi() == 32);
    const auto* lane = s.cm->router().adapter(2);
    REQUIRE(lane != nullptr);
    CHECK(lane->is_lane());
    CHECK(lane->lane_cap.has_value());
    CHECK(lane->usb4_cap.has_value());
    CHECK(lane->ctl_credits == 2);
    // Hot plug enabled: DHP cleared on the lane adapter (ref §7.2 step 8).
    const auto cs5 = host.router().peek(hw::usb4::Space::adapter, 2, hw::usb4::ADP_CS_5);
    REQUIRE(cs5);
    CHECK(hw::usb4::ADP5_DHP::get(*cs5) == 0);
    CHECK(s.port().state == LinkState::down);
}

TEST_CASE("plug: XDomain discovery, rails, paths and frames on every rail", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    std::vector<std::string> trace;
    Stack a(ha, fast_opts(), &trace);
    Stack b(hb, fast_opts(), &trace);
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);

    const bool up = run_until(a, b, [&] { return both_up(a, b); });
    if (!up) {
        dump(trace);
    }
    REQUIRE(up);
    CHECK(a.port().peer_uuid == b.cm->uuid());
    CHECK(b.port().peer_uuid == a.cm->uuid());
    REQUIRE(a.port().peer.has_value());
    CHECK(a.port().peer->max_hop_id == 31);
    // H = 3 (AMD): rings 1 and 2 → two rails.
    REQUIRE(a.port().rails.size() == 2);
    REQUIRE(b.port().rails.size() == 2);

    // Paths against the router tables (ref §9.3).
    for (unsigned k = 0; k < 2; ++k) {
        const auto& ra = a.port().rails[k];
        const auto& rb = b.port().rails[k];
        CHECK(ra.tx_hop == rb.rx_hop);
        CHECK(rb.tx_hop == ra.rx_hop);
        auto tx = ha.router().path_entry(1, ra.tx_ring);
        REQUIRE(tx);
        CHECK(tx->valid);
        CHECK(tx->out_adapter == 2);
        CHECK(tx->out_hop == ra.tx_hop);
        auto rx = ha.router().path_entry(2, ra.rx_hop);
        REQUIRE(rx);
        CHECK(rx->valid);
        CHECK(rx->out_adapter == 1);
        CHECK(rx->out_hop == ra.rx_ring);
        CHECK(rx->credits == 14);
        CHECK(ra.peer_credits == 15);
    }
    for (unsigned k = 0; k < 2; ++k) {
        CHECK(frame_flows(a, b, ha, hb, 0, k, 10 + k));
        CHECK(frame_flows(b, a, hb, ha, 0, k, 20 + k));
    }
    // The discovery trace names every step in order.
    auto has = [&](const char* s) {
        for (const auto& l : trace) {
            if (l.find(s) != std::string::npos) {
                return true;
            }
        }
        return false;
    };
    CHECK(has("plug event acked"));
    CHECK(has("lane up"));
    CHECK(has("XDomain peer"));
    CHECK(has("peer UUID"));
    CHECK(has("tbverbs"));
    CHECK(has("rail(s) up"));
}

TEST_CASE("unplug tears rails down and clears paths; replug brings them back", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    Stack a(ha, fast_opts());
    Stack b(hb, fast_opts());
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);
    REQUIRE(run_until(a, b, [&] { return both_up(a, b); }));
    const unsigned tx_ring = a.port().rails[0].tx_ring;
    const unsigned rx_hop = a.port().rails[0].rx_hop;

    cable->unplug();
    REQUIRE(run_until(a, b, [&] {
        return a.port().state == LinkState::down && b.port().state == LinkState::down;
    }));
    CHECK(a.port().rails.empty());
    CHECK_FALSE(ha.router().path_entry(1, tx_ring)->valid);
    CHECK_FALSE(ha.router().path_entry(2, rx_hop)->valid);

    cable->plug();
    REQUIRE(run_until(a, b, [&] { return both_up(a, b); }));
    CHECK(a.port().rails.size() == 2);
    CHECK(frame_flows(a, b, ha, hb, 0, 1, 7));
}

TEST_CASE("two cables to one peer are two links to the same peer", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001, 2));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001, 2));
    auto o = fast_opts();
    o.max_rails_per_link = 1;  // H = 3: one ring pair per cable
    Stack a(ha, o);
    Stack b(hb, o);
    auto c0 = emu::EmuHost::connect(ha, 0, hb, 0);
    auto c1 = emu::EmuHost::connect(ha, 1, hb, 1);
    REQUIRE(a.cm->links().size() == 2);
    REQUIRE(run_until(a, b, [&] { return both_up(a, b, 0) && both_up(a, b, 1); }));
    CHECK(a.port(0).peer_uuid == a.port(1).peer_uuid);
    CHECK(a.port(0).adapter != a.port(1).adapter);
    CHECK(frame_flows(a, b, ha, hb, 0, 0, 1));
    CHECK(frame_flows(a, b, ha, hb, 1, 0, 2));
    CHECK(frame_flows(b, a, hb, ha, 1, 0, 3));
}

TEST_CASE("a peer that stops answering ends in a timeout, not a hang", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    auto o = fast_opts();
    o.xd_timeout = 5ms;
    o.xd_attempts = 3;
    Stack a(ha, o);
    Stack b(hb, o);  // its CM is never polled: the peer host is silent
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (a.port().state != LinkState::failed && std::chrono::steady_clock::now() < end) {
        a.cm->poll();
        // B's hardware keeps running (link training, answering its own router's part); only
        // its software is silent. The emulator advances a router when something drives it.
        hb.router().poll();
    }
    REQUIRE(a.port().state == LinkState::failed);
    CHECK(a.port().error == Errc::timeout);
    CHECK(a.port().rails.empty());
}

TEST_CASE("random control-packet loss and corruption: the link still comes up", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    auto o = fast_opts();
    o.xd_timeout = 5ms;
    o.xd_attempts = 40;
    Stack a(ha, o);
    Stack b(hb, o);
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);
    emu::FaultConfig f;
    f.ctl_drop = 0.15;
    f.ctl_corrupt = 0.15;
    f.seed = 42;
    cable->set_faults(f);
    REQUIRE(run_until(a, b, [&] { return both_up(a, b); }));
    const auto st = cable->stats();
    INFO("dropped " << st.dropped << ", corrupted " << st.corrupted);
    CHECK(st.dropped + st.corrupted > 0);  // the faults really hit control traffic
    CHECK(hb.router().counters().ctl_crc_drops + ha.router().counters().ctl_crc_drops > 0);
    CHECK(a.port().rails.size() == 2);
    CHECK(frame_flows(a, b, ha, hb, 0, 0, 5));
}

TEST_CASE("a killed peer process is seen as link down", "[emu][cm][shm][fork]") {
    const std::string name = "cm-" + std::to_string(::getpid());
    std::cout.flush();
    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
        // Host B in its own process: its own router, NHI, driver stack and CM, polled forever.
        emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
        if (!hb.open_shm_cable(0, name)) {
            ::_exit(3);
        }
        auto nhi = nhi::Nhi::open(hb.nhi());
        auto ring = nhi ? nhi::ControlRing::create(**nhi)
                        : Result<std::unique_ptr<nhi::ControlRing>>(fail(Errc::malformed));
        auto ch = ring ? usb4::ControlChannel::create(**ring)
                       : Result<std::unique_ptr<usb4::ControlChannel>>(fail(Errc::malformed));
        if (!ch) {
            ::_exit(4);
        }
        auto copts = fast_opts();
        if (std::getenv("TBV_TEST_CHILD_TRACE") != nullptr) {
            copts.trace = [](std::string_view l) {
                std::fprintf(stderr, "b: %.*s\n", static_cast<int>(l.size()), l.data());
            };
        }
        auto cm = usb4::ConnectionManager::create(**nhi, **ch, copts);
        if (!cm) {
            ::_exit(5);
        }
        for (;;) {
            (*cm)->poll();
            std::this_thread::sleep_for(50us);
        }
    }
    REQUIRE(child > 0);
    struct Reaper {
        pid_t pid;
        ~Reaper() {
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } reaper{child};

    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    std::vector<std::string> trace;
    Stack a(ha, fast_opts(), &trace);
    REQUIRE(ha.open_shm_cable(0, name));
    auto until = [&](auto pred) {
        const auto end = std::chrono::steady_clock::now() + 20s;
        while (std::chrono::steady_clock::now() < end) {
            a.cm->poll();
            if (pred()) {
                return true;
            }
            std::this_thread::sleep_for(50us);
        }
        return false;
    };
    const bool up = until([&] { return a.port().state == LinkState::up; });
    if (!up) {
        dump(trace);
    }
    REQUIRE(up);
    CHECK(a.port().rails.size() == 2);

    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    reaper.pid = -1;
    REQUIRE(until([&] { return a.port().state == LinkState::down; }));
    CHECK(a.port().rails.empty());
}

TEST_CASE("malformed XDomain traffic from the peer is dropped and counted", "[emu][cm]") {
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    Stack a(ha, fast_opts());
    Stack b(hb, fast_opts());
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);
    REQUIRE(run_until(a, b, [&] { return both_up(a, b); }));
    const auto before = a.cm->counters();
    const auto ch_before = a.ch->counters().malformed_dropped;
    using namespace hw::usb4;
    const auto& d = kXdomainDiscoveryUuid;
    const auto& r = usb4::kRailProtocolUuid;
    // Sent raw from B's ring 0 on route 2: B's router forwards them to A like any XDomain packet.
    // 1. length field disagreeing with the packet size
    REQUIRE(b.ring->send(
        6, std::vector<std::uint32_t>{0, 2, XD_LENGTH::make(40), d[0], d[1], d[2], d[3], 12}));
    // 2. discovery protocol, unknown message type
    REQUIRE(b.ring->send(
        6, std::vector<std::uint32_t>{0, 2, XD_LENGTH::make(5), d[0], d[1], d[2], d[3], 99}));
    // 3. rail offer claiming 100 rails
    std::vector<std::uint32_t> offer{0, 2, 0, r[0], r[1], r[2], r[3], 1};
    for (unsigned i = 0; i < 8; ++i) {
        offer.push_back(i);
    }
    offer.insert(offer.end(), {7, 2, 100});
    offer[2] = XD_LENGTH::make(static_cast<std::uint32_t>(offer.size() - 3));
    REQUIRE(b.ring->send(6, offer));
    for (int i = 0; i < 50; ++i) {
        a.cm->poll();
    }
    const auto after = a.cm->counters();
    CHECK(a.ch->counters().malformed_dropped == ch_before + 1);  // 1: caught by the channel
    CHECK(after.xd_malformed == before.xd_malformed + 2);        // 2 and 3: by the CM
    CHECK(a.port().state == LinkState::up);
    CHECK(a.port().rails.size() == 2);
    CHECK(frame_flows(a, b, ha, hb, 0, 0, 9));
}

TEST_CASE("TBV_EMU_FAULTS parses the documented syntax and refuses anything else",
          "[emu][faults]") {
    auto f = emu::parse_faults("drop=0.01,dup=0.005,crc=0.001,unplug_ms=50");
    REQUIRE(f);
    CHECK(f->data_drop == 0.01);
    CHECK(f->ctl_drop == 0.01);
    CHECK(f->data_dup == 0.005);
    CHECK(f->data_corrupt == 0.001);
    CHECK(f->ctl_corrupt == 0.001);
    CHECK(f->unplug == 50ms);
    CHECK(f->unplug_after == 200ms);
    CHECK(f->seed == 1);
    CHECK(emu::parse_faults("seed=9,unplug_after_ms=5")->seed == 9);
    CHECK(emu::parse_faults("")->any() == false);
    CHECK(emu::parse_faults("drop=1.5").error() == std::errc::invalid_argument);
    CHECK(emu::parse_faults("drop=-0.1").error() == std::errc::invalid_argument);
    CHECK(emu::parse_faults("drop").error() == std::errc::invalid_argument);
    CHECK(emu::parse_faults("lose=0.1").error() == std::errc::invalid_argument);
    CHECK(emu::parse_faults("drop=0.1x").error() == std::errc::invalid_argument);
    CHECK(emu::parse_faults("unplug_ms=abc").error() == std::errc::invalid_argument);

    ::setenv("TBV_EMU_FAULTS", "crc=0.5", 1);
    auto env = emu::faults_from_env();
    REQUIRE(env);
    REQUIRE(*env);
    CHECK((*env)->data_corrupt == 0.5);
    ::setenv("TBV_EMU_FAULTS", "crc=2", 1);
    CHECK_FALSE(emu::faults_from_env());
    ::unsetenv("TBV_EMU_FAULTS");
    CHECK_FALSE(*emu::faults_from_env());
}

TEST_CASE("a cable pulled for 30 ms by TBV_EMU_FAULTS: link down, then rails back",
          "[emu][cm][faults]") {
    ::setenv("TBV_EMU_FAULTS", "unplug_ms=30,unplug_after_ms=20", 1);
    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
    Stack a(ha, fast_opts());
    Stack b(hb, fast_opts());
    auto cable = emu::EmuHost::connect(ha, 0, hb, 0);
    ::unsetenv("TBV_EMU_FAULTS");
    bool was_up = false;
    bool went_down = false;
    REQUIRE(run_until(a, b, [&] {
        went_down = went_down || (was_up && a.port().state == LinkState::down);
        was_up = was_up || both_up(a, b);
        return went_down && both_up(a, b);
    }));
    CHECK(cable->stats().unplugged_drops + ha.router().counters().link_downs > 0);
    CHECK(a.port().rails.size() == 2);
    CHECK(frame_flows(a, b, ha, hb, 0, 0, 3));
}

TEST_CASE("a shared-memory cable pulled by TBV_EMU_FAULTS: link down, then rails back",
          "[emu][cm][shm][fork][faults]") {
    const std::string name = "cm-pull-" + std::to_string(::getpid());
    // Read by both processes when they open their end of the cable.
    ::setenv("TBV_EMU_FAULTS", "unplug_ms=40,unplug_after_ms=50", 1);
    std::cout.flush();
    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
        emu::EmuHost hb(host_cfg("b", 0x2222'0000'0000'0001));
        if (!hb.open_shm_cable(0, name)) {
            ::_exit(3);
        }
        auto nhi = nhi::Nhi::open(hb.nhi());
        auto ring = nhi ? nhi::ControlRing::create(**nhi)
                        : Result<std::unique_ptr<nhi::ControlRing>>(fail(Errc::malformed));
        auto ch = ring ? usb4::ControlChannel::create(**ring)
                       : Result<std::unique_ptr<usb4::ControlChannel>>(fail(Errc::malformed));
        if (!ch) {
            ::_exit(4);
        }
        auto cm = usb4::ConnectionManager::create(**nhi, **ch, fast_opts());
        if (!cm) {
            ::_exit(5);
        }
        for (;;) {
            (*cm)->poll();
            std::this_thread::sleep_for(50us);
        }
    }
    REQUIRE(child > 0);
    struct Reaper {
        pid_t pid;
        ~Reaper() {
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } reaper{child};

    emu::EmuHost ha(host_cfg("a", 0x1111'0000'0000'0001));
    std::vector<std::string> trace;
    Stack a(ha, fast_opts(), &trace);
    const auto opened = ha.open_shm_cable(0, name);
    ::unsetenv("TBV_EMU_FAULTS");
    REQUIRE(opened);
    bool was_up = false;
    bool went_down = false;
    const auto end = std::chrono::steady_clock::now() + 20s;
    bool done = false;
    while (!done && std::chrono::steady_clock::now() < end) {
        a.cm->poll();
        const bool up = a.port().state == LinkState::up;
        went_down = went_down || (was_up && a.port().state == LinkState::down);
        was_up = was_up || up;
        done = went_down && up && a.port().rails.size() == 2;
        std::this_thread::sleep_for(50us);
    }
    if (!done) {
        dump(trace);
    }
    CHECK(was_up);
    CHECK(went_down);
    REQUIRE(done);
    CHECK(ha.shm_cable(0)->stats().unplugs == 1);
    CHECK(ha.router().counters().link_downs > 0);
}
