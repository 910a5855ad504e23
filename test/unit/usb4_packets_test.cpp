// SPDX-License-Identifier: Apache-2.0
// USB4 control-packet codecs (nhi-reference §5, §8.1, §8.2, §8.5, Appendix A).
#include <array>
#include <vector>

#include "catch.hpp"
#include "nhi/control_ring.hpp"
#include "usb4/packets.hpp"
#include "usb4/uuid.hpp"
#include "util/endian.hpp"

using namespace tbv;
using namespace tbv::usb4;

namespace {

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

std::vector<std::uint32_t> dw(const ControlPacket& p) {
    return {p.dwords.begin(), p.dwords.begin() + p.dword_count};
}

bool is_malformed(const std::error_code& e) {
    return e == Errc::malformed;
}

/// Wire bytes (dwords + CRC) as ControlRing would send them, as big-endian dword values.
std::vector<std::uint32_t> wire(const ControlPacket& p) {
    std::array<std::byte, 256> buf{};
    const std::size_t n = nhi::ControlRing::encode(p.payload(), buf);
    std::vector<std::uint32_t> out;
    for (std::size_t i = 0; i < n; i += 4) {
        out.push_back(util::load_be32(buf.data() + i));
    }
    return out;
}

constexpr UuidDwords kA{0x11111111, 0x22222222, 0x33333333, 0x44444444};
constexpr UuidDwords kB{0xaaaaaaaa, 0xbbbbbbbb, 0xcccccccc, 0xdddddddd};

}  // namespace

TEST_CASE("config read requests match Appendix A", "[unit][usb4][packets]") {
    ReadRequest r;
    r.addr.space = Space::router;
    r.addr.length = 5;
    auto p = take(encode(r));
    CHECK(p.pdf == 1);
    CHECK(dw(p) == std::vector<std::uint32_t>{0, 0, 0x0400a000});
    CHECK(wire(p) == std::vector<std::uint32_t>{0, 0, 0x0400a000, 0xd40a9d55});

    r.addr.length = 1;
    r.addr.seq = 1;
    p = take(encode(r));
    CHECK(wire(p) == std::vector<std::uint32_t>{0, 0, 0x0c002000, 0xd98d044a});

    auto back = take(decode_read_request(p.payload()));
    CHECK(back.route == 0);
    CHECK(back.addr.length == 1);
    CHECK(back.addr.seq == 1);
    CHECK(back.addr.space == Space::router);
}

TEST_CASE("plug ack matches Appendix A", "[unit][usb4][packets]") {
    auto p = take(encode(plug_ack(hw::usb4::kRouteFromPeer, 2, false)));
    CHECK(p.pdf == 3);
    CHECK(wire(p) == std::vector<std::uint32_t>{0, 0, 0x80000207, 0x8a4f2867});
    auto e = take(decode_error(p.payload()));
    CHECK(e.code == 7);
    CHECK(e.port == 2);
    CHECK(e.pg == hw::usb4::kPgPlug);
    CHECK_FALSE(e.is_async());
    CHECK(plug_ack(0x0102, 3, true).pg == hw::usb4::kPgUnplug);
}

