// SPDX-License-Identifier: Apache-2.0
// check_device_conformance(): the layer-0 contract (top of src/hw/device.hpp) as a Catch2 check
// that runs against any hw::Device implementation — the emulated NHI here, VFIO devices (QEMU
// functions) elsewhere. It relies only on what the contract promises and on nothing NHI-specific:
// it never reads a register whose meaning it does not know, unless the caller names one.
//
// Use inside a TEST_CASE:
//     check_device_conformance([] { return std::make_unique<MyDevice>(...); });
// Each SECTION gets a fresh device from the factory. The factory may return nullptr to skip (for
// example when no VFIO device is bound); the check then reports a skip and returns.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "hw/device.hpp"
#include "skip.hpp"

namespace tbv::test {

/// Page-aligned anonymous memory for dma_map, unmapped on destruction.
class PageBuffer {
public:
    explicit PageBuffer(std::size_t pages) : len_(pages * hw::kDmaPageSize) {
        void* p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(p != MAP_FAILED);
        data_ = static_cast<std::byte*>(p);
    }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;
    ~PageBuffer() { ::munmap(data_, len_); }

    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return len_; }

private:
    std::size_t len_;
    std::byte* data_ = nullptr;
};

inline bool fd_is_open(int fd) {
    return fd >= 0 && ::fcntl(fd, F_GETFD) != -1;
}

