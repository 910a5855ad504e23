// SPDX-License-Identifier: Apache-2.0
// VfioDevice: the layer-0 Device over VFIO (vfio_device.hpp).
#include "vfio/vfio_device.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"
#include "vfio/uapi.hpp"

namespace tbv::vfio {

namespace {

// PCI config space (PCI Local Bus 3.0 §6.2).
constexpr std::uint32_t kCfgVendor = 0x00;
constexpr std::uint32_t kCfgCommand = 0x04;
constexpr std::uint32_t kCfgRevClass = 0x08;
constexpr std::uint32_t kCfgSubsys = 0x2c;
constexpr std::uint32_t kCmdMemory = 1u << 1;
constexpr std::uint32_t kCmdBusMaster = 1u << 2;
constexpr std::uint32_t kCmdIntxDisable = 1u << 10;

Result<std::unique_ptr<DmaBackend>> open_backend(const std::string& bdf, Mode mode) {
    if (mode == Mode::automatic) {
        if (const char* env = std::getenv("TBV_VFIO_MODE"); env != nullptr && *env != '\0') {
            auto m = parse_mode(env);
            if (!m) {
                return fail_detail(EINVAL, std::string("TBV_VFIO_MODE='") + env +
                                               "' (want legacy, iommufd, noiommu or auto)");
            }
            mode = *m;
        }
    }
    switch (mode) {
        case Mode::legacy: return open_container(bdf);
        case Mode::iommufd: return open_iommufd(bdf);
        case Mode::noiommu: return open_noiommu(bdf);
        case Mode::automatic: break;
    }
    auto fn = sysfs::read_function(bdf);
    if (!fn) {
        return fail_detail(ENODEV, "no PCI function " + bdf);
    }
    if (fn->driver != "vfio-pci") {
        return fail_detail(
            ENODEV, bdf + " is bound to " +
                        (fn->driver.empty() ? std::string("no driver") : "'" + fn->driver + "'") +
                        ", not vfio-pci: run `tbv bind " + bdf + "`");
    }
    // The node `tbv bind` links for UCX is the one opened here: one choice, in sysfs::vfio_node.
    const auto node = sysfs::vfio_node(*fn);
    if (node && node->starts_with("/dev/vfio/devices/")) {
        return open_iommufd(bdf);
    }
    if (node && node->starts_with("/dev/vfio/noiommu-")) {
        return open_noiommu(bdf);
    }
    return open_container(bdf);
}

}  // namespace

const char* mode_name(Mode m) noexcept {
    switch (m) {
        case Mode::legacy: return "legacy";
        case Mode::iommufd: return "iommufd";
        case Mode::noiommu: return "noiommu";
        case Mode::automatic: break;
    }
    return "auto";
}

std::optional<Mode> parse_mode(const std::string& s) {
    for (Mode m : {Mode::automatic, Mode::legacy, Mode::iommufd, Mode::noiommu}) {
        if (s == mode_name(m)) {
            return m;
        }
    }
    return std::nullopt;
}

Result<std::unique_ptr<VfioDevice>> VfioDevice::open(const std::string& bdf,
                                                     const Options& options) {
    auto norm = sysfs::normalize_bdf(bdf);
    if (!norm) {
        return fail_detail(EINVAL, "'" + bdf + "' is not a PCI address (like 0000:c4:00.5)");
    }
    auto backend = open_backend(*norm, options.mode);
    if (!backend) {
        return Failure{backend.error()};
    }
    std::unique_ptr<VfioDevice> dev(new VfioDevice(*norm, std::move(*backend), options));
    if (auto r = dev->init(); !r) {
        return Failure{r.error()};
    }
    return dev;
}

VfioDevice::VfioDevice(std::string bdf, std::unique_ptr<DmaBackend> backend, const Options& options)
    : bdf_(std::move(bdf)), options_(options), backend_(std::move(backend)) {}

VfioDevice::~VfioDevice() {
    disable_irqs();
    // Remaining mappings go with the IOMMU context when the backend closes; bar0_ unmaps first.
}

Result<void> VfioDevice::init() {
    const int fd = backend_->device_fd();
    vfio_device_info info{};
    info.argsz = sizeof(info);
    if (::ioctl(fd, VFIO_DEVICE_GET_INFO, &info) != 0) {
        return fail_detail(errno, "VFIO_DEVICE_GET_INFO");
    }
    if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0) {
        return fail_detail(ENODEV, bdf_ + " is not a PCI device");
    }
    has_reset_ = (info.flags & VFIO_DEVICE_FLAGS_RESET) != 0;
    auto cfg = region_info(fd, VFIO_PCI_CONFIG_REGION_INDEX);
    if (!cfg) {
        return Failure{cfg.error()};
    }
    config_offset_ = cfg->offset;
    auto id = config_read(kCfgVendor, 4);
    auto rc = config_read(kCfgRevClass, 4);
    auto ss = config_read(kCfgSubsys, 4);
    if (!id || !rc || !ss) {
        return fail_detail(EIO, "cannot read config space of " + bdf_);
    }
    identity_.vendor = static_cast<std::uint16_t>(*id & 0xffffu);
    identity_.device = static_cast<std::uint16_t>(*id >> 16);
    identity_.revision = static_cast<std::uint8_t>(*rc & 0xffu);
    identity_.class_code = *rc >> 8;
    identity_.subsystem_vendor = static_cast<std::uint16_t>(*ss & 0xffffu);
    identity_.subsystem_device = static_cast<std::uint16_t>(*ss >> 16);
    if (identity_.vendor == 0xffff) {
        return fail_detail(Errc::device_gone, bdf_ + " reads all-ones: it left the bus");
    }
    auto bar = region_info(fd, VFIO_PCI_BAR0_REGION_INDEX);
    if (!bar) {
        return Failure{bar.error()};
    }
    if (bar->size == 0) {
        return fail_detail(ENODEV, bdf_ + " has no BAR0");
    }
    bar0_info_ = *bar;
    auto mapped = MappedBar::map(fd, bar0_info_);
    if (!mapped) {
        return Failure{mapped.error()};
    }
    bar0_ = std::move(*mapped);
    // Memory decoding on (BAR access); bus mastering stays as it is until set_bus_master().
    if (auto cmd = config_read(kCfgCommand, 2); cmd && (*cmd & kCmdMemory) == 0) {
        (void)config_write(kCfgCommand, 2, *cmd | kCmdMemory);
    }
    allocator_ = IovaAllocator(backend_->iova_ranges(), options_.iova_min, options_.iova_max);
    irq_kind_ = best_irq_kind(fd);
    irq_vectors_ = irq_count(fd, irq_kind_);
    return ok();
}

