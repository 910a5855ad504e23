// SPDX-License-Identifier: Apache-2.0
// util: CRC-32C golden vectors, big-endian helpers, typed fields, Result.
#include <array>
#include <cstring>
#include <string_view>
#include <vector>

#include "catch.hpp"
#include "tbv/result.hpp"
#include "util/crc32c.hpp"
#include "util/endian.hpp"
#include "util/field.hpp"

using namespace tbv;

namespace {

std::vector<std::byte> wire(std::initializer_list<std::uint32_t> dwords) {
    std::vector<std::byte> out(dwords.size() * 4);
    std::size_t i = 0;
    for (auto d : dwords) {
        util::store_be32(out.data() + 4 * i++, d);
    }
    return out;
}

}  // namespace

TEST_CASE("crc32c check value", "[unit][crc]") {
    constexpr std::string_view s = "123456789";
    auto bytes = std::as_bytes(std::span(s.data(), s.size()));
    CHECK(util::crc32c(bytes) == 0xE3069283u);
    CHECK(util::crc32c({}) == 0u);
}

TEST_CASE("crc32c chaining equals one pass", "[unit][crc]") {
    std::array<std::byte, 301> buf{};
    for (std::size_t i = 0; i < buf.size(); ++i) {
        buf[i] = static_cast<std::byte>(i * 7 + 3);
    }
    const auto whole = util::crc32c(buf);
    for (std::size_t cut : {0u, 1u, 7u, 8u, 9u, 150u, 300u, 301u}) {
        auto first = util::crc32c(std::span(buf).first(cut));
        CHECK(util::crc32c(std::span(buf).subspan(cut), first) == whole);
    }
}

TEST_CASE("crc32c matches the control-packet vectors of the reference appendix", "[unit][crc]") {
    // nhi-reference Appendix A: header + address dwords, CRC over the big-endian bytes.
    CHECK(util::crc32c(wire({0x00000000, 0x00000000, 0x0400a000})) == 0xd40a9d55u);
    CHECK(util::crc32c(wire({0x00000000, 0x00000000, 0x0c002000})) == 0xd98d044au);
    CHECK(util::crc32c(wire({0x00000000, 0x00000000, 0x80000207})) == 0x8a4f2867u);
}

TEST_CASE("big-endian load/store", "[unit][endian]") {
    std::array<std::byte, 4> b{};
    util::store_be32(b.data(), 0x11223344u);
    CHECK(b[0] == std::byte{0x11});
    CHECK(b[3] == std::byte{0x44});
    CHECK(util::load_be32(b.data()) == 0x11223344u);
}

TEST_CASE("typed fields preserve other bits", "[unit][field]") {
    using F = util::Field<19, 16>;
    CHECK(F::get(0x000a0000u) == 0xau);
    CHECK(F::set(0xffffffffu, 0) == 0xfff0ffffu);
    CHECK(F::make(0x1f) == 0x000f0000u);  // truncated to the field width
    CHECK_FALSE(F::fits(16));
    CHECK(F::fits(15));
}

TEST_CASE("Result carries values and error codes", "[unit][result]") {
    Result<int> good = 5;
    REQUIRE(good);
    CHECK(*good == 5);
    Result<int> bad = fail(Errc::ring_full);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == Errc::ring_full);
    CHECK(bad.error().message() == "ring has no free descriptor");
    Result<void> v = fail(std::errc::invalid_argument);
    CHECK(v.error() == std::errc::invalid_argument);
    CHECK(ok().has_value());
}
