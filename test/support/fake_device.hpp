// SPDX-License-Identifier: Apache-2.0
// FakeDevice: a scripted layer-0 device for unit tests of src/nhi (SPDK/Fuchsia-mock style). It
// keeps a plain register file, logs every register write in order (so tests pin programming
// sequences such as ring start/stop), and maps DMA memory at IOVAs distinct from the virtual
// addresses so a driver that confuses the two is caught. The test itself plays the hardware:
// it reads descriptors through translate() and writes DONE back.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hw/device.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::test {

class FakeDevice final : public hw::Device {
public:
    explicit FakeDevice(std::uint32_t caps = 3, std::uint16_t vendor = 0x1022) : vendor_(vendor) {
        regs_[hw::nhi::REG_CAPS] = caps;
    }

    const std::string& name() const noexcept override { return name_; }
    hw::PciIdentity identity() const noexcept override {
        return {vendor_, 0x1668, hw::kClassUsb4Nhi, 0, 0, 0};
    }
    std::size_t bar0_size() const noexcept override { return hw::nhi::kBar0Size; }

    std::uint32_t read32(std::uint32_t off) noexcept override {
        ++reads;
        if (gone) {
            return 0xffffffffu;
        }
        auto it = regs_.find(off);
        return it == regs_.end() ? 0 : it->second;
    }
    void write32(std::uint32_t off, std::uint32_t v) noexcept override {
        writes.emplace_back(off, v);
        regs_[off] = v;
    }

    Result<hw::Iova> dma_map(void* addr, std::size_t len, hw::DmaAccess access) override {
        if (len == 0 || len % hw::kDmaPageSize != 0 ||
            reinterpret_cast<std::uintptr_t>(addr) % hw::kDmaPageSize != 0) {
            return fail(std::errc::invalid_argument);
        }
        const hw::Iova iova = next_iova_;
        next_iova_ += len + hw::kDmaPageSize;  // guard gap
        maps_[iova] = {static_cast<std::byte*>(addr), len, access};
        return iova;
    }
    Result<void> dma_unmap(hw::Iova iova, std::size_t len) override {
        auto it = maps_.find(iova);
        if (it == maps_.end() || it->second.len != len) {
            return fail(std::errc::no_such_file_or_directory);
        }
        maps_.erase(it);
        return ok();
    }
    Result<void> set_bus_master(bool on) override {
        bus_master_ = on;
        return ok();
    }
    bool bus_master() const noexcept override { return bus_master_; }
    unsigned irq_vector_count() const noexcept override { return 16; }
    Result<void> enable_irqs(unsigned count) override {
        if (count == 0 || count > 16) {
            return fail(std::errc::invalid_argument);
        }
        irqs_ = count;
        return ok();
    }
    void disable_irqs() noexcept override { irqs_ = 0; }
    int irq_eventfd(unsigned) const noexcept override { return -1; }
    Result<void> reset() override { return ok(); }
    void poll() noexcept override { ++polls; }

    /// Host pointer behind an IOVA (nullptr if unmapped): the test acting as the DMA engine.
    std::byte* translate(hw::Iova iova) const {
        for (const auto& [base, m] : maps_) {
            if (iova >= base && iova < base + m.len) {
                return m.addr + (iova - base);
            }
        }
        return nullptr;
    }
    std::size_t mapping_count() const { return maps_.size(); }
    std::uint32_t reg(std::uint32_t off) const {
        auto it = regs_.find(off);
        return it == regs_.end() ? 0 : it->second;
    }
    void set_reg(std::uint32_t off, std::uint32_t v) { regs_[off] = v; }
    /// Writes logged to [lo, hi).
    std::vector<std::pair<std::uint32_t, std::uint32_t>> writes_in(std::uint32_t lo,
                                                                   std::uint32_t hi) const {
        std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
        for (const auto& w : writes) {
            if (w.first >= lo && w.first < hi) {
                out.push_back(w);
            }
        }
        return out;
    }

    std::vector<std::pair<std::uint32_t, std::uint32_t>> writes;
    std::uint64_t reads = 0;
    std::uint64_t polls = 0;
    bool gone = false;

private:
    struct Map {
        std::byte* addr;
        std::size_t len;
        hw::DmaAccess access;
    };
    std::string name_ = "fake";
    std::uint16_t vendor_;
    std::map<std::uint32_t, std::uint32_t> regs_;
    std::map<hw::Iova, Map> maps_;
    hw::Iova next_iova_ = 0x40000000;
    bool bus_master_ = false;
    unsigned irqs_ = 0;
};

}  // namespace tbv::test