TEST_CASE("config responses need the 0x200 tag and echo their size", "[unit][usb4][packets]") {
    const std::array<std::uint32_t, 3> data{7, 8, 9};
    ReadResponse rr;
    rr.route = 0x0302;
    rr.addr = {Space::adapter, 5, 0x100, 3, 2};
    rr.data = data;
    auto p = take(encode(rr));
    CHECK(p.pdf == 2);
    CHECK(p.dword_count == 6);
    CHECK(p.dwords[0] == 0x80000000u);  // tag 0x200 on DW0[31:22]
    auto back = take(decode_read_response(p.payload()));
    CHECK(back.route == (0x0302 | hw::usb4::kRouteFromPeer));
    CHECK(route_key(back.route) == 0x0302);
    CHECK(back.addr.port == 5);
    CHECK(back.addr.offset == 0x100);
    CHECK(back.addr.space == Space::adapter);
    CHECK(back.addr.seq == 2);
    CHECK(std::vector<std::uint32_t>(back.data.begin(), back.data.end()) ==
          std::vector<std::uint32_t>{7, 8, 9});

    // The generic decoder tells PDF 2 request from response by the tag.
    auto any = take(decode(2, p.payload()));
    CHECK(std::holds_alternative<ReadResponse>(any));

    // A read response without the tag is not a response.
    auto raw = dw(p);
    raw[0] &= ~0x80000000u;
    CHECK(is_malformed(decode_read_response(raw).error()));
    CHECK(std::holds_alternative<WriteRequest>(take(decode(2, raw))));
    // Size not 3 + length.
    raw = dw(p);
    raw.pop_back();
    CHECK(is_malformed(decode_read_response(raw).error()));
    raw = dw(p);
    raw.push_back(0);
    CHECK(is_malformed(decode_read_response(raw).error()));
    // Reserved DW0 bits, reserved address bits, zero length.
    raw = dw(p);
    raw[0] |= 1u << 22;
    CHECK(is_malformed(decode_read_response(raw).error()));
    raw = dw(p);
    raw[2] |= 1u << 29;
    CHECK(is_malformed(decode_read_response(raw).error()));
    raw = {0x80000000u, 0, 0x04000000u};
    CHECK(is_malformed(decode_write_response(raw).error()));  // length 0
    raw = {0x80000000u, 0, hw::usb4::ADDR_LENGTH::make(61)};
    CHECK(is_malformed(decode_write_response(raw).error()));  // length 61 > 60

    WriteResponse wr;
    wr.route = 1;
    wr.addr = {Space::path, 1, 16, 2, 3};
    p = take(encode(wr));
    CHECK(p.pdf == 1);
    auto wb = take(decode_write_response(p.payload()));
    CHECK(wb.addr.length == 2);
    CHECK(wb.addr.space == Space::path);
    CHECK(std::holds_alternative<WriteResponse>(take(decode(1, p.payload()))));
    CHECK(is_malformed(decode_read_request(p.payload()).error()));  // tag set
}

TEST_CASE("write requests carry exactly length dwords", "[unit][usb4][packets]") {
    std::vector<std::uint32_t> data(60, 0xabcd);
    WriteRequest w;
    w.route = 0x0203;
    w.addr = {Space::adapter, 3, 0x39, 60, 0};
    w.data = data;
    auto p = take(encode(w));
    CHECK(p.dword_count == 63);
    auto back = take(decode_write_request(p.payload()));
    CHECK(back.data.size() == 60);
    CHECK(back.route == 0x0203);

    data.push_back(1);  // 61 dwords do not fit the 60 limit
    w.data = data;
    w.addr.length = 61;
    CHECK(encode(w).error() == std::errc::invalid_argument);
    w.addr.length = 60;  // length field disagrees with the data
    CHECK(encode(w).error() == std::errc::invalid_argument);
}

TEST_CASE("encoders refuse fields that do not fit", "[unit][usb4][packets]") {
    ReadRequest r;
    r.addr.length = 1;
    r.addr.port = 64;
    CHECK_FALSE(encode(r));
    r.addr.port = 0;
    r.addr.offset = 8192;
    CHECK_FALSE(encode(r));
    r.addr.offset = 0;
    r.addr.seq = 4;
    CHECK_FALSE(encode(r));
    r.addr.seq = 0;
    r.addr.length = 0;
    CHECK_FALSE(encode(r));
    r.addr.length = 1;
    r.route = std::uint64_t{1} << 54;
    CHECK_FALSE(encode(r));
    r.route = 0;
    r.addr.space = static_cast<Space>(4);
    CHECK_FALSE(encode(r));
    r.addr.space = Space::counters;
    CHECK(encode(r));
    HotPlugEvent e;
    e.port = 64;
    CHECK_FALSE(encode(e));
    ErrorPacket ep;
    ep.pg = 4;
    CHECK_FALSE(encode(ep));
}

