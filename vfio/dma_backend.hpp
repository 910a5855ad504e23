// SPDX-License-Identifier: Apache-2.0
// DmaBackend: how a VfioDevice owns its function and reaches the IOMMU. Three implementations:
//   container.cpp  legacy /dev/vfio/vfio container + /dev/vfio/<group>, VFIO_TYPE1v2_IOMMU
//   iommufd.cpp    /dev/iommu + the device cdev /dev/vfio/devices/vfioN (kernel 6.6+)
//   noiommu.cpp    no IOMMU at all (unsafe mode): the device sees physical addresses
// Each owns the device fd and closes it before the IOMMU context it is attached to.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "hw/device.hpp"
#include "tbv/result.hpp"
#include "vfio/iova_allocator.hpp"

namespace tbv::vfio {

enum class Mode {
    automatic,  ///< iommufd if the kernel offers it, else legacy, else no-IOMMU (if enabled)
    legacy,
    iommufd,
    noiommu,
};

const char* mode_name(Mode m) noexcept;

class DmaBackend {
public:
    DmaBackend() = default;
    DmaBackend(const DmaBackend&) = delete;
    DmaBackend& operator=(const DmaBackend&) = delete;
    virtual ~DmaBackend() = default;

    virtual Mode mode() const noexcept = 0;
    virtual int device_fd() const noexcept = 0;
    /// Usable IOVA ranges as the kernel reports them.
    virtual std::vector<IovaRange> iova_ranges() const = 0;
    /// True when the backend, not the IOVA allocator, decides the address (no-IOMMU: physical).
    virtual bool chooses_address() const noexcept { return false; }
    /// Maps [va, va+len) at `iova` (ignored when chooses_address()); returns the device address.
    virtual Result<hw::Iova> map(void* va, std::size_t len, hw::Iova iova,
                                 hw::DmaAccess access) = 0;
    /// Unmaps exactly a mapping; checks that the kernel unmapped `len` bytes.
    virtual Result<void> unmap(hw::Iova iova, std::size_t len) = 0;
};

Result<std::unique_ptr<DmaBackend>> open_container(const std::string& bdf);
Result<std::unique_ptr<DmaBackend>> open_iommufd(const std::string& bdf);
Result<std::unique_ptr<DmaBackend>> open_noiommu(const std::string& bdf);

/// Why the IOMMU group of `bdf` is not viable, naming the other devices that hold it.
std::string group_not_viable_detail(const std::string& bdf, int group);

/// Builds the ENOMEM detail for a failed pin: the current RLIMIT_MEMLOCK and how to raise it.
Failure memlock_failure(std::size_t len, std::size_t already_mapped);

}  // namespace tbv::vfio
