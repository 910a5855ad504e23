// SPDX-License-Identifier: Apache-2.0
// /dev/infiniband links (see devnode.hpp for why they exist).
#include "tools/devnode.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"

namespace tbv::tools {

using vfio::fail_detail;

Result<std::string> link_devnode(const std::string& name, const std::string& target) {
    const std::string dir = vfio::sysfs::devnode_dir();
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
        return fail_detail(errno, "creating " + dir);
    }
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISLNK(st.st_mode)) {
            // A real node under our name is someone else's: never replace it.
            return fail_detail(EEXIST, path + " exists and is not a link made by tbv");
        }
        if (::unlink(path.c_str()) != 0) {
            return fail_detail(errno, "replacing " + path);
        }
    }
    if (::symlink(target.c_str(), path.c_str()) != 0) {
        return fail_detail(errno, "linking " + path + " to " + target);
    }
    return path;
}

Result<bool> unlink_devnode(const std::string& name) {
    const std::string path = vfio::sysfs::devnode_dir() + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) {
        return false;
    }
    if (::unlink(path.c_str()) != 0) {
        return fail_detail(errno, "removing " + path);
    }
    return true;
}

Result<std::string> link_vfio_devnode(const std::string& bdf) {
    auto fn = vfio::sysfs::read_function(bdf);
    if (!fn) {
        return fail_detail(ENODEV, "no PCI function " + bdf);
    }
    auto node = vfio::sysfs::vfio_node(*fn);
    if (!node) {
        return fail_detail(ENODEV, bdf + " is not bound to vfio-pci: run `tbv bind " + bdf + "`");
    }
    auto path = link_devnode(vfio::sysfs::devnode_name(bdf), *node);
    if (!path) {
        return Failure{path.error()};
    }
    return *path + " -> " + *node;
}

Result<std::string> link_emu_devnode() {
    auto path = link_devnode(vfio::sysfs::kEmuDevnodeName, "/dev/null");
    if (!path) {
        return Failure{path.error()};
    }
    return *path + " -> /dev/null";
}

}  // namespace tbv::tools
