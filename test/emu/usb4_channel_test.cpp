// SPDX-License-Identifier: Apache-2.0
// ControlChannel over the emulated NHI: ring 0 answered by a scripted peer on a test Fabric
// (nhi-reference §5.4 matching, timeouts and retries, §5.5 errors, §8.1 XDomain matching).
// Time is a ManualClock advanced by the channel's wait strategy, so 400 ms of protocol time take
// microseconds.
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "catch.hpp"
#include "emu/fabric.hpp"
#include "emu/nhi.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/nhi.hpp"
#include "usb4/control_channel.hpp"
#include "usb4/packets.hpp"
#include "util/crc32c.hpp"
#include "util/endian.hpp"

using namespace tbv;
using namespace tbv::usb4;
using namespace std::chrono_literals;

namespace {

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

struct Seen {
    unsigned pdf;
    std::vector<std::uint32_t> dw;
};

/// The far end of ring 0: receives what the host sends (CRC checked) and answers through
/// EmuNhi::receive(0, …) as a router would, following `script`.
class ScriptedPeer final : public emu::Fabric {
public:
    explicit ScriptedPeer(emu::EmuNhi& nhi) : nhi_(nhi) { nhi_.attach(this); }
    ~ScriptedPeer() override { nhi_.attach(nullptr); }

    std::function<void(const Seen&)> script;
    std::vector<Seen> seen;
    unsigned bad_crc = 0;

    void transmit(emu::EmuNhi&, unsigned ring, const emu::FrameView& f) noexcept override {
        if (ring != 0 || f.data.size() < 8 || f.data.size() % 4 != 0) {
            return;
        }
        const std::size_t body = f.data.size() - 4;
        if (util::crc32c(f.data.first(body)) != util::load_be32(f.data.data() + body)) {
            ++bad_crc;
            return;
        }
        Seen s{f.eof_pdf, {}};
        for (std::size_t i = 0; i < body; i += 4) {
            s.dw.push_back(util::load_be32(f.data.data() + i));
        }
        seen.push_back(s);
        if (script) {
            script(seen.back());
        }
    }

    /// Sends dwords + CRC-32C to the host's ring 0.
    void reply(unsigned pdf, std::span<const std::uint32_t> dw) {
        std::vector<std::byte> wire(dw.size() * 4 + 4);
        for (std::size_t i = 0; i < dw.size(); ++i) {
            util::store_be32(wire.data() + 4 * i, dw[i]);
        }
        util::store_be32(wire.data() + 4 * dw.size(),
                         util::crc32c(std::span(wire).first(dw.size() * 4)));
        emu::FrameView f;
        f.sof_pdf = pdf;
        f.eof_pdf = pdf;
        f.data = wire;
        REQUIRE(nhi_.receive(0, f) == emu::RxResult::delivered);
    }
    void reply(const Result<ControlPacket>& p) {
        REQUIRE(p);
        reply(p->pdf, p->payload());
    }

private:
    emu::EmuNhi& nhi_;
};

/// One emulated host: NHI, scripted peer, ring 0 and a channel on a manual clock.
struct Host {
    explicit Host(ChannelOptions opts = {}, unsigned vectors = 0) : dev(emu::NhiConfig{}) {
        peer = std::make_unique<ScriptedPeer>(dev);
        nhi::NhiOptions o;
        o.irq_vectors = vectors;
        nhi = take(nhi::Nhi::open(dev, o));
        nhi::ControlRingConfig rc;
        if (vectors > 0) {
            rc.irq_vector = 0;
        }
        ring = take(nhi::ControlRing::create(*nhi, rc));
        if (opts.clock == nullptr) {
            opts.clock = &clock;
            opts.wait = &wait;
        }
        ch = take(ControlChannel::create(*ring, opts));
    }
    emu::EmuNhi dev;
    std::unique_ptr<ScriptedPeer> peer;
    std::unique_ptr<nhi::Nhi> nhi;
    std::unique_ptr<nhi::ControlRing> ring;
    ManualClock clock;
    ManualClockWait wait{clock, 1ms};
    std::unique_ptr<ControlChannel> ch;
};

/// A read response for request `req` (dwords as seen) with `data`, from a router whose upstream
/// adapter is `up`; `tweak` edits the address before encoding.
Result<ControlPacket> answer_read(const Seen& req, std::vector<std::uint32_t> data, unsigned up = 1,
                                  const std::function<void(ReadResponse&)>& tweak = {}) {
    auto r = decode_read_request(req.dw);
    REQUIRE(r);
    ReadResponse resp;
    resp.route = r->route;
    resp.addr = r->addr;
    resp.addr.port = static_cast<std::uint8_t>(up);
    static std::vector<std::uint32_t> keep;
    keep = std::move(data);
    resp.data = keep;
    if (tweak) {
        tweak(resp);
    }
    return encode(resp);
}

unsigned seq_of(const Seen& s) {
    return hw::usb4::ADDR_SEQ::get(s.dw[2]);
}

std::vector<std::uint32_t> iota(unsigned n, std::uint32_t base) {
    std::vector<std::uint32_t> v(n);
    for (unsigned i = 0; i < n; ++i) {
        v[i] = base + i;
    }
    return v;
}

}  // namespace

