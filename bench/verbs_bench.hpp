// SPDX-License-Identifier: Apache-2.0
// tbv-bench-verbs, shared between its files: the testbed (two emulated hosts in this process
// joined by one or two in-process cables, with the whole stack as in test/emu/verbs_fixture.hpp:
// router, CM-programmed DMA paths, rails, a verbs Context on each host; verbs_bench_testbed.cpp)
// and the measuring kernels (verbs_bench_kernels.cpp), which return their rows as JSON objects
// that main (verbs_bench.cpp) prints and saves.
//
// Link model. By default the emulator moves frames as fast as the CPU can (the software path).
// With g_link on (--link or TBV_EMU_LINK, src/emu/link.hpp), every testbed's hosts get the
// emulator's link model: each data ring starts descriptors no faster than its DMA ceiling and
// each cable direction carries lanes x lane rate with a latency, so the figures show what rings,
// rails and cables add up to under those limits (still on this machine's CPU).
//
// Threads. threads = 1 (the default): the calling thread drives both contexts, one step of A then
// one of B. threads = 2: A runs on the calling thread and B on a second one (a perftest server and
// client on two machines). Either way each context is used by one thread only (besides its own CM
// thread, which wakes every 2 ms), and the poll_cq or progress calls of these threads are what
// move frames.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "emu/host.hpp"
#include "verbs/context.hpp"

namespace tbv::bench {

using SteadyClock = std::chrono::steady_clock;

// ---- kernels (verbs_bench_kernels.cpp): each builds its own testbed, one row per run ------------
// The first three use one cable with `rails` rails (1 or 2: the default NHI has two data rings).

/// Ping-pong latency of "write", "send" (half round trip) or "read" (full round trip).
nlohmann::json latency_rows(const std::string& op, const std::vector<std::size_t>& sizes,
                            unsigned warmup, unsigned iters, unsigned rails, unsigned threads);
/// "write", "read" or "send" bandwidth on one QP, `window` WRs outstanding, 1 in `signal_every`
/// signaled, `seconds` per size.
nlohmann::json bandwidth_rows(const std::string& op, const std::vector<std::size_t>& sizes,
                              double seconds, unsigned window, unsigned signal_every,
                              unsigned rails, unsigned threads);
/// WRITEs of `bytes` posted in lists of each length in `lists`.
nlohmann::json msg_rate_rows(const std::vector<unsigned>& lists, std::size_t bytes, double seconds,
                             unsigned rails, unsigned threads);
/// WRITE bandwidth over `cables` cables with `rails_per_link` rails each (0: as many as the rings
/// allow), once per QP count in `qps`.
nlohmann::json cable_rows(unsigned cables, unsigned rails_per_link,
                          const std::vector<unsigned>& qps, std::size_t bytes, double seconds,
                          unsigned window, unsigned signal_every, unsigned threads);

// ---- testbed (verbs_bench_testbed.cpp) ----------------------------------------------------------

[[noreturn]] void die(const std::string& what);

template <typename T>
T must(Result<T> r, const char* what) {
    if (!r) {
        die(fmt::format("{}: {}", what, r.error().message()));
    }
    return std::move(*r);
}
void must(Result<void> r, const char* what);

/// A page-aligned buffer filled with a pattern (touched, so no page fault lands in a timed loop).
struct Buffer {
    Buffer(std::size_t n, unsigned seed);
    std::uint64_t addr() const { return reinterpret_cast<std::uint64_t>(data.get()); }
    bool same(const Buffer& o) const;

    struct Free {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte[], Free> data;
    std::size_t size;
};

struct Host {
    std::unique_ptr<verbs::Context> ctx;
    verbs::Pd* pd = nullptr;
    verbs::Cq* cq = nullptr;
};

/// Two hosts with `cables` cables between USB4 ports k and k, both contexts up with `rails` rails
/// each to the other (the constructor waits, and exits the program if they do not come up).
/// rails_per_link 0: as many as the NHI's rings allow, i.e. 2 on the default AMD-like NHI (3 rings,
/// ring 0 is the control channel).
class Testbed {
public:
    Testbed(unsigned cables, unsigned rails_per_link, unsigned rails);
    ~Testbed();  ///< contexts (and their CM threads) before the cables and the hosts
    Testbed(const Testbed&) = delete;
    Testbed& operator=(const Testbed&) = delete;

