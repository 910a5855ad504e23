// SPDX-License-Identifier: Apache-2.0
// What sysfs says about PCI functions: IDs, class, bound driver, IOMMU group and its members, the
// vfio cdev name, and whether the kernel has an IOMMU at all. Every path goes through root(), so
// tests point TBV_SYSFS_ROOT at a fake tree in a temporary directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tbv::vfio::sysfs {

/// Prefix for /sys paths: $TBV_SYSFS_ROOT if set, else "" (the real /sys).
std::string root();
/// root() + "/sys/bus/pci/devices/" + bdf + "/" + leaf
std::string device_path(const std::string& bdf, const std::string& leaf = "");

/// "0000:00:03.0" from "00:03.0" or "0000:00:03.0"; nullopt if it is not a PCI address.
std::optional<std::string> normalize_bdf(const std::string& s);

std::optional<std::string> read_attr(const std::string& path);
std::optional<std::uint32_t> read_hex(const std::string& path);
/// Writes `value` to a sysfs attribute; 0 or an errno.
int write_attr(const std::string& path, const std::string& value);

/// Every PCI function, sorted by address.
std::vector<std::string> pci_devices();

struct PciFunction {
    std::string bdf;
    std::uint16_t vendor = 0;
    std::uint16_t device = 0;
    std::uint32_t class_code = 0;
    std::uint16_t subsystem_vendor = 0;
    std::uint16_t subsystem_device = 0;
    std::string driver;                      ///< bound driver name, "" if none
    std::optional<int> iommu_group;          ///< nullopt: no IOMMU group (no IOMMU, or not enabled)
    std::vector<std::string> group_members;  ///< every function of the group, this one included
    std::string driver_override;             ///< "" when unset ("(null)" in sysfs)
    std::string vfio_cdev;  ///< "vfio3" when bound to vfio-pci with the cdev, else ""
};

std::optional<PciFunction> read_function(const std::string& bdf);

/// The IOMMU group of a function (the iommu_group link's target name).
std::optional<int> iommu_group(const std::string& bdf);
std::vector<std::string> group_members(int group);
/// Name of the bound driver, "" if none.
std::string driver(const std::string& bdf);

/// The USB4 host interfaces (class 0x0c0340) bound to vfio-pci, sorted by address: the NHIs a
/// tbverbs process may open. Cheap (a directory listing and three small reads per function);
/// an unreadable sysfs is an empty list, never an error.
std::vector<std::string> vfio_bound_usb4_hosts();

/// True if any IOMMU is registered (/sys/class/iommu has entries).
bool iommu_present();
/// True if vfio's enable_unsafe_noiommu_mode parameter is Y.
bool noiommu_enabled();

// ---- the device node verbs consumers look for -------------------------------------------------
// UCX (uct_ib_device_is_accessible) keeps an ibv_device only if /dev/infiniband/<dev_name> is a
// character device the user may read and write; a kernel HCA has its uverbs node there. Ours is
// a link, made by `tbv bind`, to the VFIO node the provider opens: the same permission decides.

/// ibv_device::dev_name of the device on VFIO function `bdf`: "tbv-0000:c4:00.5".
std::string devnode_name(const std::string& bdf);
/// ibv_device::dev_name of an emulated device (the emulator has no node of its own).
inline constexpr const char* kEmuDevnodeName = "tbv-emu";
/// root() + "/dev/infiniband"
std::string devnode_dir();
/// The VFIO character device the provider opens for `fn` (iommufd cdev, no-IOMMU group or
/// group): the one vfio_device.cpp opens in automatic mode; nullopt if none (not on vfio-pci).
std::optional<std::string> vfio_node(const PciFunction& fn);

}  // namespace tbv::vfio::sysfs
