// SPDX-License-Identifier: Apache-2.0
// Control-packet framing of ring 0 (nhi-reference §5.1, Appendix A): big-endian dwords + CRC-32C.
#include <array>
#include <vector>

#include "catch.hpp"
#include "nhi/control_ring.hpp"
#include "util/endian.hpp"

using namespace tbv;
using nhi::ControlRing;

namespace {

std::vector<std::byte> bytes_of(std::initializer_list<std::uint32_t> be_dwords) {
    std::vector<std::byte> out(be_dwords.size() * 4);
    std::size_t i = 0;
    for (auto d : be_dwords) {
        util::store_be32(out.data() + 4 * i++, d);
    }
    return out;
}

}  // namespace

TEST_CASE("encode produces the reference wire bytes", "[unit][control]") {
    std::array<std::byte, 256> buf{};
    // Appendix A: READ route 0, router space, offset 0, len 5, seq 0.
    const std::array<std::uint32_t, 3> read5{0, 0, 0x0400a000};
    REQUIRE(ControlRing::encode(read5, buf) == 16);
    CHECK(std::equal(buf.begin(), buf.begin() + 16,
                     bytes_of({0x00000000, 0x00000000, 0x0400a000, 0xd40a9d55}).begin()));
    // Plug ack route 0, adapter 2, PG=2.
    const std::array<std::uint32_t, 3> ack{0, 0, 0x80000207};
    REQUIRE(ControlRing::encode(ack, buf) == 16);
    CHECK(util::load_be32(buf.data() + 12) == 0x8a4f2867u);
}

TEST_CASE("encode refuses empty, oversized and too-small buffers", "[unit][control]") {
    std::array<std::byte, 256> buf{};
    std::vector<std::uint32_t> big(64, 1);
    CHECK(ControlRing::encode({}, buf) == 0);
    CHECK(ControlRing::encode(big, buf) == 0);
    CHECK(ControlRing::encode(std::span(big).first(63), buf) == 256);
    const std::array<std::uint32_t, 3> three{1, 2, 3};
    CHECK(ControlRing::encode(three, std::span(buf).first(15)) == 0);
}

TEST_CASE("decode accepts a good packet and rejects every malformed shape", "[unit][control]") {
    auto good = bytes_of({0x00000000, 0x00000000, 0x0c002000, 0xd98d044a});
    auto p = ControlRing::decode(0, 1, good);
    REQUIRE(p);
    CHECK(p->pdf == 1);
    CHECK(p->dword_count == 3);
    CHECK(p->dwords[2] == 0x0c002000u);

    auto bad_crc = good;
    bad_crc[5] ^= std::byte{0x40};
    CHECK(ControlRing::decode(0, 1, bad_crc).error() == Errc::crc_mismatch);
    CHECK(ControlRing::decode(1, 1, good).error() == Errc::malformed);  // SOF must be 0
    CHECK(ControlRing::decode(0, 0, good).error() == Errc::malformed);  // PDF 0 is not a type
    CHECK(ControlRing::decode(0, 1, std::span(good).first(14)).error() == Errc::malformed);
    CHECK(ControlRing::decode(0, 1, std::span(good).first(4)).error() == Errc::malformed);
    std::vector<std::byte> huge(260);
    CHECK(ControlRing::decode(0, 1, huge).error() == Errc::malformed);
}

TEST_CASE("encode/decode round trip over every length", "[unit][control]") {
    std::array<std::byte, 256> buf{};
    std::vector<std::uint32_t> dw(63);
    for (unsigned i = 0; i < dw.size(); ++i) {
        dw[i] = 0x01020304u * (i + 1);
    }
    for (unsigned n = 1; n <= 63; ++n) {
        const std::size_t len = ControlRing::encode(std::span(dw).first(n), buf);
        REQUIRE(len == 4 * n + 4);
        auto p = ControlRing::decode(0, 7, std::span(buf).first(len));
        REQUIRE(p);
        CHECK(p->dword_count == n);
        CHECK(std::equal(dw.begin(), dw.begin() + n, p->payload().begin()));
    }
}