/// `stable_reg`: optionally, the offset of a BAR0 register that reads without side effects and
/// keeps its value; it lets the check prove that ignored (unaligned) writes next to it do not
/// land on it. Leave empty when no such register is known.
inline void check_device_conformance(const std::function<std::unique_ptr<hw::Device>()>& make,
                                     std::optional<std::uint32_t> stable_reg = std::nullopt) {
    std::unique_ptr<hw::Device> dev = make();
    if (!dev) {
        mark_skipped("no device for the conformance check");
        return;
    }
    constexpr std::uint32_t kAllOnes = 0xffffffffu;

    SECTION("identity: a name, a real vendor, a BAR0") {
        CHECK_FALSE(dev->name().empty());
        const hw::PciIdentity id = dev->identity();
        CHECK(id.vendor != 0);
        CHECK(id.vendor != 0xffff);
        CHECK(dev->bar0_size() > 0);
        CHECK(dev->bar0_size() % 4 == 0);
    }

    SECTION("reads outside BAR0 or unaligned return all-ones") {
        const auto bar = static_cast<std::uint32_t>(dev->bar0_size());
        CHECK(dev->read32(bar) == kAllOnes);
        CHECK(dev->read32(bar + 4) == kAllOnes);
        CHECK(dev->read32(0xfffffffcu) == kAllOnes);
        for (std::uint32_t off : {1u, 2u, 3u, bar - 3u, bar - 1u}) {
            CHECK(dev->read32(off) == kAllOnes);
        }
    }

    SECTION("writes outside BAR0 or unaligned are ignored") {
        const auto bar = static_cast<std::uint32_t>(dev->bar0_size());
        std::uint32_t before = 0;
        if (stable_reg) {
            before = dev->read32(*stable_reg);
        }
        dev->write32(bar, 0x12345678u);
        dev->write32(0xfffffffcu, 0x12345678u);
        if (stable_reg) {
            // An implementation that rounds an unaligned offset down would hit the register.
            for (std::uint32_t d : {1u, 2u, 3u}) {
                dev->write32(*stable_reg + d, ~before);
            }
            CHECK(dev->read32(*stable_reg) == before);
        }
        CHECK(dev->read32(bar) == kAllOnes);
        CHECK(dev->read32(1) == kAllOnes);
        CHECK(dev->identity().vendor != 0);
    }

    SECTION("dma_map rejects unaligned address, unaligned length and zero length with EINVAL") {
        PageBuffer buf(2);
        const auto einval = std::make_error_code(std::errc::invalid_argument);
        auto r1 = dev->dma_map(buf.data() + 8, hw::kDmaPageSize, hw::DmaAccess::read);
        CHECK_FALSE(r1);
        CHECK(r1.error() == einval);
        auto r2 = dev->dma_map(buf.data(), hw::kDmaPageSize + 8, hw::DmaAccess::read);
        CHECK_FALSE(r2);
        CHECK(r2.error() == einval);
        auto r3 = dev->dma_map(buf.data(), 0, hw::DmaAccess::read_write);
        CHECK_FALSE(r3);
        CHECK(r3.error() == einval);
    }

    SECTION("distinct mappings get distinct, non-overlapping IOVA ranges") {
        PageBuffer a(1), b(2), c(3);
        std::vector<std::pair<hw::Iova, std::size_t>> got;
        const std::pair<PageBuffer*, hw::DmaAccess> bufs[] = {
            {&a, hw::DmaAccess::read}, {&b, hw::DmaAccess::write}, {&c, hw::DmaAccess::read_write}};
        for (const auto& [buf, acc] : bufs) {
            auto r = dev->dma_map(buf->data(), buf->size(), acc);
            REQUIRE(r);
            got.emplace_back(*r, buf->size());
        }
        for (std::size_t i = 0; i < got.size(); ++i) {
            for (std::size_t j = i + 1; j < got.size(); ++j) {
                const auto [ia, la] = got[i];
                const auto [ib, lb] = got[j];
                CHECK((ia + la <= ib || ib + lb <= ia));
            }
        }
        for (auto [iova, len] : got) {
            CHECK(dev->dma_unmap(iova, len));
        }
    }

    SECTION("dma_unmap of anything that is not exactly a mapping fails with ENOENT") {
        const auto enoent = std::make_error_code(std::errc::no_such_file_or_directory);
        PageBuffer buf(2);
        auto iova = dev->dma_map(buf.data(), buf.size(), hw::DmaAccess::read_write);
        REQUIRE(iova);
        auto r1 = dev->dma_unmap(*iova + hw::kDmaPageSize, hw::kDmaPageSize);  // inside it
        CHECK_FALSE(r1);
        CHECK(r1.error() == enoent);
        auto r2 = dev->dma_unmap(*iova, hw::kDmaPageSize);  // wrong length
        CHECK_FALSE(r2);
        CHECK(r2.error() == enoent);
        CHECK(dev->dma_unmap(*iova, buf.size()));
        auto r3 = dev->dma_unmap(*iova, buf.size());  // already gone
        CHECK_FALSE(r3);
        CHECK(r3.error() == enoent);
    }

    SECTION("map, unmap, map again works") {
        PageBuffer buf(1);
        for (int i = 0; i < 3; ++i) {
            auto iova = dev->dma_map(buf.data(), buf.size(), hw::DmaAccess::read);
            REQUIRE(iova);
            REQUIRE(dev->dma_unmap(*iova, buf.size()));
        }
    }

    SECTION("bus mastering on and off is reflected") {
        REQUIRE(dev->set_bus_master(true));
        CHECK(dev->bus_master());
        REQUIRE(dev->set_bus_master(false));
        CHECK_FALSE(dev->bus_master());
    }

    SECTION("enable_irqs bounds, eventfds valid and distinct, -1 when disabled") {
        const unsigned n = dev->irq_vector_count();
        const auto einval = std::make_error_code(std::errc::invalid_argument);
        auto r0 = dev->enable_irqs(0);
        CHECK_FALSE(r0);
        CHECK(r0.error() == einval);
        auto rn = dev->enable_irqs(n + 1);
        CHECK_FALSE(rn);
        CHECK(rn.error() == einval);
        CHECK(dev->irq_eventfd(0) == -1);
        if (n == 0) {
            return;  // a function without MSI-X has nothing more to check
        }
        REQUIRE(dev->enable_irqs(n));
        std::set<int> fds;
        for (unsigned v = 0; v < n; ++v) {
            const int fd = dev->irq_eventfd(v);
            CHECK(fd_is_open(fd));
            fds.insert(fd);
        }
        CHECK(fds.size() == n);
        CHECK(dev->irq_eventfd(n) == -1);
        // Re-arming with another count gives exactly that many vectors.
        REQUIRE(dev->enable_irqs(1));
        CHECK(fd_is_open(dev->irq_eventfd(0)));
        CHECK(dev->irq_eventfd(1) == -1);
        dev->disable_irqs();
        for (unsigned v = 0; v < n; ++v) {
            CHECK(dev->irq_eventfd(v) == -1);
        }
    }

    SECTION("reset succeeds, leaves bus mastering off and keeps DMA mappings") {
        PageBuffer buf(1);
        auto iova = dev->dma_map(buf.data(), buf.size(), hw::DmaAccess::read_write);
        REQUIRE(iova);
        REQUIRE(dev->set_bus_master(true));
        REQUIRE(dev->reset());
        CHECK_FALSE(dev->bus_master());
        CHECK(dev->dma_unmap(*iova, buf.size()));  // the mapping survived the reset
        dev->poll();                               // harmless at any time
    }
}

}  // namespace tbv::test
