// SPDX-License-Identifier: Apache-2.0
// XDomain property blocks (nhi-reference §8.3, §8.5, Appendix A key dwords).
#include <vector>

#include "catch.hpp"
#include "usb4/properties.hpp"

using namespace tbv;
using namespace tbv::usb4;

namespace {

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

bool is_malformed(const std::vector<std::uint32_t>& block) {
    return parse_properties(block).error() == Errc::malformed;
}

constexpr std::uint32_t kValue = 0x76000001;  // type 'v', length 1
constexpr std::uint32_t kText3 = 0x74000003;  // type 't', length 3
constexpr std::uint32_t kText2 = 0x74000002;
constexpr std::uint32_t kDir20 = 0x44000014;  // type 'D', length 4 + 4·4

/// A root directory shaped like Linux's (ref §8.3) with a "network" service, built by hand:
/// 7 entries at 2..29, "Intel Corp." at 30..32, "host" at 33..34, one padding dword at 35, the
/// network directory (UUID + 4 entries) at 36..55.
std::vector<std::uint32_t> linux_block() {
    // clang-format off
    return {
        0x55584401, 28,
        // vendorid 'v' 0x8086
        0x76656e64, 0x6f726964, kValue, 0x8086,
        // vendorid 't' "Intel Corp."
        0x76656e64, 0x6f726964, kText3, 30,
        // deviceid 'v' 1
        0x64657669, 0x63656964, kValue, 0x1,
        // devicerv 'v'
        0x64657669, 0x63657276, kValue, 0x80000100,
        // network 'D'
        0x6e657477, 0x6f726b00, kDir20, 36,
        // deviceid 't' "host"
        0x64657669, 0x63656964, kText2, 33,
        // maxhopid 'v' 11
        0x6d617868, 0x6f706964, kValue, 11,
        // 30: "Intel Corp."
        0x496e7465, 0x6c20436f, 0x72702e00,
        // 33: "host"
        0x686f7374, 0x00000000,
        // 35: padding
        0,
        // 36: network directory UUID c66189ca-1cce-4195-bdb8-49592e5f5a4f (ref §8.5)
        0xca8961c6, 0x9541ce1c, 0x5949b8bd, 0x4f5a5f2e,
        0x70727463, 0x69640000, kValue, 1,  // prtcid
        0x70727463, 0x76657273, kValue, 1,  // prtcvers
        0x70727463, 0x72657673, kValue, 1,  // prtcrevs
        0x70727463, 0x73746e73, kValue, 2,  // prtcstns
    };
    // clang-format on
}

HostInfo linux_host() {
    HostInfo h;
    h.vendor_id = 0x8086;
    h.vendor_name = "Intel Corp.";
    h.device_id = 1;
    h.device_rev = 0x80000100;
    h.device_name = "host";
    h.max_hop_id = 11;
    ServiceInfo net;
    net.key = "network";
    net.uuid = *uuid_from_string("c66189ca-1cce-4195-bdb8-49592e5f5a4f");
    net.prtcid = net.prtcvers = net.prtcrevs = 1;
    net.prtcstns = 2;
    h.services.push_back(net);
    return h;
}

/// Root → dir → dir … `dirs` levels below the root, each directory one entry; the last holds a
/// value. Directory k sits at 6 + 8(k−1).
std::vector<std::uint32_t> chain_block(unsigned dirs) {
    std::vector<std::uint32_t> b{0x55584401, 4, 0x64000000, 0, 0x44000008, 6};
    for (unsigned k = 1; k <= dirs; ++k) {
        b.insert(b.end(), {0, 0, 0, k});  // UUID
        if (k < dirs) {
            b.insert(b.end(), {0x64000000, 0, 0x44000008, 6 + 8 * k});
        } else {
            b.insert(b.end(), {0x76000000, 0, kValue, 42});
        }
    }
    return b;
}

}  // namespace

