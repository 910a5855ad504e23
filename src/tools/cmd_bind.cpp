// SPDX-License-Identifier: Apache-2.0
// `tbv bind BDF` / `tbv unbind BDF`: hand a USB4 host interface to vfio-pci and back to its
// kernel driver (thunderbolt), with its /dev/infiniband link (devnode.hpp); `tbv devnode`: that
// link alone, for a function bound by other means, or the emulator's.
#include <cerrno>
#include <string>

#include <fmt/core.h>

#include "tools/commands.hpp"
#include "tools/devnode.hpp"
#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"

namespace tbv::tools {

namespace {

int report_error(const char* what, std::error_code ec) {
    fmt::print(stderr, "tbv {}: {}\n", what, vfio::describe(ec));
    return ec == std::make_error_code(std::errc::operation_not_permitted) ? 4 : 1;
}

}  // namespace

void add_bind_commands(CLI::App& app, int& exit_code) {
    static std::string bind_bdf;
    static std::string unbind_bdf;
    static BindOptions opts;

    auto* bind = app.add_subcommand("bind", "Bind a USB4 host interface to vfio-pci");
    bind->add_option("address", bind_bdf, "PCI address, e.g. 0000:c4:00.5")->required();
    bind->add_flag("--any-device", opts.any_device, "")->group("");  // hidden, for tests
    bind->callback([&exit_code] {
        if (auto r = bind_vfio(bind_bdf, opts); !r) {
            exit_code = report_error("bind", r.error());
            return;
        }
        const std::string bdf = *vfio::sysfs::normalize_bdf(bind_bdf);
        fmt::print("{}: bound to vfio-pci\n", bdf);
        // The device works without its link; only consumers that look for a node (UCX) miss it.
        if (auto l = link_vfio_devnode(bdf); l) {
            fmt::print("{}: device node {}\n", bdf, *l);
        } else {
            fmt::print(stderr, "tbv bind: warning: no device node for UCX: {}\n",
                       vfio::describe(l.error()));
        }
        exit_code = 0;
    });

    auto* unbind = app.add_subcommand("unbind", "Give the function back to its kernel driver");
    unbind->add_option("address", unbind_bdf, "PCI address, e.g. 0000:c4:00.5")->required();
    unbind->add_flag("--any-device", opts.any_device, "")->group("");
    unbind->callback([&exit_code] {
        auto r = unbind_vfio(unbind_bdf, opts);
        if (!r) {
            exit_code = report_error("unbind", r.error());
            return;
        }
        const std::string bdf = *vfio::sysfs::normalize_bdf(unbind_bdf);
        (void)unlink_devnode(vfio::sysfs::devnode_name(bdf));
        if (r->empty()) {
            fmt::print("{}: released from vfio-pci; no kernel driver claimed it\n", bdf);
        } else {
            fmt::print("{}: now bound to {}\n", bdf, *r);
        }
        exit_code = 0;
    });

    static std::string node_bdf;
    static bool node_emu = false;
    static bool node_remove = false;
    auto* node = app.add_subcommand(
        "devnode",
        "Make (or --remove) the /dev/infiniband link UCX needs, for a VFIO-bound "
        "function or the emulator");
    auto* addr = node->add_option("address", node_bdf, "PCI address of a vfio-pci function");
    auto* emu = node->add_flag("--emu", node_emu, "The emulator's link (to /dev/null)");
    addr->excludes(emu);
    node->add_flag("--remove", node_remove, "Remove the link instead");
    node->callback([&exit_code] {
        if (node_bdf.empty() && !node_emu) {
            fmt::print(stderr, "tbv devnode: give a PCI address or --emu\n");
            exit_code = 2;
            return;
        }
        std::string name = vfio::sysfs::kEmuDevnodeName;
        if (!node_emu) {
            auto bdf = vfio::sysfs::normalize_bdf(node_bdf);
            if (!bdf) {
                fmt::print(stderr, "tbv devnode: '{}' is not a PCI address\n", node_bdf);
                exit_code = 2;
                return;
            }
            name = vfio::sysfs::devnode_name(*bdf);
            node_bdf = *bdf;
        }
        const std::string path = vfio::sysfs::devnode_dir() + "/" + name;
        if (node_remove) {
            auto r = unlink_devnode(name);
            if (!r) {
                exit_code = report_error("devnode", r.error());
                return;
            }
            fmt::print("{}: {}\n", path, *r ? "removed" : "no link there");
            exit_code = 0;
            return;
        }
        auto r = node_emu ? link_emu_devnode() : link_vfio_devnode(node_bdf);
        if (!r) {
            exit_code = report_error("devnode", r.error());
            return;
        }
        fmt::print("{}\n", *r);
        exit_code = 0;
    });
}

}  // namespace tbv::tools
