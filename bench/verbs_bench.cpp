// SPDX-License-Identifier: Apache-2.0
// tbv-bench-verbs: RC verbs between two emulated hosts in this process, perftest style: latency
// (WRITE and SEND ping-pong, half round trip; READ, full round trip), bandwidth (WRITE, READ,
// SEND with a window of outstanding WRs, one signaled in N), message rate (64-byte WRITEs posted
// in lists of 1, 8, 32) and aggregate WRITE bandwidth over one cable or two. Prints tables;
// --json FILE saves every row. The testbed and the kernels are in verbs_bench_testbed.cpp and
// verbs_bench_kernels.cpp.
//
// What it measures: the software path end to end (verbs, transport, ring driver, the emulator's
// DMA engine, router and cable), on the CPU(s) of this machine. By default the emulator has no
// link-rate model, so nothing here is a hardware figure: a real NHI moves ~12 Gb/s per ring
// (DESIGN.md). --link SPEC (or TBV_EMU_LINK, same syntax, src/emu/link.hpp) turns the emulator's
// link model on: per-ring DMA ceiling, cable rate per direction, latency. Then the "cables" group
// shows what one cable or two add up to under those limits, next to the limit the model sets
// (model Gb/s), and the rows carry the emulator's counters that explain a shortfall.
//
// Threads: by default one thread drives both hosts (one step of A, one of B), so a figure is the
// CPU cost of both ends on one core and does not depend on the scheduler. --threads 2 gives each
// host its own spinning thread, as two perftest processes would be; on a 2-vCPU machine that
// shares its cores with anything else (the CM threads, a build) a descheduled peer looks like a
// lost frame to the sender's retransmit timer, and the figures swing by 10x between runs.
#include "verbs_bench.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

using nlohmann::json;

