// SPDX-License-Identifier: Apache-2.0
// `tbv status`: what the connection manager knows about each controller: router identity,
// adapters and lane state, peers, rails and counters.
//
//   tbv status --emu CABLE   this process becomes an emulated host whose USB4 port 0 is plugged
//                            into the shared-memory cable CABLE (also TBV_EMU=CABLE); start a
//                            second one on the same cable name and both come up
//   tbv status --trace-demo  two emulated hosts in this process, one cable, the discovery trace
//   tbv trace                  step by step, then both hosts' status (for newcomers, bug reports)
//
// Every mode but the trace demo also shows the running tbverbs processes: each verbs context
// publishes its per-port and per-QP counters in a shared-memory file (src/verbs/stats_shm.hpp,
// docs/counters.md), one table per process (`processes` in the JSON). Without --emu that is all
// `tbv status` shows: on VFIO-bound controllers the CM lives in the process that holds the NHI.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "api/emu_open.hpp"
#include "nhi/frame_pool.hpp"
#include "tools/commands.hpp"
#include "tools/process_stats.hpp"
#include "tools/status.hpp"
#include "verbs/stats_shm.hpp"

namespace tbv::tools {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct StatusOptions {
    std::string emu;
    bool json = false;
    bool wait = false;
    double linger_s = 2.0;
    double timeout_s = 10.0;
    bool trace = false;  ///< --emu: CM trace lines on stderr
};

Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

/// Polls until `done` or the deadline; a short sleep between rounds keeps two cores usable.
template <typename Poll, typename Done>
bool poll_until(Poll poll, Done done, Clock::time_point deadline) {
    while (true) {
        poll();
        if (done()) {
            return true;
        }
        if (Clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(100us);
    }
}

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') {
        return fmt::format("emu-{}", ::getpid());
    }
    return fmt::format("{}-emu-{}", buf, ::getpid());
}

std::uint64_t random_uid() {
    // Two processes on one cable need distinct router UIDs (their host UUIDs derive from them);
    // keep the AMD-like upper half so the number reads like the default.
    std::random_device rd;
    return 0x0438'020e'0000'0000ull | rd();
}

int no_controller(const StatusOptions& o) {
    const auto procs = processes_json(verbs::stats_dir());
    if (o.json) {
        std::fputs((nlohmann::json{{"processes", procs}}.dump(2) + "\n").c_str(), stdout);
    } else {
        std::fputs(render_processes(procs).c_str(), stdout);
    }
    if (!procs.empty()) {
        return 0;
    }
    std::size_t vfio = 0;
    for (const auto& h : list_hosts(false)) {
        vfio += h.fn.driver == "vfio-pci" ? 1 : 0;
    }
    if (vfio > 0) {
        std::fputs(
            "tbv status: no VFIO-bound NHI with a live peer yet; use TBV_EMU=<cable> (or --emu) "
            "for an emulated host\n",
            stderr);
        return 1;
    }
    std::fputs(
        "tbv status: nothing to show: no tbverbs process running, no emulated host "
        "(TBV_EMU=<cable> or --emu <cable>) and no USB4 host interface bound to vfio-pci (see "
        "`tbv list`)\n",
        o.json ? stderr : stdout);
    return 0;
}

