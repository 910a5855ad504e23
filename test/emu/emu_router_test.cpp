// SPDX-License-Identifier: Apache-2.0
// The host router model (src/emu/router.*) driven through the real ring driver on ring 0, as the
// connection manager will drive it: config spaces laid out like the AMD host (ref §1.4, §12.4),
// reads and writes, errors, hot-plug events and acks, lanes, DPR, bonding, XDomain detection and
// forwarding, and DMA frames that flow only along programmed path entries, one doorbell's batch at
// a time.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "router_fixture.hpp"

using namespace tbv;
using namespace tbv::router_test;
using emu::EmuHost;
using emu::HostConfig;
using emu::ManualClock;

namespace {

constexpr unsigned kLane0 = 2;
constexpr unsigned kLane1 = 3;
constexpr unsigned kNhiAdp = 1;

HostConfig host_cfg(const char* name, ManualClock& clk, std::uint64_t uid) {
    HostConfig c;
    c.name = name;
    c.uid = uid;
    c.clock = &clk;
    c.router.training_delay = 10ms;
    c.router.bonding_delay = 5ms;
    return c;
}

/// Two hosts joined by an in-process cable, each with a CM on ring 0, manual time.
struct TwoHosts {
    explicit TwoHosts(unsigned ports = 1, unsigned nhis = 1) {
        HostConfig ca = host_cfg("a", clk, 0x1111'0000'0000'0001);
        HostConfig cb = host_cfg("b", clk, 0x2222'0000'0000'0001);
        ca.router.usb4_ports = cb.router.usb4_ports = ports;
        ca.nhis = cb.nhis = nhis;
        a = std::make_unique<EmuHost>(ca);
        b = std::make_unique<EmuHost>(cb);
        cma = std::make_unique<Cm>(a->nhi());
        cmb = std::make_unique<Cm>(b->nhi());
    }
    ~TwoHosts() {
        cables.clear();
        cma.reset();
        cmb.reset();
    }
    emu::Cable& connect(unsigned pa = 0, unsigned pb = 0, bool plugged = true) {
        cables.push_back(EmuHost::connect(*a, pa, *b, pb, plugged));
        return *cables.back();
    }
    /// Lets link training finish on both sides.
    void train() {
        clk.advance(10ms);
        a->router().poll();
        b->router().poll();
    }
    /// Hot plug enabled and lanes unlocked on both, cable plugged, link trained, plug events
    /// acked.
    void bring_up() {
        cma->enable_lanes(kLane0, 2);
        cmb->enable_lanes(kLane0, 2);
        connect();
        train();
        for (Cm* cm : {cma.get(), cmb.get()}) {
            for (int i = 0; i < 2; ++i) {
                const auto ev = cm->expect(Pdf::event);
                cm->ack(EVT_PORT::get(ev.dwords[2]), false);
            }
        }
    }

    ManualClock clk;
    std::unique_ptr<EmuHost> a, b;
    std::unique_ptr<Cm> cma, cmb;
    std::vector<std::unique_ptr<emu::Cable>> cables;
};

}  // namespace

TEST_CASE("router space reads like the AMD host; reply port is the NHI adapter", "[emu][router]") {
    ManualClock clk;
    EmuHost h(host_cfg("h", clk, 0x0123'4567'89ab'cdef));
    Cm cm(h.nhi());

    // ref §7.2 step 4: 1-dword read, the reply's port field names the upstream adapter.
    cm.read_req(0, Space::router, 0, 0, 1, 1);
    const auto p = cm.expect(Pdf::write);
    REQUIRE(p.dword_count == 4);
    CHECK(p.dwords[0] == 0x80000000u);  // DW0 bit 31, route 0
    CHECK(p.dwords[1] == 0);
    CHECK(ADDR_PORT::get(p.dwords[2]) == kNhiAdp);
    CHECK(ADDR_SEQ::get(p.dwords[2]) == 1);
    CHECK(ADDR_RSVD::get(p.dwords[2]) == 0);

    const auto cs = cm.read(Space::router, 0, 0, kRouterSpaceDwords);
    CHECK(CS0_VENDOR::get(cs[0]) == 0x0438);
    CHECK(CS0_DEVICE::get(cs[0]) == 0x020e);
    CHECK(CS1_UPSTREAM::get(cs[1]) == kNhiAdp);
    CHECK(CS1_MAX_ADAPTER::get(cs[1]) == 7);
    CHECK(CS1_DEPTH::get(cs[1]) == 0);
    CHECK(CS3_VALID::get(cs[3]) == 0);
    CHECK(CS4_USB4_VERSION::get(cs[4]) == 0x20);
    CHECK(cs[ROUTER_CS_7] == 0x89abcdefu);
    CHECK(cs[ROUTER_CS_8] == 0x01234567u);
    // The first router capability is the TMU capability.
    const unsigned cap = CS1_FIRST_CAP::get(cs[1]);
    CHECK(cap >= kRouterSpaceDwords);
    CHECK(CAP_ID::get(cm.read1(Space::router, 0, cap)) == static_cast<unsigned>(CapId::tmu));

    // Beyond the implemented space: error 2.
    cm.read_req(0, Space::router, 0, cap, 60);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::invalid_config_space));
    CHECK(h.router().counters().reads == 3);
    CHECK(h.router().counters().error_replies == 1);
}

TEST_CASE("CS_1..4 write, configuration valid/ready, router operations", "[emu][router]") {
    ManualClock clk;
    EmuHost h(host_cfg("h", clk, 1));
    Cm cm(h.nhi());
    auto cs = cm.read(Space::router, 0, 1, 4);
    // ref §7.2 step 5: enumerate the host router (CS_1..CS_4 in one write).
    cs[0] = CS1_UPSTREAM::set(CS1_DEPTH::set(cs[0], 0), kNhiAdp);
    cs[1] = 0;
    cs[2] = CS3_VALID::make(1);
    cs[3] = CS4_NOTIFICATION_TIMEOUT::set(CS4_CMUV::set(cs[3], kCmuvV1), 0xff);
    cm.write(Space::router, 0, 1, cs);
    const auto back = cm.read(Space::router, 0, 1, 4);
    CHECK(back == cs);
    // Read-only bits do not move: max adapter and the USB4 version byte.
    cm.write1(Space::router, 0, ROUTER_CS_1, 0);
    CHECK(CS1_MAX_ADAPTER::get(cm.read1(Space::router, 0, ROUTER_CS_1)) == 7);
    cm.write1(Space::router, 0, ROUTER_CS_4, 0);
    CHECK(CS4_USB4_VERSION::get(cm.read1(Space::router, 0, ROUTER_CS_4)) == 0x20);

    cm.write1(Space::router, 0, ROUTER_CS_5, CS5_CV::make(1));
    CHECK(CS6_CR::get(cm.read1(Space::router, 0, ROUTER_CS_6)) == 1);

    // Buffer-allocation query: baMaxHI (index 5) = 32.
    cm.write1(Space::router, 0, ROUTER_CS_26,
              CS26_OPCODE::make(kRouterOpBufferAllocQuery) | CS26_OV::make(1));
    const std::uint32_t st = cm.read1(Space::router, 0, ROUTER_CS_26);
    CHECK(CS26_OV::get(st) == 0);
    CHECK(CS26_ONS::get(st) == 0);
    const unsigned n = cm.read1(Space::router, 0, ROUTER_CS_25);
    const auto data = cm.read(Space::router, 0, ROUTER_CS_9, n);
    bool found = false;
    for (const std::uint32_t d : data) {
        if ((d & 0xffff) == kBaMaxHi) {
            found = true;
            CHECK(d >> 16 == 32);
        }
    }
    CHECK(found);
    // DROM read (0x24): not supported.
    cm.write1(Space::router, 0, ROUTER_CS_26, CS26_OPCODE::make(0x24) | CS26_OV::make(1));
    CHECK(CS26_ONS::get(cm.read1(Space::router, 0, ROUTER_CS_26)) == 1);
}

TEST_CASE("adapter headers, capability walk, unimplemented adapters, path entry 0",
          "[emu][router]") {
    ManualClock clk;
    HostConfig c = host_cfg("h", clk, 1);
    c.router.unimplemented_adapters = 1;
    EmuHost h(c);
    Cm cm(h.nhi());
    const unsigned max = CS1_MAX_ADAPTER::get(cm.read1(Space::router, 0, ROUTER_CS_1));
    REQUIRE(max == 8);
    const std::array<AdapterType, 8> types{
        AdapterType::inactive,  AdapterType::nhi,       AdapterType::lane,  AdapterType::lane,
        AdapterType::usb3_down, AdapterType::pcie_down, AdapterType::dp_in, AdapterType::dp_in};
    for (unsigned a = 1; a < 8; ++a) {
        INFO("adapter " << a);
        const auto hdr = cm.read(Space::adapter, a, 0, kAdapterHeaderDwords);
        CHECK(ADP2_TYPE::get(hdr[2]) == static_cast<std::uint32_t>(types[a]));
        CHECK(ADP3_NUMBER::get(hdr[3]) == a);
        // Capability walk as Linux does it: start at dword 1, follow next pointers.
        unsigned off = 1;
        std::vector<unsigned> ids;
        for (int guard = 0; guard < 8; ++guard) {
            const std::uint32_t d = cm.read1(Space::adapter, a, off);
            if (off != 1) {
                ids.push_back(CAP_ID::get(d));
            } else {
                CHECK(CAP_ID::get(d) == 0);  // max counters must not look like a cap ID
            }
            off = CAP_NEXT::get(d);
            if (off == 0) {
                break;
            }
        }
        if (types[a] == AdapterType::lane) {
            CHECK(ids == std::vector<unsigned>{1, 6});
            CHECK(ADP4_TOTAL_BUFFERS::get(hdr[4]) == 128);
            CHECK(ADP4_LCK::get(hdr[4]) == 1);
            CHECK(ADP5_DHP::get(hdr[5]) == 1);
            const std::uint32_t lane1 =
                cm.read1(Space::adapter, a, emu::Router::kLaneCap + LANE_ADP_CS_1);
            CHECK(LANE1_STATE::get(lane1) == static_cast<unsigned>(LaneState::unplugged));
            const std::uint32_t p0 = cm.read1(Space::path, a, 0);
            CHECK(PATH0_CREDITS::get(p0) == 2);  // ctl credits (ref §6.5)
        } else if (types[a] == AdapterType::nhi) {
            CHECK(ids.empty());
            CHECK(ADP4_TOTAL_BUFFERS::get(hdr[4]) == 0);
            CHECK(ADP5_MAX_IN_HOP::get(hdr[5]) == h.nhi().hop_count() - 1);
            CHECK(ADP5_MAX_OUT_HOP::get(hdr[5]) == h.nhi().hop_count() - 1);
        } else {
            CHECK(ids == std::vector<unsigned>{4});
        }
    }
    // Adapter 8 is not implemented: error 2 naming it, for adapter and path space.
    unsigned port = 0;
    cm.read_req(0, Space::adapter, 8, 0, 8);
    CHECK(cm.expect_error(&port) == static_cast<unsigned>(ErrorCode::invalid_config_space));
    CHECK(port == 8);
    cm.read_req(0, Space::path, 8, 0, 2);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::invalid_config_space));
    // Past the lane adapter's space, and the NHI adapter's path space beyond H-1.
    cm.read_req(0, Space::adapter, kLane0, 0, 60);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::invalid_config_space));
    cm.read_req(0, Space::path, kNhiAdp, 2 * h.nhi().hop_count(), 2);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::invalid_config_space));
}

