// SPDX-License-Identifier: Apache-2.0
// FramePool: one DMA region cut into equal frame buffers, addressed by index. The ring driver's
// users (control channel, benchmarks, later the transport's bounce and RX buffers) allocate all
// their buffers once at set-up, so the hot path only does index arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "hw/dma_region.hpp"
#include "tbv/result.hpp"

namespace tbv::nhi {

class FramePool {
public:
    static Result<FramePool> create(hw::Device& dev, unsigned count, std::size_t frame_size,
                                    hw::DmaAccess access);

    unsigned count() const noexcept { return count_; }
    std::size_t frame_size() const noexcept { return frame_size_; }
    hw::Iova iova(unsigned i) const noexcept { return region_.iova_at(i * frame_size_); }
    std::byte* data(unsigned i) const noexcept { return region_.data() + i * frame_size_; }
    std::span<std::byte> frame(unsigned i) const noexcept { return {data(i), frame_size_}; }

private:
    FramePool(hw::DmaRegion region, unsigned count, std::size_t frame_size) noexcept
        : region_(std::move(region)), count_(count), frame_size_(frame_size) {}

    hw::DmaRegion region_;
    unsigned count_ = 0;
    std::size_t frame_size_ = 0;
};

}  // namespace tbv::nhi
