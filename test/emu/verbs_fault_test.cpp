// SPDX-License-Identifier: Apache-2.0
// The transport under faults and attacks, over two emulated hosts: remote access refused for a
// wrong R_Key, another PD's R_Key, out of bounds, missing permissions, frames from another peer;
// a lossy cable (drops, duplicates, CRC errors), a 50 ms unplug, a cable gone for good; 256 QPs.
// Data is verified byte for byte; memory outside what was given is never touched (the emulator's
// IOMMU records no fault).
#include "verbs_fixture.hpp"

using namespace tbv;
using namespace tbv::test;
using namespace tbv::verbs;

namespace {

SendWr write_wr(Sge& g, std::uint64_t raddr, std::uint32_t rkey, std::uint64_t id,
                WrOpcode op = WrOpcode::rdma_write) {
    SendWr wr;
    wr.wr_id = id;
    wr.sg_list = &g;
    wr.num_sge = 1;
    wr.opcode = op;
    wr.send_flags = kSendSignaled;
    wr.remote_addr = raddr;
    wr.rkey = rkey;
    return wr;
}

std::uint64_t addr(const void* p) {
    return reinterpret_cast<std::uint64_t>(p);
}

/// One attack: posts `wr` (and a second WR behind it) on a fresh QP pair and expects the first to
/// fail with `want`, the second to be flushed, and the QP to be in ERR.
void expect_refused(VerbsPair& p, SendWr wr, WcStatus want) {
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    SendWr second = wr;
    second.wr_id = wr.wr_id + 1;
    REQUIRE(p.a.ctx->post_send(*qa, wr));
    REQUIRE(p.a.ctx->post_send(*qa, second));
    auto wc = wait_wc(p.a, *p.a.cq, 2, {&p.b});
    REQUIRE(wc.size() == 2);
    CHECK(wc[0].wr_id == wr.wr_id);
    CHECK(wc[0].status == want);
    CHECK(wc[1].status == WcStatus::wr_flush_err);
    CHECK(qa->state() == QpState::err);
    CHECK(qb->counters().remote_access_faults >= 1);
}

}  // namespace

