// SPDX-License-Identifier: Apache-2.0
// tbv-bench-verbs: the measuring kernels, perftest style (verbs_bench.hpp). Latency: a WRITE or
// SEND ping-pong (ib_write_lat, ib_send_lat: half the round trip) or one READ at a time
// (ib_read_lat: the full round trip). Bandwidth and message rate: a window of outstanding WRs per
// QP, one in N signaled (ib_*_bw). Checks: every completion must be a success, and after every
// run the bytes that arrived are compared with the bytes sent; a run that does not finish within
// its time limit is reported as "timeout" (a hang is a bug to report, not a figure).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "transport/wire.hpp"
#include "verbs_bench.hpp"

namespace tbv::bench {

using namespace std::chrono_literals;
using namespace tbv::verbs;
using nlohmann::json;

namespace {

constexpr unsigned kLatSignalEvery = 16;
/// A latency run that takes longer than this is reported as a timeout (a hang).
constexpr std::chrono::seconds kLatencyLimit{20};

/// One side of a WRITE or SEND ping-pong: A posts message i once it has seen i messages from B;
/// B posts message i once it has seen i + 1 from A. WRITE: the peer sees a message when the last
/// byte of its buffer changes to the message's tag (perftest's ib_write_lat); SEND: when the
/// receive completes (ib_send_lat). Every 16th send and the last are signaled.
struct PingPong {
    Host& h;
    Qp& qp;
    Region& out;  ///< what we send
    Region& in;   ///< where the peer's messages land
    std::uint64_t raddr = 0;
    std::uint32_t rkey = 0;
    bool write = true;
    bool initiator = false;
    unsigned total = 0;
    std::vector<SteadyClock::time_point>* stamps = nullptr;  ///< A: when each message left
    std::atomic<bool>* failed = nullptr;  ///< set by either side on an error: both stop
    unsigned posted = 0, seen = 0, signaled_done = 0, signaled = 0;
    std::uint64_t errors = 0;

    static std::byte tag(unsigned i) { return static_cast<std::byte>(1 + i % 255); }