TEST_CASE("a Linux-shaped directory parses and our encoder reproduces it exactly",
          "[unit][usb4][properties]") {
    const auto block = linux_block();
    auto root = take(parse_properties(block));
    auto host = take(read_host_directory(root));
    CHECK(host.vendor_id == 0x8086);
    CHECK(host.vendor_name == "Intel Corp.");
    CHECK(host.device_id == 1);
    CHECK(host.device_name == "host");
    CHECK(host.device_rev == 0x80000100u);
    CHECK(host.max_hop_id == 11);
    REQUIRE(host.services.size() == 1);
    CHECK(host.services[0].key == "network");
    CHECK(host.services[0].uuid == UuidDwords{0xca8961c6, 0x9541ce1c, 0x5949b8bd, 0x4f5a5f2e});
    CHECK(host.services[0].prtcid == 1);
    CHECK(host.services[0].prtcstns == 2);

    // Same tree from the builder → byte-identical block (entry order, leaves, padding, sub-dir).
    CHECK(take(encode_properties(build_host_directory(linux_host()))) == block);
}

TEST_CASE("our root directory carries the tbverbs service and round trips",
          "[unit][usb4][properties]") {
    HostInfo h;
    h.vendor_id = 0x1022;
    h.vendor_name = "tbverbs";
    h.device_id = 0x1;
    h.device_name = "strix-halo-a";
    h.device_rev = 0x1;
    h.max_hop_id = 2;
    h.services.push_back(tbverbs_service(0x5));
    const auto block = take(encode_properties(build_host_directory(h)));
    // Appendix A key dwords, natural ASCII order on the wire.
    CHECK(block[0] == 0x55584401u);
    CHECK(block[2] == 0x76656e64u);
    CHECK(block[3] == 0x6f726964u);
    auto back = take(read_host_directory(take(parse_properties(block))));
    CHECK(back.vendor_id == 0x1022);
    CHECK(back.vendor_name == "tbverbs");
    CHECK(back.device_name == "strix-halo-a");
    CHECK(back.max_hop_id == 2);
    REQUIRE(back.services.size() == 1);
    CHECK(back.services[0].key == "tbverbs");
    CHECK(back.services[0].uuid == kTbverbsServiceUuid);
    CHECK(back.services[0].prtcid == kTbverbsProtocolId);
    CHECK(back.services[0].prtcvers == kTbverbsProtocolVersion);
    CHECK(back.services[0].prtcstns == 0x5);
    CHECK(uuid_to_string(kTbverbsServiceUuid) == "f2bbf54c-904d-4a21-9e43-cfc88c7d99d2");

    // Data leaves and nested directories survive too.
    PropertyDir root = build_host_directory(h);
    PropertyDir inner;
    inner.uuid = {1, 2, 3, 4};
    inner.add_data("blob", {1, 2, 3, 4, 5}).add_text("t", "");
    PropertyDir mid;
    mid.uuid = {5, 6, 7, 8};
    mid.add_dir("inner", inner).add_value("x", 9);
    root.add_dir("mid", mid);
    auto parsed = take(parse_properties(take(encode_properties(root))));
    const Property* m = parsed.find("mid", PropertyType::directory);
    REQUIRE(m != nullptr);
    CHECK(m->dir.uuid == UuidDwords{5, 6, 7, 8});
    const Property* in = m->dir.find("inner", PropertyType::directory);
    REQUIRE(in != nullptr);
    const Property* blob = in->dir.find("blob", PropertyType::data);
    REQUIRE(blob != nullptr);
    CHECK(blob->data == std::vector<std::uint8_t>{1, 2, 3, 4, 5, 0, 0, 0});
    REQUIRE(in->dir.find("t", PropertyType::text) != nullptr);
    CHECK(in->dir.find("t", PropertyType::text)->text.empty());
    // A peer's directory without maxhopid reads as 15.
    PropertyDir minimal;
    minimal.add_value("vendorid", 1).add_value("deviceid", 2);
    CHECK(take(read_host_directory(minimal)).max_hop_id == 15);
    PropertyDir incomplete;
    incomplete.add_value("vendorid", 1);
    CHECK(read_host_directory(incomplete).error() == Errc::malformed);
}