TEST_CASE("verbs security: remote access is checked on every frame", "[emu][verbs][security]") {
    VerbsPair p;
    std::vector<std::byte> src = pattern(20000, 1);
    std::vector<std::byte> target(8192, std::byte{0x11});
    std::vector<std::byte> guard_copy = target;
    Mr* smr = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    // b's target: first 4096 bytes writable, the next 4096 registered read-only.
    Mr* wmr =
        take(p.b.ctx->reg_mr(*p.b.pd, target.data(), 4096, kAccessLocalWrite | kAccessRemoteWrite));
    Mr* romr = take(p.b.ctx->reg_mr(*p.b.pd, target.data() + 4096, 4096, kAccessRemoteRead));
    Pd* other = take(p.b.ctx->alloc_pd());
    Mr* omr =
        take(p.b.ctx->reg_mr(*other, target.data(), 4096, kAccessLocalWrite | kAccessRemoteWrite));
    Sge g{addr(src.data()), 100, smr->lkey()};

    SECTION("wrong R_Key") {
        expect_refused(p, write_wr(g, addr(target.data()), wmr->rkey() ^ 0x100, 10),
                       WcStatus::rem_access_err);
    }
    SECTION("another PD's R_Key") {
        expect_refused(p, write_wr(g, addr(target.data()), omr->rkey(), 20),
                       WcStatus::rem_access_err);
    }
    SECTION("out of bounds by one byte, and a multi-frame write crossing the end") {
        expect_refused(p, write_wr(g, addr(target.data()) + 4096 - 99, wmr->rkey(), 30),
                       WcStatus::rem_access_err);
        Sge big{addr(src.data()), 20000, smr->lkey()};
        expect_refused(p, write_wr(big, addr(target.data()), wmr->rkey(), 40),
                       WcStatus::rem_access_err);
    }
    SECTION("write to a read-only MR, read from an MR without remote read") {
        expect_refused(p, write_wr(g, addr(target.data()) + 4096, romr->rkey(), 50),
                       WcStatus::rem_access_err);
        std::vector<std::byte> sink(100);
        Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, sink.data(), sink.size(), kAccessLocalWrite));
        Sge rg{addr(sink.data()), 100, sm->lkey()};
        expect_refused(p, write_wr(rg, addr(target.data()), wmr->rkey(), 60, WrOpcode::rdma_read),
                       WcStatus::rem_access_err);
    }
    SECTION("misaligned atomic") {
        alignas(8) std::uint64_t res = 0;
        Mr* rm = take(p.a.ctx->reg_mr(*p.a.pd, &res, 8, kAccessLocalWrite));
        Sge ag{addr(&res), 8, rm->lkey()};
        SendWr wr =
            write_wr(ag, addr(target.data()) + 4, wmr->rkey(), 70, WrOpcode::atomic_fetch_and_add);
        const SendWr* bad = nullptr;
        // A misaligned atomic is refused at post time: the verbs contract is EINVAL.
        Qp* qa = p.a.qp();
        Qp* qb = p.b.qp();
        connect(p.a, *qa, p.b, *qb);
        CHECK_FALSE(p.a.ctx->post_send(*qa, wr, &bad));
        CHECK(bad == &wr);
    }
    SECTION("a frame from another peer for a connected QP is dropped") {
        // x on b is connected to y on a; z on b (loopback) aims at x: its frames arrive on b's
        // loopback port, not from a, and are dropped as wrong_peer.
        Qp* y = p.a.qp();
        Qp* x = p.b.qp();
        connect(p.a, *y, p.b, *x);
        Qp* z = p.b.qp();
        Qp* w = p.b.qp();
        ConnectParams fast;
        fast.timeout = 8;  // ≈ 1 ms
        fast.retry_cnt = 2;
        bring_up(*p.b.ctx, *z, p.b.ctx->lid(), x->qpn(), 0x100, 0x200, fast);
        bring_up(*p.b.ctx, *w, p.b.ctx->lid(), z->qpn(), 0x300, 0x100, fast);
        std::vector<std::byte> zsrc = pattern(100, 5);
        Mr* zm = take(p.b.ctx->reg_mr(*p.b.pd, zsrc.data(), zsrc.size(), kAccessLocalWrite));
        Sge zg{addr(zsrc.data()), 100, zm->lkey()};
        REQUIRE(p.b.ctx->post_send(*z, write_wr(zg, addr(target.data()), wmr->rkey(), 80)));
        auto wc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
        REQUIRE(wc.size() == 1);
        CHECK(wc[0].status == WcStatus::retry_exc_err);
        CHECK(x->counters().wrong_peer > 0);
    }
    CHECK(std::memcmp(target.data(), guard_copy.data(), target.size()) == 0);
    CHECK(p.ha.nhi().faults().empty());
    CHECK(p.hb.nhi().faults().empty());
}