TEST_CASE("config read: only a response with the right route, seq, size and echo matches",
          "[emu][usb4][channel]") {
    Host h;
    h.peer->script = [&](const Seen& s) {
        REQUIRE(s.pdf == 1);
        // Decoys first, each one field off, then the real answer.
        h.peer->reply(answer_read(s, iota(5, 100), 1, [](ReadResponse& r) { r.route ^= 0x100; }));
        h.peer->reply(answer_read(s, iota(5, 100), 1, [](ReadResponse& r) { r.addr.seq ^= 1; }));
        h.peer->reply(answer_read(s, iota(4, 100), 1, [](ReadResponse& r) { r.addr.length = 4; }));
        h.peer->reply(answer_read(s, iota(5, 100), 1, [](ReadResponse& r) { r.addr.offset++; }));
        h.peer->reply(answer_read(s, iota(5, 100), 1,
                                  [](ReadResponse& r) { r.addr.space = Space::counters; }));
        h.peer->reply(answer_read(s, iota(5, 7), 1));
    };
    std::array<std::uint32_t, 5> out{};
    const unsigned up = take(h.ch->read(0x0302, Space::adapter, 3, 0x10, out));
    CHECK(up == 1);
    CHECK(std::vector<std::uint32_t>(out.begin(), out.end()) == iota(5, 7));
    REQUIRE(h.peer->seen.size() == 1);
    auto req = take(decode_read_request(h.peer->seen[0].dw));
    CHECK(req.route == 0x0302);
    CHECK(req.addr.space == Space::adapter);
    CHECK(req.addr.port == 3);
    CHECK(req.addr.offset == 0x10);
    CHECK(req.addr.length == 5);
    CHECK(req.addr.seq == 0);
    CHECK(h.ch->counters().unmatched_dropped == 5);
    CHECK(h.ch->counters().retries == 0);
    CHECK(h.ch->counters().tx == 1);
    CHECK(h.ch->counters().rx == 6);

    // Route bit 63 is masked when matching: a reply from "the peer side" still matches.
    h.peer->script = [&](const Seen& s) { h.peer->reply(answer_read(s, {0xabcd}, 5)); };
    CHECK(take(h.ch->read1(hw::usb4::kRouteFromPeer | 0x02, Space::router, 0, 0)) == 0xabcd);
    CHECK(take(h.ch->upstream_adapter(0)) == 5);
    auto v = take(h.ch->read(0, Space::router, 0, 0, 1u));
    CHECK(v.size() == 1);

    // Bad arguments never reach the wire.
    const auto sent = h.peer->seen.size();
    std::vector<std::uint32_t> big(61);
    CHECK(h.ch->read(0, Space::router, 0, 0, std::span<std::uint32_t>(big)).error() ==
          std::errc::invalid_argument);
    CHECK(h.ch->read(0, Space::router, 64, 0, 1u).error() == std::errc::invalid_argument);
    CHECK(h.ch->read(0, Space::router, 0, 8192, 1u).error() == std::errc::invalid_argument);
    CHECK(h.ch->read(0, Space::router, 0, 0, 0u).error() == std::errc::invalid_argument);
    CHECK(
        h.ch->write(std::uint64_t{1} << 60, Space::router, 0, 0, std::span(big).first(1)).error() ==
        std::errc::invalid_argument);
    CHECK(h.peer->seen.size() == sent);
}

TEST_CASE("config write: data reaches the router, the write response is matched",
          "[emu][usb4][channel]") {
    Host h;
    h.peer->script = [&](const Seen& s) {
        auto w = decode_write_request(s.dw);
        REQUIRE(w);
        WriteResponse r;
        r.route = w->route;
        r.addr = w->addr;
        // First a response with the wrong seq (late), then the right one.
        r.addr.seq = static_cast<std::uint8_t>((w->addr.seq + 1) & 3);
        h.peer->reply(encode(r));
        r.addr.seq = w->addr.seq;
        h.peer->reply(encode(r));
    };
    const auto data = iota(60, 0x1000);
    REQUIRE(h.ch->write(0x01, Space::path, 1, 16, data));
    REQUIRE(h.peer->seen.size() == 1);
    CHECK(h.peer->seen[0].pdf == 2);
    auto w = take(decode_write_request(h.peer->seen[0].dw));
    CHECK(std::vector<std::uint32_t>(w.data.begin(), w.data.end()) == data);
    CHECK(w.addr.space == Space::path);
    CHECK(h.ch->counters().unmatched_dropped == 1);
}

