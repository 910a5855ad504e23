// SPDX-License-Identifier: Apache-2.0
// `tbv bind BDF` / `tbv unbind BDF`: hand a USB4 host interface to vfio-pci and back to its
// kernel driver (thunderbolt).
#include <cerrno>
#include <string>

#include <fmt/core.h>

#include "tools/commands.hpp"
#include "vfio/error.hpp"

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
        fmt::print("{}: bound to vfio-pci\n", *vfio::sysfs::normalize_bdf(bind_bdf));
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
        if (r->empty()) {
            fmt::print("{}: released from vfio-pci; no kernel driver claimed it\n", bdf);
        } else {
            fmt::print("{}: now bound to {}\n", bdf, *r);
        }
        exit_code = 0;
    });
}

}  // namespace tbv::tools