std::uint32_t VfioDevice::read32(std::uint32_t offset) noexcept {
    if ((offset & 3u) != 0 || std::uint64_t{offset} + 4 > bar0_.size()) {
        return 0xffffffffu;
    }
    return bar0_.read32(offset);
}

void VfioDevice::write32(std::uint32_t offset, std::uint32_t value) noexcept {
    if ((offset & 3u) != 0 || std::uint64_t{offset} + 4 > bar0_.size()) {
        return;
    }
    bar0_.write32(offset, value);
}

Result<hw::Iova> VfioDevice::dma_map(void* addr, std::size_t len, hw::DmaAccess access) {
    if (addr == nullptr || len == 0 || len % hw::kDmaPageSize != 0 ||
        reinterpret_cast<std::uintptr_t>(addr) % hw::kDmaPageSize != 0) {
        return fail_detail(EINVAL, "dma_map wants page-aligned memory and a page-multiple length");
    }
    if (backend_->chooses_address()) {
        return backend_->map(addr, len, 0, access);
    }
    auto iova = allocator_.allocate(len);
    if (!iova) {
        return fail_detail(ENOSPC, "no free IOVA range of " + std::to_string(len) + " bytes");
    }
    auto r = backend_->map(addr, len, *iova, access);
    if (!r) {
        (void)allocator_.release(*iova, len);
    }
    return r;
}

