// SPDX-License-Identifier: Apache-2.0
// Subcommands of the tbv command. Each cmd_*.cpp adds its subcommand to the CLI11 app and
// returns the exit code holder it fills; main.cpp only wires them together.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tools/usb4_hosts.hpp"

namespace tbv::tools {

/// `tbv list [--json] [--all]`
void add_list_command(CLI::App& app, int& exit_code);
/// `tbv bind BDF`, `tbv unbind BDF` (hidden --any-device for test devices), `tbv devnode`
void add_bind_commands(CLI::App& app, int& exit_code);
/// `tbv status [--emu CABLE] [--json] [--wait] [--trace-demo]`, `tbv trace`
void add_status_command(CLI::App& app, int& exit_code);
/// `tbv run [--emu CABLE] [--link-wait MS] [--] CMD [ARGS...]` (the provider's interposer): listed
/// in the app; main() passes the arguments after "run" to run_main untouched.
void add_run_command(CLI::App& app, int& exit_code);
int run_main(int argc, char** argv);

/// The text or JSON `tbv list` prints (exposed for tests).
std::string render_list(const std::vector<HostReport>& hosts, bool json);

}  // namespace tbv::tools
