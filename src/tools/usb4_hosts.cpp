// SPDX-License-Identifier: Apache-2.0
// USB4 host discovery and vfio-pci binding (usb4_hosts.hpp).
#include "tools/usb4_hosts.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "hw/device.hpp"
#include "hw/nhi_regs.hpp"
#include "vfio/error.hpp"

namespace tbv::tools {

namespace fs = std::filesystem;
using vfio::fail_detail;
using vfio::sysfs::PciFunction;

namespace {

// nhi-reference §1.2 (Linux nhi.h / nhi.c). Intel TB3/TB4 parts may run the firmware connection
// manager (ICM); the newest Intel and all AMD parts use the software one.
constexpr NhiId kNhis[] = {
    {0x8086, 0x1575, "Intel Alpine Ridge 2C", true},
    {0x8086, 0x1577, "Intel Alpine Ridge 4C", true},
    {0x8086, 0x15bf, "Intel Alpine Ridge LP", true},
    {0x8086, 0x15d2, "Intel Alpine Ridge C 4C", true},
    {0x8086, 0x15d9, "Intel Alpine Ridge C 2C", true},
    {0x8086, 0x15dc, "Intel Alpine Ridge LP USB-only", true},
    {0x8086, 0x15dd, "Intel Alpine Ridge USB-only", true},
    {0x8086, 0x15de, "Intel Alpine Ridge C USB-only", true},
    {0x8086, 0x15e8, "Intel Titan Ridge 2C", true},
    {0x8086, 0x15eb, "Intel Titan Ridge 4C", true},
    {0x8086, 0x8a17, "Intel Ice Lake NHI0", true},
    {0x8086, 0x8a0d, "Intel Ice Lake NHI1", true},
    {0x8086, 0x9a1b, "Intel Tiger Lake NHI0", true},
    {0x8086, 0x9a1d, "Intel Tiger Lake NHI1", true},
    {0x8086, 0x9a1f, "Intel Tiger Lake-H NHI0", true},
    {0x8086, 0x9a21, "Intel Tiger Lake-H NHI1", true},
    {0x8086, 0x463e, "Intel Alder Lake NHI0", true},
    {0x8086, 0x466d, "Intel Alder Lake NHI1", true},
    {0x8086, 0xa73e, "Intel Raptor Lake NHI0", true},
    {0x8086, 0xa76d, "Intel Raptor Lake NHI1", true},
    {0x8086, 0x7eb2, "Intel Meteor Lake-M NHI", true},
    {0x8086, 0x7ec2, "Intel Meteor Lake-P NHI0", true},
    {0x8086, 0x7ec3, "Intel Meteor Lake-P NHI1", true},
    {0x8086, 0xa833, "Intel Lunar Lake NHI0", false},
    {0x8086, 0xa834, "Intel Lunar Lake NHI1", false},
    {0x8086, 0xe333, "Intel Panther Lake-M NHI0", false},
    {0x8086, 0xe334, "Intel Panther Lake-M NHI1", false},
    {0x8086, 0xe433, "Intel Panther Lake-P NHI0", false},
    {0x8086, 0xe434, "Intel Panther Lake-P NHI1", false},
    {0x8086, 0x1134, "Intel Maple Ridge 2C", true},
    {0x8086, 0x1137, "Intel Maple Ridge 4C", true},
    {0x8086, 0x5781, "Intel Barlow Ridge 80G", false},
    {0x8086, 0x5784, "Intel Barlow Ridge 40G", false},
    {0x1022, 0x162e, "AMD Rembrandt USB4 NHI0", false},
    {0x1022, 0x162f, "AMD Rembrandt USB4 NHI1", false},
    {0x1022, 0x1668, "AMD Pink Sardine USB4 NHI0", false},
    {0x1022, 0x1669, "AMD Pink Sardine USB4 NHI1", false},
};

bool is_root() {
    return ::geteuid() == 0;
}

/// Group members (other than `bdf`) bound to a driver that makes the group unviable.
std::vector<std::string> group_blockers(const PciFunction& fn) {
    std::vector<std::string> out;
    for (const std::string& m : fn.group_members) {
        if (m == fn.bdf) {
            continue;
        }
        const std::string drv = vfio::sysfs::driver(m);
        if (!drv.empty() && drv != "vfio-pci" && drv != "pci-stub") {
            out.push_back(m + " (" + drv + ")");
        }
    }
    return out;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) {
        s += (s.empty() ? "" : ", ") + x;
    }
    return s;
}

bool vfio_pci_available() {
    return fs::exists(vfio::sysfs::root() + "/sys/bus/pci/drivers/vfio-pci");
}

}  // namespace

const NhiId* find_nhi(std::uint16_t vendor, std::uint16_t device) noexcept {
    for (const NhiId& n : kNhis) {
        if (n.vendor == vendor && n.device == device) {
            return &n;
        }
    }
    return nullptr;
}