TEST_CASE("the encoder refuses bad keys and oversized trees", "[unit][usb4][properties]") {
    PropertyDir d;
    d.add_value("toolongkey", 1);
    CHECK(encode_properties(d).error() == std::errc::invalid_argument);
    d.entries.clear();
    d.add_value("", 1);
    CHECK(encode_properties(d).error() == std::errc::invalid_argument);
    d.entries.clear();
    d.add_value("sp ace", 1);
    CHECK(encode_properties(d).error() == std::errc::invalid_argument);
    d.entries.clear();
    d.add_text("t", std::string("a\0b", 3));
    CHECK(encode_properties(d).error() == std::errc::invalid_argument);
    d.entries.clear();
    d.add_data("d", {});
    CHECK(encode_properties(d).error() == std::errc::invalid_argument);
    d.entries.clear();
    d.add_data("d", std::vector<std::uint8_t>(2000, 1));
    CHECK(encode_properties(d).error() == std::errc::message_size);
    // Depth: root + 3 levels is fine, + 4 is not.
    PropertyDir leaf;
    leaf.add_value("v", 1);
    PropertyDir cur = leaf;
    for (int i = 0; i < 3; ++i) {
        PropertyDir up;
        up.add_dir("d", cur);
        cur = up;
    }
    CHECK(encode_properties(cur));
    PropertyDir deeper;
    deeper.add_dir("d", cur);
    CHECK(encode_properties(deeper).error() == std::errc::message_size);
}

TEST_CASE("malformed property blocks are rejected", "[unit][usb4][properties]") {
    const auto good = linux_block();
    REQUIRE(parse_properties(good));
    auto b = good;

    SECTION("header") {
        b[0] ^= 1;
        CHECK(is_malformed(b));
        CHECK(is_malformed({}));
        CHECK(is_malformed({0x55584401}));
        b = good;
        b[1] = 29;  // not a multiple of 4
        CHECK(is_malformed(b));
        b[1] = 56;  // entries past the end of the block
        CHECK(is_malformed(b));
        b[1] = 0xffffffff;
        CHECK(is_malformed(b));
        CHECK(parse_properties(std::vector<std::uint32_t>{0x55584401, 0}));  // empty root is fine
    }
    SECTION("oversized block") {
        b.resize(501, 0);
        CHECK(is_malformed(b));
        b.resize(500);
        CHECK(parse_properties(b));  // trailing slack is allowed up to 500
    }
    SECTION("keys") {
        b[2] = 0x00656e64;  // starts with NUL
        CHECK(is_malformed(b));
        b = good;
        b[3] = 0x6f720064;  // NUL then a character
        CHECK(is_malformed(b));
        b = good;
        b[3] = 0x6f72690a;  // control character
        CHECK(is_malformed(b));
    }
    SECTION("entry fields") {
        b[4] = 0x76000002;  // value with length 2
        CHECK(is_malformed(b));
        b = good;
        b[4] = 0x77000001;  // unknown type
        CHECK(is_malformed(b));
        b = good;
        b[4] = 0x76010001;  // reserved bits
        CHECK(is_malformed(b));
        b = good;
        b[8] = 0x74000000;  // text of length 0
        CHECK(is_malformed(b));
    }
    SECTION("leaves out of bounds or over a header") {
        b[9] = 54;  // text 54..56 runs past the 56-dword block
        CHECK(is_malformed(b));
        b[9] = 0xfffffffe;  // offset + length wraps in 32 bits
        CHECK(is_malformed(b));
        b[9] = 0;  // into the root header
        CHECK(is_malformed(b));
        b[9] = 10;  // into the root entries
        CHECK(is_malformed(b));
        b[9] = 53;  // inside the network directory: not an ancestor, allowed
        CHECK(parse_properties(b));
    }
    SECTION("directories out of bounds, looping or pointing at an ancestor") {
        b[20] = 0x44000018;  // one entry more than the block holds
        CHECK(is_malformed(b));
        b = good;
        b[20] = 0x44000003;  // shorter than its UUID
        CHECK(is_malformed(b));
        b = good;
        b[20] = 0x44000013;  // entries not a multiple of 4
        CHECK(is_malformed(b));
        b = good;
        b[21] = 2;  // the root's own entries
        CHECK(is_malformed(b));
        b[21] = 0;  // the root header
        CHECK(is_malformed(b));
        b = good;
        // The network dir's prtcid entry becomes a directory pointing at the network dir itself.
        b[42] = kDir20;
        b[43] = 36;
        CHECK(is_malformed(b));
        // … or at the root.
        b[42] = 0x44000020;
        b[43] = 0;
        CHECK(is_malformed(b));
    }
}