TEST_CASE("retries use seq = attempt; 4 silent attempts end in Errc::timeout without real waiting",
          "[emu][usb4][channel]") {
    Host h;
    SECTION("answered on the third attempt") {
        h.peer->script = [&](const Seen& s) {
            if (seq_of(s) == 2) {
                h.peer->reply(answer_read(s, {42}));
            }
        };
        const auto t0 = h.clock.now();
        CHECK(take(h.ch->read1(0, Space::router, 0, 0)) == 42);
        REQUIRE(h.peer->seen.size() == 3);
        for (unsigned i = 0; i < 3; ++i) {
            CHECK(seq_of(h.peer->seen[i]) == i);
        }
        CHECK(h.ch->counters().retries == 2);
        CHECK(h.ch->counters().timeouts == 2);
        CHECK(h.clock.now() - t0 == 200ms);
    }
    SECTION("never answered") {
        const auto wall0 = std::chrono::steady_clock::now();
        const auto t0 = h.clock.now();
        auto r = h.ch->read1(0x01, Space::router, 0, 0);
        CHECK(r.error() == Errc::timeout);
        CHECK_FALSE(h.ch->last_router_error());
        REQUIRE(h.peer->seen.size() == 4);
        for (unsigned i = 0; i < 4; ++i) {
            CHECK(seq_of(h.peer->seen[i]) == i);
        }
        CHECK(h.ch->counters().timeouts == 4);
        CHECK(h.ch->counters().retries == 3);
        CHECK(h.clock.now() - t0 == 400ms);
        CHECK(h.wait.waits == 400);  // 1 ms steps: it waited, it did not spin
        CHECK(std::chrono::steady_clock::now() - wall0 < 2s);
        // A write times out the same way.
        CHECK(h.ch->write(0, Space::router, 0, 1, std::vector<std::uint32_t>{1}).error() ==
              Errc::timeout);
    }
}

TEST_CASE("a late response to an earlier attempt is discarded", "[emu][usb4][channel]") {
    Host h;
    std::optional<Seen> first;
    // The answer to attempt 0 shows up just after its 100 ms, while attempt 1 is pending … and
    // before attempt 1's own answer, which the script sends when attempt 1 goes out. To get the
    // order "late one first", deliver it from the wait hook when 100 ms have passed.
    const auto t0 = h.clock.now();
    h.peer->script = [&](const Seen& s) {
        if (seq_of(s) == 0) {
            first = s;
        }
    };
    bool late_sent = false;
    h.wait.on_wait = [&] {
        if (!late_sent && first && h.clock.now() - t0 >= 100ms) {
            late_sent = true;
            h.peer->reply(answer_read(*first, {1111}));
        }
        if (late_sent && h.peer->seen.size() == 2 && h.clock.now() - t0 >= 150ms) {
            h.peer->reply(answer_read(h.peer->seen[1], {2222}));
            h.wait.on_wait = nullptr;
        }
    };
    CHECK(take(h.ch->read1(0, Space::router, 0, 0)) == 2222);
    CHECK(late_sent);
    CHECK(h.ch->counters().unmatched_dropped == 1);
    CHECK(h.ch->counters().retries == 1);

    // A duplicate of an answered request arriving later is dropped by poll(), and the next read
    // is not confused by it (it has the same seq 0 but arrives before the new request exists).
    h.peer->script = nullptr;
    h.peer->reply(answer_read(h.peer->seen[1], {3333}));
    h.ch->poll();
    CHECK(h.ch->counters().unmatched_dropped == 2);
    CHECK_FALSE(h.ch->next_notification());
}