namespace {

/// WRITE, READ and SEND of each size on QP pair (qa, qb), verified.
void exercise(VerbsPair& p, Qp& qa, Qp& qb, const std::vector<std::size_t>& sizes, unsigned seed) {
    for (const std::size_t n : sizes) {
        INFO("size " << n);
        std::vector<std::byte> src = pattern(n, seed++), dst(n), back(n), rcv(n);
        Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), n, kAccessLocalWrite));
        Mr* bm = take(p.a.ctx->reg_mr(*p.a.pd, back.data(), n, kAccessLocalWrite));
        Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), n,
                                      kAccessLocalWrite | kAccessRemoteWrite | kAccessRemoteRead));
        Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rcv.data(), n, kAccessLocalWrite));
        Sge rg{addr(rcv.data()), static_cast<std::uint32_t>(n), rm->lkey()};
        RecvWr rwr;
        rwr.wr_id = 5;
        rwr.sg_list = &rg;
        rwr.num_sge = 1;
        REQUIRE(p.b.ctx->post_recv(qb, rwr));
        Sge g{addr(src.data()), static_cast<std::uint32_t>(n), sm->lkey()};
        Sge bg{addr(back.data()), static_cast<std::uint32_t>(n), bm->lkey()};
        REQUIRE(p.a.ctx->post_send(qa, write_wr(g, addr(dst.data()), dm->rkey(), 1)));
        REQUIRE(p.a.ctx->post_send(
            qa, write_wr(bg, addr(dst.data()), dm->rkey(), 2, WrOpcode::rdma_read)));
        REQUIRE(p.a.ctx->post_send(qa, write_wr(g, 0, 0, 3, WrOpcode::send)));
        auto wc = wait_wc(p.a, *p.a.cq, 3, {&p.b});
        REQUIRE(wc.size() == 3);
        for (const Wc& c : wc) {
            CHECK(c.status == WcStatus::success);
        }
        auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
        REQUIRE(rc.size() == 1);
        CHECK(rc[0].byte_len == n);
        CHECK(same_bytes(dst, src));
        CHECK(same_bytes(back, src));
        CHECK(same_bytes(rcv, src));
        REQUIRE(p.a.ctx->dereg_mr(sm));
        REQUIRE(p.a.ctx->dereg_mr(bm));
        REQUIRE(p.b.ctx->dereg_mr(dm));
        REQUIRE(p.b.ctx->dereg_mr(rm));
    }
}

}  // namespace

TEST_CASE("verbs faults: 1% drops, duplicates and CRC errors lose nothing", "[emu][verbs]") {
    VerbsPair p;
    emu::FaultConfig f;
    f.data_drop = 0.01;
    f.data_dup = 0.005;
    f.data_corrupt = 0.001;
    f.seed = 42;
    p.cable->set_faults(f);
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    exercise(p, *qa, *qb, {1, 4045, 100000, 1u << 20, 4u << 20}, 100);
    CHECK(qa->sender()->counters().retransmits > 0);
}

TEST_CASE("verbs faults: a 50 ms unplug during a transfer, then the cable gone for good",
          "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    const std::size_t n = 16u << 20;
    std::vector<std::byte> src = pattern(n, 77), dst(n);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), n, kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), n, kAccessLocalWrite | kAccessRemoteWrite));
    Sge g{addr(src.data()), static_cast<std::uint32_t>(n), sm->lkey()};
    REQUIRE(p.a.ctx->post_send(*qa, write_wr(g, addr(dst.data()), dm->rkey(), 1)));
    for (int i = 0; i < 200; ++i) {  // some of it on the wire
        p.a.ctx->progress();
        p.b.ctx->progress();
    }
    p.cable->unplug_for(50ms);
    auto wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    CHECK(same_bytes(dst, src));

    // Gone for good: the QP runs out of retries and flushes what is queued, never hangs (a
    // fresh QP pair with perftest's timeout 14, retry 7: about half a second).
    REQUIRE(p.wait_up());
    ConnectParams perftest;
    perftest.timeout = 14;
    qa = p.a.qp();
    qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb, perftest);
    p.cable->unplug();
    REQUIRE(p.a.ctx->post_send(*qa, write_wr(g, addr(dst.data()), dm->rkey(), 2)));
    REQUIRE(p.a.ctx->post_send(*qa, write_wr(g, addr(dst.data()), dm->rkey(), 3)));
    wc = wait_wc(p.a, *p.a.cq, 2, {&p.b});
    REQUIRE(wc.size() == 2);
    CHECK(wc[0].status == WcStatus::retry_exc_err);
    CHECK(wc[1].status == WcStatus::wr_flush_err);
    CHECK(qa->state() == QpState::err);
    AsyncEvent ev;
    bool saw_down = false;
    while (p.a.ctx->get_async_event(ev, 0ms)) {
        saw_down |= ev.type == AsyncEventType::port_err;
    }
    CHECK(saw_down);
}