TEST_CASE("nesting depth and total entry count are bounded", "[unit][usb4][properties]") {
    CHECK(parse_properties(chain_block(3)));  // root + 3 levels
    auto deep = parse_properties(chain_block(4));
    CHECK(deep.error() == Errc::malformed);

    // 60 root entries that all name the same 60-entry directory: 3660 entries if followed.
    std::vector<std::uint32_t> b{0x55584401, 240};
    const std::uint32_t dir_at = 2 + 240;
    for (unsigned i = 0; i < 60; ++i) {
        b.insert(b.end(), {0x64000000 + ((0x41 + i) << 16), 0, 0x440000f4, dir_at});
    }
    b.insert(b.end(), {0, 0, 0, 0});
    for (unsigned i = 0; i < 60; ++i) {
        b.insert(b.end(), {0x76000000 + ((0x41 + i) << 16), 0, kValue, i});
    }
    REQUIRE(b.size() <= 500);
    CHECK(is_malformed(b));
    // The same directory named by three entries is fine (180 entries).
    b[1] = 12;
    std::vector<std::uint32_t> small(b.begin(), b.begin() + 14);
    small.insert(small.end(), b.begin() + dir_at, b.end());
    for (unsigned i = 0; i < 3; ++i) {
        small[2 + 4 * i + 3] = 14;
    }
    auto ok = take(parse_properties(small));
    CHECK(ok.entries.size() == 3);
    CHECK(ok.entries[2].dir.entries.size() == 60);
}

TEST_CASE("property chunks and reassembly", "[unit][usb4][properties]") {
    std::vector<std::uint32_t> block(100);
    for (unsigned i = 0; i < block.size(); ++i) {
        block[i] = i * 3 + 1;
    }
    CHECK(property_chunk(block, 0)->size() == 45);
    CHECK(property_chunk(block, 45)->size() == 45);
    CHECK(property_chunk(block, 90)->size() == 10);
    CHECK(property_chunk(block, 100)->empty());
    CHECK_FALSE(property_chunk(block, 101));

    const auto response = [&](unsigned offset, std::uint32_t gen = 7) {
        XdPropertiesResponse r;
        r.offset = static_cast<std::uint16_t>(offset);
        r.total = 100;
        r.generation = gen;
        r.data = *property_chunk(block, offset);
        return r;
    };
    PropertyAssembler a;
    CHECK_FALSE(take(a.add(response(0))));
    CHECK(a.next_offset() == 45);
    CHECK_FALSE(take(a.add(response(45))));
    CHECK(take(a.add(response(90))));
    CHECK(a.complete());
    CHECK(a.generation() == 7);
    CHECK(std::equal(block.begin(), block.end(), a.block().begin(), a.block().end()));

    a.reset();
    CHECK(a.add(response(45)).error() == Errc::malformed);  // must start at 0
    REQUIRE(a.add(response(0)));
    CHECK(a.add(response(45, 8)).error() == Errc::malformed);  // generation changed
    CHECK(a.next_offset() == 0);                               // and it started over
    REQUIRE(a.add(response(0)));
    CHECK(a.add(response(0)).error() == Errc::malformed);  // repeated chunk
    REQUIRE(a.add(response(0)));
    auto empty = response(45);
    empty.data = {};
    CHECK(a.add(empty).error() == Errc::malformed);
}
