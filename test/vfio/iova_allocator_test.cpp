// SPDX-License-Identifier: Apache-2.0
// IovaAllocator: respects reported ranges and holes, clips, first fit, exact release only.
#include "vfio/iova_allocator.hpp"

#include "catch.hpp"

using tbv::vfio::IovaAllocator;
using tbv::vfio::IovaRange;

namespace {
constexpr std::uint64_t kPage = 4096;
}  // namespace

TEST_CASE("iova allocator: first fit inside the ranges, never in the MSI hole") {
    // The x86 type1 answer: everything but the MSI window 0xfee00000-0xfeefffff.
    IovaAllocator a({{0, 0xfedfffffULL}, {0xfef00000ULL, (1ULL << 39) - 1}}, 0xfed00000ULL, ~0ULL);
    auto x = a.allocate(0x100000);  // fills [0xfed00000, 0xfedfffff]
    REQUIRE(x);
    CHECK(*x == 0xfed00000ULL);
    auto y = a.allocate(kPage);  // next range, after the hole
    REQUIRE(y);
    CHECK(*y == 0xfef00000ULL);
    CHECK(a.allocated_bytes() == 0x100000 + kPage);
}

TEST_CASE("iova allocator: clipping, alignment, exhaustion and exact release") {
    IovaAllocator a({{0x1001, 0x5fff}}, 0, ~0ULL);  // start rounds up to 0x2000
    REQUIRE(a.ranges().size() == 1);
    CHECK(a.ranges()[0].start == 0x2000);
    CHECK(a.ranges()[0].last == 0x5fff);
    auto p1 = a.allocate(kPage);
    auto p2 = a.allocate(2 * kPage);
    REQUIRE(p1);
    REQUIRE(p2);
    CHECK(*p1 == 0x2000);
    CHECK(*p2 == 0x3000);
    CHECK_FALSE(a.allocate(2 * kPage));  // only 0x5000 left
    CHECK_FALSE(a.allocate(0));
    CHECK_FALSE(a.allocate(100));
    CHECK_FALSE(a.release(*p2, kPage));     // wrong length
    CHECK_FALSE(a.release(0x4000, kPage));  // inside an allocation
    CHECK(a.release(*p1, kPage));
    CHECK_FALSE(a.release(*p1, kPage));  // twice
    auto p3 = a.allocate(kPage);         // the hole is reused
    REQUIRE(p3);
    CHECK(*p3 == 0x2000);
    CHECK(a.allocation_count() == 2);
}

TEST_CASE("iova allocator: device limit (28-bit DMA) and minimum") {
    IovaAllocator a({{0, (1ULL << 48) - 1}}, 1ULL << 20, (1ULL << 28) - 1);
    auto big = a.allocate((1ULL << 28) - (1ULL << 20));
    REQUIRE(big);
    CHECK(*big == 1ULL << 20);
    CHECK_FALSE(a.allocate(kPage));
}

TEST_CASE("iova allocator: unsorted and overlapping ranges merge; empty input") {
    IovaAllocator a({{0x10000, 0x1ffff}, {0x0, 0x17fff}, {0x40000, 0x3ffff}}, 0, ~0ULL);
    REQUIRE(a.ranges().size() == 1);
    CHECK(a.ranges()[0].start == 0);
    CHECK(a.ranges()[0].last == 0x1ffff);
    IovaAllocator none({}, 0, ~0ULL);
    CHECK_FALSE(none.allocate(kPage));
}
