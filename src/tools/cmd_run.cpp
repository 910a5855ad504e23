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

constexpr const char* kRunHelp =
    "Run a verbs program with the tbverbs provider loaded\n"
    "Usage: tbv run [--emu CABLE[/a|/b]] [--link-wait MS] [--] CMD [ARGS...]\n"
    "\n"
    "  --emu CABLE       use an emulated host on this shared-memory cable (sets TBV_EMU)\n"
    "  --link-wait MS    how long the program's first port query waits for the link\n"
    "                    (default 30000 unless TBV_LINK_WAIT_MS is set)\n"
    "\n"
    "Everything from CMD on is the command's. TBV_EMU=<cable>[/a|/b] names the emulated host;\n"
    "TBV_PRELOAD overrides the interposer's path. See rdma_provider/README.md.\n";

int run_command(int argc, char** argv) {
    RunOptions o;
    int i = 0;
    for (; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const std::string& name, std::string& out) {
            if (a.rfind(name + "=", 0) == 0) {
                out = a.substr(name.size() + 1);
                return true;
            }
            if (a == name && i + 1 < argc) {
                out = argv[++i];
                return true;
            }
            return false;
        };
        std::string v;
        if (a == "-h" || a == "--help") {
            std::fputs(kRunHelp, stdout);
            return 0;
        }
        if (a == "--") {
            ++i;
            break;
        }
        if (value("--emu", v)) {
            o.emu = v;
        } else if (value("--link-wait", v)) {
            char* end = nullptr;
            const long ms = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || ms < 0) {
                std::fprintf(stderr, "tbv run: --link-wait wants milliseconds, not '%s'\n",
                             v.c_str());
                return 2;
            }
            o.link_wait_ms = ms;
            o.link_wait_set = true;
        } else if (a.rfind("-", 0) == 0) {
            std::fprintf(stderr, "tbv run: unknown option '%s'\n%s", a.c_str(), kRunHelp);
            return 2;
        } else {
            break;  // the command
        }
    }
    return run(o, std::vector<std::string>(argv + i, argv + argc));
}

}  // namespace

int run_main(int argc, char** argv) {
    return run_command(argc, argv);
}

void add_run_command(CLI::App& app, int& /*exit_code*/) {
    // Listed for `tbv --help`; main() hands `tbv run ...` to run_command before CLI11 parses, so
    // that the command's own arguments reach it untouched and in order.
    app.add_subcommand(
        "run", "Run a verbs program with the tbverbs provider loaded (tbv run -- ib_write_bw ...)");
}

}  // namespace tbv::tools
