// SPDX-License-Identifier: Apache-2.0
// The emulator's optional link model (src/emu/link.*): TBV_EMU_LINK parsing, the per-ring TX DMA
// ceiling (RingPacer in the TX engine), the cable's serialization and latency (LinkPipe in the
// receiving router), and both together between two emulated hosts. Every time here is a
// ManualClock's: frames are held until their arrival time to the nanosecond, and no test depends
// on how fast this machine is.
#include <cstdlib>
#include <optional>
#include <vector>

#include "emu_fixture.hpp"
#include "router_fixture.hpp"

using namespace tbv;
using namespace tbv::router_test;
using emu::Clock;
using emu::EmuHost;
using emu::HostConfig;
using emu::LinkConfig;
using emu::LinkPipe;
using emu::ManualClock;
using emu::RingPacer;
using emu::WireKind;
using emu::WirePacket;
using emu_test::cfg_with;
using emu_test::desc_at;
using emu_test::make_region;
using emu_test::post_desc;
using emu_test::start_tx;
using emu_test::tx_ctl;
using emu_test::tx_doorbell;
using emu_test::tx_hw_index;

namespace {

constexpr unsigned kLane0 = 2;
constexpr unsigned kNhiAdp = 1;
/// One 4 KiB descriptor at a 12 Gb/s ring ceiling: 4096 × 8 / 12 ns, in ps.
constexpr emu::Ps kCost12 = 2'730'667;

LinkConfig link(unsigned gen, std::chrono::nanoseconds latency, double ring_gbps = 0,
                unsigned lanes = 2) {
    LinkConfig l;
    l.gen = gen;
    l.lanes = lanes;
    l.latency = latency;
    l.ring_gbps = ring_gbps;
    return l;
}

WirePacket data_packet(std::span<const std::byte> bytes,
                       Clock::Duration::rep sent_at = emu::kNoStamp) {
    WirePacket p;
    p.kind = WireKind::data;
    p.hop = 8;
    p.sof_pdf = 1;
    p.eof_pdf = 2;
    p.data = bytes;
    p.sent_at = sent_at;
    return p;
}

/// What a LinkPipe hands on by `now`: the first byte of each frame, in order.
std::vector<std::byte> release(LinkPipe& pipe, std::chrono::nanoseconds now) {
    std::vector<std::byte> got;
    pipe.release(now, [&](std::span<const WirePacket> ps) {
        for (const WirePacket& p : ps) {
            got.push_back(p.data.front());
        }
    });
    return got;
}

/// Records what a TX engine hands on: ring, length and send stamp of each frame.
class Recorder final : public emu::Fabric {
public:
    struct Sent {
        unsigned ring;
        std::size_t len;
        Clock::Duration::rep sent_at;
    };
    void transmit(emu::EmuNhi&, unsigned ring, const emu::FrameView& f) noexcept override {
        sent.push_back({ring, f.data.size(), f.sent_at});
    }
    unsigned on(unsigned ring) const {
        unsigned n = 0;
        for (const Sent& s : sent) {
            n += s.ring == ring ? 1 : 0;
        }
        return n;
    }
    std::vector<Sent> sent;
};

/// Two hosts on manual time with a given link model (applied by HostConfig::link).
struct LinkedHosts {
    explicit LinkedHosts(const LinkConfig& l, unsigned ports = 1) {
        ::unsetenv("TBV_EMU_LINK");  // this test decides the model, not the environment
        for (auto [host, name, uid] : {std::tuple{&a, "a", 0x1111'0000'0000'0001ull},
                                       std::tuple{&b, "b", 0x2222'0000'0000'0001ull}}) {
            HostConfig c;
            c.name = name;
            c.uid = uid;
            c.clock = &clk;
            c.router.usb4_ports = ports;
            c.router.training_delay = 10ms;
            c.link = l;
            *host = std::make_unique<EmuHost>(c);
        }
        cma = std::make_unique<Cm>(a->nhi());
        cmb = std::make_unique<Cm>(b->nhi());
        cma->enable_lanes(kLane0, 2 * ports);
        cmb->enable_lanes(kLane0, 2 * ports);
        for (unsigned p = 0; p < ports; ++p) {
            cables.push_back(EmuHost::connect(*a, p, *b, p));
        }
        clk.advance(10ms);
        a->router().poll();
        b->router().poll();
        for (Cm* cm : {cma.get(), cmb.get()}) {
            for (unsigned i = 0; i < 2 * ports; ++i) {
                const auto ev = cm->expect(Pdf::event);
                cm->ack(EVT_PORT::get(ev.dwords[2]), false);
            }
        }
    }
    ~LinkedHosts() {
        cables.clear();
        cma.reset();
        cmb.reset();
    }
    /// A's TX ring `ring` → lane adapter `lane` HopID `hop` → B's RX ring `ring`.
    void path(unsigned ring, unsigned lane, unsigned hop) {
        cma->write(Space::path, kNhiAdp, 2 * ring, path_entry(lane, hop, 0));
        cmb->write(Space::path, lane, 2 * hop, path_entry(kNhiAdp, ring, 14));
    }

    ManualClock clk;
    std::unique_ptr<EmuHost> a, b;
    std::unique_ptr<Cm> cma, cmb;
    std::vector<std::unique_ptr<emu::Cable>> cables;
};

/// Posts `n` frames of `len` bytes on `rail` with one doorbell (one post call).
void post_many(Rail& rail, unsigned n, std::uint32_t len) {
    std::vector<nhi::TxFrame> fs;
    for (unsigned i = 0; i < n; ++i) {
        const unsigned slot = rail.next_++ % rail.tx_pool.count();
        rail.tx_pool.data(slot)[0] = static_cast<std::byte>(i);
        fs.push_back({rail.tx_pool.iova(slot), len, 1, 2, false, slot});
    }
    REQUIRE(rail.tx->post(fs).posted == n);
}

/// Reaps a rail's TX ring (which polls its NHI: paced descriptors go out).
void reap(Rail& rail) {
    std::array<std::uint64_t, 64> done{};
    while (rail.tx->reap(done) > 0) {
    }
}

}  // namespace

// ---- configuration ------------------------------------------------------------------------------

TEST_CASE("TBV_EMU_LINK: the documented syntax, its defaults and clear errors", "[emu][link]") {
    const auto p = emu::parse_link("gen=3,ring_gbps=12,latency_ns=1000");
    REQUIRE(p);
    CHECK(p.config.gen == 3);
    CHECK(p.config.lanes == 2);  // a bonded link unless told otherwise
    CHECK(p.config.cable_gbps() == 40.0);
    CHECK(p.config.latency == 1000ns);
    CHECK(p.config.ring_gbps == 12.0);
    CHECK_FALSE(p.config.ring_desc);
    CHECK(p.config.cable_on());
    CHECK(p.config.ring_on());
    CHECK(emu::describe(p.config) ==
          "gen=3 lanes=2 (40 Gb/s per direction) latency_ns=1000 ring_gbps=12 ring_desc_ns=2731 "
          "(all per descriptor)");

    const auto q = emu::parse_link("gen=2,lanes=1,ring_gbps=12,ring_desc_ns=1000");
    REQUIRE(q);
    CHECK(q.config.cable_gbps() == 10.0);
    CHECK(q.config.ring_desc == std::chrono::nanoseconds(1000));
    CHECK(LinkConfig::lane_gbps(4) == 40.0);

    // Each part alone; "off" and "" are no model at all.
    CHECK(emu::parse_link("latency_ns=500").config.cable_on());
    CHECK_FALSE(emu::parse_link("latency_ns=500").config.ring_on());
    CHECK_FALSE(emu::parse_link("ring_gbps=12").config.cable_on());
    CHECK_FALSE(emu::parse_link("off").config.any());
    CHECK_FALSE(emu::parse_link("").config.any());
    CHECK(emu::describe(LinkConfig{}) == "off");

    // Errors name the item and say what is wrong; nothing half-parsed comes back.
    for (const char* bad :
         {"gen=5", "gen=1", "gen=x", "lanes=3", "latency_ns=-1", "ring_gbps=fast", "ring_gbps=-2",
          "speed=3", "gen", "ring_desc_ns=100", "ring_gbps=12,ring_desc_ns=3000"}) {
        INFO(bad);
        const auto r = emu::parse_link(bad);
        CHECK_FALSE(r);
        CHECK_FALSE(r.config.any());
        CHECK(r.error.find("TBV_EMU_LINK item") == 0);
    }
    CHECK(emu::parse_link("gen=5,ring_gbps=12").error.find("'gen=5'") != std::string::npos);
    CHECK(emu::parse_link("speed=3").error.find("unknown key") != std::string::npos);

    ::setenv("TBV_EMU_LINK", "gen=4,lanes=1", 1);
    auto env = emu::link_from_env();
    REQUIRE(env);
    REQUIRE(*env);
    CHECK(env->config.cable_gbps() == 40.0);
    ::setenv("TBV_EMU_LINK", "gen=9", 1);
    env = emu::link_from_env();
    REQUIRE(env);
    CHECK_FALSE(*env);
    ::setenv("TBV_EMU_LINK", "off", 1);
    CHECK_FALSE(emu::link_from_env());
    ::unsetenv("TBV_EMU_LINK");
    CHECK_FALSE(emu::link_from_env());
}

// ---- the ring ceiling ---------------------------------------------------------------------------

TEST_CASE("RingPacer: a rate, not a delay; the fixed and per-byte parts of a descriptor",
          "[emu][link]") {
    RingPacer off;
    CHECK_FALSE(off.on());

    RingPacer p(link(0, 0ns, 12));
    REQUIRE(p.on());
    CHECK(p.cost(4096) == kCost12);
    CHECK(p.cost(64) == kCost12);  // descriptor-rate bound by default
    // Idle: the first descriptor starts at once, the next one a cost later.
    CHECK(p.start(5'000, 5'000, 4096) == std::optional<emu::Ps>(5'000));
    CHECK_FALSE(p.start(5'000, 5'000 + kCost12 - 1, 4096));
    CHECK(p.start(5'000, 5'000 + kCost12, 4096) == std::optional<emu::Ps>(5'000 + kCost12));
    // A descriptor posted after the engine went idle starts when it was posted.
    CHECK(p.start(100'000'000, 100'000'000, 4096) == std::optional<emu::Ps>(100'000'000));

    LinkConfig split = link(0, 0ns, 12);
    split.ring_desc = std::chrono::nanoseconds(1000);
    RingPacer q(split);
    CHECK(q.cost(4096) == kCost12);                                   // still 12 Gb/s at 4 KiB
    CHECK(q.cost(0) == 1'000'000);                                    // the fixed part
    CHECK(q.cost(64) == 1'000'000 + (64 * 1'730'667 + 2048) / 4096);  // plus 64 bytes' share
}

TEST_CASE(
    "TX engine: the per-ring ceiling leaves descriptors pending until a poll; a backlog "
    "runs back to back; two rings send twice as much",
    "[emu][link][dma]") {
    ManualClock clk;
    clk.advance(1ms);  // t0: nothing special about time 0
    const std::int64_t t0 = clk.now().count();
    emu::NhiConfig c = cfg_with(3);
    c.link = link(0, 0ns, 12);
    c.clock = &clk;
    emu::EmuNhi nhi(c);
    Recorder fab;
    nhi.attach(&fab);
    REQUIRE(nhi.set_bus_master(true));
    auto descs1 = make_region(nhi, 4096, hw::DmaAccess::read_write);
    auto descs2 = make_region(nhi, 4096, hw::DmaAccess::read_write);
    auto bufs = make_region(nhi, 8 * 4096, hw::DmaAccess::read);
    const auto post = [&](hw::DmaRegion& descs, unsigned from, unsigned n) {
        for (unsigned i = from; i < from + n; ++i) {
            post_desc(desc_at(descs, i), bufs.iova_at((i % 8) * 4096), tx_ctl(4096, 1, 2));
        }
    };
    start_tx(nhi, 1, descs1.iova(), 16);

    SECTION("one ring") {
        post(descs1, 0, 8);
        tx_doorbell(nhi, 1, 8);
        // The doorbell starts one descriptor: the engine is busy with it for 2730.667 ns.
        REQUIRE(fab.sent.size() == 1);
        CHECK(fab.sent[0].sent_at == t0);
        CHECK(tx_hw_index(nhi, 1) == 1);
        CHECK(emu_test::load_ctl(desc_at(descs1, 1)) == tx_ctl(4096, 1, 2));  // not DONE
        CHECK(nhi.counters().tx_paced_stops == 1);
        nhi.poll();  // nothing due: returns without counting another stop
        CHECK(fab.sent.size() == 1);
        CHECK(nhi.counters().tx_paced_stops == 1);
        clk.advance(2730ns);
        nhi.poll();
        CHECK(fab.sent.size() == 1);
        clk.advance(1ns);
        nhi.poll();
        REQUIRE(fab.sent.size() == 2);
        CHECK(fab.sent[1].sent_at == t0 + kCost12 / 1000);
        // A poll that comes late takes up the whole backlog, each frame stamped with the time
        // the engine got to it: the ring kept its rate while nobody polled.
        clk.advance(100us);
        nhi.poll();
        REQUIRE(fab.sent.size() == 8);
        for (unsigned k = 0; k < 8; ++k) {
            CHECK(fab.sent[k].sent_at == t0 + (static_cast<std::int64_t>(k) * kCost12) / 1000);
        }
        CHECK(tx_hw_index(nhi, 1) == 8);
        CHECK(nhi.counters().tx_frames == 8);
        // Idle since: a descriptor posted now starts now, not back when the engine went idle.
        post(descs1, 8, 1);
        tx_doorbell(nhi, 1, 9);
        REQUIRE(fab.sent.size() == 9);
        CHECK(fab.sent[8].sent_at == clk.now().count());
    }
    SECTION("one ring against two, 10 µs") {
        start_tx(nhi, 2, descs2.iova(), 16);
        post(descs1, 0, 8);
        post(descs2, 0, 8);
        const auto ten_us = [&] {
            for (int i = 0; i < 100; ++i) {
                clk.advance(100ns);
                nhi.poll();
            }
        };
        // Starts at 0, 2730.7, 5461.3, 8192 ns: 4 frames per ring by 10 µs after the doorbell.
        tx_doorbell(nhi, 1, 8);
        ten_us();
        CHECK(fab.on(1) == 4);
        // Ring 2 joins: both rings at their ceiling at once, twice the frames.
        const unsigned before = fab.on(1);
        tx_doorbell(nhi, 2, 8);
        ten_us();
        CHECK(fab.on(1) - before == 4);  // ring 1's backlog was not slowed by ring 2
        CHECK(fab.on(2) == 4);
    }
    SECTION("a stopped ring sends nothing of its backlog") {
        post(descs1, 0, 4);
        tx_doorbell(nhi, 1, 4);
        REQUIRE(fab.sent.size() == 1);
        emu_test::stop_ring(nhi, true, 1);
        clk.advance(100us);
        nhi.poll();
        CHECK(fab.sent.size() == 1);
    }
    nhi.attach(nullptr);
}

// ---- the cable ----------------------------------------------------------------------------------

TEST_CASE("LinkPipe: serialized at lanes × rate, arrival at wire end + latency, in order",
          "[emu][link]") {
    std::vector<std::byte> big(4096, std::byte{1}), mid(1000, std::byte{2}),
        small(64, std::byte{3});

    SECTION("Gen3 x2 = 40 Gb/s (200 ps a byte), 1 µs") {
        LinkPipe pipe(link(3, 1000ns));
        const WirePacket ps[] = {data_packet(big), data_packet(mid), data_packet(small)};
        CHECK(pipe.admit(ps, 0ns) == 0);
        big[0] = std::byte{9};  // the pipe holds copies, not the sender's buffers
        CHECK(pipe.held() == 3);
        // 4096 B: 819.2 ns on the wire, +1000 ns = 1819.2; 1000 B 200 ns more; 64 B 12.8 more.
        CHECK(pipe.next_arrival() == std::optional<std::chrono::nanoseconds>(1820ns));
        CHECK_FALSE(pipe.due(1819ns));
        CHECK(release(pipe, 1819ns).empty());
        CHECK(pipe.due(1820ns));
        CHECK(release(pipe, 1820ns) == std::vector<std::byte>{std::byte{1}});
        CHECK(release(pipe, 2019ns).empty());
        CHECK(release(pipe, 2020ns) == std::vector<std::byte>{std::byte{2}});
        CHECK(release(pipe, 2032ns) == std::vector<std::byte>{std::byte{3}});
        CHECK(pipe.held() == 0);
        CHECK_FALSE(pipe.next_arrival());
        CHECK_FALSE(pipe.due(1h));
        // Idle again: a frame sent later starts when it is sent.
        const WirePacket one[] = {data_packet(small)};
        (void)pipe.admit(one, 10'000ns);
        CHECK(pipe.next_arrival() == std::optional<std::chrono::nanoseconds>(11'013ns));
    }
    SECTION("Gen2 x1 = 10 Gb/s: back to back, each 4 KiB frame 3276.8 ns after the last") {
        LinkPipe pipe(link(2, 0ns, 0, 1));
        for (int i = 0; i < 4; ++i) {
            big[0] = static_cast<std::byte>(i);
            const WirePacket one[] = {data_packet(big)};
            (void)pipe.admit(one, 0ns);
        }
        CHECK(release(pipe, 3276ns).empty());
        CHECK(release(pipe, 3277ns).size() == 1);
        CHECK(release(pipe, 9830ns).size() == 1);  // 6553.6 ≤ 9830 < 9830.4
        CHECK(release(pipe, 13'108ns) == (std::vector<std::byte>{std::byte{2}, std::byte{3}}));
    }
    SECTION("a stamped frame starts on the wire when it was sent, not when it got here") {
        LinkPipe pipe(link(3, 1000ns));
        const WirePacket one[] = {data_packet(big, 5'000)};
        (void)pipe.admit(one, 9'000ns);
        CHECK(pipe.next_arrival() == std::optional<std::chrono::nanoseconds>(6'820ns));
        CHECK(release(pipe, 9'000ns).size() == 1);
    }
    SECTION("latency only: no serialization") {
        LinkPipe pipe(link(0, 700ns));
        const WirePacket two[] = {data_packet(big), data_packet(big)};
        (void)pipe.admit(two, 100ns);
        CHECK(release(pipe, 800ns).size() == 2);
    }
    SECTION("full: what does not fit is lost and counted; clear() loses the rest") {
        LinkPipe pipe(link(3, 0ns));
        const WirePacket one[] = {data_packet(small)};
        std::size_t lost = 0;
        for (std::size_t i = 0; i < LinkPipe::kCapacity + 5; ++i) {
            lost += pipe.admit(one, 0ns);
        }
        CHECK(lost == 5);
        CHECK(pipe.held() == LinkPipe::kCapacity);
        CHECK(pipe.clear() == LinkPipe::kCapacity);
        CHECK(pipe.held() == 0);
        CHECK(release(pipe, 1h).empty());
    }
}

TEST_CASE("link model off: frames arrive within the sender's doorbell, as before",
          "[emu][link][router]") {
    LinkedHosts t(LinkConfig{});
    t.path(1, kLane0, 8);
    Rail ra(*t.cma->nhi, 1, 64);
    Rail rb(*t.cmb->nhi, 1, 64);
    post_many(ra, 5, 4096);
    CHECK(t.b->router().link_in_flight(0) == 0);
    CHECK(rb.count() == 5);  // no time passed
    CHECK(t.a->nhi().counters().tx_paced_stops == 0);
}

TEST_CASE(
    "cable model between two hosts: a frame is invisible until it arrives; size / rate "
    "apart; lost when the cable is pulled",
    "[emu][link][router]") {
    LinkedHosts t(link(3, 1000ns));
    t.path(1, kLane0, 8);
    Rail ra(*t.cma->nhi, 1, 64);
    Rail rb(*t.cmb->nhi, 1, 64);

    SECTION("held until wire end + latency, then the receiver's poll takes it in") {
        ra.send(4096, 7);
        CHECK(t.b->router().link_in_flight(0) == 1);
        for (int i = 0; i < 50; ++i) {
            CHECK_FALSE(rb.recv(4096, 7));  // polling does not make it come sooner
        }
        t.clk.advance(1819ns);
        CHECK_FALSE(rb.recv(4096, 7));
        t.clk.advance(1ns);
        CHECK(rb.recv(4096, 7) == std::optional<bool>(true));
        CHECK(t.b->router().counters().data_rx == 1);
    }
    SECTION("one doorbell of four 4 KiB frames: 819.2 ns apart") {
        post_many(ra, 4, 4096);
        CHECK(t.b->router().link_in_flight(0) == 4);
        t.clk.advance(1820ns);  // 1819.2
        CHECK(rb.count() == 1);
        t.clk.advance(819ns);  // 2638.4 ≤ 2639
        CHECK(rb.count() == 1);
        t.clk.advance(818ns);  // 3457.6 > 3457
        CHECK(rb.count() == 0);
        t.clk.advance(1ns);
        CHECK(rb.count() == 1);
        t.clk.advance(1h);
        CHECK(rb.count() == 1);
    }
    SECTION("the other direction is its own pipe") {
        ra.send(64, 1);
        // B's TX ring 1 → HopID 9 → A's RX ring 1.
        t.cmb->write(Space::path, kNhiAdp, 2, path_entry(kLane0, 9, 0));
        t.cma->write(Space::path, kLane0, 18, path_entry(kNhiAdp, 1, 14));
        rb.send(64, 2);
        CHECK(t.a->router().link_in_flight(0) == 1);
        CHECK(t.b->router().link_in_flight(0) == 1);
        t.clk.advance(1013ns);  // 64 B: 12.8 ns + 1000
        CHECK(rb.recv(64, 1) == std::optional<bool>(true));
        CHECK(ra.recv(64, 2) == std::optional<bool>(true));
    }
    SECTION("pulled with frames on it: they are lost, even once it is back") {
        post_many(ra, 3, 4096);
        REQUIRE(t.b->router().link_in_flight(0) == 3);
        t.cables[0]->unplug();
        CHECK(t.b->router().link_in_flight(0) == 0);
        CHECK(t.b->router().counters().link_in_flight_drops == 3);
        t.cables[0]->plug();
        t.clk.advance(10ms);
        t.a->router().poll();
        t.b->router().poll();
        CHECK(rb.count() == 0);
        ra.send(100, 3);  // the link is back: new frames cross
        t.clk.advance(1020ns);
        CHECK(rb.recv(100, 3) == std::optional<bool>(true));
    }
}

TEST_CASE(
    "ring ceiling and cable together: two rings double a fast cable's throughput, a slow "
    "cable caps both, a second cable adds its own",
    "[emu][link][router]") {
    // 16 frames of 4 KiB on each ring used, one doorbell each at T; the hosts poll every 100 ns
    // for 30 µs; what B has received by then (each count follows from the model's arithmetic).
    const auto run = [](LinkedHosts& t, unsigned rings, bool two_cables) {
        t.path(1, kLane0, 8);
        t.path(2, two_cables ? kLane0 + 2 : kLane0, 9);
        Rail ra1(*t.cma->nhi, 1, 64), ra2(*t.cma->nhi, 2, 64);
        Rail rb1(*t.cmb->nhi, 1, 64), rb2(*t.cmb->nhi, 2, 64);
        post_many(ra1, 16, 4096);
        if (rings == 2) {
            post_many(ra2, 16, 4096);
        }
        unsigned got = 0;
        for (int i = 0; i < 300; ++i) {
            t.clk.advance(100ns);
            reap(ra1);  // polls A's NHI: both rings' pending descriptors
            got += rb1.count() + rb2.count();
        }
        return got;
    };
    SECTION("Gen3 x2 (40 Gb/s), 1 µs, 12 Gb/s rings: ring bound") {
        const LinkConfig l = link(3, 1000ns, 12);
        // Ring 1: frame k leaves at k × 2730.7 ns and arrives 1819.2 ns later: k ≤ 10.
        LinkedHosts one(l);
        CHECK(run(one, 1, false) == 11);
        // Ring 2's frame k queues 819.2 ns behind ring 1's on the one cable: k ≤ 10 as well.
        LinkedHosts two(l);
        CHECK(run(two, 2, false) == 22);
    }
    SECTION("Gen2 x1 (10 Gb/s), 1 µs, 12 Gb/s rings: cable bound") {
        const LinkConfig l = link(2, 1000ns, 12, 1);
        // Back to back on the wire: frame k arrives at (k + 1) × 3276.8 + 1000 ns: k ≤ 7.
        LinkedHosts one(l);
        CHECK(run(one, 1, false) == 8);
        LinkedHosts two(l);
        CHECK(run(two, 2, false) == 8);  // the same cable: no more
        LinkedHosts cables(l, 2);
        CHECK(run(cables, 2, true) == 16);  // a cable each: twice
    }
}