TEST_CASE("error, notify ack and hot-plug events round trip; reserved bits refused",
          "[unit][usb4][packets]") {
    ErrorPacket e;
    e.route = 0x0102 | hw::usb4::kRouteFromPeer;
    e.code = static_cast<std::uint8_t>(ErrorCode::lock);
    e.port = 9;
    auto p = take(encode(e));
    CHECK(p.dwords[0] == 0x80000000u);
    auto eb = take(decode_error(p.payload()));
    CHECK(eb.route == e.route);
    CHECK(eb.code == 15);
    CHECK(eb.port == 9);
    auto raw = dw(p);
    raw[2] |= 1u << 14;
    CHECK(is_malformed(decode_error(raw).error()));
    raw.pop_back();
    CHECK(is_malformed(decode_error(raw).error()));
    for (unsigned c : {1u, 12u, 13u, 32u, 35u, 39u}) {
        CHECK(ErrorPacket{0, static_cast<std::uint8_t>(c), 0, 0}.is_async());
    }
    for (unsigned c : {0u, 2u, 4u, 8u, 15u, 40u}) {
        CHECK_FALSE(ErrorPacket{0, static_cast<std::uint8_t>(c), 0, 0}.is_async());
    }

    auto na = take(encode(NotifyAck{0x01}));
    CHECK(na.pdf == 4);
    CHECK(na.dword_count == 2);
    CHECK(take(decode_notify_ack(na.payload())).route == 1);
    raw = dw(na);
    raw.push_back(0);
    CHECK(is_malformed(decode_notify_ack(raw).error()));

    HotPlugEvent ev;
    ev.route = hw::usb4::kRouteFromPeer;
    ev.port = 3;
    ev.unplug = true;
    p = take(encode(ev));
    CHECK(p.pdf == 5);
    CHECK(p.dwords[2] == 0x80000003u);
    auto evb = take(decode_event(p.payload()));
    CHECK(evb.port == 3);
    CHECK(evb.unplug);
    raw = dw(p);
    raw[2] |= 1u << 6;
    CHECK(is_malformed(decode_event(raw).error()));
    raw = dw(p);
    raw[0] |= 1u << 30;
    CHECK(is_malformed(decode_event(raw).error()));
}

TEST_CASE("generic decode refuses unknown PDFs and short input", "[unit][usb4][packets]") {
    const std::array<std::uint32_t, 3> three{0, 0, 0};
    for (unsigned pdf : {0u, 8u, 9u, 10u, 11u, 12u, 13u, 15u, 16u, 255u}) {
        CHECK(is_malformed(decode(pdf, three).error()));
    }
    CHECK(is_malformed(decode(1, std::span(three).first(1)).error()));
    CHECK(is_malformed(decode(1, {}).error()));
    CHECK(is_malformed(decode_xdomain(6, std::span(three).first(0)).error()));
}

TEST_CASE("XDomain UUIDs have the dword values of ref 8.5", "[unit][usb4][uuid]") {
    CHECK(uuid_from_string("b638d70e-42ff-40bb-97c2-90e2c0b2ff07") ==
          UuidDwords{0x0ed738b6, 0xbb40ff42, 0xe290c297, 0x07ffb2c0});
    CHECK(uuid_from_string("798f589e-3616-8a47-97c6-5664a920c8dd") ==
          UuidDwords{0x9e588f79, 0x478a1636, 0x6456c697, 0xddc820a9});
    CHECK(uuid_from_string("c66189ca-1cce-4195-bdb8-49592e5f5a4f") ==
          UuidDwords{0xca8961c6, 0x9541ce1c, 0x5949b8bd, 0x4f5a5f2e});
    CHECK(uuid_from_string("3188cd10-6523-4a5a-a682-fdca07a248d8") ==
          UuidDwords{0x10cd8831, 0x5a4a2365, 0xcafd82a6, 0xd848a207});
    CHECK(uuid_to_string(hw::usb4::kXdomainDiscoveryUuid) ==
          "b638d70e-42ff-40bb-97c2-90e2c0b2ff07");
    CHECK_FALSE(uuid_from_string("b638d70e-42ff-40bb-97c2-90e2c0b2ff0"));
    CHECK_FALSE(uuid_from_string("b638d70e-42ff-40bb-97c2x90e2c0b2ff07"));
    CHECK_FALSE(uuid_from_string("g638d70e-42ff-40bb-97c2-90e2c0b2ff07"));
    // On the wire (big-endian dwords) the first group reads 0e d7 38 b6.
    XdomainPacket x;
    x.protocol = hw::usb4::kXdomainDiscoveryUuid;
    auto p = take(encode(x));
    CHECK(wire(p)[3] == 0x0ed738b6u);
}