    /// Rails (ports) of `from` whose far end is `to`.
    static unsigned rails_to(Host& from, Host& to);
    /// Frames each of A's rails to B has sent so far.
    std::vector<std::uint64_t> rail_tx_frames();
    /// The emulator's own counters that explain a link-model figure, summed over both hosts:
    /// descriptors a ring's DMA ceiling held back (tx_paced_stops), frames lost on the way in
    /// (rx_overflow_drops, link_overflow_drops, link_in_flight_drops, data_link_down_drops).
    void add_emu_totals(nlohmann::json& d);

private:
    emu::EmuHost ha_, hb_;
    std::vector<std::unique_ptr<emu::Cable>> cables_;

public:
    Host a, b;  ///< after the hosts they run on (the destructor also resets them first)
};

/// Seconds it takes to build a testbed and bring its rails up (reported, not part of any figure).
double testbed_setup_seconds(unsigned cables, unsigned rails_per_link);

/// `n` connected RC QP pairs (A's i ↔ B's i, LID + QPN + PSN as perftest exchanges them), on each
/// host's one CQ; destroyed with the object.
struct QpPairs {
    QpPairs(Testbed& tb, unsigned n);
    ~QpPairs();
    QpPairs(const QpPairs&) = delete;
    QpPairs& operator=(const QpPairs&) = delete;

    Testbed& tb;
    std::vector<verbs::Qp*> a, b;
};

/// Counters that explain a figure: what every port of both hosts has counted so far (credit
/// stalls, CREDIT-only frames, drops) and the emulator's (add_emu_totals); diagnostics() adds the
/// QPs' own (retransmissions,
/// timeouts, NAKs, duplicates, replays) and the ports' growth since `ports_before`.
nlohmann::json port_totals(Testbed& tb);
nlohmann::json diagnostics(Testbed& tb, const QpPairs& q, const nlohmann::json& ports_before);

/// A buffer registered on one host for local write and remote read and write; deregistered with
/// the object, which must therefore outlive the QPs whose WQEs reference it.
struct Region {
    Region(Host& h, std::size_t n, unsigned seed);
    ~Region();
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    verbs::Sge sge(std::size_t n) const {
        return {buf.addr(), static_cast<std::uint32_t>(n), mr->lkey()};
    }

    Host& host;
    Buffer buf;
    verbs::Mr* mr = nullptr;
};

/// Regions whose MR could not be deregistered (still referenced after their QPs were destroyed).
extern std::atomic<unsigned> g_mr_leaks;
/// The link model every testbed's hosts get (any() false: off). Set by main before any testbed.
extern emu::LinkConfig g_link;

/// Runs A's and B's steps (each returns true once that side's work is done) until both are done,
/// on one thread or two. A side that is done keeps driving its context's progress, so it still
/// answers its peer (ACKs, READ responses). False if `limit` passed first.
bool run_sides(Testbed& tb, unsigned threads, const std::function<bool()>& step_a,
               const std::function<bool()>& step_b, std::chrono::seconds limit);

/// Polls `h`'s CQ (which drives its progress): f(wc) for each success; the others are counted in
/// `errors` (the first one is printed).
template <typename F>
void reap(Host& h, std::uint64_t& errors, F&& f) {
    std::array<verbs::Wc, 64> wc{};
    const std::uint32_t k = h.ctx->poll_cq(*h.cq, wc);
    for (std::uint32_t i = 0; i < k; ++i) {
        if (wc[i].status != verbs::WcStatus::success) {
            if (errors++ == 0) {
                fmt::print(stderr, "tbv-bench-verbs: completion status {} (wr_id {}, opcode {})\n",
                           static_cast<int>(wc[i].status), wc[i].wr_id,
                           static_cast<int>(wc[i].opcode));
            }
            continue;
        }
        f(wc[i]);
    }
}

}  // namespace tbv::bench
