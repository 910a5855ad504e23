// SPDX-License-Identifier: Apache-2.0
// VFIO regions of a PCI function: region info with the sparse-mmap capability, BARs mapped where
// the kernel allows it (the MSI-X table area may not be) with pread/pwrite elsewhere, and config
// space through its region.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tbv/result.hpp"

namespace tbv::vfio {

struct RegionInfo {
    std::uint32_t index = 0;
    std::uint32_t flags = 0;
    std::uint64_t size = 0;
    std::uint64_t offset = 0;  ///< file offset of the region in the device fd
    /// mmappable areas (offset, size) inside the region; the whole region unless sparse-mmap says
    /// otherwise; empty when the region cannot be mmapped at all.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> mmap_areas;
    bool msix_mappable = false;
};

Result<RegionInfo> region_info(int device_fd, std::uint32_t index);

/// One BAR: mmapped areas and pread/pwrite for the rest. Accesses are aligned 32-bit; the caller
/// checks bounds.
class MappedBar {
public:
    MappedBar() = default;
    static Result<MappedBar> map(int device_fd, const RegionInfo& info);
    MappedBar(MappedBar&& other) noexcept;
    MappedBar& operator=(MappedBar&& other) noexcept;
    MappedBar(const MappedBar&) = delete;
    MappedBar& operator=(const MappedBar&) = delete;
    ~MappedBar();

    std::uint64_t size() const noexcept { return size_; }
    /// Bytes reachable by a plain load/store (the rest goes through the fd).
    std::uint64_t mapped_bytes() const noexcept;
    std::uint32_t read32(std::uint64_t off) const noexcept;
    void write32(std::uint64_t off, std::uint32_t value) const noexcept;

private:
    struct Area {
        std::uint64_t off = 0;
        std::uint64_t len = 0;
        std::byte* ptr = nullptr;
    };
    const Area* area_for(std::uint64_t off) const noexcept;
    void unmap_all() noexcept;

    int fd_ = -1;  // borrowed: the device fd outlives the BAR (VfioDevice member order)
    std::uint64_t region_offset_ = 0;
    std::uint64_t size_ = 0;
    std::vector<Area> areas_;
};

/// Config space through VFIO_PCI_CONFIG_REGION_INDEX. width: 1, 2 or 4.
Result<std::uint32_t> config_read(int device_fd, std::uint64_t cfg_offset, std::uint32_t off,
                                  unsigned width);
Result<void> config_write(int device_fd, std::uint64_t cfg_offset, std::uint32_t off,
                          unsigned width, std::uint32_t value);

}  // namespace tbv::vfio
