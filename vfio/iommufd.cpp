// SPDX-License-Identifier: Apache-2.0
// iommufd: /dev/iommu with one IO address space (IOAS), and the function's vfio cdev
// (/dev/vfio/devices/vfioN) bound to it and attached to the IOAS. Kernel documentation:
// Documentation/userspace-api/iommufd.rst and Documentation/driver-api/vfio.rst ("cdev").
#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <vector>

#include "vfio/dma_backend.hpp"
#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"
#include "vfio/uapi.hpp"
#include "vfio/unique_fd.hpp"

namespace tbv::vfio {

namespace {

Result<std::vector<IovaRange>> query_ranges(int iommufd, std::uint32_t ioas) {
    iommu_ioas_iova_ranges q{};
    q.size = sizeof(q);
    q.ioas_id = ioas;
    // First call with no room: the kernel answers EMSGSIZE and the number of ranges.
    if (::ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &q) != 0 && errno != EMSGSIZE) {
        return fail_detail(errno, "IOMMU_IOAS_IOVA_RANGES");
    }
    std::vector<iommu_iova_range> raw(q.num_iovas);
    q.allowed_iovas = reinterpret_cast<std::uintptr_t>(raw.data());
    if (::ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &q) != 0) {
        return fail_detail(errno, "IOMMU_IOAS_IOVA_RANGES");
    }
    std::vector<IovaRange> out;
    for (std::uint32_t i = 0; i < q.num_iovas && i < raw.size(); ++i) {
        out.push_back({raw[i].start, raw[i].last});
    }
    return out;
}

class IommufdBackend final : public DmaBackend {
public:
    IommufdBackend(UniqueFd iommufd, std::uint32_t ioas, UniqueFd device,
                   std::vector<IovaRange> ranges)
        : iommufd_(std::move(iommufd)),
          ioas_(ioas),
          device_(std::move(device)),
          ranges_(std::move(ranges)) {}

    ~IommufdBackend() override {
        // The device first (closing the cdev detaches and unbinds it), then the IOAS, then
        // /dev/iommu (the member's own destructor).
        device_.reset();
        iommu_destroy d{};
        d.size = sizeof(d);
        d.id = ioas_;
        ::ioctl(iommufd_.get(), IOMMU_DESTROY, &d);
    }
    IommufdBackend(const IommufdBackend&) = delete;
    IommufdBackend& operator=(const IommufdBackend&) = delete;

    Mode mode() const noexcept override { return Mode::iommufd; }
    int device_fd() const noexcept override { return device_.get(); }
    std::vector<IovaRange> iova_ranges() const override { return ranges_; }

    Result<hw::Iova> map(void* va, std::size_t len, hw::Iova iova, hw::DmaAccess access) override {
        iommu_ioas_map m{};
        m.size = sizeof(m);
        constexpr auto kFixed = static_cast<std::uint32_t>(IOMMU_IOAS_MAP_FIXED_IOVA);
        constexpr auto kRead = static_cast<std::uint32_t>(IOMMU_IOAS_MAP_READABLE);
        constexpr auto kWrite = static_cast<std::uint32_t>(IOMMU_IOAS_MAP_WRITEABLE);
        m.flags = kFixed | (hw::allows(access, hw::DmaAccess::read) ? kRead : 0u) |
                  (hw::allows(access, hw::DmaAccess::write) ? kWrite : 0u);
        m.ioas_id = ioas_;
        m.user_va = reinterpret_cast<std::uintptr_t>(va);
        m.length = len;
        m.iova = iova;
        if (::ioctl(iommufd_.get(), IOMMU_IOAS_MAP, &m) != 0) {
            const int err = errno;
            if (err == ENOMEM) {
                return memlock_failure(len, mapped_);
            }
            return fail_detail(err, "IOMMU_IOAS_MAP of " + std::to_string(len) + " bytes");
        }
        mapped_ += len;
        return iova;
    }

    Result<void> unmap(hw::Iova iova, std::size_t len) override {
        iommu_ioas_unmap u{};
        u.size = sizeof(u);
        u.ioas_id = ioas_;
        u.iova = iova;
        u.length = len;
        if (::ioctl(iommufd_.get(), IOMMU_IOAS_UNMAP, &u) != 0) {
            return fail_detail(errno, "IOMMU_IOAS_UNMAP");
        }
        mapped_ -= std::min<std::size_t>(mapped_, u.length);
        if (u.length != len) {
            return fail_detail(EIO, "IOMMU_IOAS_UNMAP unmapped " + std::to_string(u.length) +
                                        " of " + std::to_string(len) + " bytes");
        }
        return ok();
    }

private:
    UniqueFd iommufd_;
    std::uint32_t ioas_;
    UniqueFd device_;
    std::vector<IovaRange> ranges_;
    std::size_t mapped_ = 0;
};

}  // namespace

Result<std::unique_ptr<DmaBackend>> open_iommufd(const std::string& bdf) {
    auto fn = sysfs::read_function(bdf);
    if (!fn) {
        return fail_detail(ENODEV, "no PCI function " + bdf);
    }
    if (fn->vfio_cdev.empty()) {
        return fail_detail(ENODEV, bdf +
                                       " has no vfio cdev (not bound to vfio-pci, or the kernel "
                                       "lacks CONFIG_VFIO_DEVICE_CDEV)");
    }
    UniqueFd iommufd(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
    if (!iommufd) {
        return fail_detail(errno, "/dev/iommu (kernel without CONFIG_IOMMUFD?)");
    }
    const std::string cdev = "/dev/vfio/devices/" + fn->vfio_cdev;
    UniqueFd device(::open(cdev.c_str(), O_RDWR | O_CLOEXEC));
    if (!device) {
        return fail_detail(errno, cdev);
    }
    vfio_device_bind_iommufd bind{};
    bind.argsz = sizeof(bind);
    bind.iommufd = iommufd.get();
    if (::ioctl(device.get(), VFIO_DEVICE_BIND_IOMMUFD, &bind) != 0) {
        const int err = errno;
        return fail_detail(err, err == EBUSY ? cdev + ": the device is in use (group or cdev open)"
                                             : "VFIO_DEVICE_BIND_IOMMUFD " + cdev);
    }
    iommu_ioas_alloc alloc{};
    alloc.size = sizeof(alloc);
    if (::ioctl(iommufd.get(), IOMMU_IOAS_ALLOC, &alloc) != 0) {
        return fail_detail(errno, "IOMMU_IOAS_ALLOC");
    }
    const std::uint32_t ioas = alloc.out_ioas_id;
    auto destroy_ioas = [&] {
        iommu_destroy d{};
        d.size = sizeof(d);
        d.id = ioas;
        ::ioctl(iommufd.get(), IOMMU_DESTROY, &d);
    };
    vfio_device_attach_iommufd_pt attach{};
    attach.argsz = sizeof(attach);
    attach.pt_id = ioas;
    if (::ioctl(device.get(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) != 0) {
        const int err = errno;
        device.reset();
        destroy_ioas();
        return fail_detail(err, "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
    }
    auto ranges = query_ranges(iommufd.get(), ioas);
    if (!ranges) {
        device.reset();
        destroy_ioas();
        return Failure{ranges.error()};
    }
    return std::unique_ptr<DmaBackend>(std::make_unique<IommufdBackend>(
        std::move(iommufd), ioas, std::move(device), std::move(*ranges)));
}

}  // namespace tbv::vfio