TEST_CASE("error packets end a request at once with a distinct error", "[emu][usb4][channel]") {
    struct Case {
        ErrorCode code;
        std::error_code want;
    };
    const std::vector<Case> cases{
        {ErrorCode::port_not_connected, make_error_code(Errc::link_down)},
        {ErrorCode::invalid_config_space, std::make_error_code(std::errc::no_such_device)},
        {ErrorCode::lock, std::make_error_code(std::errc::permission_denied)},
        {ErrorCode::no_such_port, make_error_code(Errc::router_error)},
        {ErrorCode::loop, make_error_code(Errc::router_error)},
    };
    for (const auto& c : cases) {
        Host h;
        h.peer->script = [&](const Seen&) {
            ErrorPacket e;
            e.route = 0x0102 | hw::usb4::kRouteFromPeer;  // any route: it answers the request
            e.code = static_cast<std::uint8_t>(c.code);
            e.port = 2;
            h.peer->reply(encode(e));
        };
        auto r = h.ch->read1(0x02, Space::adapter, 2, 0);
        CHECK(r.error() == c.want);
        CHECK(r.error() != Errc::timeout);
        REQUIRE(h.ch->last_router_error());
        CHECK(h.ch->last_router_error()->code == static_cast<std::uint8_t>(c.code));
        CHECK(h.peer->seen.size() == 1);  // no retry after an error packet
        CHECK(h.ch->counters().router_errors == 1);
        CHECK(h.wait.waits == 0);
    }
}

TEST_CASE("unsolicited packets go to the inbox while a request waits; junk is dropped",
          "[emu][usb4][channel]") {
    Host h;
    h.peer->script = [&](const Seen& s) {
        if (s.pdf != 1) {
            return;
        }
        HotPlugEvent ev;
        ev.route = hw::usb4::kRouteFromPeer;
        ev.port = 3;
        h.peer->reply(encode(ev));
        ErrorPacket async;
        async.route = hw::usb4::kRouteFromPeer;
        async.code = static_cast<std::uint8_t>(ErrorCode::link_error);
        async.port = 3;
        h.peer->reply(encode(async));
        h.peer->reply(encode_discovery(0x03 | hw::usb4::kRouteFromPeer, 1, XdUuidRequest{}));
        // Junk: an event with reserved bits, an unknown PDF, a notify ack nobody asked for.
        h.peer->reply(5, std::vector<std::uint32_t>{0x80000000u, 0, 0x40000003u});
        h.peer->reply(9, std::vector<std::uint32_t>{0x80000000u, 0, 0});
        h.peer->reply(encode(NotifyAck{0}));
        h.peer->reply(answer_read(s, {77}));
    };
    CHECK(take(h.ch->read1(0, Space::router, 0, 0)) == 77);
    CHECK(h.ch->counters().malformed_dropped == 2);
    CHECK(h.ch->counters().unmatched_dropped == 1);
    CHECK(h.ch->pending_notifications() == 3);

    auto n1 = h.ch->next_notification();
    REQUIRE(n1);
    CHECK(n1->kind == NotificationKind::hot_plug);
    auto ev = std::get<HotPlugEvent>(take(n1->decode()));
    CHECK(ev.port == 3);
    CHECK_FALSE(ev.unplug);
    auto n2 = h.ch->next_notification();
    REQUIRE(n2);
    CHECK(n2->kind == NotificationKind::async_error);
    CHECK(std::get<ErrorPacket>(take(n2->decode())).code == 1);
    auto n3 = h.ch->next_notification();
    REQUIRE(n3);
    CHECK(n3->kind == NotificationKind::xdomain);
    auto x = std::get<XdomainPacket>(take(n3->decode()));
    CHECK(route_key(x.route) == 0x03);
    CHECK(std::holds_alternative<XdUuidRequest>(take(decode_discovery(x))));
    CHECK_FALSE(h.ch->next_notification());

    // The CM acks the event: PDF 3, code 7, PG plug, the event's route without bit 63.
    h.peer->script = nullptr;
    REQUIRE(h.ch->ack_hot_plug(ev));
    REQUIRE(h.peer->seen.size() == 2);
    CHECK(h.peer->seen[1].pdf == 3);
    CHECK(h.peer->seen[1].dw == std::vector<std::uint32_t>{0, 0, 0x80000307u});

    // Without a request pending, next_notification() polls the ring itself.
    h.peer->reply(encode(HotPlugEvent{0x01 | hw::usb4::kRouteFromPeer, 2, true}));
    auto n4 = h.ch->next_notification();
    REQUIRE(n4);
    CHECK(std::get<HotPlugEvent>(take(n4->decode())).unplug);
}

TEST_CASE("the inbox is bounded and counts overflow", "[emu][usb4][channel]") {
    ChannelOptions o;
    o.inbox_capacity = 2;
    ManualClock clock;
    ManualClockWait wait(clock);
    o.clock = &clock;
    o.wait = &wait;
    Host h(o);
    for (unsigned i = 0; i < 5; ++i) {
        h.peer->reply(
            encode(HotPlugEvent{hw::usb4::kRouteFromPeer, static_cast<std::uint8_t>(i), false}));
    }
    h.ch->poll();
    CHECK(h.ch->pending_notifications() == 2);
    CHECK(h.ch->counters().inbox_overflow == 3);
    // The oldest two were kept.
    CHECK(std::get<HotPlugEvent>(take(h.ch->next_notification()->decode())).port == 0);
    CHECK(std::get<HotPlugEvent>(take(h.ch->next_notification()->decode())).port == 1);
    CHECK_FALSE(h.ch->next_notification());
}

