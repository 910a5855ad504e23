// SPDX-License-Identifier: Apache-2.0
// DmaRegion: page-aligned host memory mapped for device DMA, owned RAII-style. Used for descriptor
// arrays and frame buffers. The memory is unmapped from the device before it is freed (the IOMMU
// must never point at memory the process gave back).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "hw/device.hpp"
#include "tbv/result.hpp"

namespace tbv::hw {

class DmaRegion {
public:
    /// Allocates `len` bytes (rounded up to whole pages), fills them with `fill`, and maps them.
    static Result<DmaRegion> create(Device& dev, std::size_t len, DmaAccess access,
                                    std::uint8_t fill = 0);

    DmaRegion() = default;
    DmaRegion(DmaRegion&& other) noexcept;
    DmaRegion& operator=(DmaRegion&& other) noexcept;
    DmaRegion(const DmaRegion&) = delete;
    DmaRegion& operator=(const DmaRegion&) = delete;
    ~DmaRegion();

    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return len_; }
    Iova iova() const noexcept { return iova_; }
    Iova iova_at(std::size_t offset) const noexcept { return iova_ + offset; }
    std::span<std::byte> bytes() const noexcept { return {data_, len_}; }
    explicit operator bool() const noexcept { return data_ != nullptr; }

    /// Unmaps and frees now; returns the unmap result (also done, ignoring errors, by the dtor).
    Result<void> release();

private:
    DmaRegion(Device* dev, std::byte* data, std::size_t len, Iova iova) noexcept
        : dev_(dev), data_(data), len_(len), iova_(iova) {}

    Device* dev_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t len_ = 0;
    Iova iova_ = 0;
};

constexpr std::size_t round_up_pages(std::size_t len) noexcept {
    return (len + kDmaPageSize - 1) / kDmaPageSize * kDmaPageSize;
}

}  // namespace tbv::hw
