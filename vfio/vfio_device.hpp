// SPDX-License-Identifier: Apache-2.0
// VfioDevice: tbv::hw::Device on a real PCI function owned through VFIO (legacy container/group,
// iommufd cdev, or no-IOMMU), per the contract in src/hw/device.hpp. Control-plane calls are not
// thread-safe (one owner); read32/write32 may be called from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hw/device.hpp"
#include "tbv/result.hpp"
#include "vfio/dma_backend.hpp"
#include "vfio/iova_allocator.hpp"
#include "vfio/irqs.hpp"
#include "vfio/regions.hpp"
#include "vfio/unique_fd.hpp"

namespace tbv::vfio {

struct Options {
    /// automatic: TBV_VFIO_MODE (legacy|iommufd|noiommu) if set, else iommufd when the function
    /// has a vfio cdev and /dev/iommu exists, else legacy, else no-IOMMU when enabled.
    Mode mode = Mode::automatic;
    /// IOVAs are taken from [iova_min, iova_max] within the reported ranges. 1 MiB keeps IOVA 0
    /// (a classic "forgot to set the address" value) unused; iova_max fits devices that cannot
    /// drive all 64 address bits.
    hw::Iova iova_min = 1ULL << 20;
    hw::Iova iova_max = ~hw::Iova{0};
    /// Functions without any reset (no FLR, no PM reset, VFIO_DEVICE_FLAGS_RESET clear) make
    /// reset() fail with not_supported; with this set, reset() only turns bus mastering and
    /// interrupts off instead. For test devices such as QEMU's edu.
    bool soft_reset_fallback = false;
};

/// Parses "legacy" | "iommufd" | "noiommu" | "auto".
std::optional<Mode> parse_mode(const std::string& s);

class VfioDevice final : public hw::Device {
public:
    /// Opens `bdf` (which must be bound to vfio-pci). Errors carry an errno code plus
    /// last_error_detail() explaining the cause and the fix.
    static Result<std::unique_ptr<VfioDevice>> open(const std::string& bdf,
                                                    const Options& options = {});
    ~VfioDevice() override;

    const std::string& name() const noexcept override { return bdf_; }
    hw::PciIdentity identity() const noexcept override { return identity_; }
    std::size_t bar0_size() const noexcept override { return bar0_.size(); }

    std::uint32_t read32(std::uint32_t offset) noexcept override;
    void write32(std::uint32_t offset, std::uint32_t value) noexcept override;

    Result<hw::Iova> dma_map(void* addr, std::size_t len, hw::DmaAccess access) override;
    Result<void> dma_unmap(hw::Iova iova, std::size_t len) override;

    Result<void> set_bus_master(bool enable) override;
    bool bus_master() const noexcept override;

    unsigned irq_vector_count() const noexcept override { return irq_vectors_; }
    Result<void> enable_irqs(unsigned count) override;
    void disable_irqs() noexcept override;
    int irq_eventfd(unsigned vector) const noexcept override;

    Result<void> reset() override;

    // ---- VFIO specifics ----
    Mode mode() const noexcept { return backend_->mode(); }
    /// Kind of interrupt behind irq_eventfd(): MSI-X, or MSI/INTx for functions without MSI-X.
    IrqKind irq_kind() const noexcept { return irq_kind_; }
    /// After an INTx fired and was handled (INTx only).
    Result<void> unmask_intx();
    bool has_reset() const noexcept { return has_reset_; }
    const std::vector<IovaRange>& iova_ranges() const noexcept { return allocator_.ranges(); }
    const RegionInfo& bar0_info() const noexcept { return bar0_info_; }
    std::uint64_t bar0_mapped_bytes() const noexcept { return bar0_.mapped_bytes(); }
    /// False once the function reads all-ones in config space (it left the bus).
    bool present() const noexcept;
    Result<std::uint32_t> config_read(std::uint32_t off, unsigned width) const;
    Result<void> config_write(std::uint32_t off, unsigned width, std::uint32_t value);

private:
    VfioDevice(std::string bdf, std::unique_ptr<DmaBackend> backend, const Options& options);
    Result<void> init();

    const std::string bdf_;
    Options options_;
    // Set-up order = reverse tear-down order: the backend (device fd, group/container or
    // iommufd) outlives the BAR mapping, the IOVA bookkeeping and the interrupt eventfds.
    std::unique_ptr<DmaBackend> backend_;
    hw::PciIdentity identity_;
    std::uint64_t config_offset_ = 0;
    bool has_reset_ = false;
    RegionInfo bar0_info_;
    MappedBar bar0_;
    IovaAllocator allocator_;
    IrqKind irq_kind_ = IrqKind::none;
    unsigned irq_vectors_ = 0;
    std::vector<UniqueFd> irq_fds_;
};

}  // namespace tbv::vfio