TEST_CASE("path entries: write, read back, pending after disable drains", "[emu][router]") {
    ManualClock clk;
    EmuHost h(host_cfg("h", clk, 1));
    Cm cm(h.nhi());
    const auto e = path_entry(kNhiAdp, 1, 14);
    cm.write(Space::path, kLane0, 2 * 8, e);
    CHECK(cm.read(Space::path, kLane0, 2 * 8, 2) == e);
    auto pe = h.router().path_entry(kLane0, 8);
    REQUIRE(pe);
    CHECK(pe->valid);
    CHECK(pe->out_adapter == kNhiAdp);
    CHECK(pe->out_hop == 1);
    CHECK(pe->credits == 14);
    // A CM cannot set pending.
    cm.write1(Space::path, kLane0, 2 * 8 + 1, e[1] | PATH1_PENDING::kMask);
    CHECK(PATH1_PENDING::get(cm.read1(Space::path, kLane0, 2 * 8 + 1)) == 0);

    // Disable: pending reads 1 for a couple of reads, then 0 (ref §6.5 deactivation poll).
    cm.write1(Space::path, kLane0, 2 * 8, PATH0_VALID::set(e[0], 0));
    CHECK(h.router().path_entry(kLane0, 8)->pending);
    unsigned polls = 0;
    while (PATH1_PENDING::get(cm.read1(Space::path, kLane0, 2 * 8 + 1)) != 0) {
        REQUIRE(++polls < 10);
    }
    CHECK(polls == 2);
    // Time alone also ends it.
    cm.write1(Space::path, kLane0, 2 * 8, e[0]);
    cm.write1(Space::path, kLane0, 2 * 8, PATH0_VALID::set(e[0], 0));
    clk.advance(1ms);
    CHECK(PATH1_PENDING::get(cm.read1(Space::path, kLane0, 2 * 8 + 1)) == 0);
    // Disabling an entry that was not valid does not set pending.
    cm.write1(Space::path, kLane0, 2 * 9, 0);
    CHECK(PATH1_PENDING::get(cm.read1(Space::path, kLane0, 2 * 9 + 1)) == 0);
}

