// SPDX-License-Identifier: Apache-2.0
// Two emulated hosts joined by an in-process cable, each with a verbs Context (connection manager
// thread, rails as ports): the whole stack, no shortcuts. Helpers connect QPs the way perftest
// does (LID + QPN + PSN only) and wait for completions while driving both hosts' progress, with a
// generous real-time limit so a bug fails a test instead of hanging it.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "emu/host.hpp"
#include "verbs/context.hpp"

namespace tbv::test {

using namespace std::chrono_literals;

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

inline emu::HostConfig verbs_host(const char* name, std::uint64_t uid) {
    emu::HostConfig c;
    c.name = name;
    c.uid = uid;
    c.router.training_delay = 2ms;
    return c;
}

inline verbs::ContextOptions verbs_opts() {
    verbs::ContextOptions o;
    o.cm.xd_timeout = 50ms;  // a starved peer CM thread must not turn every request into a retry
    o.cm.lane_poll = 2ms;
    o.cm.lane_polls = 500;
    o.cm.rail_ring_size = 128;
    o.cm.failed_retry = 100ms;  // a discovery step lost to a slow (sanitizer) peer is retried
    o.cm_period = 1ms;
    if (std::getenv("TBV_TEST_CM_TRACE") != nullptr) {
        // Discovery steps on stderr (stdout is the TAP stream), for a failing run.
        o.cm.trace = [t0 = std::chrono::steady_clock::now()](std::string_view line) {
            const auto ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
            std::fprintf(stderr, "[%9.3f ms] %.*s\n", ms, static_cast<int>(line.size()),
                         line.data());
        };
    }
    return o;
}

struct Node {
    std::unique_ptr<verbs::Context> ctx;
    verbs::Pd* pd = nullptr;
    verbs::Cq* cq = nullptr;

    void open(emu::EmuHost& h, verbs::ContextOptions o = verbs_opts()) {
        ctx = take(verbs::Context::open(h.nhi(), std::move(o)));
        pd = take(ctx->alloc_pd());
        cq = take(ctx->create_cq(4096));
    }
    verbs::Qp* qp(std::uint32_t wr = 256, verbs::Srq* srq = nullptr, verbs::Cq* c = nullptr) {
        verbs::QpInit qi;
        qi.pd = pd;
        qi.send_cq = c != nullptr ? c : cq;
        qi.recv_cq = c != nullptr ? c : cq;
        qi.srq = srq;
        qi.cap = {wr, wr, 16, 16, 256};
        return take(ctx->create_qp(qi));
    }
};

struct ConnectParams {
    std::uint32_t sq_psn = 0x1000;
    std::uint32_t rq_psn = 0x2000;  ///< the peer's sq_psn must match (set by connect())
    /// ≈ 1.07 s × (retry_cnt + 1) of retry budget: rides out an unplug plus rediscovery even in
    /// sanitizer builds on a 2-core machine loaded ~5× over (256 QPs saw RETRY_EXC_ERR with
    /// 17, ≈ 4.3 s, at load average 10); tests of the budget itself pass their own.
    std::uint8_t timeout = 18;
    std::uint8_t retry_cnt = 7;
    std::uint8_t rnr_retry = 7;
    std::uint32_t access =
        verbs::kAccessRemoteWrite | verbs::kAccessRemoteRead | verbs::kAccessRemoteAtomic;
};

/// INIT → RTR → RTS for `q` talking to `peer` on the device with LID `peer_lid`.
inline void bring_up(verbs::Context& c, verbs::Qp& q, std::uint16_t peer_lid,
                     std::uint32_t peer_qpn, std::uint32_t sq_psn, std::uint32_t rq_psn,
                     const ConnectParams& p = {}) {
    using namespace verbs;
    QpAttr a{};
    a.qp_state = QpState::init;
    a.port_num = 1;
    a.qp_access_flags = p.access;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpPkeyIndex | kQpPort | kQpAccessFlags));
    a = QpAttr{};
    a.qp_state = QpState::rtr;
    a.path_mtu = Mtu::mtu4096;
    a.dest_qp_num = peer_qpn;
    a.rq_psn = rq_psn;
    a.max_dest_rd_atomic = 16;
    a.min_rnr_timer = 1;
    a.ah_attr.dlid = peer_lid;
    a.ah_attr.port_num = 1;
    REQUIRE(c.modify_qp(q, a,
                        kQpState | kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn | kQpMaxDestRdAtomic |
                            kQpMinRnrTimer));
    a = QpAttr{};
    a.qp_state = QpState::rts;
    a.sq_psn = sq_psn;
    a.timeout = p.timeout;
    a.retry_cnt = p.retry_cnt;
    a.rnr_retry = p.rnr_retry;
    a.max_rd_atomic = 16;
    REQUIRE(c.modify_qp(
        q, a, kQpState | kQpSqPsn | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic));
}