TEST_CASE("XDomain requests match PDF 7 from the same route and protocol", "[emu][usb4][channel]") {
    Host h;
    const UuidDwords other{1, 2, 3, 4};
    std::vector<unsigned> seqs;
    h.peer->script = [&](const Seen& s) {
        auto x = decode_xdomain(s.pdf, s.dw);
        REQUIRE(x);
        seqs.push_back(x->seq);
        if (x->seq == 0) {
            return;  // first attempt lost
        }
        // Not ours: other protocol, other route, a response of the wrong type (rejected by the
        // caller's predicate). The first two are unsolicited XDomain traffic for the inbox.
        XdomainPacket foreign;
        foreign.pdf = Pdf::xdomain_resp;
        foreign.route = 0x02 | hw::usb4::kRouteFromPeer;
        foreign.protocol = other;
        h.peer->reply(encode(foreign));
        h.peer->reply(
            encode_discovery(0x03 | hw::usb4::kRouteFromPeer, x->seq, XdUuidResponse{other, 0x1}));
        h.peer->reply(
            encode_discovery(0x02 | hw::usb4::kRouteFromPeer, x->seq, XdLinkStateStatusResponse{}));
        h.peer->reply(encode_discovery(0x02 | hw::usb4::kRouteFromPeer, x->seq,
                                       XdUuidResponse{other, 0x0000000100000002}));
    };
    auto req = take(encode_discovery(0x02, 0, XdUuidRequest{}));
    auto xreq = take(decode_xdomain(req.pdf, req.payload()));
    auto resp = take(h.ch->xdomain_request(
        xreq,
        [](const XdomainPacket& x) {
            return x.type == static_cast<std::uint32_t>(XdType::uuid_response);
        },
        1000ms, 3));
    auto m = take(decode_discovery(take(decode_xdomain(resp.pdf, resp.payload()))));
    CHECK(std::get<XdUuidResponse>(m).src_route == 0x0000000100000002u);
    CHECK(seqs == std::vector<unsigned>{0, 1});
    CHECK(h.ch->pending_notifications() == 3);  // foreign, other route, wrong type

    // An error packet answers an XDomain request too (e.g. the cable went away).
    h.peer->script = [&](const Seen&) {
        ErrorPacket e;
        e.route = 0x02 | hw::usb4::kRouteFromPeer;
        e.code = static_cast<std::uint8_t>(ErrorCode::port_not_connected);
        h.peer->reply(encode(e));
    };
    CHECK(h.ch->xdomain_request(xreq, nullptr, 1000ms, 3).error() == Errc::link_down);
    // And silence is a timeout after `attempts` tries, seq wrapping mod 4.
    seqs.clear();
    h.peer->script = [&](const Seen& s) { seqs.push_back(take(decode_xdomain(s.pdf, s.dw)).seq); };
    CHECK(h.ch->xdomain_request(xreq, nullptr, 10ms, 5).error() == Errc::timeout);
    CHECK(seqs == std::vector<unsigned>{0, 1, 2, 3, 0});
}

TEST_CASE("the interrupt wait strategy sleeps on ring 0's RX vector", "[emu][usb4][channel][irq]") {
    ChannelOptions o;
    o.timeout = 20ms;
    o.attempts = 2;
    SteadyClock steady;
    o.clock = &steady;
    std::unique_ptr<IrqWait> irq;
    // The channel needs its wait strategy at creation; build the host with a placeholder first.
    SleepWait placeholder;
    o.wait = &placeholder;
    Host h(o, 1);
    irq = take(IrqWait::create(*h.nhi, 0));
    o.wait = irq.get();
    auto ch = take(ControlChannel::create(*h.ring, o));
    CHECK(IrqWait::create(*h.nhi, 5).error() == std::errc::invalid_argument);

    const auto t0 = std::chrono::steady_clock::now();
    CHECK(ch->read1(0, Space::router, 0, 0).error() == Errc::timeout);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 40ms);
    CHECK(took < 2s);

    h.peer->script = [&](const Seen& s) { h.peer->reply(answer_read(s, {5})); };
    CHECK(take(ch->read1(0, Space::router, 0, 0)) == 5);
}
