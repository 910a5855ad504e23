// SPDX-License-Identifier: Apache-2.0
// The logic behind `tbv list`, `tbv bind` and `tbv unbind`, kept out of the command files so unit
// tests can run it against a fake sysfs tree (TBV_SYSFS_ROOT): which PCI functions are USB4 host
// interfaces, whether the VFIO path is usable and why not, and moving a function between its
// kernel driver and vfio-pci.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tbv/result.hpp"
#include "vfio/pci_sysfs.hpp"

namespace tbv::tools {

/// A known NHI by PCI ID (nhi-reference §1.2), or by class 0x0c0340 (§1.1).
struct NhiId {
    std::uint16_t vendor;
    std::uint16_t device;
    const char* name;
    bool icm_capable;  ///< Intel parts whose firmware may run the connection manager
};

/// Name of a known NHI, or nullptr; class 0x0c0340 functions are USB4 hosts even when unknown.
const NhiId* find_nhi(std::uint16_t vendor, std::uint16_t device) noexcept;
bool is_usb4_host(const vfio::sysfs::PciFunction& f) noexcept;

/// REG_FW_STS through BAR0 (sysfs resource0): nullopt when it cannot be read (not root, BAR
/// disabled, device in D3 reading all-ones).
std::optional<std::uint32_t> read_fw_sts(const std::string& bdf);

enum class VfioState {
    ready,     ///< bound to vfio-pci and the group is viable: a tbverbs process can open it
    bindable,  ///< `tbv bind` would make it ready
    blocked,   ///< something stops the VFIO path (see reason)
};
const char* state_name(VfioState s) noexcept;

struct HostReport {
    vfio::sysfs::PciFunction fn;
    std::string name;                ///< family name or "USB4 host interface"
    std::optional<bool> icm_active;  ///< firmware connection manager running (Intel only)
    VfioState state = VfioState::blocked;
    std::string reason;  ///< why not ready, and what to do
};

/// Assesses one function (does not require it to be an NHI).
HostReport assess(const vfio::sysfs::PciFunction& fn);
/// Every USB4 host interface (or, with all_functions, every PCI function) with its assessment.
std::vector<HostReport> list_hosts(bool all_functions);

struct BindOptions {
    bool any_device = false;  ///< test option: accept functions that are not NHIs
};

/// Binds `bdf` to vfio-pci (driver_override + drivers_probe). Errors: EPERM not root, ENODEV no
/// such function / not an NHI / no IOMMU, EBUSY group not viable or device in use, ENOTSUP
/// firmware connection manager active. vfio::last_error_detail() says which and what to do.
Result<void> bind_vfio(const std::string& bdf, const BindOptions& opts);
/// Gives `bdf` back to its kernel driver (thunderbolt for an NHI). Returns the new driver name.
Result<std::string> unbind_vfio(const std::string& bdf, const BindOptions& opts);

/// PIDs (with their command names) that hold the function's VFIO group or cdev open.
std::vector<std::string> vfio_users(const vfio::sysfs::PciFunction& fn);

}  // namespace tbv::tools