TEST_CASE("XDomain framing checks length, sequence and reserved bits", "[unit][usb4][xdomain]") {
    const std::array<std::uint32_t, 2> pl{5, 6};
    XdomainPacket x;
    x.pdf = Pdf::xdomain_resp;
    x.route = 0x02;
    x.seq = 3;
    x.protocol = kA;
    x.type = 0x1234;
    x.payload = pl;
    auto p = take(encode(x));
    CHECK(p.pdf == 7);
    CHECK(p.dword_count == 10);
    CHECK(p.dwords[2] == (7u | 3u << 27));  // length = dwords after DW2
    auto b = take(decode_xdomain(7, p.payload()));
    CHECK(b.pdf == Pdf::xdomain_resp);
    CHECK(b.route == 0x02);
    CHECK(b.seq == 3);
    CHECK(b.protocol == kA);
    CHECK(b.type == 0x1234u);
    CHECK(b.payload.size() == 2);
    CHECK(std::holds_alternative<XdomainPacket>(take(decode(7, p.payload()))));

    auto raw = dw(p);
    raw[2] = (raw[2] & ~0x3fu) | 6u;  // length field off by one
    CHECK(is_malformed(decode_xdomain(7, raw).error()));
    raw = dw(p);
    raw[2] |= 1u << 6;
    CHECK(is_malformed(decode_xdomain(7, raw).error()));
    raw = dw(p);
    raw[2] |= 1u << 31;
    CHECK(is_malformed(decode_xdomain(7, raw).error()));
    raw = dw(p);
    CHECK(is_malformed(decode_xdomain(5, raw).error()));
    raw.resize(7);
    raw[2] = 4;
    CHECK(is_malformed(decode_xdomain(7, raw).error()));  // no type dword

    std::vector<std::uint32_t> big(kMaxXdPayload + 1);
    x.payload = big;
    CHECK_FALSE(encode(x));
    x.payload = std::span(big).first(kMaxXdPayload);
    CHECK(take(encode(x)).dword_count == 63);
    x.seq = 4;
    CHECK_FALSE(encode(x));
}

TEST_CASE("XDomain discovery messages round trip with the lengths of ref 8.2",
          "[unit][usb4][xdomain]") {
    const std::array<std::uint32_t, 3> chunk{0x55584401, 2, 9};
    XdPropertiesResponse pr;
    pr.src_uuid = kA;
    pr.dst_uuid = kB;
    pr.offset = 3;
    pr.total = 10;
    pr.generation = 77;
    pr.data = chunk;
    struct Case {
        XdMessage m;
        unsigned len;  // ref §8.2 "total len field"
        unsigned pdf;
        std::uint32_t type;
    };
    const std::vector<Case> cases{
        {XdUuidRequest{}, 5, 6, 12},
        {XdUuidRequest{true}, 5, 6, 1},
        {XdUuidResponse{kA, 0x0000000200000003}, 11, 7, 2},
        {XdPropertiesRequest{kA, kB, 45}, 14, 6, 3},
        {pr, 15 + 3, 7, 4},
        {XdPropertiesChangedRequest{kB}, 9, 6, 5},
        {XdPropertiesChangedResponse{}, 5, 7, 6},
        {XdErrorResponse{XdError::not_ready}, 6, 7, 7},
        {XdLinkStateStatusRequest{}, 5, 6, 15},
        {XdLinkStateStatusResponse{0, 1, 3, 0xc, 8}, 7, 7, 16},
        {XdLinkStateChangeRequest{3, 4}, 6, 6, 17},
        {XdLinkStateChangeResponse{1}, 6, 7, 18},
    };
    for (const auto& c : cases) {
        auto p = take(encode_discovery(0x0002 | hw::usb4::kRouteFromPeer, 2, c.m));
        INFO("type " << c.type);
        CHECK(p.pdf == c.pdf);
        CHECK((p.dwords[2] & 0x3f) == c.len);
        CHECK(p.dwords[7] == c.type);
        auto x = take(decode_xdomain(p.pdf, p.payload()));
        CHECK(x.seq == 2);
        auto m = take(decode_discovery(x));
        REQUIRE(m.index() == c.m.index());
        // Re-encoding the decoded message gives the same dwords.
        auto again = take(encode_discovery(x.route, x.seq, m));
        CHECK(dw(again) == dw(p));
        // One dword more is refused (a properties response just carries one more data dword).
        auto raw = dw(p);
        raw.push_back(0);
        raw[2] += 1;
        auto longer = take(decode_xdomain(p.pdf, raw));
        CHECK(is_malformed(decode_discovery(longer).error()) == (c.type != 4));
        // Wrong PDF for the type.
        auto flipped = x;
        flipped.pdf = x.pdf == Pdf::xdomain_req ? Pdf::xdomain_resp : Pdf::xdomain_req;
        CHECK(is_malformed(decode_discovery(flipped).error()));
        // Another protocol.
        auto other = x;
        other.protocol = kA;
        CHECK(is_malformed(decode_discovery(other).error()));
    }
    auto lss = std::get<XdLinkStateStatusResponse>(take(decode_discovery(take(decode_xdomain(
        7, take(encode_discovery(0, 0, XdLinkStateStatusResponse{0, 1, 3, 0xc, 8})).payload())))));
    CHECK(lss.slw == 1);
    CHECK(lss.tlw == 3);
    CHECK(lss.sls == 0xc);
    CHECK(lss.tls == 8);
}

