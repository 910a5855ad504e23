// SPDX-License-Identifier: Apache-2.0
#include "nhi/frame_pool.hpp"

namespace tbv::nhi {

Result<FramePool> FramePool::create(hw::Device& dev, unsigned count, std::size_t frame_size,
                                    hw::DmaAccess access) {
    if (count == 0 || frame_size == 0 || frame_size > (std::size_t{1} << 20)) {
        return fail(std::errc::invalid_argument);
    }
    auto region = hw::DmaRegion::create(dev, count * frame_size, access);
    if (!region) {
        return Failure{region.error()};
    }
    return FramePool(std::move(*region), count, frame_size);
}

}  // namespace tbv::nhi
