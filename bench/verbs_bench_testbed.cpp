// SPDX-License-Identifier: Apache-2.0
// tbv-bench-verbs: the testbed (two emulated hosts, cables, contexts, QP pairs, registered
// buffers) and the loop that drives both hosts on one thread or two (verbs_bench.hpp).
#include <atomic>
#include <cstring>
#include <thread>
#include <utility>

#include "verbs_bench.hpp"

namespace tbv::bench {

using namespace std::chrono_literals;
using namespace tbv::verbs;

void die(const std::string& what) {
    fmt::print(stderr, "tbv-bench-verbs: {}\n", what);
    std::exit(1);
}

void must(Result<void> r, const char* what) {
    if (!r) {
        die(fmt::format("{}: {}", what, r.error().message()));
    }
}

Buffer::Buffer(std::size_t n, unsigned seed) : size(n) {
    data.reset(static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096)));
    if (!data) {
        die("out of memory");
    }
    for (std::size_t i = 0; i < n; ++i) {
        data[i] = static_cast<std::byte>((i * 131 + std::size_t{seed} * 7 + (i >> 12)) & 0xff);
    }
}

bool Buffer::same(const Buffer& o) const {
    return size == o.size && std::memcmp(data.get(), o.data.get(), size) == 0;
}

// ---- testbed ------------------------------------------------------------------------------------

namespace {

emu::HostConfig host_config(const char* name, std::uint64_t uid, unsigned ports) {
    emu::HostConfig c;
    c.name = name;
    c.uid = uid;
    c.router.usb4_ports = ports;
    c.router.training_delay = 2ms;  // link training is not what is measured
    c.link = g_link;  // main has folded TBV_EMU_LINK into it (off: the software path alone)
    return c;
}

/// INIT → RTR → RTS towards `peer_qpn` on the host with LID `peer_lid`.
void bring_up(Context& c, Qp& q, std::uint16_t peer_lid, std::uint32_t peer_qpn,
              std::uint32_t sq_psn, std::uint32_t rq_psn) {
    QpAttr a{};
    a.qp_state = QpState::init;
    a.port_num = 1;
    a.qp_access_flags = kAccessRemoteWrite | kAccessRemoteRead;
    must(c.modify_qp(q, a, kQpState | kQpPkeyIndex | kQpPort | kQpAccessFlags), "INIT");
    a = QpAttr{};
    a.qp_state = QpState::rtr;
    a.path_mtu = Mtu::mtu4096;
    a.dest_qp_num = peer_qpn;
    a.rq_psn = rq_psn;
    a.max_dest_rd_atomic = 16;
    a.min_rnr_timer = 1;
    a.ah_attr.dlid = peer_lid;
    a.ah_attr.port_num = 1;
    must(c.modify_qp(q, a,
                     kQpState | kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn | kQpMaxDestRdAtomic |
                         kQpMinRnrTimer),
         "RTR");
    a = QpAttr{};
    a.qp_state = QpState::rts;
    a.sq_psn = sq_psn;
    a.timeout = 14;
    a.retry_cnt = 7;
    a.rnr_retry = 7;
    a.max_rd_atomic = 16;
    must(c.modify_qp(
             q, a, kQpState | kQpSqPsn | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic),
         "RTS");
}

}  // namespace