bool is_usb4_host(const PciFunction& f) noexcept {
    return f.class_code == hw::kClassUsb4Nhi || find_nhi(f.vendor, f.device) != nullptr;
}

std::optional<std::uint32_t> read_fw_sts(const std::string& bdf) {
    const std::string path = vfio::sysfs::device_path(bdf, "resource0");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    struct stat st {};
    const std::size_t need = hw::nhi::REG_FW_STS + 4;
    std::optional<std::uint32_t> out;
    if (::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= need) {
        const long page = ::sysconf(_SC_PAGESIZE);
        const auto pg = static_cast<std::size_t>(page);
        const std::size_t base = hw::nhi::REG_FW_STS / pg * pg;
        void* p = ::mmap(nullptr, pg, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(base));
        if (p != MAP_FAILED) {
            const auto* reg = reinterpret_cast<const volatile std::uint32_t*>(
                static_cast<const std::byte*>(p) + (hw::nhi::REG_FW_STS - base));
            const std::uint32_t v = *reg;
            ::munmap(p, pg);
            if (v != 0xffffffffu) {
                out = v;
            }
        }
    }
    ::close(fd);
    return out;
}

const char* state_name(VfioState s) noexcept {
    switch (s) {
        case VfioState::ready: return "ready";
        case VfioState::bindable: return "bindable";
        case VfioState::blocked: break;
    }
    return "blocked";
}

HostReport assess(const PciFunction& fn) {
    HostReport r;
    r.fn = fn;
    const NhiId* known = find_nhi(fn.vendor, fn.device);
    r.name = known != nullptr                     ? known->name
             : fn.class_code == hw::kClassUsb4Nhi ? "USB4 host interface"
                                                  : "PCI function";
    if (fn.vendor == 0x8086 && (known == nullptr || known->icm_capable)) {
        if (auto sts = read_fw_sts(fn.bdf)) {
            r.icm_active = hw::nhi::FW_STS_ICM_EN::get(*sts) != 0;
        }
    } else if (is_usb4_host(fn)) {
        r.icm_active = false;  // AMD and other non-Intel hosts have no firmware CM (ref §2.6)
    }
    if (r.icm_active.value_or(false)) {
        r.state = VfioState::blocked;
        r.reason =
            "the firmware connection manager (Intel ICM, REG_FW_STS.ICM_EN) owns this controller; "
            "it cannot be driven from userspace unless the firmware switches to the software "
            "connection manager (BIOS: 'native' / OS-managed USB4/Thunderbolt)";
        return r;
    }
    if (!fn.iommu_group) {
        r.state = VfioState::blocked;
        r.reason = vfio::sysfs::noiommu_enabled()
                       ? "no IOMMU group; vfio no-IOMMU mode is enabled, bind to get an unsafe "
                         "noiommu group"
                       : "no IOMMU: enable it in the firmware (VT-d / AMD-Vi) and boot with "
                         "intel_iommu=on or amd_iommu=on iommu=pt";
        if (vfio::sysfs::noiommu_enabled()) {
            r.state = VfioState::bindable;
        }
        return r;
    }
    const auto blockers = group_blockers(fn);
    if (!blockers.empty()) {
        r.state = VfioState::blocked;
        r.reason = "IOMMU group " + std::to_string(*fn.iommu_group) +
                   " is shared with devices bound to other drivers: " + join(blockers) +
                   " (all must use vfio-pci or no driver)";
        return r;
    }
    if (fn.driver == "vfio-pci") {
        r.state = VfioState::ready;
        r.reason = is_root() ? "" : "open /dev/vfio needs root or ownership of the group node";
        return r;
    }
    r.state = VfioState::bindable;
    r.reason = (fn.driver.empty() ? std::string("no driver bound") : "bound to " + fn.driver) +
               ": run `tbv bind " + fn.bdf + "`" + (is_root() ? "" : " as root");
    return r;
}

std::vector<HostReport> list_hosts(bool all_functions) {
    std::vector<HostReport> out;
    for (const std::string& bdf : vfio::sysfs::pci_devices()) {
        auto fn = vfio::sysfs::read_function(bdf);
        if (!fn || (!all_functions && !is_usb4_host(*fn))) {
            continue;
        }
        out.push_back(assess(*fn));
    }
    return out;
}

std::vector<std::string> vfio_users(const PciFunction& fn) {
    std::vector<std::string> targets;
    if (fn.iommu_group) {
        targets.push_back("/dev/vfio/" + std::to_string(*fn.iommu_group));
        targets.push_back("/dev/vfio/noiommu-" + std::to_string(*fn.iommu_group));
    }
    if (!fn.vfio_cdev.empty()) {
        targets.push_back("/dev/vfio/devices/" + fn.vfio_cdev);
    }
    std::vector<std::string> users;
    std::error_code ec;
    const std::string self = std::to_string(::getpid());
    for (const auto& proc : fs::directory_iterator("/proc", ec)) {
        const std::string pid = proc.path().filename().string();
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos ||
            pid == self) {
            continue;
        }
        std::error_code ec2;
        for (const auto& fd : fs::directory_iterator(proc.path() / "fd", ec2)) {
            std::error_code ec3;
            const std::string t = fs::read_symlink(fd.path(), ec3).string();
            bool hit = false;
            for (const auto& want : targets) {
                hit = hit || t == want;
            }
            if (hit) {
                auto comm = vfio::sysfs::read_attr(proc.path().string() + "/comm");
                users.push_back(pid + " (" + comm.value_or("?") + ")");
                break;
            }
        }
    }
    return users;
}