TEST_CASE("XDomain discovery decoders refuse out-of-range fields", "[unit][usb4][xdomain]") {
    const auto decode_raw = [](std::vector<std::uint32_t> raw, unsigned pdf) {
        auto x = decode_xdomain(pdf, raw);
        REQUIRE(x);
        return decode_discovery(*x).error();
    };
    // Properties response: offset + data beyond total, total above 500.
    const std::array<std::uint32_t, 4> chunk{1, 2, 3, 4};
    XdPropertiesResponse pr;
    pr.total = 4;
    pr.data = chunk;
    auto p = take(encode_discovery(0, 0, pr));
    auto raw = dw(p);
    CHECK_FALSE(decode_raw(raw, 7));
    raw[8 + 8] = hw::usb4::XD_PROP_OFFSET::make(1) | hw::usb4::XD_PROP_TOTAL::make(4);
    CHECK(is_malformed(decode_raw(raw, 7)));
    raw[8 + 8] = hw::usb4::XD_PROP_TOTAL::make(501);
    CHECK(is_malformed(decode_raw(raw, 7)));
    pr.offset = 1;
    CHECK_FALSE(encode_discovery(0, 0, pr));  // the encoder checks the same
    std::vector<std::uint32_t> big(46);
    pr.offset = 0;
    pr.total = 100;
    pr.data = big;
    CHECK_FALSE(encode_discovery(0, 0, pr));

    // Properties request: reserved offset bits.
    p = take(encode_discovery(0, 0, XdPropertiesRequest{kA, kB, 0}));
    raw = dw(p);
    raw[16] |= 1u << 16;
    CHECK(is_malformed(decode_raw(raw, 6)));
    // Error response code beyond 4.
    p = take(encode_discovery(0, 0, XdErrorResponse{XdError::not_ready}));
    raw = dw(p);
    raw[8] = 5;
    CHECK(is_malformed(decode_raw(raw, 7)));
    // Link state change request: reserved bits.
    p = take(encode_discovery(0, 0, XdLinkStateChangeRequest{3, 2}));
    raw = dw(p);
    raw[8] |= 1u << 16;
    CHECK(is_malformed(decode_raw(raw, 6)));
    // Unknown type.
    p = take(encode_discovery(0, 0, XdUuidRequest{}));
    raw = dw(p);
    raw[7] = 99;
    CHECK(is_malformed(decode_raw(raw, 6)));
    // Sequence beyond 3.
    CHECK_FALSE(encode_discovery(0, 4, XdUuidRequest{}));
}