namespace {

using namespace tbv::bench;

std::vector<std::size_t> powers(std::size_t from, std::size_t to) {
    std::vector<std::size_t> v;
    for (std::size_t s = from; s <= to; s *= 2) {
        v.push_back(s);
    }
    return v;
}

std::string human(std::size_t n) {
    if (n >= (1u << 20) && n % (1u << 20) == 0) {
        return fmt::format("{} MiB", n >> 20);
    }
    if (n >= 1024 && n % 1024 == 0) {
        return fmt::format("{} KiB", n >> 10);
    }
    return fmt::format("{} B", n);
}

/// "ok", or what went wrong with the row (a timeout, failed completions, wrong bytes).
std::string verdict(const json& r) {
    if (r.contains("error")) {
        return r["error"].get<std::string>();
    }
    if (r["errors"].get<std::uint64_t>() != 0) {
        return fmt::format("{} failed completions", r["errors"].get<std::uint64_t>());
    }
    return r["data_ok"].get<bool>() ? "ok" : "DATA MISMATCH";
}

double num(const json& r, const char* key) {
    return r.contains(key) ? r[key].get<double>() : 0.0;
}

std::string list_text(const json& a) {
    std::string s;
    for (const auto& v : a) {
        s += (s.empty() ? "" : "/") + std::to_string(v.get<std::uint64_t>());
    }
    return s;
}

/// Retransmitted frames and retransmit timeouts in a row's run (both 0 on a clean run).
std::string retx_text(const json& r) {
    const json& d = r["diag"];
    return fmt::format("{}/{}", d.value("retransmits", std::uint64_t{0}),
                       d.value("timeouts", std::uint64_t{0}));
}

bool all_ok(const json& rows) {
    for (const auto& r : rows) {
        if (verdict(r) != "ok") {
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"RC verbs latency, bandwidth and message rate between two emulated hosts"};
    bool quick = false;
    std::string json_path;
    unsigned threads = 1;
    unsigned iters = 2000;
    double seconds = 0.4;
    unsigned window = 64, signal_every = 16;
    unsigned rails = 2;
    std::vector<std::string> groups{"latency", "bandwidth", "rate", "cables"};
    std::vector<std::string> ops{"write", "send", "read"};
    std::vector<std::size_t> sizes;
    std::string link_spec;
    app.add_flag("--quick", quick, "fewer sizes, iterations and seconds (a smoke run, ~5 s)");
    app.add_option("--json", json_path, "also write every row to this file");
    app.add_option("-t,--threads", threads,
                   "1: one thread drives both hosts (default); 2: one thread per host (fast on "
                   "an idle machine, erratic on a busy one)")
        ->check(CLI::Range(1, 2));
    app.add_option("-n,--iters", iters, "latency: measured round trips per size (+10 % warm-up)")
        ->check(CLI::Range(10, 10'000'000));
    app.add_option("-d,--duration", seconds, "bandwidth: seconds per run (rate, cables: x2)")
        ->check(CLI::Range(0.01, 60.0));
    app.add_option("-w,--window", window, "bandwidth, cables: outstanding WRs per QP")
        ->check(CLI::Range(1, 512));
    app.add_option("-s,--signal-every", signal_every,
                   "bandwidth, cables: one WR in this many is signaled (divides --window)")
        ->check(CLI::Range(1, 512));
    app.add_option("-r,--rails", rails,
                   "latency, bandwidth, rate: rails on the one cable (the NHI has 2 data rings)")
        ->check(CLI::Range(1, 2));
    app.add_option("-o,--ops", ops, "latency, bandwidth: operations")
        ->check(CLI::IsMember({"write", "send", "read"}));
    app.add_option("--sizes", sizes, "latency, bandwidth: message sizes instead of the defaults")
        ->check(CLI::Range(1, 1 << 30));
    app.add_option("-g,--groups", groups, "latency, bandwidth, rate, cables")
        ->check(CLI::IsMember({"latency", "bandwidth", "rate", "cables"}));
    app.add_option("--link", link_spec,
                   "the emulator's link model, TBV_EMU_LINK syntax (e.g. "
                   "gen=3,ring_gbps=12,latency_ns=1000; 'off'); default: TBV_EMU_LINK, else off");
    CLI11_PARSE(app, argc, argv);

    // The link model: --link wins over TBV_EMU_LINK. Either way it is parsed here, so a typo
    // stops the run instead of measuring without the model, and the variable is then removed so
    // the hosts take exactly g_link (EmuHost would otherwise read it again).
    if (link_spec.empty()) {
        if (const char* env = std::getenv("TBV_EMU_LINK")) {
            link_spec = env;
        }
    }
    if (!link_spec.empty()) {
        const tbv::emu::LinkParse lp = tbv::emu::parse_link(link_spec);
        if (!lp) {
            fmt::print(stderr, "tbv-bench-verbs: {}\n", lp.error);
            return 2;
        }
        g_link = lp.config;
    }
    ::unsetenv("TBV_EMU_LINK");
    const std::string link_text = tbv::emu::describe(g_link);

    std::vector<std::size_t> lat_sizes = powers(64, std::size_t{64} << 10);
    std::vector<std::size_t> bw_sizes = powers(1024, std::size_t{1} << 20);
    if (quick) {
        lat_sizes = {64, 4096, 65536};
        bw_sizes = {1024, 65536, 1 << 20};
        iters = std::min(iters, 200u);
        seconds = std::min(seconds, 0.1);
    }
    bw_sizes.push_back(16u << 20);  // once, as perftest's largest default
    if (!sizes.empty()) {
        lat_sizes = bw_sizes = sizes;
    }
    const unsigned warmup = std::max(1u, iters / 10);
    if (window % signal_every != 0) {
        fmt::print(stderr, "tbv-bench-verbs: --signal-every must divide --window\n");
        return 2;
    }
    const auto has = [&](const char* g) {
        return std::find(groups.begin(), groups.end(), g) != groups.end();
    };

    utsname u{};
    ::uname(&u);
    const char* faults = std::getenv("TBV_EMU_FAULTS");
    json out = {{"tool", "tbv-bench-verbs"},
                {"config",
                 {{"threads", threads},
                  {"quick", quick},
                  {"latency_iters", iters},
                  {"latency_warmup", warmup},
                  {"bw_seconds", seconds},
                  {"rails", rails},
                  {"bw_window", window},
                  {"bw_signal_every", signal_every},
                  {"link_rate_model", g_link.any()},
                  {"link_spec", link_spec},
                  {"link_model", link_text},
                  {"emu_faults", faults != nullptr ? faults : ""},
#ifdef NDEBUG
                  {"ndebug", true},
#else
                  {"ndebug", false},
#endif
#ifdef __OPTIMIZE__
                  {"optimized", true},
#else
                  {"optimized", false},
#endif
                  {"cpus", std::thread::hardware_concurrency()},
                  {"kernel", std::string(u.release)},
                  {"setup_seconds", testbed_setup_seconds(1, 0)}}}};
    fmt::print("tbv-bench-verbs: two emulated hosts, RC, {} thread(s) ({}), {}{}\n", threads,
               threads == 1 ? "one drives both hosts" : "one per host",
               g_link.any() ? "link model: " + link_text
                            : std::string("no link-rate model (software path only)"),
               faults != nullptr ? fmt::format(", TBV_EMU_FAULTS={}", faults) : "");
    bool ok = true;

    if (has("latency")) {
        fmt::print(
            "\nLatency, µs ({} iterations after {} warm-up; WRITE and SEND: half round trip, "
            "READ: full round trip)\n",
            iters, warmup);
        fmt::print("{:>5} {:>8} {:>9} {:>9} {:>9} {:>9}  {}\n", "op", "bytes", "median", "p99",
                   "min", "mean", "check");
        json all = json::array();
        for (const std::string& op : ops) {
            for (const auto& r : latency_rows(op, lat_sizes, warmup, iters, rails, threads)) {
                fmt::print("{:>5} {:>8} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f}  {}\n", op,
                           human(r["bytes"].get<std::size_t>()), num(r, "median_us"),
                           num(r, "p99_us"), num(r, "min_us"), num(r, "mean_us"), verdict(r));
                all.push_back(r);
            }
        }
        ok = ok && all_ok(all);
        out["latency"] = all;
    }
    if (has("bandwidth")) {
        fmt::print("\nBandwidth, 1 QP, window {} WRs, 1 in {} signaled, {:.2f} s per size\n",
                   window, signal_every, seconds);
        fmt::print("{:>5} {:>8} {:>9} {:>9} {:>9} {:>12}  {}\n", "op", "bytes", "Gb/s", "Mmsg/s",
                   "msgs", "retx/RTOs", "check");
        json all = json::array();
        for (const std::string& op : ops) {
            for (const auto& r :
                 bandwidth_rows(op, bw_sizes, seconds, window, signal_every, rails, threads)) {
                fmt::print("{:>5} {:>8} {:>9.2f} {:>9.3f} {:>9} {:>12}  {}\n", op,
                           human(r["bytes"].get<std::size_t>()), num(r, "gbit_per_s"),
                           num(r, "mmsg_per_s"), r["messages"].get<std::uint64_t>(), retx_text(r),
                           verdict(r));
                all.push_back(r);
            }
        }
        ok = ok && all_ok(all);
        out["bandwidth"] = all;
    }
    if (has("rate")) {
        fmt::print("\nMessage rate, 64 B WRITE, 1 QP, window 128, 1 in 32 signaled, {:.2f} s\n",
                   2 * seconds);
        fmt::print("{:>9} {:>9} {:>9} {:>12}  {}\n", "post list", "Mmsg/s", "Gb/s", "retx/RTOs",
                   "check");
        json all = msg_rate_rows({1, 8, 32}, 64, 2 * seconds, rails, threads);
        for (const auto& r : all) {
            fmt::print("{:>9} {:>9.3f} {:>9.3f} {:>12}  {}\n", r["post_list"].get<unsigned>(),
                       num(r, "mmsg_per_s"), num(r, "gbit_per_s"), retx_text(r), verdict(r));
        }
        ok = ok && all_ok(all);
        out["msg_rate"] = all;
    }
    if (has("cables")) {
        fmt::print("\nOne cable or two, WRITE 1 MiB, window {} per QP, {:.2f} s ({})\n", window,
                   2 * seconds,
                   g_link.any() ? "link model: " + link_text
                                : std::string("no link-rate model: CPU-bound"));
        // With the link model: the payload rate the model allows (model Gb/s), and the TX
        // descriptors the rings' ceiling held back / the transport's credit stalls.
        fmt::print("{:>6} {:>5} {:>4} {:>9} {:>9} {:>12} {:>15}  {:<16} {:<16} {}\n", "cables",
                   "rails", "QPs", "Gb/s", "model", "retx/RTOs", "paced/stalls", "frames per rail",
                   "WRs per QP", "check");
        json all = json::array();
        // (cables, rails per link): one ring pair per cable as on AMD (3 rings, ring 0 is the
        // control channel); then one cable with both ring pairs, the default.
        for (auto [cables, per_link] : {std::pair{1u, 1u}, std::pair{2u, 1u}, std::pair{1u, 0u}}) {
            for (const auto& r : cable_rows(cables, per_link, {1, 4}, 1 << 20, 2 * seconds, window,
                                            signal_every, threads)) {
                const json& d = r["diag"];
                fmt::print(
                    "{:>6} {:>5} {:>4} {:>9.2f} {:>9} {:>12} {:>15}  {:<16} {:<16} {}\n", cables,
                    r["rails"].get<unsigned>(), r["qps"].get<unsigned>(), num(r, "gbit_per_s"),
                    g_link.any() ? fmt::format("{:.2f}", num(r, "model_gbit_per_s")) : "-",
                    retx_text(r),
                    fmt::format("{}/{}", d.value("tx_paced_stops", std::uint64_t{0}),
                                d.value("credit_stalls", std::uint64_t{0})),
                    list_text(r["rail_tx_frames"]), list_text(r["messages_per_qp"]), verdict(r));
                all.push_back(r);
            }
        }
        ok = ok && all_ok(all);
        out["cables"] = all;
    }
    out["mr_leaks"] = g_mr_leaks.load();
    if (g_mr_leaks.load() != 0) {
        fmt::print(stderr,
                   "tbv-bench-verbs: {} MR(s) stayed referenced after their QPs were destroyed "
                   "(a verbs bug; the figures are not affected)\n",
                   g_mr_leaks.load());
    }
    if (!json_path.empty()) {
        std::ofstream f(json_path);
        f << out.dump(2) << '\n';
        if (!f) {
            fmt::print(stderr, "tbv-bench-verbs: cannot write {}\n", json_path);
            return 1;
        }
    }
    if (!ok) {
        fmt::print(stderr, "tbv-bench-verbs: some runs failed (see the check column)\n");
    }
    return ok ? 0 : 1;
}