    bool step() {
        reap(h, errors, [&](const Wc& wc) {
            if (wc.opcode == WcOpcode::recv) {
                ++seen;
                Sge g = in.sge(in.buf.size);
                RecvWr r;
                r.sg_list = &g;
                r.num_sge = 1;
                (void)h.ctx->post_recv(qp, r);
            } else {
                ++signaled_done;
            }
        });
        const std::size_t n = out.buf.size;
        if (write && seen < total &&
            std::atomic_ref<std::byte>(in.buf.data[n - 1]).load(std::memory_order_acquire) ==
                tag(seen)) {
            ++seen;
        }
        if (posted < total && (initiator ? seen == posted : seen == posted + 1)) {
            if (stamps != nullptr) {
                (*stamps)[posted] = SteadyClock::now();
            }
            out.buf.data[n - 1] = tag(posted);
            Sge g = out.sge(n);
            SendWr wr;
            wr.sg_list = &g;
            wr.num_sge = 1;
            wr.opcode = write ? WrOpcode::rdma_write : WrOpcode::send;
            wr.remote_addr = raddr;
            wr.rkey = rkey;
            if (posted % kLatSignalEvery == kLatSignalEvery - 1 || posted + 1 == total) {
                wr.send_flags = kSendSignaled;
                ++signaled;
            }
            if (!h.ctx->post_send(qp, wr)) {
                ++errors;
            }
            ++posted;
        }
        if (stamps != nullptr && seen == total && stamps->size() == total) {
            stamps->push_back(SteadyClock::now());
        }
        if (errors > 0) {
            failed->store(true, std::memory_order_relaxed);
        }
        return (posted == total && seen == total && signaled_done == signaled) ||
               failed->load(std::memory_order_relaxed);
    }
};

json stats_row(std::vector<double> ns) {
    std::sort(ns.begin(), ns.end());
    const auto at = [&](double q) {
        return ns[std::min(ns.size() - 1,
                           static_cast<std::size_t>(q * static_cast<double>(ns.size())))];
    };
    double sum = 0;
    for (double v : ns) {
        sum += v;
    }
    return {{"min_us", ns.front() / 1e3},
            {"median_us", at(0.5) / 1e3},
            {"p99_us", at(0.99) / 1e3},
            {"mean_us", sum / static_cast<double>(ns.size()) / 1e3}};
}

}  // namespace

// ---- latency ------------------------------------------------------------------------------------

json latency_rows(const std::string& op, const std::vector<std::size_t>& sizes, unsigned warmup,
                  unsigned iters, unsigned rails, unsigned threads) {
    Testbed tb(1, rails, rails);
    json rows = json::array();
    for (const std::size_t n : sizes) {
        // Buffers before QPs: the QPs (and the MR references their WQEs hold) go first.
        Region a_out(tb.a, n, 1), a_in(tb.a, n, 2), b_out(tb.b, n, 3), b_in(tb.b, n, 4);
        QpPairs q(tb, 1);
        const json ports_before = port_totals(tb);
        std::memset(a_in.buf.data.get(), 0, n);
        std::memset(b_in.buf.data.get(), 0, n);
        const unsigned total = warmup + iters;
        std::vector<double> ns;
        std::uint64_t errors = 0;
        bool ok = true;
        bool data_ok = true;
        if (op == "read") {
            // A reads B's buffer, one READ at a time: full round trip (perftest ib_read_lat).
            unsigned done = 0;
            bool waiting = false;
            SteadyClock::time_point t0;
            const auto a = [&] {
                reap(tb.a, errors, [&](const Wc&) {
                    if (done >= warmup) {
                        ns.push_back(
                            std::chrono::duration<double, std::nano>(SteadyClock::now() - t0)
                                .count());
                    }
                    ++done;
                    waiting = false;
                });
                if (!waiting && done < total) {
                    Sge g = a_in.sge(n);
                    SendWr wr;
                    wr.sg_list = &g;
                    wr.num_sge = 1;
                    wr.opcode = WrOpcode::rdma_read;
                    wr.send_flags = kSendSignaled;
                    wr.remote_addr = b_out.buf.addr();
                    wr.rkey = b_out.mr->rkey();
                    waiting = true;
                    t0 = SteadyClock::now();
                    errors += !tb.a.ctx->post_send(*q.a[0], wr);
                }
                return done == total || errors > 0;
            };
            ok = run_sides(
                tb, threads, a, [] { return true; }, kLatencyLimit);
            data_ok = a_in.buf.same(b_out.buf);
        } else {
            const bool write = op == "write";
            std::vector<SteadyClock::time_point> stamps(total);
            std::atomic<bool> failed{false};
            PingPong pa{.h = tb.a,
                        .qp = *q.a[0],
                        .out = a_out,
                        .in = a_in,
                        .raddr = b_in.buf.addr(),
                        .rkey = b_in.mr->rkey(),
                        .write = write,
                        .initiator = true,
                        .total = total,
                        .stamps = &stamps,
                        .failed = &failed};
            PingPong pb{.h = tb.b,
                        .qp = *q.b[0],
                        .out = b_out,
                        .in = b_in,
                        .raddr = a_in.buf.addr(),
                        .rkey = a_in.mr->rkey(),
                        .write = write,
                        .initiator = false,
                        .total = total,
                        .stamps = nullptr,
                        .failed = &failed};
            if (!write) {
                for (auto [p, qp] : {std::pair{&pa, q.a[0]}, std::pair{&pb, q.b[0]}}) {
                    for (unsigned i = 0; i < 64; ++i) {
                        Sge g = p->in.sge(n);
                        RecvWr r;
                        r.sg_list = &g;
                        r.num_sge = 1;
                        must(p->h.ctx->post_recv(*qp, r), "post_recv");
                    }
                }
            }
            ok = run_sides(
                tb, threads, [&] { return pa.step(); }, [&] { return pb.step(); }, kLatencyLimit);
            errors = pa.errors + pb.errors;
            for (unsigned i = warmup; ok && stamps.size() == total + 1 && i < total; ++i) {
                ns.push_back(
                    std::chrono::duration<double, std::nano>(stamps[i + 1] - stamps[i]).count() /
                    2);
            }
            data_ok = a_in.buf.same(b_out.buf) && b_in.buf.same(a_out.buf);
        }
        json row = {{"op", op},
                    {"bytes", n},
                    {"iters", iters},
                    {"half_round_trip", op != "read"},
                    {"errors", errors},
                    {"data_ok", data_ok},
                    {"diag", diagnostics(tb, q, ports_before)}};
        if (!ok) {
            row["error"] = "timeout";
        } else if (!ns.empty()) {
            row.update(stats_row(std::move(ns)));
        }
        rows.push_back(row);
        if (!ok) {
            break;  // the QPs may be wedged: do not pile more on them
        }
    }
    return rows;
}

// ---- bandwidth and message rate -----------------------------------------------------------------

namespace {

struct BwParams {
    std::string op = "write";
    std::size_t bytes = 0;
    unsigned qps = 1;
    unsigned window = 64;        ///< outstanding WRs per QP
    unsigned signal_every = 16;  ///< one signaled WR in this many (window is a multiple)
    unsigned list = 1;           ///< WRs per post_send call
    double seconds = 0.3;
};

/// A keeps `window` WRs outstanding on each QP until `seconds` have passed (stopping on a signaled
/// WR, so everything posted completes), then waits for the last completion. SEND: B keeps 512
/// receives posted per QP and reposts each one that completes.
json bw_run(Testbed& tb, const BwParams& p, unsigned threads) {
    Region a_buf(tb.a, p.bytes, 11), b_buf(tb.b, p.bytes, 12);
    QpPairs q(tb, p.qps);  // destroyed before the buffers its receive WQEs reference
    const bool read = p.op == "read", send = p.op == "send";
    // Zero the destination, so the comparison at the end proves that the bytes arrived.
    std::memset((read ? a_buf : b_buf).buf.data.get(), 0, p.bytes);
    std::vector<std::uint64_t> posted(p.qps, 0), done(p.qps, 0);
    std::uint64_t a_errors = 0, b_errors = 0, received = 0;
    std::atomic<std::uint64_t> total{~0ull};  ///< messages A posted, once A is done
    std::atomic<bool> failed{false};          ///< a completion failed: both sides stop
    if (send) {
        for (Qp* qp : q.b) {
            for (unsigned i = 0; i < 512; ++i) {
                Sge g = b_buf.sge(p.bytes);
                RecvWr r;
                r.sg_list = &g;
                r.num_sge = 1;
                must(tb.b.ctx->post_recv(*qp, r), "post_recv");
            }
        }
    }
    std::vector<Sge> sges(p.list, a_buf.sge(p.bytes));
    std::vector<SendWr> wrs(p.list);
    for (unsigned j = 0; j < p.list; ++j) {
        wrs[j].sg_list = &sges[j];
        wrs[j].num_sge = 1;
        wrs[j].opcode = read ? WrOpcode::rdma_read : send ? WrOpcode::send : WrOpcode::rdma_write;
        wrs[j].remote_addr = b_buf.buf.addr();
        wrs[j].rkey = b_buf.mr->rkey();
        wrs[j].next = j + 1 < p.list ? &wrs[j + 1] : nullptr;
    }
    const auto before = tb.rail_tx_frames();
    const json ports_before = port_totals(tb);
    const auto t0 = SteadyClock::now();
    const auto stop_at = t0 + std::chrono::duration<double>(p.seconds);
    // A QP stops posting once the time is up and its last WR was a signaled one (so everything it
    // posted completes); a QP whose window is full always is at such a point.
    std::vector<char> stopped(p.qps, 0);
    SteadyClock::time_point t1;
    const auto a = [&] {
        reap(tb.a, a_errors, [&](const Wc& wc) { done[wc.wr_id] += p.signal_every; });
        const bool time_up = SteadyClock::now() >= stop_at || a_errors > 0;
        bool idle = true;
        for (unsigned i = 0; i < p.qps; ++i) {
            stopped[i] |= time_up && posted[i] % p.signal_every == 0;
            while (!stopped[i] && posted[i] - done[i] + p.list <= p.window) {
                for (unsigned j = 0; j < p.list; ++j) {
                    wrs[j].wr_id = i;
                    wrs[j].send_flags =
                        (posted[i] + j + 1) % p.signal_every == 0 ? kSendSignaled : 0;
                }
                if (!tb.a.ctx->post_send(*q.a[i], wrs[0])) {
                    ++a_errors;
                    stopped[i] = 1;
                    break;
                }
                posted[i] += p.list;
                stopped[i] = time_up && posted[i] % p.signal_every == 0;
            }
            idle = idle && stopped[i] && done[i] >= posted[i];
        }
        if (a_errors > 0) {
            failed.store(true, std::memory_order_relaxed);
        }
        if (idle || a_errors > 0 || failed.load(std::memory_order_relaxed)) {
            t1 = SteadyClock::now();
            std::uint64_t sum = 0;
            for (std::uint64_t v : posted) {
                sum += v;
            }
            total.store(sum, std::memory_order_release);
            return true;
        }
        return false;
    };
    const auto b = [&] {
        if (!send) {
            return true;
        }
        reap(tb.b, b_errors, [&](const Wc& wc) {
            ++received;
            Sge g = b_buf.sge(p.bytes);
            RecvWr r;
            r.sg_list = &g;
            r.num_sge = 1;
            for (Qp* qp : q.b) {
                if (qp->qpn() == wc.qp_num) {
                    (void)tb.b.ctx->post_recv(*qp, r);
                }
            }
        });
        if (b_errors > 0) {
            failed.store(true, std::memory_order_relaxed);
        }
        return received >= total.load(std::memory_order_acquire) ||
               failed.load(std::memory_order_relaxed);
    };
    const bool ok =
        run_sides(tb, threads, a, b, std::chrono::seconds(10 + static_cast<int>(p.seconds * 20)));
    if (!ok) {
        t1 = SteadyClock::now();
    }
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    std::uint64_t wrs_done = 0;
    for (std::uint64_t v : done) {
        wrs_done += v;
    }
    json rails = json::array();
    const auto after = tb.rail_tx_frames();
    for (std::size_t i = 0; i < after.size() && i < before.size(); ++i) {
        rails.push_back(after[i] - before[i]);
    }
    json row = {{"op", p.op},
                {"bytes", p.bytes},
                {"qps", p.qps},
                {"window", p.window},
                {"signal_every", p.signal_every},
                {"post_list", p.list},
                {"messages", wrs_done},
                {"messages_per_qp", done},
                {"seconds", secs},
                {"gbit_per_s", static_cast<double>(wrs_done * p.bytes) * 8 / secs / 1e9},
                {"mmsg_per_s", static_cast<double>(wrs_done) / secs / 1e6},
                {"rail_tx_frames", rails},
                {"diag", diagnostics(tb, q, ports_before)},
                {"errors", a_errors + b_errors},
                {"data_ok", a_buf.buf.same(b_buf.buf)}};
    if (!ok) {
        row["error"] = "timeout";
    }
    return row;
}

}  // namespace

json bandwidth_rows(const std::string& op, const std::vector<std::size_t>& sizes, double seconds,
                    unsigned window, unsigned signal_every, unsigned rails, unsigned threads) {
    Testbed tb(1, rails, rails);
    json rows = json::array();
    for (const std::size_t n : sizes) {
        rows.push_back(bw_run(tb, {op, n, 1, window, signal_every, 1, seconds}, threads));
        if (rows.back().contains("error")) {
            break;
        }
    }
    return rows;
}

json msg_rate_rows(const std::vector<unsigned>& lists, std::size_t bytes, double seconds,
                   unsigned rails, unsigned threads) {
    Testbed tb(1, rails, rails);
    json rows = json::array();
    for (const unsigned l : lists) {
        rows.push_back(bw_run(tb, {"write", bytes, 1, 128, 32, l, seconds}, threads));
        if (rows.back().contains("error")) {
            break;
        }
    }
    return rows;
}

namespace {

/// The WRITE payload rate the link model allows `rails` rails spread evenly over `cables` cables
/// (0 with the model off): per cable, the lesser of its rails' DMA ceilings and its own rate. A
/// full WRITE frame is a kSegment payload behind a base header (the first frame of a message also
/// has a RETH: 16 bytes in 1 MiB, ignored); ACKs travel the other way.
double model_limit_gbps(unsigned cables, unsigned rails) {
    if (!g_link.any()) {
        return 0;
    }
    const double payload = transport::wire::kSegment;
    const std::size_t frame = transport::wire::kSegment + transport::wire::kBaseHeader;
    double per_cable = std::numeric_limits<double>::infinity();
    if (g_link.ring_on()) {
        const emu::RingPacer ring(g_link);
        const double ns = static_cast<double>(ring.cost(frame)) / emu::kPsPerNs;
        per_cable = static_cast<double>(rails / cables) * payload * 8 / ns;  // bits/ns = Gb/s
    }
    if (g_link.gen != 0) {
        per_cable = std::min(per_cable, g_link.cable_gbps() * payload / static_cast<double>(frame));
    }
    return std::isinf(per_cable) ? 0 : cables * per_cable;
}

}  // namespace

json cable_rows(unsigned cables, unsigned rails_per_link, const std::vector<unsigned>& qps,
                std::size_t bytes, double seconds, unsigned window, unsigned signal_every,
                unsigned threads) {
    const unsigned rails = cables * (rails_per_link == 0 ? 2 : rails_per_link);
    Testbed tb(cables, rails_per_link, rails);
    json rows = json::array();
    for (const unsigned n : qps) {
        json r = bw_run(tb, {"write", bytes, n, window, signal_every, 1, seconds}, threads);
        r["cables"] = cables;
        r["rails"] = rails;
        r["model_gbit_per_s"] = model_limit_gbps(cables, rails);
        rows.push_back(r);
        if (r.contains("error")) {
            break;
        }
    }
    return rows;
}

}  // namespace tbv::bench
