// SPDX-License-Identifier: Apache-2.0
// No-IOMMU mode: vfio's unsafe mode for machines without an IOMMU. The device is reached through
// /dev/vfio/noiommu-<group> and a container with VFIO_NOIOMMU_IOMMU, which cannot map anything:
// the device sees physical addresses, so DMA memory is locked (mlock) and its physical address is
// read from /proc/self/pagemap (needs CAP_SYS_ADMIN). Nothing stops the device from reaching any
// other memory, so this is refused unless the administrator enabled the mode, and said loudly.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>

#include "vfio/dma_backend.hpp"
#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"
#include "vfio/uapi.hpp"
#include "vfio/unique_fd.hpp"

namespace tbv::vfio {

namespace {

constexpr std::uint64_t kPfnMask = (1ULL << 55) - 1;  // pagemap bits 0-54: PFN
constexpr std::uint64_t kPresent = 1ULL << 63;

class NoIommuBackend final : public DmaBackend {
public:
    NoIommuBackend(UniqueFd container, UniqueFd group, UniqueFd device)
        : container_(std::move(container)), group_(std::move(group)), device_(std::move(device)) {
        pagemap_.reset(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    }
    ~NoIommuBackend() override {
        for (const auto& [phys, m] : maps_) {
            ::munlock(m.first, m.second);
        }
    }
    NoIommuBackend(const NoIommuBackend&) = delete;
    NoIommuBackend& operator=(const NoIommuBackend&) = delete;

    Mode mode() const noexcept override { return Mode::noiommu; }
    int device_fd() const noexcept override { return device_.get(); }
    std::vector<IovaRange> iova_ranges() const override { return {{0, ~std::uint64_t{0}}}; }
    bool chooses_address() const noexcept override { return true; }

    Result<hw::Iova> map(void* va, std::size_t len, hw::Iova, hw::DmaAccess) override {
        if (::mlock(va, len) != 0) {
            const int err = errno;
            if (err == ENOMEM || err == EPERM) {
                return memlock_failure(len, locked_);
            }
            return fail_detail(err, "mlock");
        }
        auto phys = physical(va, len);
        if (!phys) {
            ::munlock(va, len);
            return phys;
        }
        if (maps_.count(*phys) != 0) {
            ::munlock(va, len);
            return fail_detail(EEXIST, "memory already mapped");
        }
        maps_.emplace(*phys, std::make_pair(va, len));
        locked_ += len;
        return *phys;
    }

    Result<void> unmap(hw::Iova iova, std::size_t len) override {
        auto it = maps_.find(iova);
        if (it == maps_.end() || it->second.second != len) {
            return fail_detail(ENOENT, "no such mapping");
        }
        ::munlock(it->second.first, len);
        locked_ -= len;
        maps_.erase(it);
        return ok();
    }

private:
    /// Physical address of [va, va+len), which must be physically contiguous.
    Result<hw::Iova> physical(void* va, std::size_t len) const {
        if (!pagemap_) {
            return fail_detail(EACCES, "/proc/self/pagemap cannot be opened");
        }
        const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
        const auto first = reinterpret_cast<std::uintptr_t>(va) / page;
        std::uint64_t base = 0;
        for (std::uint64_t i = 0; i < len / page; ++i) {
            std::uint64_t entry = 0;
            const auto off = static_cast<off_t>((first + i) * sizeof(entry));
            if (::pread(pagemap_.get(), &entry, sizeof(entry), off) != sizeof(entry)) {
                return fail_detail(errno != 0 ? errno : EIO, "reading /proc/self/pagemap");
            }
            const std::uint64_t pfn = entry & kPfnMask;
            if ((entry & kPresent) == 0 || pfn == 0) {
                return fail_detail(EPERM,
                                   "no physical address in /proc/self/pagemap (needs "
                                   "CAP_SYS_ADMIN; the page must be resident)");
            }
            if (i == 0) {
                base = pfn * page;
            } else if (pfn * page != base + i * page) {
                return fail_detail(EINVAL,
                                   "buffer is not physically contiguous (no-IOMMU mode "
                                   "needs one page per mapping, or hugepages)");
            }
        }
        return base;
    }

    UniqueFd container_;
    UniqueFd group_;
    UniqueFd device_;
    UniqueFd pagemap_;
    std::map<hw::Iova, std::pair<void*, std::size_t>> maps_;
    std::size_t locked_ = 0;
};

}  // namespace

Result<std::unique_ptr<DmaBackend>> open_noiommu(const std::string& bdf) {
    if (!sysfs::noiommu_enabled()) {
        return fail_detail(EPERM,
                           "no-IOMMU mode is off; it gives the device access to all "
                           "memory. Enable only on a machine without an IOMMU: echo Y > "
                           "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
    }
    const auto group = sysfs::iommu_group(bdf);
    if (!group) {
        return fail_detail(ENODEV, bdf + " has no (no-IOMMU) group: bind it to vfio-pci first");
    }
    std::fprintf(stderr,
                 "tbv: WARNING: %s is driven in VFIO no-IOMMU mode: the device can DMA to ANY "
                 "memory of this machine. No isolation, no protection. Use an IOMMU if you can.\n",
                 bdf.c_str());
    UniqueFd container(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
    if (!container) {
        return fail_detail(errno, "/dev/vfio/vfio");
    }
    if (::ioctl(container.get(), VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU) <= 0) {
        return fail_detail(ENOTSUP, "the kernel's VFIO has no no-IOMMU driver");
    }
    const std::string gpath = "/dev/vfio/noiommu-" + std::to_string(*group);
    UniqueFd grp(::open(gpath.c_str(), O_RDWR | O_CLOEXEC));
    if (!grp) {
        return fail_detail(errno, gpath);
    }
    int cfd = container.get();
    if (::ioctl(grp.get(), VFIO_GROUP_SET_CONTAINER, &cfd) != 0) {
        return fail_detail(errno, "VFIO_GROUP_SET_CONTAINER");
    }
    if (::ioctl(container.get(), VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU) != 0) {
        return fail_detail(errno, "VFIO_SET_IOMMU(no-IOMMU)");
    }
    UniqueFd device(::ioctl(grp.get(), VFIO_GROUP_GET_DEVICE_FD, bdf.c_str()));
    if (!device) {
        return fail_detail(errno, "VFIO_GROUP_GET_DEVICE_FD " + bdf);
    }
    return std::unique_ptr<DmaBackend>(
        std::make_unique<NoIommuBackend>(std::move(container), std::move(grp), std::move(device)));
}

}  // namespace tbv::vfio