TEST_CASE("bad control packets are dropped and counted, never answered", "[emu][router]") {
    TwoHosts t;
    // Malformed: a READ with 4 dwords, a WRITE whose length field disagrees, a length of 0,
    // reserved address bits, an unknown PDF.
    const auto h = route_header(0);
    t.cma->send(Pdf::read, {h[0], h[1], addr(Space::router, 0, 0, 1), 0});
    t.cma->send(Pdf::write, {h[0], h[1], addr(Space::router, 0, 2, 2), 0});
    t.cma->send(Pdf::read, {h[0], h[1], addr(Space::router, 0, 0, 0)});
    t.cma->send(Pdf::read, {h[0], h[1], addr(Space::router, 0, 0, 1) | (1u << 30)});
    t.cma->send(Pdf::icm_cmd, {h[0], h[1], 0});
    CHECK(t.cma->quiet());
    auto c = t.a->router().counters();
    CHECK(c.ctl_malformed_drops == 4);
    CHECK(c.ctl_unexpected_drops == 1);
    CHECK(c.reads == 0);

    // Bad CRC: corrupted on the cable; the peer router's CRC check drops it.
    t.cma->enable_lanes(kLane0, 1);
    auto& cable = t.connect();
    t.train();
    CHECK(EVT_PORT::get(t.cma->expect(Pdf::event).dwords[2]) == kLane0);
    emu::FaultConfig f;
    f.ctl_corrupt = 1.0;
    cable.set_faults(f);
    t.cma->read_req(2, Space::router, 0, 0, 1);
    CHECK(t.cma->quiet());
    CHECK(t.b->router().counters().ctl_crc_drops == 1);
    CHECK(t.b->router().counters().error_replies == 0);
    CHECK(cable.stats().corrupted == 1);
    // Clean cable again: the peer answers (with the XDomain error).
    cable.set_faults({});
    t.cma->read_req(2, Space::router, 0, 0, 1);
    CHECK(t.cma->expect_error() == static_cast<unsigned>(ErrorCode::loop));
}

TEST_CASE("plug: lanes train to CL0, events re-sent until acked; unplug likewise",
          "[emu][router][events]") {
    TwoHosts t;
    Cm& cm = *t.cma;
    emu::Router& r = t.a->router();
    cm.enable_lanes(kLane0, 2);
    cm.write1(Space::router, 0, ROUTER_CS_4,
              CS4_NOTIFICATION_TIMEOUT::set(cm.read1(Space::router, 0, ROUTER_CS_4), 50));
    auto& cable = t.connect();
    CHECK(r.lane_state(kLane0) == LaneState::training);
    CHECK(r.lane_state(kLane1) == LaneState::training);
    CHECK(cm.quiet());  // no event before the link is up
    t.clk.advance(9ms);
    CHECK(cm.quiet());
    t.clk.advance(1ms);
    for (unsigned lane : {kLane0, kLane1}) {
        const auto ev = cm.expect(Pdf::event);
        CHECK(EVT_PORT::get(ev.dwords[2]) == lane);
        CHECK(EVT_UNPLUG::get(ev.dwords[2]) == 0);
        CHECK(ev.dwords[0] == 0x80000000u);
    }
    CHECK(r.lane_state(kLane0) == LaneState::cl0);
    const std::uint32_t l1 = cm.read1(Space::adapter, kLane0, emu::Router::kLaneCap + 1);
    CHECK(LANE1_CURRENT_SPEED::get(l1) == kSpeedGen3);
    CHECK(LANE1_CURRENT_WIDTH::get(l1) == 1);

    // Not acked: re-sent every 50 ms (ROUTER_CS_4), not before.
    t.clk.advance(49ms);
    CHECK(cm.quiet());
    t.clk.advance(1ms);
    CHECK(cm.expect(Pdf::event).dwords[2] == kLane0);
    CHECK(cm.expect(Pdf::event).dwords[2] == kLane1);
    // A wrong PG does not ack; the right one does.
    cm.ack(kLane0, true);
    cm.ack(kLane0, false);
    cm.ack(kLane1, false);
    t.clk.advance(50ms);
    CHECK(cm.quiet());
    CHECK(r.pending_events() == 0);
    auto c = r.counters();
    CHECK(c.events_sent == 2);
    CHECK(c.events_resent == 2);
    CHECK(c.event_acks == 2);
    CHECK(c.stray_acks == 1);

    // Unplug: state 7 and unplug events; DHP set on lane 1 silences it.
    cm.rmw(Space::adapter, kLane1, ADP_CS_5, ADP5_DHP::kMask, ADP5_DHP::kMask);
    cable.unplug();
    CHECK(r.lane_state(kLane0) == LaneState::unplugged);
    CHECK(r.lane_state(kLane1) == LaneState::unplugged);
    const auto ev = cm.expect(Pdf::event);
    CHECK(EVT_PORT::get(ev.dwords[2]) == kLane0);
    CHECK(EVT_UNPLUG::get(ev.dwords[2]) == 1);
    CHECK(cm.quiet());
    cm.ack(kLane0, true);
    // unplug_for: back after the interval, trained, plug event again.
    cable.plug();
    t.train();
    CHECK(cm.expect(Pdf::event).dwords[2] == kLane0);
    cm.ack(kLane0, false);
    cable.unplug_for(20ms);
    CHECK(cm.expect(Pdf::event).dwords[2] == (kLane0 | EVT_UNPLUG::kMask));
    cm.ack(kLane0, true);
    t.clk.advance(20ms);
    t.a->router().poll();  // the cable plugs back in
    t.train();
    CHECK(cm.expect(Pdf::event).dwords[2] == kLane0);
    CHECK(r.lane_state(kLane0) == LaneState::cl0);
}

