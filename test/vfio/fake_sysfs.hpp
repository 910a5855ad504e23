// SPDX-License-Identifier: Apache-2.0
// A fake /sys tree in a temporary directory, pointed to by TBV_SYSFS_ROOT while it lives.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "hw/nhi_regs.hpp"

namespace tbv::test {

class FakeSysfs {
public:
    FakeSysfs() {
        char tmpl[] = "/tmp/tbv-sysfs-XXXXXX";
        root_ = ::mkdtemp(tmpl);
        std::filesystem::create_directories(root_ / "sys/bus/pci/devices");
        std::filesystem::create_directories(root_ / "sys/bus/pci/drivers/vfio-pci");
        ::setenv("TBV_SYSFS_ROOT", root_.c_str(), 1);
    }
    FakeSysfs(const FakeSysfs&) = delete;
    FakeSysfs& operator=(const FakeSysfs&) = delete;
    ~FakeSysfs() {
        ::unsetenv("TBV_SYSFS_ROOT");
        std::error_code ec;
        std::filesystem::remove_all(root_, ec);
    }

    /// Adds a function; group < 0 means no IOMMU group; driver "" means unbound.
    void add(const std::string& bdf, std::uint16_t vendor, std::uint16_t device, std::uint32_t cls,
             const std::string& driver, int group) {
        namespace fs = std::filesystem;
        const fs::path d = root_ / "sys/devices/pci0000:00" / bdf;
        fs::create_directories(d);
        write(d / "vendor", hex(vendor, 4));
        write(d / "device", hex(device, 4));
        write(d / "class", hex(cls, 6));
        write(d / "subsystem_vendor", "0x0000");
        write(d / "subsystem_device", "0x0000");
        write(d / "driver_override", "(null)");
        fs::create_directory_symlink(d, root_ / "sys/bus/pci/devices" / bdf);
        if (!driver.empty()) {
            fs::create_directories(root_ / "sys/bus/pci/drivers" / driver);
            fs::create_directory_symlink(root_ / "sys/bus/pci/drivers" / driver, d / "driver");
        }
        if (group >= 0) {
            const fs::path g = root_ / "sys/kernel/iommu_groups" / std::to_string(group);
            fs::create_directories(g / "devices");
            fs::create_directory_symlink(d, g / "devices" / bdf);
            fs::create_directory_symlink(g, d / "iommu_group");
            fs::create_directories(root_ / "sys/class/iommu/dmar0");
        }
    }

    /// A resource0 file big enough to hold REG_FW_STS, with that register set to `fw_sts`.
    void add_bar0(const std::string& bdf, std::uint32_t fw_sts) {
        const auto path = root_ / "sys/devices/pci0000:00" / bdf / "resource0";
        std::ofstream f(path, std::ios::binary);
        std::string zeros(hw::nhi::REG_FW_STS, '\0');
        f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
        f.write(reinterpret_cast<const char*>(&fw_sts), sizeof(fw_sts));
        f.write(zeros.data(), 4096);
    }

    const std::filesystem::path& root() const { return root_; }

private:
    static std::string hex(std::uint32_t v, int digits) {
        char buf[16];
        std::snprintf(buf, sizeof(buf), "0x%0*x", digits, v);
        return buf;
    }
    static void write(const std::filesystem::path& p, const std::string& s) {
        std::ofstream(p) << s << "\n";
    }

    std::filesystem::path root_;
};

}  // namespace tbv::test
