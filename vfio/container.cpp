// SPDX-License-Identifier: Apache-2.0
// Legacy VFIO: a container (/dev/vfio/vfio) with the type1v2 IOMMU driver, the function's group
// (/dev/vfio/<group>) attached to it, and the device fd from VFIO_GROUP_GET_DEVICE_FD.
// Kernel documentation: Documentation/driver-api/vfio.rst ("VFIO Usage Example").
#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "vfio/dma_backend.hpp"
#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"
#include "vfio/uapi.hpp"
#include "vfio/unique_fd.hpp"

namespace tbv::vfio {

namespace {

/// Reads VFIO_IOMMU_GET_INFO with its capability chain and returns the IOVA ranges.
Result<std::vector<IovaRange>> query_ranges(int container) {
    std::vector<std::uint64_t> buf(sizeof(vfio_iommu_type1_info) / 8 + 1, 0);
    auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
    info->argsz = sizeof(vfio_iommu_type1_info);
    if (::ioctl(container, VFIO_IOMMU_GET_INFO, info) != 0) {
        return fail_detail(errno, "VFIO_IOMMU_GET_INFO");
    }
    if (info->argsz > sizeof(vfio_iommu_type1_info)) {
        const std::uint32_t need = info->argsz;
        buf.assign(need / 8 + 1, 0);
        info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
        info->argsz = need;
        if (::ioctl(container, VFIO_IOMMU_GET_INFO, info) != 0) {
            return fail_detail(errno, "VFIO_IOMMU_GET_INFO (with capabilities)");
        }
    }
    std::vector<IovaRange> out;
    if ((info->flags & VFIO_IOMMU_INFO_CAPS) != 0) {
        const auto* base = reinterpret_cast<const std::byte*>(info);
        std::uint32_t off = info->cap_offset;
        while (off != 0 && off + sizeof(vfio_info_cap_header) <= info->argsz) {
            const auto* hdr = reinterpret_cast<const vfio_info_cap_header*>(base + off);
            if (hdr->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
                const auto* cap =
                    reinterpret_cast<const vfio_iommu_type1_info_cap_iova_range*>(hdr);
                for (std::uint32_t i = 0; i < cap->nr_iovas; ++i) {
                    out.push_back({cap->iova_ranges[i].start, cap->iova_ranges[i].end});
                }
            }
            off = hdr->next;
        }
    }
    if (out.empty()) {
        // Kernels before 5.4 do not report ranges; everything but the x86 MSI window is usable.
        out = {{0, 0xfedfffffULL}, {0xfef00000ULL, (1ULL << 39) - 1}};
    }
    return out;
}

class ContainerBackend final : public DmaBackend {
public:
    ContainerBackend(UniqueFd container, UniqueFd group, UniqueFd device,
                     std::vector<IovaRange> ranges)
        : container_(std::move(container)),
          group_(std::move(group)),
          device_(std::move(device)),
          ranges_(std::move(ranges)) {}

    Mode mode() const noexcept override { return Mode::legacy; }
    int device_fd() const noexcept override { return device_.get(); }
    std::vector<IovaRange> iova_ranges() const override { return ranges_; }

    Result<hw::Iova> map(void* va, std::size_t len, hw::Iova iova, hw::DmaAccess access) override {
        vfio_iommu_type1_dma_map m{};
        m.argsz = sizeof(m);
        m.flags = (hw::allows(access, hw::DmaAccess::read) ? VFIO_DMA_MAP_FLAG_READ : 0u) |
                  (hw::allows(access, hw::DmaAccess::write) ? VFIO_DMA_MAP_FLAG_WRITE : 0u);
        m.vaddr = reinterpret_cast<std::uintptr_t>(va);
        m.iova = iova;
        m.size = len;
        if (::ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &m) != 0) {
            const int err = errno;
            if (err == ENOMEM) {
                return memlock_failure(len, mapped_);
            }
            return fail_detail(err, "VFIO_IOMMU_MAP_DMA of " + std::to_string(len) + " bytes");
        }
        mapped_ += len;
        return iova;
    }