TEST_CASE("config read through a lane reaches the peer host: error packet (XDomain)",
          "[emu][router][xdomain]") {
    TwoHosts t;
    Cm& cm = *t.cma;
    // Locked lane adapter: error 15; then unlocked but no cable: error 0.
    cm.read_req(2, Space::router, 0, 0, 1);
    unsigned port = 0;
    CHECK(cm.expect_error(&port) == static_cast<unsigned>(ErrorCode::lock));
    CHECK(port == kLane0);
    cm.enable_lanes(kLane0, 2);
    cm.read_req(2, Space::router, 0, 0, 1);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::port_not_connected));
    // Not a lane adapter: error 4.
    cm.read_req(5, Space::router, 0, 0, 1);
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::no_such_port));

    t.connect();
    cm.read_req(2, Space::router, 0, 0, 1);  // still training
    CHECK(cm.expect_error() == static_cast<unsigned>(ErrorCode::port_not_connected));
    t.train();
    (void)cm.expect(Pdf::event);
    (void)cm.expect(Pdf::event);
    // ref §7.3 step 4: the peer host router answers the CS_0 read with an error packet.
    cm.read_req(2, Space::router, 0, 0, 1);
    const auto p = cm.expect(Pdf::error);
    CHECK(p.dwords[0] == 0x80000000u);  // from a router: DW0 bit 31
    CHECK(p.dwords[1] == 2);            // echoes the request's route
    CHECK(ERR_CODE::get(p.dwords[2]) == static_cast<unsigned>(ErrorCode::loop));
    CHECK(ERR_PORT::get(p.dwords[2]) == kLane0);  // B's ingress lane adapter
    CHECK(t.b->router().counters().xdomain_config_errors == 1);
    CHECK(t.a->router().counters().forwarded == 1);
    // The peer's CM sees nothing of it (besides its own plug events, which it has not enabled).
    CHECK(t.cmb->quiet());
}

TEST_CASE("XDomain packets cross with the route rewritten to the ingress adapter | bit 63",
          "[emu][router][xdomain]") {
    TwoHosts t;
    t.bring_up();
    // A UUID request (ref §8.2) from A on route 2.
    std::vector<std::uint32_t> req{0, 2, XD_LENGTH::make(5) | XD_SEQ::make(1)};
    req.insert(req.end(), kXdomainDiscoveryUuid.begin(), kXdomainDiscoveryUuid.end());
    req.push_back(static_cast<std::uint32_t>(XdType::uuid_request));
    t.cma->send(Pdf::xdomain_req, req);
    const auto got = t.cmb->expect(Pdf::xdomain_req);
    REQUIRE(got.dword_count == req.size());
    CHECK(rx_route(got.dwords[0], got.dwords[1]) == (kRouteFromPeer | kLane0));
    for (std::size_t i = 2; i < req.size(); ++i) {
        CHECK(got.dwords[i] == req[i]);
    }
    // B answers on its own route back (its lane adapter 2).
    std::vector<std::uint32_t> resp{0, kLane0, XD_LENGTH::make(11) | XD_SEQ::make(1)};
    resp.insert(resp.end(), kXdomainDiscoveryUuid.begin(), kXdomainDiscoveryUuid.end());
    resp.push_back(static_cast<std::uint32_t>(XdType::uuid_response));
    const auto uuid = t.b->uuid();
    resp.insert(resp.end(), uuid.begin(), uuid.end());
    resp.push_back(0);
    resp.push_back(kLane0);
    t.cmb->send(Pdf::xdomain_resp, resp);
    const auto back = t.cma->expect(Pdf::xdomain_resp);
    CHECK(rx_route(back.dwords[0], back.dwords[1]) == (kRouteFromPeer | kLane0));
    CHECK(back.dwords[8] == uuid[0]);
    CHECK(back.dwords[11] == uuid[3]);
    CHECK(t.a->router().counters().from_peer == 1);
    // XDomain to route 0 goes nowhere.
    t.cma->send(Pdf::xdomain_req, {0, 0, XD_LENGTH::make(0)});
    CHECK(t.cma->quiet());
    CHECK(t.cmb->quiet());
}

namespace {

/// ref §9.3: A transmits with HopID X from ring 1, B with HopID Y; each side programs its own
/// router through ring 0.
void program_paths(Cm& cm, unsigned tx_ring, unsigned tx_hop, unsigned rx_ring, unsigned rx_hop) {
    cm.write(Space::path, kLane0, 2 * rx_hop, path_entry(kNhiAdp, rx_ring, 14));  // lane → NHI
    cm.write(Space::path, kNhiAdp, 2 * tx_ring, path_entry(kLane0, tx_hop, 0));   // NHI → lane
}

}  // namespace