int run_emu(const StatusOptions& o) {
    emu::HostConfig hc;
    hc.name = fmt::format("emu-{}", ::getpid());
    hc.uid = random_uid();
    usb4::CmOptions co;
    co.host.device_name = host_name();
    const auto t0 = Clock::now();
    if (o.trace) {
        co.trace = [t0, name = hc.name](std::string_view line) {
            const std::chrono::duration<double, std::milli> ms = Clock::now() - t0;
            std::fprintf(stderr, "%9.3f ms  %s  %.*s\n", ms.count(), name.c_str(),
                         static_cast<int>(line.size()), line.data());
        };
    }
    auto s = EmuStack::create(std::move(hc), std::move(co));
    if (!s) {
        std::fprintf(stderr, "tbv status: cannot bring up the emulated host: %s\n",
                     s.error().message().c_str());
        return 1;
    }
    EmuStack& st = **s;
    // The provider's spelling: "<cable>[/a|/b]" picks an end.
    std::string why;
    auto spec = detail::parse_emu_spec(o.emu, why);
    if (!spec) {
        std::fprintf(stderr, "tbv status: --emu '%s': %s\n", o.emu.c_str(), why.c_str());
        return 1;
    }
    emu::ShmCableConfig cc;
    cc.side = spec->side;
    if (auto r = st.host().open_shm_cable(0, spec->cable, cc); !r) {
        std::fprintf(stderr, "tbv status: cannot open the shared-memory cable '%s': %s\n",
                     o.emu.c_str(), r.error().message().c_str());
        return 1;
    }
    const auto poll = [&] { st.cm().poll(); };
    const bool up = poll_until(
                        poll, [&] { return st.settled(); }, t0 + seconds(o.timeout_s)) ||
                    st.any_up();
    auto j = status_json(st, o.emu);
    j["processes"] = processes_json(verbs::stats_dir());
    if (o.json) {
        std::fputs((j.dump(2) + "\n").c_str(), stdout);
    } else {
        std::fputs((render_status(j) + render_processes(j["processes"])).c_str(), stdout);
    }
    std::fflush(stdout);
    if (!up) {
        std::fprintf(stderr,
                     "tbv status: no peer found within %.1f s (is another `tbv status --emu %s` "
                     "running?)\n",
                     o.timeout_s, o.emu.c_str());
    }
    if (o.wait) {
        // Keep answering so the peer can finish its own discovery and print.
        (void)poll_until(
            poll, [] { return false; }, Clock::now() + seconds(o.linger_s));
    }
    return up ? 0 : 1;
}

/// Sends one frame on rail `k` of `from`'s first link and receives it on `to`'s rail with the same
/// index: the data plane the two CMs just programmed, end to end through both routers.
std::string probe_rail(EmuStack& from, EmuStack& to, std::size_t k) {
    const usb4::Rail& tx = from.cm().links().at(0).rails.at(k);
    const usb4::Rail* rx = nullptr;
    for (const auto& r : to.cm().links().at(0).rails) {
        rx = r.index == tx.index ? &r : rx;
    }
    if (rx == nullptr) {
        return "the peer has no rail with this index";
    }
    constexpr std::uint32_t kLen = 1000;
    auto src = nhi::FramePool::create(from.host().nhi(), 1, 4096, hw::DmaAccess::read);
    auto dst = nhi::FramePool::create(to.host().nhi(), 1, 4096, hw::DmaAccess::write);
    if (!src || !dst) {
        return "cannot map a frame buffer";
    }
    for (std::uint32_t i = 0; i < kLen; ++i) {
        src->data(0)[i] = static_cast<std::byte>(i * 7 + tx.index);
    }
    const nhi::RxBuffer buf{dst->iova(0), 0};
    if (rx->rx->post({&buf, 1}).posted != 1) {
        return "cannot post an RX buffer";
    }
    const nhi::TxFrame f{src->iova(0), kLen, 1, 2, false, 0};
    if (tx.tx->post({&f, 1}).posted != 1) {
        return "cannot post the TX frame";
    }
    nhi::RxCompletion c;
    unsigned got = 0;
    for (unsigned i = 0; i < 1000 && got == 0; ++i) {
        got = rx->rx->poll({&c, 1});
    }
    std::array<std::uint64_t, 4> done{};
    (void)tx.tx->reap(done);
    if (got == 0) {
        return "no frame arrived";
    }
    if (c.length != kLen || std::memcmp(src->data(0), dst->data(0), kLen) != 0) {
        return fmt::format("a frame of {} bytes arrived, not the {} sent", c.length, kLen);
    }
    return fmt::format("1 frame of {} bytes TX ring {} -> HopID {} -> RX ring {}, intact", kLen,
                       tx.tx_ring, tx.tx_hop, rx->rx_ring);
}