    Result<void> unmap(hw::Iova iova, std::size_t len) override {
        vfio_iommu_type1_dma_unmap u{};
        u.argsz = sizeof(u);
        u.iova = iova;
        u.size = len;
        if (::ioctl(container_.get(), VFIO_IOMMU_UNMAP_DMA, &u) != 0) {
            return fail_detail(errno, "VFIO_IOMMU_UNMAP_DMA");
        }
        mapped_ -= std::min<std::size_t>(mapped_, u.size);
        if (u.size != len) {
            return fail_detail(EIO, "VFIO_IOMMU_UNMAP_DMA unmapped " + std::to_string(u.size) +
                                        " of " + std::to_string(len) + " bytes");
        }
        return ok();
    }

private:
    // Set-up order; destroyed in reverse: device fd, then the group (which leaves the container),
    // then the container (which drops the remaining mappings).
    UniqueFd container_;
    UniqueFd group_;
    UniqueFd device_;
    std::vector<IovaRange> ranges_;
    std::size_t mapped_ = 0;
};

}  // namespace

std::string group_not_viable_detail(const std::string& bdf, int group) {
    std::string others;
    for (const std::string& m : sysfs::group_members(group)) {
        if (m == bdf) {
            continue;
        }
        const std::string drv = sysfs::driver(m);
        if (drv == "vfio-pci" || drv == "pci-stub" || drv.empty()) {
            continue;  // these do not make a group unviable
        }
        others += (others.empty() ? "" : ", ") + m + " (driver " + drv + ")";
    }
    return "IOMMU group " + std::to_string(group) +
           " is not viable: every device in it must be bound to vfio-pci or to no driver; " +
           (others.empty() ? std::string("check /sys/kernel/iommu_groups/") +
                                 std::to_string(group) + "/devices"
                           : "in use by " + others);
}

Result<std::unique_ptr<DmaBackend>> open_container(const std::string& bdf) {
    const auto group = sysfs::iommu_group(bdf);
    if (!group) {
        return fail_detail(ENODEV, bdf +
                                       " has no IOMMU group (is the IOMMU enabled? "
                                       "intel_iommu=on / amd_iommu=on on the kernel command line)");
    }
    UniqueFd container(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
    if (!container) {
        return fail_detail(errno, "/dev/vfio/vfio (is vfio-pci loaded?)");
    }
    if (::ioctl(container.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
        return fail_detail(EINVAL, "unknown VFIO API version");
    }
    if (::ioctl(container.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
        return fail_detail(ENOTSUP, "the kernel's VFIO has no type1v2 IOMMU driver");
    }
    const std::string gpath = "/dev/vfio/" + std::to_string(*group);
    UniqueFd grp(::open(gpath.c_str(), O_RDWR | O_CLOEXEC));
    if (!grp) {
        const int err = errno;
        if (err == EBUSY) {
            return fail_detail(err, gpath + " is open in another process (or this one)");
        }
        return fail_detail(err,
                           gpath + " (is " + bdf + " bound to vfio-pci? `tbv bind " + bdf + "`)");
    }
    vfio_group_status status{};
    status.argsz = sizeof(status);
    if (::ioctl(grp.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
        return fail_detail(errno, "VFIO_GROUP_GET_STATUS");
    }
    if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
        return fail_detail(EBUSY, group_not_viable_detail(bdf, *group));
    }
    int cfd = container.get();
    if (::ioctl(grp.get(), VFIO_GROUP_SET_CONTAINER, &cfd) != 0) {
        return fail_detail(errno, "VFIO_GROUP_SET_CONTAINER");
    }
    if (::ioctl(container.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
        const int err = errno;
        return fail_detail(err, err == EPERM ? "VFIO_SET_IOMMU: interrupt remapping is off, so "
                                               "MSI is not isolated (enable it in the BIOS/IOMMU)"
                                             : "VFIO_SET_IOMMU(type1v2)");
    }
    auto ranges = query_ranges(container.get());
    if (!ranges) {
        return Failure{ranges.error()};
    }
    UniqueFd device(::ioctl(grp.get(), VFIO_GROUP_GET_DEVICE_FD, bdf.c_str()));
    if (!device) {
        return fail_detail(errno, "VFIO_GROUP_GET_DEVICE_FD " + bdf);
    }
    return std::unique_ptr<DmaBackend>(std::make_unique<ContainerBackend>(
        std::move(container), std::move(grp), std::move(device), std::move(*ranges)));
}

}  // namespace tbv::vfio
