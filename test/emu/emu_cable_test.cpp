// SPDX-License-Identifier: Apache-2.0
// Cables between emulated hosts: the shared-memory cable within one process (deterministic, manual
// clock) and between two processes (fork: the child is host B, answering XDomain requests and
// acking events through its own ring driver). Killing the child must show up at the parent as a
// link-down: unplug event and lane state 7. The scheduled unplug of TBV_EMU_FAULTS on a
// shared-memory cable: both ends see the link drop and come back, frames on the way are lost. Every
// wait is a bounded loop with a generous deadline.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "router_fixture.hpp"

using namespace tbv;
using namespace tbv::router_test;
using emu::EmuHost;
using emu::HostConfig;
using emu::ManualClock;

namespace {

constexpr unsigned kLane0 = 2;

std::string unique_name(const char* what) {
    return std::string(what) + "-" + std::to_string(::getpid());
}

std::string shm_path(const std::string& name) {
    return "/dev/shm/tbv-cable-" + name;
}

}  // namespace

TEST_CASE("shared-memory cable in one process: link, XDomain error, forwarding, close",
          "[emu][cable][shm]") {
    ManualClock clk;
    HostConfig ca;
    ca.name = "a";
    ca.uid = 0xa;
    ca.clock = &clk;
    HostConfig cb = ca;
    cb.name = "b";
    cb.uid = 0xb;
    const std::string name = unique_name("inproc");
    auto a = std::make_unique<EmuHost>(ca);
    auto b = std::make_unique<EmuHost>(cb);
    Cm cma(a->nhi()), cmb(b->nhi());
    cma.enable_lanes(kLane0, 2);
    cmb.enable_lanes(kLane0, 2);
    REQUIRE(a->open_shm_cable(0, name));
    REQUIRE(b->open_shm_cable(0, name));
    CHECK(a->shm_cable(0)->side() == 0);
    CHECK(b->shm_cable(0)->side() == 1);
    CHECK(std::filesystem::exists(shm_path(name)));
    // A third opener finds both ends taken by a live process.
    CHECK_FALSE(emu::ShmCable::open(name));

    // First polls see the peer; training, then CL0 and plug events on both sides.
    a->router().poll();
    b->router().poll();
    a->router().poll();
    CHECK(a->router().lane_state(kLane0) == LaneState::training);
    clk.advance(10ms);
    for (int i = 0; i < 3; ++i) {
        a->router().poll();
        b->router().poll();
    }
    CHECK(a->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(b->router().lane_state(kLane0) == LaneState::cl0);
    for (Cm* cm : {&cma, &cmb}) {
        for (int i = 0; i < 2; ++i) {
            const auto ev = cm->expect(Pdf::event);
            cm->ack(EVT_PORT::get(ev.dwords[2]), false);
        }
    }

    // The packet waits in shared memory until B polls (Cm::recv polls both rings 0 here).
    cma.read_req(2, Space::router, 0, 0, 1);
    CHECK(cmb.quiet());  // B's poll forwards the error back into the queue
    CHECK(cma.expect_error() == static_cast<unsigned>(ErrorCode::loop));
    cma.send(Pdf::xdomain_req, {0, 2, XD_LENGTH::make(1), 0xfeed});
    const auto got = cmb.expect(Pdf::xdomain_req);
    CHECK(rx_route(got.dwords[0], got.dwords[1]) == (kRouteFromPeer | 2));
    CHECK(got.dwords[3] == 0xfeed);

    // Data both ways over the shared memory.
    Rail ra(*cma.nhi, 1), rb(*cmb.nhi, 1);
    cma.write(Space::path, 1, 2, path_entry(kLane0, 8, 0));
    cma.write(Space::path, kLane0, 18, path_entry(1, 1, 14));
    cmb.write(Space::path, 1, 2, path_entry(kLane0, 9, 0));
    cmb.write(Space::path, kLane0, 16, path_entry(1, 1, 14));
    ra.send(4096, 1);
    rb.send(77, 2);
    std::optional<bool> ga, gb;
    for (int i = 0; i < 100 && !(ga && gb); ++i) {
        if (!gb) {
            gb = rb.recv(4096, 1);
        }
        if (!ga) {
            ga = ra.recv(77, 2);
        }
    }
    CHECK(ga == std::optional<bool>(true));
    CHECK(gb == std::optional<bool>(true));

    // B closes its end: A sees the peer gone at its next liveness check.
    b->close_shm_cable(0);
    clk.advance(10ms);
    a->router().poll();
    CHECK(a->router().lane_state(kLane0) == LaneState::unplugged);
    CHECK(EVT_UNPLUG::get(cma.expect(Pdf::event).dwords[2]) == 1);
    CHECK(std::filesystem::exists(shm_path(name)));
    // B comes back: a replug.
    REQUIRE(b->open_shm_cable(0, name));
    for (int i = 0; i < 4; ++i) {
        clk.advance(10ms);
        a->router().poll();
        b->router().poll();
    }
    CHECK(a->router().lane_state(kLane0) == LaneState::cl0);
    a->close_shm_cable(0);
    b->close_shm_cable(0);
    CHECK_FALSE(std::filesystem::exists(shm_path(name)));  // the last end out removes it
}

namespace {

/// Two hosts in this process on one shared-memory cable, driven by one manual clock, each with
/// its test CM, brought to CL0 with the plug events acked and a DMA path each way (A ring 1 →
/// HopID 8 → B ring 1, B ring 1 → HopID 9 → A ring 1).
struct ShmPair {
    explicit ShmPair(const char* what) : name(unique_name(what)) {
        HostConfig ca;
        ca.name = "a";
        ca.uid = 0xa;
        ca.clock = &clk;
        HostConfig cb = ca;
        cb.name = "b";
        cb.uid = 0xb;
        a = std::make_unique<EmuHost>(ca);
        b = std::make_unique<EmuHost>(cb);
        cma = std::make_unique<Cm>(a->nhi());
        cmb = std::make_unique<Cm>(b->nhi());
        cma->enable_lanes(kLane0, 2);
        cmb->enable_lanes(kLane0, 2);
        REQUIRE(a->open_shm_cable(0, name));
        REQUIRE(b->open_shm_cable(0, name));
        a->router().poll();
        b->router().poll();
        a->router().poll();
        clk.advance(10ms);
        poll_both(3);
        REQUIRE(a->router().lane_state(kLane0) == LaneState::cl0);
        REQUIRE(b->router().lane_state(kLane0) == LaneState::cl0);
        ack_events(*cma, false);
        ack_events(*cmb, false);
        ra = std::make_unique<Rail>(*cma->nhi, 1);
        rb = std::make_unique<Rail>(*cmb->nhi, 1);
        cma->write(Space::path, 1, 2, path_entry(kLane0, 8, 0));
        cma->write(Space::path, kLane0, 18, path_entry(1, 1, 14));
        cmb->write(Space::path, 1, 2, path_entry(kLane0, 9, 0));
        cmb->write(Space::path, kLane0, 16, path_entry(1, 1, 14));
    }
    ~ShmPair() {
        ra.reset();
        rb.reset();
        a->close_shm_cable(0);
        b->close_shm_cable(0);
    }
    void poll_both(int rounds) {
        for (int i = 0; i < rounds; ++i) {
            a->router().poll();
            b->router().poll();
        }
    }
    /// The two lane adapters' hot-plug events (plug or unplug), acked.
    static void ack_events(Cm& cm, bool unplug) {
        for (int i = 0; i < 2; ++i) {
            const auto ev = cm.expect(Pdf::event);
            CHECK(EVT_UNPLUG::get(ev.dwords[2]) == (unplug ? 1u : 0u));
            cm.ack(EVT_PORT::get(ev.dwords[2]), unplug);
        }
    }
    /// Lets a frame from `from` reach `to` if it can (a bounded number of polls).
    static std::optional<bool> deliver(Rail& to, std::size_t len, unsigned seed) {
        std::optional<bool> got;
        for (int i = 0; i < 100 && !got; ++i) {
            got = to.recv(len, seed);
        }
        return got;
    }

    ManualClock clk;
    const std::string name;
    std::unique_ptr<EmuHost> a, b;
    std::unique_ptr<Cm> cma, cmb;
    std::unique_ptr<Rail> ra, rb;
};

emu::FaultConfig unplug_faults(std::chrono::milliseconds after, std::chrono::milliseconds len) {
    emu::FaultConfig f;
    f.unplug_after = after;
    f.unplug = len;
    return f;
}

}  // namespace

TEST_CASE("shared-memory cable: the scheduled unplug pulls both ends once, then they replug",
          "[emu][cable][shm][faults]") {
    ShmPair p("pull");
    emu::ShmCable& ea = *p.a->shm_cable(0);
    emu::ShmCable& eb = *p.b->shm_cable(0);
    // Both processes would read the same TBV_EMU_FAULTS; A polls first, so A pulls. Each end
    // first saw its peer at t = 0: the cable goes at t = 20 ms for 30 ms.
    ea.set_faults(unplug_faults(20ms, 30ms));
    eb.set_faults(unplug_faults(20ms, 30ms));
    p.ra->send(300, 1);
    CHECK(ShmPair::deliver(*p.rb, 300, 1) == std::optional<bool>(true));

    // A frame on its way to B when the cable goes: B has not polled yet.
    p.ra->send(301, 2);
    p.clk.advance(10ms);  // t = 20 ms
    p.a->router().poll();
    CHECK(ea.pulled());
    CHECK(eb.pulled());  // a state of the cable, not of one end
    CHECK(p.a->router().lane_state(kLane0) == LaneState::unplugged);
    ShmPair::ack_events(*p.cma, true);
    // B's router still thinks the link is up: what it sends now goes nowhere.
    std::array<std::byte, 64> bytes{};
    emu::WirePacket pkt;
    pkt.kind = emu::WireKind::data;
    pkt.hop = 9;
    pkt.sof_pdf = 1;
    pkt.eof_pdf = 2;
    pkt.data = bytes;
    const auto sent = eb.stats().sent;
    eb.send(pkt);
    CHECK(eb.stats().unplugged_drops == 1);
    CHECK(eb.stats().sent == sent);
    // B's next poll sees the pull: its link drops too.
    p.b->router().poll();
    CHECK(p.b->router().lane_state(kLane0) == LaneState::unplugged);
    ShmPair::ack_events(*p.cmb, true);
    CHECK_FALSE(ea.peer_present());
    CHECK_FALSE(eb.peer_present());

    // Only the puller ends the pull, on its own clock: 29 ms is not enough, 30 ms is.
    p.clk.advance(29ms);
    p.poll_both(2);
    CHECK(ea.pulled());
    p.clk.advance(1ms);  // t = 50 ms
    p.a->router().poll();
    CHECK_FALSE(ea.pulled());
    p.poll_both(2);
    CHECK(p.a->router().lane_state(kLane0) == LaneState::training);
    CHECK(p.b->router().lane_state(kLane0) == LaneState::training);
    p.clk.advance(10ms);
    p.poll_both(3);
    CHECK(p.a->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(p.b->router().lane_state(kLane0) == LaneState::cl0);
    ShmPair::ack_events(*p.cma, false);
    ShmPair::ack_events(*p.cmb, false);

    // The frame that was on the way when the cable went never arrives; new frames do.
    CHECK(eb.stats().unplugged_drops == 2);
    CHECK(p.rb->count() == 0);
    p.ra->send(302, 3);
    CHECK(ShmPair::deliver(*p.rb, 302, 3) == std::optional<bool>(true));
    p.rb->send(303, 4);
    CHECK(ShmPair::deliver(*p.ra, 303, 4) == std::optional<bool>(true));

    // Once per cable: B's own schedule was due too, but the cable was pulled once already.
    p.clk.advance(1000ms);
    p.poll_both(3);
    CHECK_FALSE(ea.pulled());
    CHECK(p.a->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(ea.stats().unplugs == 1);
    CHECK(eb.stats().unplugs == 1);
    CHECK(p.cma->quiet());
    CHECK(p.cmb->quiet());
}

TEST_CASE("shared-memory cable: an end that slept through the whole pull still sees it",
          "[emu][cable][shm][faults]") {
    ShmPair p("sleep");
    emu::ShmCable& ea = *p.a->shm_cable(0);
    emu::ShmCable& eb = *p.b->shm_cable(0);
    ea.set_faults(unplug_faults(20ms, 30ms));  // only A's process asked for it
    p.ra->send(500, 1);                        // in flight across the whole pull
    p.clk.advance(10ms);                       // t = 20 ms: A pulls
    p.a->router().poll();
    CHECK(ea.pulled());
    ShmPair::ack_events(*p.cma, true);
    p.clk.advance(30ms);  // t = 50 ms: A plugs back in, B has not polled since t = 10 ms
    p.a->router().poll();
    CHECK_FALSE(ea.pulled());
    CHECK(eb.stats().unplugs == 0);

    // B's first poll since: unplug events, then training and plug events like any replug.
    p.b->router().poll();
    CHECK(eb.stats().unplugs == 1);
    CHECK(p.b->router().lane_state(kLane0) == LaneState::training);
    ShmPair::ack_events(*p.cmb, true);
    p.poll_both(2);
    p.clk.advance(10ms);
    p.poll_both(3);
    CHECK(p.a->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(p.b->router().lane_state(kLane0) == LaneState::cl0);
    ShmPair::ack_events(*p.cma, false);
    ShmPair::ack_events(*p.cmb, false);
    CHECK(p.rb->count() == 0);  // the frame from before the pull is lost
    CHECK(eb.stats().unplugged_drops == 1);
    p.ra->send(501, 2);
    CHECK(ShmPair::deliver(*p.rb, 501, 2) == std::optional<bool>(true));
}

TEST_CASE("shared-memory cable: a doorbell's batch crosses whole; pulled, it is dropped whole",
          "[emu][cable][shm][batch]") {
    ShmPair p("batch");
    p.ra.reset();
    p.rb.reset();
    p.ra = std::make_unique<Rail>(*p.cma->nhi, 1, 64);
    p.rb = std::make_unique<Rail>(*p.cmb->nhi, 1, 64);
    emu::ShmCable& ea = *p.a->shm_cable(0);
    emu::ShmCable& eb = *p.b->shm_cable(0);
    // 40 frames in one doorbell, in Rail::send's byte pattern (seed 100 + i).
    std::vector<nhi::TxFrame> fs;
    for (unsigned i = 0; i < 40; ++i) {
        std::byte* d = p.ra->tx_pool.data(i);
        for (std::size_t k = 0; k < 1000; ++k) {
            d[k] = static_cast<std::byte>(((100 + i) * 31 + k * 7) & 0xff);
        }
        fs.push_back({p.ra->tx_pool.iova(i), 1000, 1, 2, false, i});
    }
    const auto sent = ea.stats().sent;
    REQUIRE(p.ra->tx->post(fs).posted == 40);
    CHECK(ea.stats().sent == sent + 40);
    const auto received = eb.stats().received;
    for (unsigned i = 0; i < 40; ++i) {
        CHECK(p.rb->recv(1000, 100 + i) == std::optional<bool>(true));
    }
    CHECK(eb.stats().received == received + 40);
    CHECK(p.b->router().counters().data_rx == 40);

    // Pulled: a batch handed to the cable is lost as a whole and counted.
    ea.set_faults(unplug_faults(0ms, 50ms));
    p.a->router().poll();
    REQUIRE(ea.pulled());
    std::array<std::byte, 64> bytes{};
    std::vector<emu::WirePacket> pkts(5);
    for (auto& pk : pkts) {
        pk.kind = emu::WireKind::data;
        pk.hop = 8;
        pk.sof_pdf = 1;
        pk.eof_pdf = 2;
        pk.data = bytes;
    }
    ea.send_batch(pkts);
    CHECK(ea.stats().unplugged_drops == 5);
    CHECK(ea.stats().sent == sent + 40);
}

TEST_CASE("shared-memory cable: closing while pulled plugs the cable back in",
          "[emu][cable][shm][faults]") {
    ShmPair p("close");
    p.a->shm_cable(0)->set_faults(unplug_faults(0ms, 10'000ms));
    p.a->router().poll();
    REQUIRE(p.b->shm_cable(0)->pulled());
    p.a->close_shm_cable(0);
    CHECK_FALSE(p.b->shm_cable(0)->pulled());
}

TEST_CASE("shared-memory cable: frames beyond the peer's queue wait in the sender, none is lost",
          "[emu][cable][shm]") {
    // Two rails' worth of credits (2 x 255) is more than the queue's 256 slots: a receiver that
    // does not poll for a while must slow the sender down, not lose what it sent (the rail
    // credits promised those frames an RX buffer). Before flow control, 344 of these 600 frames
    // were counted as full_drops and never arrived.
    ShmPair p("flow");
    p.ra.reset();
    p.rb.reset();
    constexpr unsigned kFrames = 600;
    p.ra = std::make_unique<Rail>(*p.cma->nhi, 1, 1024);
    p.rb = std::make_unique<Rail>(*p.cmb->nhi, 1, 1024);
    emu::ShmCable& ea = *p.a->shm_cable(0);
    emu::ShmCable& eb = *p.b->shm_cable(0);
    for (unsigned i = 0; i < kFrames; ++i) {
        p.ra->send(512, 1000 + i);  // B does not poll meanwhile
    }
    CHECK(ea.stats().full_drops == 0);
    CHECK(ea.stats().held > 0);
    unsigned got = 0;
    for (int round = 0; round < 10'000 && got < kFrames; ++round) {
        p.a->router().poll();  // the waiting frames move into the queue as slots free up
        while (got < kFrames) {
            const auto r = p.rb->recv(512, 1000 + got);  // in order, contents intact
            if (!r) {
                break;
            }
            CHECK(*r);
            ++got;
        }
    }
    CHECK(got == kFrames);
    CHECK(ea.stats().full_drops == 0);
    CHECK(ea.stats().sent == eb.stats().received);
}

namespace {

/// Host B in the child process: acks events, answers XDomain requests by echoing their payload
/// back as PDF 7. No Catch macros here: failures exit with a code the parent checks.
/// An XDomain request whose first payload dword is this gets, in its second, the number of
/// unplug events the child's router sent it.
constexpr std::uint32_t kUnplugQuery = 0x0d15c0de;

[[noreturn]] void child_host(const std::string& name, pid_t parent) {
    HostConfig cfg;
    cfg.name = "child";
    cfg.uid = 0xc;
    auto host = std::make_unique<EmuHost>(cfg);
    auto dev = nhi::Nhi::open(host->nhi());
    if (!dev) {
        ::_exit(3);
    }
    auto ctl = nhi::ControlRing::create(**dev);
    if (!ctl) {
        ::_exit(4);
    }
    auto& cr = **ctl;
    // Unlock lane 2 and enable hot plug: only LCK and DHP are writable in these dwords.
    const auto h = route_header(0);
    (void)cr.send(
        2, std::vector<std::uint32_t>{h[0], h[1], addr(Space::adapter, 2, ADP_CS_4, 2), 0, 0});
    if (!host->open_shm_cable(0, name)) {
        ::_exit(5);
    }
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    std::uint32_t unplugs = 0;
    while (std::chrono::steady_clock::now() < deadline && ::getppid() == parent) {
        while (auto p = cr.receive()) {
            if (p->pdf == static_cast<unsigned>(Pdf::event)) {
                unplugs += EVT_UNPLUG::get(p->dwords[2]);
                (void)cr.send(3,
                              std::vector<std::uint32_t>{
                                  h[0], h[1],
                                  ERR_CODE::make(7) | ERR_PORT::make(EVT_PORT::get(p->dwords[2])) |
                                      ERR_PG::make(EVT_UNPLUG::get(p->dwords[2]) ? 3 : 2)});
            } else if (p->pdf == static_cast<unsigned>(Pdf::xdomain_req)) {
                std::vector<std::uint32_t> r(p->dwords.begin(), p->dwords.begin() + p->dword_count);
                r[0] = 0;
                r[1] = p->dwords[1];  // our route back: the ingress adapter
                if (r.size() > 4 && r[3] == kUnplugQuery) {
                    r[4] = unplugs;
                }
                (void)cr.send(7, r);
            }
        }
        std::this_thread::sleep_for(100us);
    }
    ::_exit(0);
}

/// Polls `cm` until a packet of type `pdf` arrives or the deadline passes.
std::optional<nhi::ControlPacket> wait_for(Cm& cm, Pdf pdf, std::chrono::seconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (auto p = cm.ctl->receive()) {
            if (p->pdf == static_cast<unsigned>(pdf)) {
                return p;
            }
            continue;
        }
        std::this_thread::sleep_for(100us);
    }
    return std::nullopt;
}

/// Polls `cm`, acking every hot-plug event, until the event (`adapter`, `unplug`) arrives.
bool wait_event(Cm& cm, unsigned adapter, bool unplug, std::chrono::seconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (auto p = cm.ctl->receive()) {
            if (p->pdf == static_cast<unsigned>(Pdf::event)) {
                const unsigned a = EVT_PORT::get(p->dwords[2]);
                const bool u = EVT_UNPLUG::get(p->dwords[2]) != 0;
                cm.ack(a, u);
                if (a == adapter && u == unplug) {
                    return true;
                }
            }
            continue;
        }
        std::this_thread::sleep_for(100us);
    }
    return false;
}

}  // namespace

TEST_CASE("shared-memory cable between two processes; a killed peer is a link-down",
          "[emu][cable][shm][fork]") {
    const std::string name = unique_name("fork");
    const pid_t parent = ::getpid();
    std::cout.flush();  // nothing buffered may be written twice
    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
        child_host(name, parent);  // before any assertion: the child reports nothing to Catch
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

    HostConfig cfg;
    cfg.name = "parent";
    cfg.uid = 0xa;
    EmuHost a(cfg);
    Cm cm(a.nhi());
    cm.enable_lanes(kLane0, 2);
    REQUIRE(a.open_shm_cable(0, name));

    auto ev = wait_for(cm, Pdf::event);
    REQUIRE(ev);
    CHECK(EVT_UNPLUG::get(ev->dwords[2]) == 0);
    cm.ack(EVT_PORT::get(ev->dwords[2]), false);
    CHECK(a.router().lane_state(kLane0) == LaneState::cl0);

    // A config read across: the child's router refuses it (XDomain detected).
    cm.read_req(2, Space::router, 0, 0, 1);
    auto err = wait_for(cm, Pdf::error);
    REQUIRE(err);
    CHECK(ERR_CODE::get(err->dwords[2]) == static_cast<unsigned>(ErrorCode::loop));

    // An XDomain round trip through the child's CM.
    const std::vector<std::uint32_t> req{0, 2, XD_LENGTH::make(2), 0x12345678, 0x9abcdef0};
    cm.send(Pdf::xdomain_req, req);
    auto resp = wait_for(cm, Pdf::xdomain_resp);
    REQUIRE(resp);
    CHECK(rx_route(resp->dwords[0], resp->dwords[1]) == (kRouteFromPeer | kLane0));
    CHECK(resp->dwords[3] == 0x12345678);
    CHECK(resp->dwords[4] == 0x9abcdef0);

    // Kill the peer: unplug events and lane state 7 within a bounded time.
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    reaper.pid = -1;
    bool unplugged = false;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!unplugged && std::chrono::steady_clock::now() < deadline) {
        if (auto p = cm.ctl->receive()) {
            unplugged = p->pdf == static_cast<unsigned>(Pdf::event) &&
                        EVT_PORT::get(p->dwords[2]) == kLane0 && EVT_UNPLUG::get(p->dwords[2]);
            continue;
        }
        std::this_thread::sleep_for(100us);
    }
    CHECK(unplugged);
    CHECK(a.router().lane_state(kLane0) == LaneState::unplugged);
    CHECK(a.shm_cable(0)->stats().peer_losses == 1);
    a.close_shm_cable(0);
    CHECK_FALSE(std::filesystem::exists(shm_path(name)));
}

TEST_CASE("shared-memory cable between two processes: TBV_EMU_FAULTS pulls it for both ends",
          "[emu][cable][shm][fork][faults]") {
    const std::string name = unique_name("forkpull");
    // Both processes read it when they open their end; whichever end's time is up first pulls.
    ::setenv("TBV_EMU_FAULTS", "unplug_ms=50,unplug_after_ms=100", 1);
    const pid_t parent = ::getpid();
    std::cout.flush();
    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
        child_host(name, parent);
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

    HostConfig cfg;
    cfg.name = "parent";
    cfg.uid = 0xa;
    EmuHost a(cfg);
    Cm cm(a.nhi());
    cm.enable_lanes(kLane0, 2);
    const auto opened = a.open_shm_cable(0, name);
    ::unsetenv("TBV_EMU_FAULTS");
    REQUIRE(opened);

    CHECK(wait_event(cm, kLane0, false));  // up
    CHECK(wait_event(cm, kLane0, true));   // pulled
    CHECK(wait_event(cm, kLane0, false));  // back
    CHECK(a.router().lane_state(kLane0) == LaneState::cl0);
    CHECK(a.shm_cable(0)->stats().unplugs == 1);

    // The child's router saw the cable go as well: ask its CM over the link that came back.
    cm.send(Pdf::xdomain_req, {0, 2, XD_LENGTH::make(2), kUnplugQuery, 0});
    auto resp = wait_for(cm, Pdf::xdomain_resp);
    REQUIRE(resp);
    CHECK(resp->dwords[3] == kUnplugQuery);
    CHECK(resp->dwords[4] >= 1);
    a.close_shm_cable(0);
}