int run_trace_demo(const StatusOptions& o) {
    const auto t0 = Clock::now();
    auto tracer = [t0](std::string name) {
        return [t0, name = std::move(name)](std::string_view line) {
            const std::chrono::duration<double, std::milli> ms = Clock::now() - t0;
            std::printf("%9.3f ms  %-6s  %.*s\n", ms.count(), name.c_str(),
                        static_cast<int>(line.size()), line.data());
        };
    };
    std::vector<std::unique_ptr<EmuStack>> hosts;
    const std::pair<const char*, std::uint64_t> names[] = {{"host-a", 0x0438'020e'0000'0a01ull},
                                                           {"host-b", 0x0438'020e'0000'0b01ull}};
    for (const auto& [name, uid] : names) {
        emu::HostConfig hc;
        hc.name = name;
        hc.uid = uid;
        usb4::CmOptions co;
        co.host.device_name = name;
        co.trace = tracer(name);
        auto s = EmuStack::create(std::move(hc), std::move(co));
        if (!s) {
            std::fprintf(stderr, "tbv status: cannot bring up emulated %s: %s\n", name,
                         s.error().message().c_str());
            return 1;
        }
        const auto& rt = (*s)->cm().router();
        std::printf("%9.3f ms  %-6s  enumerated router %04x:%04x UID %016llx, UUID %s\n",
                    std::chrono::duration<double, std::milli>(Clock::now() - t0).count(), name,
                    rt.vendor(), rt.device(), static_cast<unsigned long long>(rt.uid()),
                    usb4::uuid_to_string(rt.uuid()).c_str());
        hosts.push_back(std::move(*s));
    }
    EmuStack& a = *hosts[0];
    EmuStack& b = *hosts[1];
    std::printf("%9.3f ms  cable   host-a port 0 <-> host-b port 0 plugged in\n",
                std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    auto cable = emu::EmuHost::connect(a.host(), 0, b.host(), 0);
    const bool up = poll_until(
        [&] {
            a.cm().poll();
            b.cm().poll();
        },
        [&] { return a.settled() && b.settled(); }, t0 + seconds(o.timeout_s));
    if (up) {
        // One frame each way on every rail, so the data counters below show the paths work.
        for (auto [from, to, dir] :
             {std::tuple{&a, &b, "host-a -> host-b"}, std::tuple{&b, &a, "host-b -> host-a"}}) {
            const auto& rails = from->cm().links().at(0).rails;
            for (std::size_t k = 0; k < rails.size(); ++k) {
                const auto line = probe_rail(*from, *to, k);
                std::printf("%9.3f ms  probe   rail %u %s: %s\n",
                            std::chrono::duration<double, std::milli>(Clock::now() - t0).count(),
                            rails[k].index, dir, line.c_str());
            }
        }
    }
    std::printf("\n");
    nlohmann::json all = nlohmann::json::array();
    for (auto* s : {&a, &b}) {
        all.push_back(status_json(*s, "in-process cable host-a:0 <-> host-b:0"));
    }
    if (o.json) {
        std::fputs((all.dump(2) + "\n").c_str(), stdout);
    } else {
        for (const auto& c : all) {
            std::fputs((render_status(c) + "\n").c_str(), stdout);
        }
    }
    std::fflush(stdout);
    cable.reset();  // before the hosts
    if (!up) {
        std::fprintf(stderr, "tbv status: the two emulated hosts did not come up within %.1f s\n",
                     o.timeout_s);
        return 1;
    }
    return 0;
}

}  // namespace

void add_status_command(CLI::App& app, int& exit_code) {
    static StatusOptions o;
    static bool trace_demo = false;
    auto* cmd = app.add_subcommand(
        "status",
        "Show controllers (router, adapters and lanes, peers, rails, counters) and the port and QP "
        "counters of every running tbverbs process");
    cmd->add_option("--emu", o.emu,
                    "Run as an emulated host plugged into this shared-memory cable (or TBV_EMU)");
    cmd->add_flag("--json", o.json, "Machine-readable output");
    cmd->add_flag("--wait", o.wait,
                  "Keep serving the link for --linger seconds after printing (so the peer can "
                  "finish too)");
    cmd->add_option("--linger", o.linger_s, "Seconds to keep serving with --wait (default 2)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--timeout", o.timeout_s, "Seconds to wait for the link (default 10)")
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--trace", o.trace, "With --emu: print the discovery trace on stderr");
    cmd->add_flag("--trace-demo", trace_demo,
                  "Two emulated hosts in this process: print the discovery trace, then both");
    cmd->callback([&exit_code] {
        if (trace_demo) {
            exit_code = run_trace_demo(o);
            return;
        }
        if (o.emu.empty()) {
            if (const char* e = std::getenv("TBV_EMU"); e != nullptr) {
                o.emu = e;
            }
        }
        exit_code = o.emu.empty() ? no_controller(o) : run_emu(o);
    });

    auto* trace = app.add_subcommand(
        "trace", "Two emulated hosts in one process: the discovery trace step by step");
    trace->add_flag("--json", o.json, "Status of both hosts as JSON after the trace");
    trace->add_option("--timeout", o.timeout_s, "Seconds to wait for the link (default 10)")
        ->check(CLI::PositiveNumber);
    trace->callback([&exit_code] { exit_code = run_trace_demo(o); });
}

}  // namespace tbv::tools