Result<void> VfioDevice::dma_unmap(hw::Iova iova, std::size_t len) {
    if (backend_->chooses_address()) {
        return backend_->unmap(iova, len);
    }
    if (!allocator_.is_allocation(iova, len)) {
        return fail_detail(ENOENT, "not a mapping returned by dma_map");
    }
    auto r = backend_->unmap(iova, len);
    // The IOVA is free again only if the kernel really unmapped it.
    if (r) {
        (void)allocator_.release(iova, len);
    }
    return r;
}

bool VfioDevice::present() const noexcept {
    auto v = config_read(kCfgVendor, 2);
    return v && *v != 0xffffu;
}

Result<void> VfioDevice::set_bus_master(bool enable) {
    auto cmd = config_read(kCfgCommand, 2);
    if (!cmd) {
        return Failure{cmd.error()};
    }
    if (*cmd == 0xffffu && !present()) {
        return fail_detail(Errc::device_gone, bdf_ + " left the bus");
    }
    const std::uint32_t want =
        enable ? (*cmd | kCmdBusMaster | kCmdMemory) : (*cmd & ~kCmdBusMaster);
    return config_write(kCfgCommand, 2, want);
}

bool VfioDevice::bus_master() const noexcept {
    auto cmd = config_read(kCfgCommand, 2);
    return cmd && *cmd != 0xffffu && (*cmd & kCmdBusMaster) != 0;
}

Result<void> VfioDevice::enable_irqs(unsigned count) {
    if (count == 0 || count > irq_vectors_) {
        return fail_detail(EINVAL, "enable_irqs(" + std::to_string(count) + "): the function has " +
                                       std::to_string(irq_vectors_) + " vectors");
    }
    disable_irqs();
    auto fds = irq_enable(backend_->device_fd(), irq_kind_, count);
    if (!fds) {
        return Failure{fds.error()};
    }
    irq_fds_ = std::move(*fds);
    if (irq_kind_ == IrqKind::intx) {
        // INTx is level-triggered and shared: make sure the function may assert it.
        if (auto cmd = config_read(kCfgCommand, 2); cmd && (*cmd & kCmdIntxDisable) != 0) {
            (void)config_write(kCfgCommand, 2, *cmd & ~kCmdIntxDisable);
        }
    }
    return ok();
}

void VfioDevice::disable_irqs() noexcept {
    if (!irq_fds_.empty()) {
        irq_disable(backend_->device_fd(), irq_kind_);
        irq_fds_.clear();
    }
}

int VfioDevice::irq_eventfd(unsigned vector) const noexcept {
    return vector < irq_fds_.size() ? irq_fds_[vector].get() : -1;
}

Result<void> VfioDevice::unmask_intx() {
    if (irq_kind_ != IrqKind::intx) {
        return fail_detail(EINVAL, "the function does not use INTx");
    }
    return intx_unmask(backend_->device_fd());
}

Result<void> VfioDevice::reset() {
    if (!present()) {
        return fail_detail(Errc::device_gone, bdf_ + " left the bus");
    }
    if (has_reset_) {
        if (::ioctl(backend_->device_fd(), VFIO_DEVICE_RESET) != 0) {
            return fail_detail(errno, "VFIO_DEVICE_RESET " + bdf_);
        }
    } else if (!options_.soft_reset_fallback) {
        return fail_detail(Errc::not_supported,
                           bdf_ + " offers no function reset (no FLR or PM reset)");
    }
    // The kernel restores the saved command register after a function reset, bus mastering
    // included; the contract wants it off until the caller enables it again.
    if (auto r = set_bus_master(false); !r) {
        return r;
    }
    return ok();
}

Result<std::uint32_t> VfioDevice::config_read(std::uint32_t off, unsigned width) const {
    return vfio::config_read(backend_->device_fd(), config_offset_, off, width);
}

Result<void> VfioDevice::config_write(std::uint32_t off, unsigned width, std::uint32_t value) {
    return vfio::config_write(backend_->device_fd(), config_offset_, off, width, value);
}

}  // namespace tbv::vfio
