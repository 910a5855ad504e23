// SPDX-License-Identifier: Apache-2.0
// /dev/infiniband/<dev_name> links for verbs consumers that look for a device node before they
// use an ibv_device (UCX: uct_ib_device_is_accessible wants a character device the user may read
// and write). `tbv bind` links a function's name to the VFIO node the provider opens, so the
// node's own permissions decide, as a kernel HCA's uverbs node would; `tbv devnode --emu` links
// the emulator's name to /dev/null, a node every user may open (the emulator has none).
#pragma once

#include <string>

#include "tbv/result.hpp"

namespace tbv::tools {

/// Makes devnode_dir()/<name> a symbolic link to `target`, creating the directory (0755) and
/// replacing an existing link; a file there that is not a link is left alone (EEXIST). Needs
/// write access to /dev (root). Returns the link's path.
Result<std::string> link_devnode(const std::string& name, const std::string& target);
/// Removes devnode_dir()/<name> if it is a symbolic link; true if there was one.
Result<bool> unlink_devnode(const std::string& name);

/// The link for VFIO function `bdf` (bound to vfio-pci), to its VFIO node. Returns
/// "<link> -> <target>".
Result<std::string> link_vfio_devnode(const std::string& bdf);
/// The emulator's link, to /dev/null. Returns "<link> -> /dev/null".
Result<std::string> link_emu_devnode();

}  // namespace tbv::tools
