// SPDX-License-Identifier: Apache-2.0
// The tbv command: list USB4 host interfaces, bind/unbind them to vfio-pci, show status, run a
// verbs program with the provider.
#include <string_view>

#include <CLI/CLI.hpp>

#include "tools/commands.hpp"

int main(int argc, char** argv) {
    CLI::App app{"tbv: RDMA verbs over USB4/Thunderbolt from userspace"};
    app.require_subcommand(1);
    int exit_code = 0;
    tbv::tools::add_list_command(app, exit_code);
    tbv::tools::add_bind_commands(app, exit_code);
#ifdef TBV_WITH_STATUS  // not in the static VM-guest build (test/vm), which has no emulator
    tbv::tools::add_status_command(app, exit_code);
#endif
#ifdef TBV_WITH_RUN  // not in the VM-guest build either
    tbv::tools::add_run_command(app, exit_code);
    if (argc >= 2 && std::string_view(argv[1]) == "run") {
        return tbv::tools::run_main(argc - 2, argv + 2);  // CMD's arguments stay as they are
    }
#endif
    CLI11_PARSE(app, argc, argv);
    return exit_code;
}