TEST_CASE("data frames flow only once all four path entries exist", "[emu][router][paths]") {
    TwoHosts t;
    t.bring_up();
    Rail ra(*t.cma->nhi, 1);
    Rail rb(*t.cmb->nhi, 1);
    constexpr unsigned kX = 8, kY = 9;

    ra.send(100, 1);
    rb.send(100, 2);
    CHECK(t.a->router().counters().data_no_path_drops == 1);
    CHECK(t.b->router().counters().data_no_path_drops == 1);
    // A's side only: A's TX leaves, but B has no lane entry X yet.
    program_paths(*t.cma, 1, kX, 1, kY);
    ra.send(100, 3);
    CHECK(t.a->router().counters().data_tx == 1);
    CHECK(t.b->router().counters().data_no_path_drops == 2);
    CHECK(rb.count() == 0);
    // B's side too.
    program_paths(*t.cmb, 1, kY, 1, kX);
    for (unsigned i = 0; i < 20; ++i) {
        const std::size_t len = 1 + (i * 997) % 4096;
        ra.send(len, i);
        rb.send(4097 - len, i + 100);
        CHECK(rb.recv(len, i) == std::optional<bool>(true));
        CHECK(ra.recv(4097 - len, i + 100) == std::optional<bool>(true));
    }
    // The tables the frames followed.
    const auto a_tx = t.a->router().path_entry(kNhiAdp, 1);
    const auto b_rx = t.b->router().path_entry(kLane0, kX);
    CHECK((a_tx->valid && a_tx->out_adapter == kLane0 && a_tx->out_hop == kX));
    CHECK((b_rx->valid && b_rx->out_adapter == kNhiAdp && b_rx->out_hop == 1));
    CHECK(t.a->router().counters().data_rx == 20);
    CHECK(t.b->router().counters().data_rx == 20);

    // Unplug: frames are dropped, unplug events arrive.
    t.cables[0]->unplug();
    ra.send(64, 7);
    CHECK(t.a->router().counters().data_link_down_drops == 1);
    CHECK(rb.count() == 0);
    CHECK(EVT_UNPLUG::get(t.cma->expect(Pdf::event).dwords[2]) == 1);
    CHECK(EVT_UNPLUG::get(t.cmb->expect(Pdf::event).dwords[2]) == 1);
    // Replug: the entries survived (the CM owns them), frames flow again.
    t.cables[0]->plug();
    t.train();
    ra.send(64, 8);
    CHECK(rb.recv(64, 8) == std::optional<bool>(true));

    // Fault injection on data: dropped, corrupted (CRC_ERROR reported by the receiving NHI).
    emu::FaultConfig f;
    f.data_corrupt = 1.0;
    t.cables[0]->set_faults(f);
    ra.send(64, 9);
    nhi::RxCompletion c;
    unsigned polls = 0;
    while (rb.rx->poll({&c, 1}) != 1) {
        REQUIRE(++polls < 100);
    }
    CHECK(c.crc_error);
}

