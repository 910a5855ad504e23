// SPDX-License-Identifier: Apache-2.0
// `tbv run [--emu CABLE[/a|/b]] [--link-wait MS] [--] CMD [ARGS...]`: runs an unmodified verbs
// program with the tbverbs interposer preloaded (rdma_provider/), so that ibv_get_device_list
// shows tbv0… and every verb on them reaches the provider. The command replaces tbv (exec), so
// its exit status is tbv's.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tools/commands.hpp"

#ifndef TBV_PRELOAD_BUILD
#define TBV_PRELOAD_BUILD ""
#endif
#ifndef TBV_PRELOAD_INSTALLED
#define TBV_PRELOAD_INSTALLED ""
#endif

namespace tbv::tools {

namespace {

struct RunOptions {
    std::string emu;
    long link_wait_ms = 30000;
    bool link_wait_set = false;
};

bool readable(const std::string& p) {
    return !p.empty() && ::access(p.c_str(), R_OK) == 0;
}

/// The interposer: $TBV_PRELOAD, else the build tree's (a tbv run from its build directory),
/// else the installed one.
std::string find_preload() {
    if (const char* p = std::getenv("TBV_PRELOAD"); p != nullptr && *p != '\0') {
        return p;
    }
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0 && readable(TBV_PRELOAD_BUILD)) {
        self[n] = '\0';
        // Only a tbv that lives in that build tree uses its library.
        const std::string build = TBV_PRELOAD_BUILD;
        const std::string root = build.substr(0, build.rfind("/rdma_provider/"));
        if (std::string(self).rfind(root + "/", 0) == 0) {
            return build;
        }
    }
    if (readable(TBV_PRELOAD_INSTALLED)) {
        return TBV_PRELOAD_INSTALLED;
    }
    return readable(TBV_PRELOAD_BUILD) ? TBV_PRELOAD_BUILD : "";
}

int run(const RunOptions& o, const std::vector<std::string>& cmd) {
    if (cmd.empty()) {
        std::fprintf(stderr, "tbv run: no command given (tbv run -- CMD [ARGS...])\n");
        return 2;
    }
    const std::string preload = find_preload();
    if (preload.empty()) {
        std::fprintf(stderr,
                     "tbv run: the tbverbs interposer (libtbverbs-preload.so) is not built or "
                     "installed: build with libibverbs-dev present (scripts/deps provider), or "
                     "point TBV_PRELOAD at it\n");
        return 127;
    }
    std::string ld = preload;
    if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
        ld += ":" + std::string(old);
    }
    ::setenv("LD_PRELOAD", ld.c_str(), 1);
    if (!o.emu.empty()) {
        ::setenv("TBV_EMU", o.emu.c_str(), 1);
    }
    // The first of two processes starts before its peer: let its first ibv_query_port wait for
    // the link (perftest and the pingpong examples give up on a port that is not ACTIVE).
    if (o.link_wait_set || std::getenv("TBV_LINK_WAIT_MS") == nullptr) {
        ::setenv("TBV_LINK_WAIT_MS", std::to_string(o.link_wait_ms).c_str(), 1);
    }
    std::vector<char*> argv;
    for (const auto& a : cmd) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "tbv run: cannot run '%s': %s\n", argv[0], std::strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
    auto* sub = app.add_subcommand(
        "run", "Run a verbs program with the tbverbs provider loaded (tbv run -- ib_write_bw ...)");
    auto o = std::make_shared<RunOptions>();
    sub->add_option("--emu", o->emu,
                    "Use an emulated host on this shared-memory cable (sets TBV_EMU; "
                    "CABLE, CABLE/a or CABLE/b)");
    sub->add_option_function<long>(
           "--link-wait",
           [o](long ms) {
               o->link_wait_ms = ms;
               o->link_wait_set = true;
           },
           "How long the program's first port query waits for the link, in ms (default 30000 "
           "unless TBV_LINK_WAIT_MS is set)")
        ->check(CLI::NonNegativeNumber);
    // Everything from the command on is the command's, options included: "tbv run CMD -x" leaves
    // "CMD -x" unparsed (prefix_command), "tbv run -- CMD -x" hands it to this positional.
    auto cmd = std::make_shared<std::vector<std::string>>();
    sub->add_option("command", *cmd, "The program and its arguments");
    sub->prefix_command();
    sub->allow_extras();
    sub->footer(
        "Environment: TBV_EMU=<cable>[/a|/b] names the emulated host; TBV_PRELOAD overrides the "
        "interposer's path. See rdma_provider/README.md.");
    sub->callback([o, cmd, sub, &exit_code] {
        std::vector<std::string> argv = *cmd;
        for (const auto& a : sub->remaining()) {
            if (argv.empty() && a == "--") {
                continue;
            }
            argv.push_back(a);
        }
        exit_code = run(*o, argv);
    });
}

}  // namespace tbv::tools
