// SPDX-License-Identifier: Apache-2.0
// The IOMMU model on its own: what translates, what faults.
#include <cstdint>
#include <system_error>

#include "catch.hpp"
#include "device_conformance.hpp"
#include "emu/iommu.hpp"

using tbv::emu::Iommu;
using tbv::hw::DmaAccess;
using tbv::hw::kDmaPageSize;
using tbv::test::PageBuffer;

TEST_CASE("Iommu::map validates alignment and length", "[emu][iommu]") {
    Iommu mmu;
    PageBuffer buf(2);
    const auto einval = std::make_error_code(std::errc::invalid_argument);
    CHECK(mmu.map(buf.data() + 1, kDmaPageSize, DmaAccess::read).error() == einval);
    CHECK(mmu.map(buf.data(), 100, DmaAccess::read).error() == einval);
    CHECK(mmu.map(buf.data(), 0, DmaAccess::read).error() == einval);
    CHECK(mmu.mapping_count() == 0);
}

TEST_CASE("Iommu IOVAs come from their own space, with guard gaps and no reuse", "[emu][iommu]") {
    Iommu mmu;
    PageBuffer a(1), b(1);
    auto ia = mmu.map(a.data(), a.size(), DmaAccess::read);
    auto ib = mmu.map(b.data(), b.size(), DmaAccess::read);
    REQUIRE(ia);
    REQUIRE(ib);
    CHECK(*ia == Iommu::kIovaBase);
    CHECK(*ia != reinterpret_cast<std::uintptr_t>(a.data()));
    CHECK(*ib >= *ia + a.size() + Iommu::kGuardGap);
    // Right past the end of a mapping is the guard gap: a fault, not the neighbour.
    CHECK(mmu.translate(*ia + a.size(), 1, DmaAccess::read) == nullptr);
    CHECK(mmu.translate(*ib - 1, 1, DmaAccess::read) == nullptr);

    REQUIRE(mmu.unmap(*ia, a.size()));
    auto again = mmu.map(a.data(), a.size(), DmaAccess::read);
    REQUIRE(again);
    CHECK(*again != *ia);  // a stale IOVA keeps faulting after its memory is mapped again
    CHECK(mmu.translate(*ia, 1, DmaAccess::read) == nullptr);
}

TEST_CASE("Iommu::translate needs the whole range in one mapping with the permission",
          "[emu][iommu]") {
    Iommu mmu;
    PageBuffer buf(2);
    auto iova = mmu.map(buf.data(), buf.size(), DmaAccess::read);
    REQUIRE(iova);
    CHECK(mmu.translate(*iova, buf.size(), DmaAccess::read) == buf.data());
    CHECK(mmu.translate(*iova + 100, 16, DmaAccess::read) == buf.data() + 100);
    CHECK(mmu.translate(*iova + buf.size() - 8, 16, DmaAccess::read) == nullptr);  // runs off
    CHECK(mmu.translate(*iova, 16, DmaAccess::write) == nullptr);  // read-only mapping
    CHECK(mmu.translate(*iova, 16, DmaAccess::read_write) == nullptr);
    CHECK(mmu.translate(*iova - 16, 16, DmaAccess::read) == nullptr);  // before the start
    CHECK(mmu.translate(*iova, 0, DmaAccess::read) == nullptr);
    CHECK(mmu.translate(~0ull - 4, 16, DmaAccess::read) == nullptr);  // no wrap-around
    bool called = false;
    CHECK_FALSE(mmu.with_range(*iova, 4, DmaAccess::write, [&](std::byte*) { called = true; }));
    CHECK_FALSE(called);
}

TEST_CASE("Iommu::unmap must name a mapping exactly", "[emu][iommu]") {
    Iommu mmu;
    PageBuffer buf(2);
    auto iova = mmu.map(buf.data(), buf.size(), DmaAccess::write);
    REQUIRE(iova);
    const auto enoent = std::make_error_code(std::errc::no_such_file_or_directory);
    CHECK(mmu.unmap(*iova, kDmaPageSize).error() == enoent);
    CHECK(mmu.unmap(*iova + kDmaPageSize, kDmaPageSize).error() == enoent);
    CHECK(mmu.unmap(0, kDmaPageSize).error() == enoent);
    CHECK(mmu.unmap(*iova, buf.size()));
    CHECK(mmu.translate(*iova, 1, DmaAccess::write) == nullptr);
    CHECK(mmu.mapping_count() == 0);
}