inline void connect(Node& a, verbs::Qp& qa, Node& b, verbs::Qp& qb, const ConnectParams& p = {}) {
    bring_up(*a.ctx, qa, b.ctx->lid(), qb.qpn(), p.sq_psn, p.rq_psn, p);
    bring_up(*b.ctx, qb, a.ctx->lid(), qa.qpn(), p.rq_psn, p.sq_psn, p);
}

/// Polls `cq` of `n` (driving every node's progress) until `want` completions arrived.
/// A node's port and QP counters on stderr (stdout is the TAP stream), for a failing run with
/// TBV_TEST_CM_TRACE set.
inline void dump_stats(Node& n, const char* who) {
    if (std::getenv("TBV_TEST_CM_TRACE") == nullptr) {
        return;
    }
    std::vector<verbs::PortStats> ports;
    std::vector<verbs::QpStats> qps;
    n.ctx->snapshot(ports, qps);
    for (const auto& p : ports) {
        const auto& c = p.counters;
        std::fprintf(stderr,
                     "%s port %u adapter %u peer %u: credits %u tx %llu rx %llu stalls %llu "
                     "credit-frames %llu drops",
                     who, p.id, p.adapter, p.peer_lid, p.data_credits,
                     static_cast<unsigned long long>(c.tx_frames),
                     static_cast<unsigned long long>(c.rx_frames),
                     static_cast<unsigned long long>(c.credit_stalls),
                     static_cast<unsigned long long>(c.credit_frames));
        for (auto d : c.drops) {
            std::fprintf(stderr, " %llu", static_cast<unsigned long long>(d));
        }
        std::fprintf(stderr, "\n");
    }
    for (const auto& q : qps) {
        std::fprintf(stderr,
                     "%s qp %u state %d: sent %llu retx %llu timeouts %llu naks %llu | rx "
                     "accepted %llu ooo %llu dup %llu dropped %llu acks %llu\n",
                     who, q.qpn, static_cast<int>(q.state),
                     static_cast<unsigned long long>(q.sender.frames_sent),
                     static_cast<unsigned long long>(q.sender.retransmits),
                     static_cast<unsigned long long>(q.sender.timeouts),
                     static_cast<unsigned long long>(q.sender.naks),
                     static_cast<unsigned long long>(q.receiver.accepted),
                     static_cast<unsigned long long>(q.receiver.out_of_order),
                     static_cast<unsigned long long>(q.receiver.duplicates),
                     static_cast<unsigned long long>(q.receiver.dropped),
                     static_cast<unsigned long long>(q.receiver.acks));
    }
}

inline std::vector<verbs::Wc> wait_wc(Node& n, verbs::Cq& cq, std::size_t want,
                                      std::vector<Node*> others = {},
                                      std::chrono::seconds limit = 60s) {
    std::vector<verbs::Wc> got;
    std::array<verbs::Wc, 64> buf{};
    const auto end = std::chrono::steady_clock::now() + limit;
    while (got.size() < want && std::chrono::steady_clock::now() < end) {
        const std::uint32_t k = n.ctx->poll_cq(cq, buf);
        got.insert(got.end(), buf.begin(), buf.begin() + k);
        for (Node* o : others) {
            o->ctx->progress();
        }
        if (k == 0) {
            std::this_thread::yield();
        }
    }
    for (const auto& w : got) {
        if (w.status != verbs::WcStatus::success && w.status != verbs::WcStatus::wr_flush_err) {
            dump_stats(n, "polling node");
            for (Node* o : others) {
                dump_stats(*o, "other node");
            }
            break;
        }
    }
    return got;
}

/// Two hosts, one cable, both contexts up with rails.
struct VerbsPair {
    emu::EmuHost ha{verbs_host("a", 0x0438'020e'0000'00a1)};
    emu::EmuHost hb{verbs_host("b", 0x0438'020e'0000'00b2)};
    std::unique_ptr<emu::Cable> cable;
    Node a, b;

    explicit VerbsPair(bool plugged = true, verbs::ContextOptions o = verbs_opts()) {
        cable = emu::EmuHost::connect(ha, 0, hb, 0, plugged);
        a.open(ha, o);
        b.open(hb, o);
        if (plugged) {
            REQUIRE(wait_up());
        }
    }
    ~VerbsPair() {
        // Contexts (and their CM threads) go before the cable and the hosts.
        a.ctx.reset();
        b.ctx.reset();
        cable.reset();
    }
    bool wait_up(std::chrono::seconds limit = 60s) {  // a hang guard, not a deadline
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            if (a.ctx->port_active() && b.ctx->port_active()) {
                return true;
            }
            std::this_thread::sleep_for(1ms);
        }
        return false;
    }
};

/// Byte-for-byte equality without Catch printing megabytes on a mismatch (that would break
/// the TAP stream): reports the first differing offset instead.
inline bool same_bytes(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    if (a.size() != b.size()) {
        UNSCOPED_INFO("sizes differ: " << a.size() << " vs " << b.size());
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i] != b[i]) {
            UNSCOPED_INFO("first difference at byte " << i << " of " << a.size());
            return false;
        }
    }
    return true;
}

inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) {
        b = static_cast<std::byte>(rng());
    }
    return v;
}

}  // namespace tbv::test
