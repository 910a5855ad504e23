// SPDX-License-Identifier: Apache-2.0
// sysfs readers for PCI functions (see pci_sysfs.hpp).
#include "vfio/pci_sysfs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <system_error>

namespace tbv::vfio::sysfs {

namespace fs = std::filesystem;

std::string root() {
    const char* r = std::getenv("TBV_SYSFS_ROOT");
    return r != nullptr ? std::string(r) : std::string();
}

std::string device_path(const std::string& bdf, const std::string& leaf) {
    std::string p = root() + "/sys/bus/pci/devices/" + bdf;
    if (!leaf.empty()) {
        p += "/" + leaf;
    }
    return p;
}

std::optional<std::string> normalize_bdf(const std::string& s) {
    static const std::regex full("^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\\.[0-7]$");
    static const std::regex shortform("^[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\\.[0-7]$");
    std::string out;
    if (std::regex_match(s, full)) {
        out = s;
    } else if (std::regex_match(s, shortform)) {
        out = "0000:" + s;
    } else {
        return std::nullopt;
    }
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::optional<std::string> read_attr(const std::string& path) {
    std::ifstream f(path);
    if (!f) {
        return std::nullopt;
    }
    std::string line;
    std::getline(f, line);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) {
        line.pop_back();
    }
    return line;
}

std::optional<std::uint32_t> read_hex(const std::string& path) {
    auto s = read_attr(path);
    if (!s || s->empty()) {
        return std::nullopt;
    }
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(s->c_str(), &end, 16);
    if (errno != 0 || end == s->c_str() || v > 0xffffffffUL) {
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(v);
}

int write_attr(const std::string& path, const std::string& value) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    const ssize_t n = ::write(fd, value.data(), value.size());
    const int err = n < 0 ? errno : 0;
    ::close(fd);
    return err;
}

std::vector<std::string> pci_devices() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root() + "/sys/bus/pci/devices", ec)) {
        out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::optional<int> iommu_group(const std::string& bdf) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(device_path(bdf, "iommu_group"), ec);
    if (ec) {
        return std::nullopt;
    }
    const std::string name = target.filename().string();
    char* end = nullptr;
    const long g = std::strtol(name.c_str(), &end, 10);
    if (name.empty() || *end != '\0' || g < 0) {
        return std::nullopt;
    }
    return static_cast<int>(g);
}

std::vector<std::string> group_members(int group) {
    std::vector<std::string> out;
    std::error_code ec;
    const std::string dir =
        root() + "/sys/kernel/iommu_groups/" + std::to_string(group) + "/devices";
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string driver(const std::string& bdf) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(device_path(bdf, "driver"), ec);
    return ec ? std::string() : target.filename().string();
}

std::optional<PciFunction> read_function(const std::string& bdf) {
    auto vendor = read_hex(device_path(bdf, "vendor"));
    auto device = read_hex(device_path(bdf, "device"));
    if (!vendor || !device) {
        return std::nullopt;
    }
    PciFunction f;
    f.bdf = bdf;
    f.vendor = static_cast<std::uint16_t>(*vendor);
    f.device = static_cast<std::uint16_t>(*device);
    f.class_code = read_hex(device_path(bdf, "class")).value_or(0) & 0xffffffu;
    f.subsystem_vendor =
        static_cast<std::uint16_t>(read_hex(device_path(bdf, "subsystem_vendor")).value_or(0));
    f.subsystem_device =
        static_cast<std::uint16_t>(read_hex(device_path(bdf, "subsystem_device")).value_or(0));
    f.driver = driver(bdf);
    f.iommu_group = iommu_group(bdf);
    if (f.iommu_group) {
        f.group_members = group_members(*f.iommu_group);
    }
    auto ov = read_attr(device_path(bdf, "driver_override"));
    if (ov && *ov != "(null)") {
        f.driver_override = *ov;
    }
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(device_path(bdf, "vfio-dev"), ec)) {
        f.vfio_cdev = e.path().filename().string();
        break;
    }
    return f;
}

std::vector<std::string> vfio_bound_usb4_hosts() {
    // PCI class 0x0c0340: serial bus controller, USB, programming interface 0x40 = USB4 host
    // interface (USB4 §13.1; hw::kClassUsb4Nhi). Older Thunderbolt 3 NHIs report class 0x088000
    // and need the firmware connection manager, which tbverbs cannot drive: not listed.
    constexpr std::uint32_t kUsb4HostClass = 0x0c0340;
    std::vector<std::string> out;
    for (const std::string& bdf : pci_devices()) {
        if (read_hex(device_path(bdf, "class")).value_or(0) != kUsb4HostClass) {
            continue;
        }
        if (driver(bdf) == "vfio-pci") {
            out.push_back(bdf);
        }
    }
    return out;  // pci_devices() is sorted
}

bool iommu_present() {
    std::error_code ec;
    fs::directory_iterator it(root() + "/sys/class/iommu", ec);
    return !ec && it != fs::directory_iterator();
}

bool noiommu_enabled() {
    auto v = read_attr(root() + "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
    return v && (*v == "Y" || *v == "1");
}

std::string devnode_name(const std::string& bdf) {
    return "tbv-" + bdf;
}

std::string devnode_dir() {
    return root() + "/dev/infiniband";
}

std::optional<std::string> vfio_node(const PciFunction& fn) {
    if (fn.driver != "vfio-pci") {
        return std::nullopt;
    }
    std::error_code ec;
    const auto exists = [&](const std::string& p) { return fs::exists(root() + p, ec); };
    if (!fn.vfio_cdev.empty() && exists("/dev/iommu")) {
        return "/dev/vfio/devices/" + fn.vfio_cdev;
    }
    if (!fn.iommu_group) {
        return std::nullopt;
    }
    const std::string noiommu = "/dev/vfio/noiommu-" + std::to_string(*fn.iommu_group);
    if (exists(noiommu)) {
        return noiommu;
    }
    return "/dev/vfio/" + std::to_string(*fn.iommu_group);
}

}  // namespace tbv::vfio::sysfs