TEST_CASE("downstream port reset drops the link, clears paths, re-trains", "[emu][router]") {
    TwoHosts t;
    t.bring_up();
    program_paths(*t.cma, 1, 8, 1, 9);
    REQUIRE(t.a->router().path_entry(kLane0, 9)->valid);
    const unsigned p19 = emu::Router::kUsb4Cap + PORT_CS_19;
    t.cma->rmw(Space::adapter, kLane0, p19, PORT19_DPR::kMask, PORT19_DPR::kMask);
    CHECK(t.a->router().lane_state(kLane0) == LaneState::unplugged);
    CHECK(t.b->router().lane_state(kLane0) == LaneState::unplugged);
    CHECK_FALSE(t.a->router().path_entry(kLane0, 9)->valid);
    for (Cm* cm : {t.cma.get(), t.cmb.get()}) {
        for (unsigned i = 0; i < 2; ++i) {
            const auto ev = cm->expect(Pdf::event);
            CHECK(EVT_UNPLUG::get(ev.dwords[2]) == 1);
            cm->ack(EVT_PORT::get(ev.dwords[2]), true);
        }
    }
    CHECK(PATH0_CREDITS::get(t.cma->read1(Space::path, kLane0, 0)) == 2);  // entry 0 stays
    t.train();
    CHECK(t.a->router().lane_state(kLane0) == LaneState::unplugged);  // held in reset
    t.cma->rmw(Space::adapter, kLane0, p19, PORT19_DPR::kMask, 0);
    CHECK(t.a->router().lane_state(kLane0) == LaneState::training);
    t.train();
    CHECK(t.a->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(t.b->router().lane_state(kLane0) == LaneState::cl0);
    CHECK(EVT_UNPLUG::get(t.cma->expect(Pdf::event).dwords[2]) == 0);
    CHECK(t.a->router().counters().port_resets == 1);
}

TEST_CASE("lane bonding to x2 when both ends ask; LD disables lane 1", "[emu][router]") {
    TwoHosts t;
    t.bring_up();
    const unsigned cs1 = emu::Router::kLaneCap + LANE_ADP_CS_1;
    const auto dual = [&](Cm& cm) {
        cm.rmw(Space::adapter, kLane0, cs1, LANE1_TARGET_WIDTH::kMask,
               LANE1_TARGET_WIDTH::make(kTargetWidthDual));
        cm.rmw(Space::adapter, kLane1, cs1, LANE1_TARGET_WIDTH::kMask,
               LANE1_TARGET_WIDTH::make(kTargetWidthDual));
        cm.rmw(Space::adapter, kLane0, cs1, LANE1_LB::kMask, LANE1_LB::kMask);
    };
    dual(*t.cma);
    t.clk.advance(10ms);
    CHECK(t.a->router().lane_width(kLane0) == 1);  // the peer has not asked
    dual(*t.cmb);
    t.clk.advance(4ms);
    t.a->router().poll();
    CHECK(t.a->router().lane_width(kLane0) == 1);
    t.clk.advance(1ms);
    t.a->router().poll();
    t.b->router().poll();
    CHECK(LANE1_CURRENT_WIDTH::get(t.cma->read1(Space::adapter, kLane0, cs1)) == 2);
    CHECK(t.b->router().lane_width(kLane0) == 2);
    // Lane disable on lane 1: state 0, bonding gone; the peer's lane 1 loses its link.
    t.cma->rmw(Space::adapter, kLane1, cs1, LANE1_LD::kMask, LANE1_LD::kMask);
    CHECK(t.a->router().lane_state(kLane1) == LaneState::disabled);
    CHECK(t.b->router().lane_state(kLane1) == LaneState::unplugged);
    CHECK(t.a->router().lane_width(kLane0) == 1);
    CHECK(t.b->router().lane_width(kLane0) == 1);
    CHECK(t.a->router().lane_state(kLane0) == LaneState::cl0);
}

TEST_CASE("two cables between two hosts: two USB4 ports, two links", "[emu][router]") {
    TwoHosts t(2);
    REQUIRE(CS1_MAX_ADAPTER::get(t.cma->read1(Space::router, 0, ROUTER_CS_1)) == 9);
    REQUIRE(ADP2_TYPE::get(t.cma->read1(Space::adapter, 4, ADP_CS_2)) ==
            static_cast<unsigned>(AdapterType::lane));
    t.cma->enable_lanes(2, 4);
    t.cmb->enable_lanes(2, 4);
    t.connect(0, 0);
    t.connect(1, 1);
    t.train();
    for (unsigned i = 0; i < 4; ++i) {
        (void)t.cma->expect(Pdf::event);
        (void)t.cmb->expect(Pdf::event);
    }
    for (unsigned lane : {2u, 4u}) {
        t.cma->read_req(lane, Space::router, 0, 0, 1);
        unsigned port = 0;
        CHECK(t.cma->expect_error(&port) == static_cast<unsigned>(ErrorCode::loop));
        CHECK(port == lane);
        t.cma->send(Pdf::xdomain_req, {0, lane, XD_LENGTH::make(0)});
        const auto got = t.cmb->expect(Pdf::xdomain_req);
        CHECK(rx_route(got.dwords[0], got.dwords[1]) == (kRouteFromPeer | lane));
    }
    // Data on the second cable: A ring 1 → lane 4 HopID 8 → B lane 4 → ring 2.
    Rail ra(*t.cma->nhi, 1);
    Rail rb(*t.cmb->nhi, 2);
    t.cma->write(Space::path, kNhiAdp, 2, path_entry(4, 8, 0));
    t.cmb->write(Space::path, 4, 16, path_entry(kNhiAdp, 2, 14));
    ra.send(300, 5);
    CHECK(rb.recv(300, 5) == std::optional<bool>(true));
    CHECK(t.b->router().counters().data_rx == 1);
}

TEST_CASE("a host with two NHIs: one router each, cabled to one peer", "[emu][router]") {
    ManualClock clk;
    HostConfig ca = host_cfg("a", clk, 0x10);
    ca.nhis = 2;
    EmuHost a(ca);
    EmuHost b(host_cfg("b", clk, 0x20));
    HostConfig cc = host_cfg("c", clk, 0x30);
    EmuHost c(cc);
    REQUIRE(a.nhi_count() == 2);
    CHECK(a.usb4_ports() == 2);
    CHECK(a.uid(1) == 0x11);
    Cm a0(a.nhi(0)), a1(a.nhi(1)), cb(b.nhi());
    CHECK(a1.read1(Space::router, 0, ROUTER_CS_7) == 0x11);
    a0.enable_lanes(kLane0, 1);
    a1.enable_lanes(kLane0, 1);
    // Port 1 of host a is the USB4 port of its second router.
    auto c0 = EmuHost::connect(a, 0, b, 0);
    auto c1 = EmuHost::connect(a, 1, c, 0);
    clk.advance(10ms);
    for (EmuHost* h : {&a, &b, &c}) {
        for (unsigned i = 0; i < h->nhi_count(); ++i) {
            h->router(i).poll();
        }
    }
    CHECK(a.router(1).lane_state(kLane0) == LaneState::cl0);
    CHECK(EVT_PORT::get(a0.expect(Pdf::event).dwords[2]) == kLane0);
    CHECK(EVT_PORT::get(a1.expect(Pdf::event).dwords[2]) == kLane0);
    a1.send(Pdf::xdomain_req, {0, kLane0, XD_LENGTH::make(0)});
    CHECK(a0.quiet());
    CHECK(cb.quiet());
    CHECK(c.router().counters().from_peer == 1);  // arrived at host c, not b
    c0.reset();
    c1.reset();
}

TEST_CASE("two threads drive the two hosts at once through one cable", "[emu][router][threads]") {
    TwoHosts t;
    t.bring_up();
    program_paths(*t.cma, 1, 8, 1, 9);
    program_paths(*t.cmb, 1, 9, 1, 8);
    Rail ra(*t.cma->nhi, 1, 64);
    Rail rb(*t.cmb->nhi, 1, 64);
    constexpr unsigned kFrames = 2000;
    // Each thread sends on its own rail, takes in what the other sent and does control reads on
    // its own ring 0, while the other thread's frames arrive in its rings. No Catch macros in the
    // threads (Catch is not thread safe): they count and the main thread checks.
    struct Result {
        unsigned sent = 0, got = 0, replies = 0;
        bool error = false;
    };
    const auto run = [](Rail& mine, nhi::ControlRing& ctl, Result& r) {
        const auto h = route_header(0);
        const std::array<std::uint32_t, 3> read{h[0], h[1], addr(Space::router, 0, 0, 1)};
        for (unsigned i = 0; i < 200'000 && (r.sent < kFrames || r.got < kFrames); ++i) {
            std::array<std::uint64_t, 64> done{};
            (void)mine.tx->reap(done);
            if (r.sent < kFrames && mine.tx->free_slots() > 0) {
                const unsigned slot = r.sent % mine.tx_pool.count();
                const nhi::TxFrame f{mine.tx_pool.iova(slot), 256, 1, 2, false, slot};
                r.error |= mine.tx->post({&f, 1}).posted != 1;
                ++r.sent;
            }
            nhi::RxCompletion c;
            while (mine.rx->poll({&c, 1}) == 1) {
                const auto buf = static_cast<unsigned>(c.cookie);
                const nhi::RxBuffer b{mine.rx_pool.iova(buf), buf};
                r.error |= mine.rx->post({&b, 1}).posted != 1 || c.length != 256;
                ++r.got;
            }
            if (i % 64 == 0 && ctl.send(static_cast<unsigned>(Pdf::read), read)) {
                while (auto p = ctl.receive()) {
                    r.replies += p->pdf == static_cast<unsigned>(Pdf::write) ? 1 : 0;
                }
            }
        }
    };
    Result res_a, res_b;
    std::thread tb([&] { run(rb, *t.cmb->ctl, res_b); });
    run(ra, *t.cma->ctl, res_a);
    tb.join();
    CHECK_FALSE(res_a.error);
    CHECK_FALSE(res_b.error);
    CHECK(res_a.replies > 0);
    CHECK(res_b.replies > 0);
    // Frames can be lost only to a full RX ring (counted), never inside the model.
    const auto ca = t.a->router().counters();
    const auto cb = t.b->router().counters();
    CHECK(ca.data_tx == kFrames);
    CHECK(cb.data_tx == kFrames);
    CHECK(ca.data_rx + ca.nhi_refused == kFrames);
    CHECK(cb.data_rx + cb.nhi_refused == kFrames);
    CHECK(res_a.got == ca.data_rx);
    CHECK(res_b.got == cb.data_rx);
    CHECK(ca.data_no_path_drops + ca.data_link_down_drops == 0);
}

namespace {

/// Posts `n` frames on `rail` in one TxRing::post (one doorbell): frame i is `len` bytes of
/// sequence number `first + i` (first 4 bytes) and a pattern from it.
void post_numbered(Rail& rail, unsigned first, unsigned n, std::size_t len) {
    std::vector<nhi::TxFrame> fs;
    for (unsigned i = 0; i < n; ++i) {
        const unsigned seq = first + i;
        const unsigned slot = seq % rail.tx_pool.count();
        std::byte* p = rail.tx_pool.data(slot);
        for (std::size_t k = 0; k < len; ++k) {
            p[k] = static_cast<std::byte>((seq * 13 + k) & 0xff);
        }
        std::memcpy(p, &seq, sizeof seq);
        fs.push_back({rail.tx_pool.iova(slot), static_cast<std::uint32_t>(len), 1, 2, false, slot});
    }
    std::array<std::uint64_t, 64> done{};
    while (rail.tx->reap(done) > 0) {
    }
    REQUIRE(rail.tx->post(fs).posted == n);
}

/// Takes every completed frame from `rail`, reposting its buffer; returns the sequence numbers,
/// or nullopt for a frame whose length or bytes are wrong.
std::vector<std::optional<unsigned>> take_numbered(Rail& rail, std::size_t len) {
    std::vector<std::optional<unsigned>> got;
    nhi::RxCompletion c;
    while (rail.rx->poll({&c, 1}) == 1) {
        const auto buf = static_cast<unsigned>(c.cookie);
        const std::byte* p = rail.rx_pool.data(buf);
        unsigned seq = 0;
        std::memcpy(&seq, p, sizeof seq);
        bool good = c.length == len;
        for (std::size_t k = sizeof seq; good && k < len; ++k) {
            good = p[k] == static_cast<std::byte>((seq * 13 + k) & 0xff);
        }
        got.push_back(good ? std::optional<unsigned>(seq) : std::nullopt);
        const nhi::RxBuffer b{rail.rx_pool.iova(buf), buf};
        REQUIRE(rail.rx->post({&b, 1}).posted == 1);
    }
    return got;
}

std::vector<std::optional<unsigned>> seqs(unsigned first, unsigned n) {
    std::vector<std::optional<unsigned>> v;
    for (unsigned i = 0; i < n; ++i) {
        v.emplace_back(first + i);
    }
    return v;
}

}  // namespace

TEST_CASE("a doorbell's batch crosses routers and cable whole; paths and plug state still rule",
          "[emu][router][paths][batch]") {
    TwoHosts t;
    t.bring_up();
    program_paths(*t.cma, 1, 8, 1, 9);
    program_paths(*t.cmb, 1, 9, 1, 8);
    Rail ra(*t.cma->nhi, 1, 64);
    Rail rb(*t.cmb->nhi, 1, 64);
    emu::Cable& cable = *t.cables[0];

    // 40 frames in one doorbell: two TX batches, every frame in order and intact.
    post_numbered(ra, 0, 40, 1500);
    CHECK(take_numbered(rb, 1500) == seqs(0, 40));
    CHECK(t.a->router().counters().data_tx == 40);
    CHECK(t.b->router().counters().data_rx == 40);
    CHECK(cable.stats().data == 40);

    // B's 63 posted buffers take one batch; the next finds the ring full: refused and counted.
    post_numbered(ra, 40, 63, 64);
    post_numbered(ra, 103, 10, 64);
    CHECK(t.b->router().counters().nhi_refused == 10);
    CHECK(t.b->nhi().counters().rx_overflow_drops == 10);
    CHECK(take_numbered(rb, 64) == seqs(40, 63));
    post_numbered(ra, 113, 10, 64);
    CHECK(take_numbered(rb, 64) == seqs(113, 10));

    // The CM takes A's TX entry away: the whole batch is dropped at A's NHI adapter.
    t.cma->write(Space::path, kNhiAdp, 2, path_entry(kLane0, 8, 0, /*valid=*/false));
    post_numbered(ra, 200, 20, 64);
    CHECK(t.a->router().counters().data_no_path_drops == 20);
    CHECK(take_numbered(rb, 64).empty());
    t.cma->write(Space::path, kNhiAdp, 2, path_entry(kLane0, 8, 0));
    // B's ingress entry gone: dropped at B's lane adapter, frame by frame counted.
    t.cmb->write(Space::path, kLane0, 16, path_entry(kNhiAdp, 1, 14, /*valid=*/false));
    post_numbered(ra, 300, 20, 64);
    CHECK(t.b->router().counters().data_no_path_drops == 20);
    CHECK(take_numbered(rb, 64).empty());
    t.cmb->write(Space::path, kLane0, 16, path_entry(kNhiAdp, 1, 14));

    // Unplugged: the batch goes nowhere.
    cable.unplug();
    post_numbered(ra, 400, 20, 64);
    CHECK(t.a->router().counters().data_link_down_drops == 20);
    CHECK(take_numbered(rb, 64).empty());
    cable.plug();
    t.train();
    post_numbered(ra, 500, 33, 64);
    CHECK(take_numbered(rb, 64) == seqs(500, 33));

    // Drop injection: frame by frame with the cable's RNG, exactly as one frame per doorbell.
    emu::FaultConfig f;
    f.data_drop = 0.5;
    f.seed = 11;
    cable.set_faults(f);
    emu::FaultInjector same(f);
    std::vector<std::optional<unsigned>> expect;
    for (unsigned i = 0; i < 32; ++i) {
        if (!same.decide(emu::WireKind::data).drop) {
            expect.emplace_back(600 + i);
        }
    }
    const auto dropped = cable.stats().dropped;
    post_numbered(ra, 600, 32, 64);
    CHECK(take_numbered(rb, 64) == expect);
    CHECK(cable.stats().dropped - dropped == 32 - expect.size());
}

TEST_CASE("two threads send batches both ways while a third pulls and replugs the cable",
          "[emu][router][threads][batch]") {
    TwoHosts t;
    t.bring_up();
    program_paths(*t.cma, 1, 8, 1, 9);
    program_paths(*t.cmb, 1, 9, 1, 8);
    Rail ra(*t.cma->nhi, 1, 64);
    Rail rb(*t.cmb->nhi, 1, 64);
    emu::Cable& cable = *t.cables[0];
    constexpr std::size_t kLen = 200;
    // No Catch macros in the threads (Catch is not thread safe): they record, the main thread
    // checks. A frame may be lost (cable pulled, link down, RX ring full) but never altered,
    // duplicated or reordered.
    struct Result {
        unsigned sent = 0, got = 0;
        bool error = false;
        bool in_order = true;
        bool intact = true;
    };
    std::atomic<bool> stop{false};
    const auto run = [&](Rail& mine, Result& r) {
        std::vector<nhi::TxFrame> fs;
        std::array<std::uint64_t, 64> done{};
        std::array<nhi::RxCompletion, 16> cs{};
        long last = -1;
        while (!stop.load()) {
            (void)mine.tx->reap(done);
            const unsigned n = std::min(16u, mine.tx->free_slots());
            fs.clear();
            for (unsigned k = 0; k < n; ++k) {
                const unsigned seq = r.sent + k;
                const unsigned slot = seq % mine.tx_pool.count();
                std::byte* p = mine.tx_pool.data(slot);
                std::memset(p, static_cast<int>(seq & 0xff), kLen);
                std::memcpy(p, &seq, sizeof seq);
                fs.push_back({mine.tx_pool.iova(slot), kLen, 1, 2, false, slot});
            }
            if (n > 0) {
                r.error |= mine.tx->post(fs).posted != n;
                r.sent += n;
            }
            const unsigned got = mine.rx->poll(cs);
            for (unsigned k = 0; k < got; ++k) {
                const auto buf = static_cast<unsigned>(cs[k].cookie);
                const std::byte* p = mine.rx_pool.data(buf);
                unsigned seq = 0;
                std::memcpy(&seq, p, sizeof seq);
                r.in_order = r.in_order && static_cast<long>(seq) > last;
                last = seq;
                r.intact = r.intact && cs[k].length == kLen &&
                           p[kLen - 1] == static_cast<std::byte>(seq & 0xff);
                const nhi::RxBuffer b{mine.rx_pool.iova(buf), buf};
                r.error |= mine.rx->post({&b, 1}).posted != 1;
            }
            r.got += got;
            std::this_thread::yield();
        }
    };
    Result res_a, res_b;
    std::thread ta([&] { run(ra, res_a); });
    std::thread tb([&] { run(rb, res_b); });
    // Pull the cable 20 times, each time once frames are flowing again (bounded waits).
    unsigned cycles_with_traffic = 0;
    for (int k = 0; k < 20; ++k) {
        const auto before = t.b->router().counters().data_rx;
        for (int i = 0; i < 100'000 && t.b->router().counters().data_rx < before + 100; ++i) {
            std::this_thread::yield();
        }
        cycles_with_traffic += t.b->router().counters().data_rx >= before + 100 ? 1 : 0;
        cable.unplug();
        std::this_thread::yield();
        cable.plug();
        t.clk.advance(10ms);  // training finishes at the threads' next polls
    }
    stop.store(true);
    ta.join();
    tb.join();
    CHECK_FALSE(res_a.error);
    CHECK_FALSE(res_b.error);
    CHECK(res_a.in_order);
    CHECK(res_b.in_order);
    CHECK(res_a.intact);
    CHECK(res_b.intact);
    CHECK(cycles_with_traffic > 0);
    CHECK(cable.stats().unplugged_drops + t.a->router().counters().data_link_down_drops > 0);
    // Every frame the routers delivered reached the driver (some still in the rings).
    CHECK(res_a.got + ra.count() == t.a->router().counters().data_rx);
    CHECK(res_b.got + rb.count() == t.b->router().counters().data_rx);
    CHECK(t.a->router().counters().data_rx <= res_b.sent);
    CHECK(t.b->router().counters().data_rx <= res_a.sent);

    // Afterwards the link comes back and a batch goes through whole.
    for (int i = 0; i < 3; ++i) {
        t.train();
    }
    REQUIRE(t.a->router().lane_state(kLane0) == LaneState::cl0);
    REQUIRE(t.b->router().lane_state(kLane0) == LaneState::cl0);
    post_numbered(ra, 10'000, 40, 64);
    CHECK(take_numbered(rb, 64) == seqs(10'000, 40));
}

TEST_CASE("a scheduled unplug due while the cable is unplugged by hand leaves it unplugged",
          "[emu][router][faults]") {
    TwoHosts t;
    t.bring_up();
    emu::Cable& cable = *t.cables[0];
    emu::FaultConfig f;
    f.unplug_after = 20ms;  // counted from the plug, at t = 0 on the manual clock
    f.unplug = 30ms;
    cable.set_faults(f);
    cable.unplug();  // by hand, for good
    t.clk.advance(15ms);
    t.a->router().poll();  // t = 25 ms: the schedule is due, but there is no cable to pull
    t.clk.advance(100ms);
    t.a->router().poll();
    t.b->router().poll();
    CHECK_FALSE(cable.plugged());
    CHECK(t.a->router().lane_state(kLane0) == LaneState::unplugged);
    // Plugged back by hand: the schedule is used up, no second pull.
    cable.plug();
    t.train();
    t.clk.advance(1000ms);
    t.a->router().poll();
    CHECK(cable.plugged());
    CHECK(t.a->router().lane_state(kLane0) == LaneState::cl0);
}
