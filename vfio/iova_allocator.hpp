// SPDX-License-Identifier: Apache-2.0
// IovaAllocator: hands out page-aligned IOVA ranges inside the ranges the IOMMU reports as usable
// (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE / IOMMU_IOAS_IOVA_RANGES: the MSI window and reserved
// regions are holes), clipped to what the device can address. Never assumes VA == IOVA.
// Not thread-safe: the owning VfioDevice serialises control-plane calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "hw/device.hpp"

namespace tbv::vfio {

/// Inclusive range [start, last], the kernel's convention.
struct IovaRange {
    hw::Iova start = 0;
    hw::Iova last = 0;
};

class IovaAllocator {
public:
    IovaAllocator() = default;
    /// `usable`: the reported ranges (any order, may overlap); [min, max] clips them (e.g. a device
    /// with 28 address bits, or keeping IOVA 0 out of use).
    IovaAllocator(std::vector<IovaRange> usable, hw::Iova min, hw::Iova max);

    /// First fit of `len` bytes (a multiple of kDmaPageSize, > 0); nullopt when nothing fits.
    std::optional<hw::Iova> allocate(std::size_t len);
    /// Frees exactly an allocation; false if [iova, iova+len) is not one.
    bool release(hw::Iova iova, std::size_t len);
    bool is_allocation(hw::Iova iova, std::size_t len) const;

    const std::vector<IovaRange>& ranges() const noexcept { return ranges_; }
    std::size_t allocated_bytes() const noexcept { return allocated_; }
    std::size_t allocation_count() const noexcept { return used_.size(); }

private:
    std::vector<IovaRange> ranges_;         // sorted, merged, clipped, page-aligned
    std::map<hw::Iova, std::size_t> used_;  // start -> length
    std::size_t allocated_ = 0;
};

}  // namespace tbv::vfio