TEST_CASE("verbs faults: a sender whose every frame was lost asks for credit and goes on",
          "[emu][verbs]") {
    // What a lost rail accept does on a real link: the acceptor sends at once, before the
    // initiator's DMA path exists, and every frame is lost. The receiver, having received
    // nothing, has nothing to advertise; only the sender's credit probe restarts the rail.
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    const std::size_t n = 4u << 20;
    std::vector<std::byte> src = pattern(n, 41), dst(n);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), n, kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), n, kAccessLocalWrite | kAccessRemoteWrite));
    emu::FaultConfig black_hole;
    black_hole.data_drop = 1.0;
    p.cable->set_faults(black_hole);
    Sge g{addr(src.data()), static_cast<std::uint32_t>(n), sm->lkey()};
    REQUIRE(p.a.ctx->post_send(*qa, write_wr(g, addr(dst.data()), dm->rkey(), 1)));
    // Until A has spent every data credit of every rail into the void.
    auto out_of_credit = [&] {
        std::vector<PortStats> ports;
        std::vector<QpStats> qps;
        p.a.ctx->snapshot(ports, qps);
        unsigned rails = 0, dry = 0;
        for (const PortStats& ps : ports) {
            if (ps.adapter != 0) {
                ++rails;
                dry += ps.data_credits == 0 ? 1 : 0;
            }
        }
        return rails > 0 && dry == rails;
    };
    const auto end = std::chrono::steady_clock::now() + 60s;  // a hang guard only
    while (!out_of_credit() && std::chrono::steady_clock::now() < end) {
        p.a.ctx->progress();
        p.b.ctx->progress();
    }
    REQUIRE(out_of_credit());
    p.cable->set_faults(emu::FaultConfig{});  // the path exists now
    auto wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    CHECK(same_bytes(dst, src));
    std::vector<PortStats> ports;
    std::vector<QpStats> qps;
    p.a.ctx->snapshot(ports, qps);
    std::uint64_t probes = 0;
    for (const PortStats& ps : ports) {
        probes += ps.counters.credit_probes;
    }
    CHECK(probes > 0);
}

TEST_CASE("verbs: 256 QPs between two hosts, each with its own data", "[emu][verbs]") {
    VerbsPair p;
    // Whatever TBV_EMU_FAULTS says applies (emu-verbs-faults: loss, duplicates, CRC errors and
    // a 50 ms unplug while the 256 QPs are busy).
    constexpr unsigned kQps = 256;
    constexpr std::size_t kEach = 20000;
    std::vector<std::byte> src = pattern(kQps * kEach, 9), dst(kQps * kEach);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* dm = take(
        p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(), kAccessLocalWrite | kAccessRemoteWrite));
    std::vector<Qp*> qa, qb;
    for (unsigned i = 0; i < kQps; ++i) {
        qa.push_back(p.a.qp(8));
        qb.push_back(p.b.qp(8));
        ConnectParams cp;
        cp.sq_psn = i * 65537 % 0xFFFFFF;
        cp.rq_psn = (i * 7919 + 3) % 0xFFFFFF;
        connect(p.a, *qa[i], p.b, *qb[i], cp);
    }
    for (unsigned i = 0; i < kQps; ++i) {
        Sge g{addr(src.data() + i * kEach), kEach, sm->lkey()};
        REQUIRE(
            p.a.ctx->post_send(*qa[i], write_wr(g, addr(dst.data() + i * kEach), dm->rkey(), i)));
    }
    auto wc = wait_wc(p.a, *p.a.cq, kQps, {&p.b});
    REQUIRE(wc.size() == kQps);
    for (const Wc& c : wc) {
        CHECK(c.status == WcStatus::success);
    }
    CHECK(same_bytes(dst, src));
}