Result<void> bind_vfio(const std::string& bdf_in, const BindOptions& opts) {
    auto bdf = vfio::sysfs::normalize_bdf(bdf_in);
    if (!bdf) {
        return fail_detail(EINVAL, "'" + bdf_in + "' is not a PCI address (like 0000:c4:00.5)");
    }
    auto fn = vfio::sysfs::read_function(*bdf);
    if (!fn) {
        return fail_detail(ENODEV, "no PCI function " + *bdf);
    }
    if (!opts.any_device && !is_usb4_host(*fn)) {
        return fail_detail(ENODEV, *bdf + " is not a USB4 host interface (see `tbv list`)");
    }
    if (!is_root()) {
        return fail_detail(EPERM, "binding a driver needs root: sudo tbv bind " + *bdf);
    }
    const HostReport rep = assess(*fn);
    if (rep.icm_active.value_or(false)) {
        return fail_detail(ENOTSUP, rep.reason);
    }
    if (!fn->iommu_group && !vfio::sysfs::noiommu_enabled()) {
        return fail_detail(ENODEV, rep.reason);
    }
    if (fn->iommu_group && !group_blockers(*fn).empty()) {
        return fail_detail(EBUSY, rep.reason);
    }
    if (fn->driver == "vfio-pci") {
        return ok();
    }
    if (!vfio_pci_available()) {
        (void)std::system("modprobe vfio-pci >/dev/null 2>&1");
        if (!vfio_pci_available()) {
            return fail_detail(ENODEV, "the vfio-pci driver is not available (modprobe vfio-pci)");
        }
    }
    const std::string sys = vfio::sysfs::root() + "/sys/bus/pci";
    if (int err =
            vfio::sysfs::write_attr(vfio::sysfs::device_path(*bdf, "driver_override"), "vfio-pci");
        err != 0) {
        return fail_detail(err, "writing driver_override of " + *bdf);
    }
    if (!fn->driver.empty()) {
        if (int err = vfio::sysfs::write_attr(sys + "/drivers/" + fn->driver + "/unbind", *bdf);
            err != 0) {
            return fail_detail(err == ENODEV ? EBUSY : err,
                               "unbinding " + *bdf + " from " + fn->driver);
        }
    }
    (void)vfio::sysfs::write_attr(sys + "/drivers_probe", *bdf);
    for (int i = 0; i < 50 && vfio::sysfs::driver(*bdf) != "vfio-pci"; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string now = vfio::sysfs::driver(*bdf);
    if (now != "vfio-pci") {
        return fail_detail(
            EBUSY, "vfio-pci did not take " + *bdf + " (driver now '" + now + "'; see dmesg)");
    }
    return ok();
}

Result<std::string> unbind_vfio(const std::string& bdf_in, const BindOptions& opts) {
    auto bdf = vfio::sysfs::normalize_bdf(bdf_in);
    if (!bdf) {
        return fail_detail(EINVAL, "'" + bdf_in + "' is not a PCI address (like 0000:c4:00.5)");
    }
    auto fn = vfio::sysfs::read_function(*bdf);
    if (!fn) {
        return fail_detail(ENODEV, "no PCI function " + *bdf);
    }
    if (!opts.any_device && !is_usb4_host(*fn)) {
        return fail_detail(ENODEV, *bdf + " is not a USB4 host interface (see `tbv list`)");
    }
    if (!is_root()) {
        return fail_detail(EPERM, "changing drivers needs root: sudo tbv unbind " + *bdf);
    }
    const std::string sys = vfio::sysfs::root() + "/sys/bus/pci";
    if (fn->driver == "vfio-pci") {
        // The kernel would block the unbind until the owner closes the device: refuse instead.
        if (auto users = vfio_users(*fn); !users.empty()) {
            return fail_detail(EBUSY,
                               *bdf + " is in use by process " + join(users) + "; stop it first");
        }
        if (int err = vfio::sysfs::write_attr(sys + "/drivers/vfio-pci/unbind", *bdf); err != 0) {
            return fail_detail(err, "unbinding " + *bdf + " from vfio-pci");
        }
    }
    // An empty override (a lone newline) clears it; then the kernel picks the normal driver.
    (void)vfio::sysfs::write_attr(vfio::sysfs::device_path(*bdf, "driver_override"), "\n");
    (void)vfio::sysfs::write_attr(sys + "/drivers_probe", *bdf);
    return vfio::sysfs::driver(*bdf);
}

}  // namespace tbv::tools