Testbed::Testbed(unsigned cables, unsigned rails_per_link, unsigned rails)
    : ha_(host_config("a", 0x0438'020e'0000'00a1, cables)),
      hb_(host_config("b", 0x0438'020e'0000'00b2, cables)) {
    ContextOptions o;
    // Discovery faster than Linux's pace (the emulated link trains in 2 ms), but with room for a
    // busy machine: 2 vCPUs shared with spinning threads can delay an answer by milliseconds.
    o.cm.xd_timeout = 100ms;
    o.cm.lane_poll = 2ms;
    o.cm.lane_polls = 2500;
    if (rails_per_link != 0) {
        o.cm.max_rails_per_link = rails_per_link;
    }
    for (unsigned k = 0; k < cables; ++k) {
        cables_.push_back(emu::EmuHost::connect(ha_, k, hb_, k));
    }
    for (auto [h, e] : {std::pair{&a, &ha_}, std::pair{&b, &hb_}}) {
        h->ctx = must(Context::open(e->nhi(), o), "open context");
        h->pd = must(h->ctx->alloc_pd(), "alloc_pd");
        h->cq = must(h->ctx->create_cq(16384), "create_cq");
    }
    const auto end = SteadyClock::now() + 30s;
    while (rails_to(a, b) < rails || rails_to(b, a) < rails) {
        if (SteadyClock::now() > end) {
            std::string links;
            for (Host* h : {&a, &b}) {
                h->ctx->with_cm([&](const usb4::ConnectionManager& cm) {
                    for (const usb4::Link& l : cm.links()) {
                        links += fmt::format(" {}:adapter {} {} {} rails{}", h == &a ? "A" : "B",
                                             l.adapter, usb4::to_string(l.state), l.rails.size(),
                                             l.error ? " (" + l.error.message() + ")" : "");
                    }
                });
            }
            die(fmt::format("{} rails did not come up over {} cable(s):{}", rails, cables, links));
        }
        std::this_thread::sleep_for(1ms);
    }
}

Testbed::~Testbed() {
    a.ctx.reset();
    b.ctx.reset();
    cables_.clear();
}

unsigned Testbed::rails_to(Host& from, Host& to) {
    unsigned n = 0;
    const std::uint16_t lid = to.ctx->lid();
    from.ctx->for_each_port([&](auto&, unsigned, std::uint16_t peer) { n += peer == lid; });
    return n;
}

std::vector<std::uint64_t> Testbed::rail_tx_frames() {
    std::vector<std::uint64_t> v;
    const std::uint16_t lid = b.ctx->lid();
    a.ctx->for_each_port([&](auto& p, unsigned, std::uint16_t peer) {
        if (peer == lid) {
            v.push_back(p.counters().tx_frames);
        }
    });
    return v;
}

namespace {
void add(nlohmann::json& d, const char* key, std::uint64_t v) {
    d[key] = d.value(key, std::uint64_t{0}) + v;
}
}  // namespace

emu::LinkConfig g_link{};

void Testbed::add_emu_totals(nlohmann::json& d) {
    for (emu::EmuHost* h : {&ha_, &hb_}) {
        for (unsigned i = 0; i < h->nhi_count(); ++i) {
            const emu::NhiCounters n = h->nhi(i).counters();
            add(d, "tx_paced_stops", n.tx_paced_stops);
            add(d, "rx_overflow_drops", n.rx_overflow_drops);
            const emu::RouterCounters r = h->router(i).counters();
            add(d, "link_overflow_drops", r.link_overflow_drops);
            add(d, "link_in_flight_drops", r.link_in_flight_drops);
            add(d, "data_link_down_drops", r.data_link_down_drops);
        }
    }
}

nlohmann::json port_totals(Testbed& tb) {
    nlohmann::json d = nlohmann::json::object();
    for (Host* h : {&tb.a, &tb.b}) {
        h->ctx->for_each_port([&](auto& p, unsigned, std::uint16_t) {
            add(d, "credit_stalls", p.counters().credit_stalls);
            add(d, "credit_frames", p.counters().credit_frames);
            for (std::size_t i = 0; i < p.counters().drops.size(); ++i) {
                const auto why = static_cast<transport::DropReason>(i);
                add(d, ("drop_" + std::string(transport::to_string(why))).c_str(),
                    p.counters().drops[i]);
            }
        });
    }
    tb.add_emu_totals(d);
    return d;
}

nlohmann::json diagnostics(Testbed& tb, const QpPairs& q, const nlohmann::json& ports_before) {
    nlohmann::json d = nlohmann::json::object();
    for (const auto& side : {q.a, q.b}) {
        for (const Qp* qp : side) {
            if (const transport::Sender* s = qp->sender()) {
                add(d, "retransmits", s->counters().retransmits);
                add(d, "timeouts", s->counters().timeouts);
                add(d, "naks_received", s->counters().naks);
                add(d, "rnr_naks_received", s->counters().rnr_naks);
            }
            if (const transport::Receiver* r = qp->receiver()) {
                add(d, "duplicates", r->counters().duplicates);
                add(d, "out_of_order", r->counters().out_of_order);
                add(d, "rx_dropped", r->counters().dropped);
            }
            add(d, "replays", qp->counters().replays);
            add(d, "qp_dropped", qp->counters().dropped);
        }
    }
    const nlohmann::json now = port_totals(tb);
    for (const auto& [k, v] : now.items()) {
        d[k] = v.get<std::uint64_t>() - ports_before.value(k, std::uint64_t{0});
    }
    return d;
}

double testbed_setup_seconds(unsigned cables, unsigned rails_per_link) {
    const auto t0 = SteadyClock::now();
    Testbed tb(cables, rails_per_link, cables * (rails_per_link == 0 ? 2 : rails_per_link));
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

QpPairs::QpPairs(Testbed& t, unsigned n) : tb(t) {
    QpInit qi;
    qi.cap = {512, 1024, 1, 1, 0};
    for (unsigned i = 0; i < n; ++i) {
        qi.pd = tb.a.pd;
        qi.send_cq = qi.recv_cq = tb.a.cq;
        a.push_back(must(tb.a.ctx->create_qp(qi), "create_qp A"));
        qi.pd = tb.b.pd;
        qi.send_cq = qi.recv_cq = tb.b.cq;
        b.push_back(must(tb.b.ctx->create_qp(qi), "create_qp B"));
        const std::uint32_t psn_a = 0x1000 + 0x3111 * i, psn_b = 0xFFFF00 - 0x777 * i;
        bring_up(*tb.a.ctx, *a[i], tb.b.ctx->lid(), b[i]->qpn(), psn_a, psn_b);
        bring_up(*tb.b.ctx, *b[i], tb.a.ctx->lid(), a[i]->qpn(), psn_b, psn_a);
    }
}

QpPairs::~QpPairs() {
    for (Qp* q : a) {
        (void)tb.a.ctx->destroy_qp(q);
    }
    for (Qp* q : b) {
        (void)tb.b.ctx->destroy_qp(q);
    }
}

Region::Region(Host& h, std::size_t n, unsigned seed) : host(h), buf(n, seed) {
    mr = must(h.ctx->reg_mr(*h.pd, buf.data.get(), n,
                            kAccessLocalWrite | kAccessRemoteWrite | kAccessRemoteRead),
              "reg_mr");
}

std::atomic<unsigned> g_mr_leaks{0};

Region::~Region() {
    if (auto r = host.ctx->dereg_mr(mr); !r) {
        // The MR still maps the buffer, so the buffer must stay: leak it, and say so.
        if (g_mr_leaks.fetch_add(1) == 0) {
            fmt::print(stderr,
                       "tbv-bench-verbs: dereg_mr after the QPs were destroyed: {} (the MR and "
                       "its buffer are leaked)\n",
                       r.error().message());
        }
        (void)buf.data.release();
    }
}

// ---- driving both hosts -------------------------------------------------------------------------

bool run_sides(Testbed& tb, unsigned threads, const std::function<bool()>& step_a,
               const std::function<bool()>& step_b, std::chrono::seconds limit) {
    const auto end = SteadyClock::now() + limit;
    if (threads == 1) {
        bool da = false, db = false;
        for (unsigned k = 1; !(da && db); ++k) {
            da ? tb.a.ctx->progress() : void(da = step_a());
            db ? tb.b.ctx->progress() : void(db = step_b());
            if (k % 256 == 0 && SteadyClock::now() > end) {
                return false;
            }
        }
        return true;
    }
    std::atomic<bool> a_done{false}, b_done{false}, stop{false};
    std::thread side_b([&] {
        bool d = false;
        while (!(d && a_done.load(std::memory_order_acquire)) &&
               !stop.load(std::memory_order_relaxed)) {
            if (d) {
                tb.b.ctx->progress();
            } else if ((d = step_b())) {
                b_done.store(true, std::memory_order_release);
            }
        }
    });
    bool d = false, ok = true;
    for (unsigned k = 1; !(d && b_done.load(std::memory_order_acquire)); ++k) {
        if (d) {
            tb.a.ctx->progress();
        } else if ((d = step_a())) {
            a_done.store(true, std::memory_order_release);
        }
        if (k % 256 == 0 && SteadyClock::now() > end) {
            ok = false;
            break;
        }
    }
    stop.store(true, std::memory_order_relaxed);
    side_b.join();
    return ok;
}

}  // namespace tbv::bench
