// SPDX-License-Identifier: Apache-2.0
// RC operations end to end over two emulated hosts (router, cable, CM-programmed paths, rails):
// WRITE, READ, SEND (with and without immediate), atomics, 1 B … 16 MiB, PSN wrap, loopback,
// RNR, SRQ — every byte checked.
#include "verbs_fixture.hpp"

using namespace tbv;
using namespace tbv::test;
using namespace tbv::verbs;

namespace {

struct Buffers {
    std::vector<std::byte> src, dst;
    Mr* smr = nullptr;
    Mr* dmr = nullptr;
};

Buffers make(Node& s, Node& d, std::size_t n, unsigned seed) {
    Buffers b;
    b.src = pattern(n, seed);
    b.dst.assign(n, std::byte{0});
    b.smr = take(s.ctx->reg_mr(*s.pd, b.src.data(), n, kAccessLocalWrite | kAccessRemoteRead));
    b.dmr = take(d.ctx->reg_mr(*d.pd, b.dst.data(), n, kAccessLocalWrite | kAccessRemoteWrite));
    return b;
}

void post(Node& n, Qp& q, WrOpcode op, Mr& local, void* laddr, std::size_t len,
          std::uint64_t raddr = 0, std::uint32_t rkey = 0, std::uint64_t id = 1,
          std::uint32_t imm = 0) {
    Sge g{reinterpret_cast<std::uint64_t>(laddr), static_cast<std::uint32_t>(len), local.lkey()};
    SendWr wr;
    wr.wr_id = id;
    wr.sg_list = &g;
    wr.num_sge = 1;
    wr.opcode = op;
    wr.send_flags = kSendSignaled;
    wr.remote_addr = raddr;
    wr.rkey = rkey;
    wr.imm_data = imm;
    REQUIRE(n.ctx->post_send(q, wr));
}

void post_recv(Node& n, Qp& q, Mr& mr, void* addr, std::size_t len, std::uint64_t id) {
    Sge g{reinterpret_cast<std::uint64_t>(addr), static_cast<std::uint32_t>(len), mr.lkey()};
    RecvWr wr;
    wr.wr_id = id;
    wr.sg_list = &g;
    wr.num_sge = 1;
    REQUIRE(n.ctx->post_recv(q, wr));
}

}  // namespace

TEST_CASE("verbs rc: WRITE, READ and SEND carry every byte, 1 B to 16 MiB", "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    const std::vector<std::size_t> sizes = {
        1, 63, 4044, 4045, 65536, 1u << 20, (1u << 20) + 17, 16u << 20};
    unsigned seed = 1;
    for (const std::size_t n : sizes) {
        INFO("size " << n);
        Buffers b = make(p.a, p.b, n, seed++);
        // WRITE a → b.
        post(p.a, *qa, WrOpcode::rdma_write, *b.smr, b.src.data(), n,
             reinterpret_cast<std::uint64_t>(b.dst.data()), b.dmr->rkey(), 10);
        auto wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
        REQUIRE(wc.size() == 1);
        CHECK(wc[0].status == WcStatus::success);
        CHECK(wc[0].opcode == WcOpcode::rdma_write);
        CHECK(wc[0].wr_id == 10);
        CHECK(std::memcmp(b.src.data(), b.dst.data(), n) == 0);

        // READ b's source into a fresh buffer on a.
        Buffers r = make(p.b, p.a, n, seed++);
        post(p.a, *qa, WrOpcode::rdma_read, *r.dmr, r.dst.data(), n,
             reinterpret_cast<std::uint64_t>(r.src.data()), r.smr->rkey(), 11);
        wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
        REQUIRE(wc.size() == 1);
        CHECK(wc[0].status == WcStatus::success);
        CHECK(wc[0].opcode == WcOpcode::rdma_read);
        CHECK(std::memcmp(r.src.data(), r.dst.data(), n) == 0);

        // SEND a → b into a posted receive.
        Buffers s = make(p.a, p.b, n, seed++);
        post_recv(p.b, *qb, *s.dmr, s.dst.data(), n, 77);
        post(p.a, *qa, WrOpcode::send, *s.smr, s.src.data(), n, 0, 0, 12);
        wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
        REQUIRE(wc.size() == 1);
        CHECK(wc[0].status == WcStatus::success);
        auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
        REQUIRE(rc.size() == 1);
        CHECK(rc[0].status == WcStatus::success);
        CHECK(rc[0].opcode == WcOpcode::recv);
        CHECK(rc[0].wr_id == 77);
        CHECK(rc[0].byte_len == n);
        CHECK(rc[0].src_qp == qa->qpn());
        CHECK(std::memcmp(s.src.data(), s.dst.data(), n) == 0);
        for (Mr* m : {b.smr, r.dmr, s.smr}) {
            REQUIRE(p.a.ctx->dereg_mr(m));
        }
        for (Mr* m : {b.dmr, r.smr, s.dmr}) {
            REQUIRE(p.b.ctx->dereg_mr(m));
        }
    }
}

TEST_CASE("verbs rc: immediates, atomics and a PSN wrap", "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    ConnectParams cp;
    cp.sq_psn = 0xFFFFF0;  // wraps within the first few messages
    cp.rq_psn = 0xFFFFFA;
    connect(p.a, *qa, p.b, *qb, cp);

    std::vector<std::byte> buf(4 * 4044 + 5), got(buf.size());
    buf = pattern(buf.size(), 9);
    Mr* la = take(p.a.ctx->reg_mr(*p.a.pd, buf.data(), buf.size(), kAccessLocalWrite));
    Mr* rb = take(
        p.b.ctx->reg_mr(*p.b.pd, got.data(), got.size(), kAccessLocalWrite | kAccessRemoteWrite));
    for (unsigned i = 0; i < 3; ++i) {
        post_recv(p.b, *qb, *rb, got.data(), got.size(), 100 + i);
    }
    post(p.a, *qa, WrOpcode::send_with_imm, *la, buf.data(), buf.size(), 0, 0, 1, 0xAABBCCDD);
    post(p.a, *qa, WrOpcode::rdma_write_with_imm, *la, buf.data(), 100,
         reinterpret_cast<std::uint64_t>(got.data()), rb->rkey(), 2, 0x01020304);
    auto wc = wait_wc(p.a, *p.a.cq, 2, {&p.b});
    REQUIRE(wc.size() == 2);
    auto rc = wait_wc(p.b, *p.b.cq, 2, {&p.a});
    REQUIRE(rc.size() == 2);
    CHECK(rc[0].wr_id == 100);
    CHECK(rc[0].opcode == WcOpcode::recv);
    CHECK((rc[0].wc_flags & kWcWithImm) != 0);
    CHECK(rc[0].imm_data == 0xAABBCCDD);
    CHECK(rc[1].wr_id == 101);
    CHECK(rc[1].opcode == WcOpcode::recv_rdma_with_imm);
    CHECK(rc[1].imm_data == 0x01020304);
    CHECK(rc[1].byte_len == 100);
    CHECK(std::memcmp(buf.data(), got.data(), 100) == 0);

    // Atomics on an 8-byte word at b.
    alignas(8) std::uint64_t word = 40;
    alignas(8) std::uint64_t orig = 0;
    Mr* wm = take(p.b.ctx->reg_mr(*p.b.pd, &word, 8, kAccessLocalWrite | kAccessRemoteAtomic));
    Mr* om = take(p.a.ctx->reg_mr(*p.a.pd, &orig, 8, kAccessLocalWrite));
    Sge g{reinterpret_cast<std::uint64_t>(&orig), 8, om->lkey()};
    SendWr wr;
    wr.sg_list = &g;
    wr.num_sge = 1;
    wr.send_flags = kSendSignaled;
    wr.remote_addr = reinterpret_cast<std::uint64_t>(&word);
    wr.rkey = wm->rkey();
    wr.opcode = WrOpcode::atomic_fetch_and_add;
    wr.compare_add = 2;
    REQUIRE(p.a.ctx->post_send(*qa, wr));
    wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    CHECK(wc[0].opcode == WcOpcode::fetch_add);
    CHECK(orig == 40);
    CHECK(word == 42);
    wr.opcode = WrOpcode::atomic_cmp_and_swp;
    wr.compare_add = 42;
    wr.swap = 7;
    REQUIRE(p.a.ctx->post_send(*qa, wr));
    wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    CHECK(orig == 42);
    CHECK(word == 7);
    wr.compare_add = 1000;  // no match: unchanged, returns the current value
    wr.swap = 9;
    REQUIRE(p.a.ctx->post_send(*qa, wr));
    wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(orig == 7);
    CHECK(word == 7);
}

TEST_CASE("verbs rc: a QP connected to a QP of the same device (loopback)", "[emu][verbs]") {
    VerbsPair p;
    Qp* q1 = p.a.qp();
    Qp* q2 = p.a.qp();
    bring_up(*p.a.ctx, *q1, p.a.ctx->lid(), q2->qpn(), 5, 9);
    bring_up(*p.a.ctx, *q2, p.a.ctx->lid(), q1->qpn(), 9, 5);
    Buffers b = make(p.a, p.a, 300000, 3);
    post(p.a, *q1, WrOpcode::rdma_write, *b.smr, b.src.data(), b.src.size(),
         reinterpret_cast<std::uint64_t>(b.dst.data()), b.dmr->rkey(), 5);
    auto wc = wait_wc(p.a, *p.a.cq, 1);
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    CHECK(same_bytes(b.src, b.dst));
}

TEST_CASE("verbs rc: SEND before the receive is posted waits (RNR) and then lands",
          "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    Buffers b = make(p.a, p.b, 10000, 4);
    post(p.a, *qa, WrOpcode::send, *b.smr, b.src.data(), b.src.size(), 0, 0, 1);
    // Let the SEND hit the missing receive a few times.
    auto none = wait_wc(p.a, *p.a.cq, 1, {&p.b}, std::chrono::seconds(0));
    CHECK(none.empty());
    for (int i = 0; i < 2000; ++i) {
        p.a.ctx->progress();
        p.b.ctx->progress();
    }
    CHECK(qb->receiver()->counters().rnr_naks > 0);
    post_recv(p.b, *qb, *b.dmr, b.dst.data(), b.dst.size(), 9);
    auto wc = wait_wc(p.a, *p.a.cq, 1, {&p.b});
    REQUIRE(wc.size() == 1);
    CHECK(wc[0].status == WcStatus::success);
    auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
    REQUIRE(rc.size() == 1);
    CHECK(same_bytes(b.src, b.dst));
}

TEST_CASE("verbs rc: 8-SGE gather and scatter, inline data", "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    // Eight pieces of different sizes on each side; the message crosses frame boundaries
    // inside SGEs.
    const std::vector<std::uint32_t> s_len = {1, 4000, 77, 5000, 3, 8192, 100, 2222};
    const std::vector<std::uint32_t> r_len = {5000, 10, 6000, 4000, 1, 2000, 2606, 1};
    std::uint32_t total = 0;
    for (auto l : s_len) {
        total += l;
    }
    std::vector<std::byte> src = pattern(total, 31), dst(total + 50);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(), kAccessLocalWrite));
    std::vector<Sge> sg, rg;
    std::uint32_t off = 0;
    for (auto l : s_len) {
        sg.push_back({reinterpret_cast<std::uint64_t>(src.data() + off), l, sm->lkey()});
        off += l;
    }
    off = 0;
    for (auto l : r_len) {
        rg.push_back({reinterpret_cast<std::uint64_t>(dst.data() + off), l, dm->lkey()});
        off += l;
    }
    REQUIRE(off >= total);
    RecvWr rwr;
    rwr.wr_id = 1;
    rwr.sg_list = rg.data();
    rwr.num_sge = 8;
    REQUIRE(p.b.ctx->post_recv(*qb, rwr));
    SendWr wr;
    wr.sg_list = sg.data();
    wr.num_sge = 8;
    wr.opcode = WrOpcode::send;
    wr.send_flags = kSendSignaled;
    REQUIRE(p.a.ctx->post_send(*qa, wr));
    REQUIRE(wait_wc(p.a, *p.a.cq, 1, {&p.b}).size() == 1);
    auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
    REQUIRE(rc.size() == 1);
    CHECK(rc[0].byte_len == total);
    CHECK(std::memcmp(dst.data(), src.data(), total) == 0);

    // Inline: the data is copied at post time, so the buffer may change right after.
    std::vector<std::byte> small = pattern(200, 5), expect = small;
    std::vector<std::byte> land(200);
    Mr* lm = take(
        p.b.ctx->reg_mr(*p.b.pd, land.data(), land.size(), kAccessLocalWrite | kAccessRemoteWrite));
    Sge ig{reinterpret_cast<std::uint64_t>(small.data()), 200, 0};  // no L_Key needed inline
    SendWr iw;
    iw.sg_list = &ig;
    iw.num_sge = 1;
    iw.opcode = WrOpcode::rdma_write;
    iw.send_flags = kSendSignaled | kSendInline;
    iw.remote_addr = reinterpret_cast<std::uint64_t>(land.data());
    iw.rkey = lm->rkey();
    REQUIRE(p.a.ctx->post_send(*qa, iw));
    std::fill(small.begin(), small.end(), std::byte{0});
    REQUIRE(wait_wc(p.a, *p.a.cq, 1, {&p.b}).size() == 1);
    CHECK(same_bytes(land, expect));
    // Beyond max_inline_data: EINVAL.
    std::vector<std::byte> big(qa->caps().max_inline_data + 1);
    Sge bg{reinterpret_cast<std::uint64_t>(big.data()), static_cast<std::uint32_t>(big.size()), 0};
    iw.sg_list = &bg;
    CHECK_FALSE(p.a.ctx->post_send(*qa, iw));
}

TEST_CASE("verbs rc: completion channel wakes on a solicited SEND only when asked",
          "[emu][verbs]") {
    VerbsPair p;
    CompChannel* ch = take(p.b.ctx->create_comp_channel());
    Cq* rcq = take(p.b.ctx->create_cq(64, ch));
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp(16, nullptr, rcq);
    connect(p.a, *qa, p.b, *qb);
    std::vector<std::byte> src = pattern(64, 1), dst(64 * 4);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(), kAccessLocalWrite));
    for (unsigned i = 0; i < 4; ++i) {
        Sge g{reinterpret_cast<std::uint64_t>(dst.data() + i * 64), 64, dm->lkey()};
        RecvWr r;
        r.wr_id = i;
        r.sg_list = &g;
        r.num_sge = 1;
        REQUIRE(p.b.ctx->post_recv(*qb, r));
    }
    REQUIRE(p.b.ctx->req_notify_cq(*rcq, true));  // solicited only
    Sge g{reinterpret_cast<std::uint64_t>(src.data()), 64, sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send;
    REQUIRE(p.a.ctx->post_send(*qa, s));  // not solicited: no event
    for (int i = 0; i < 500; ++i) {
        p.a.ctx->progress();
        p.b.ctx->progress();
    }
    CHECK_FALSE(p.b.ctx->get_cq_event(*ch, 0ms));
    s.send_flags = kSendSolicited;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    // Another thread drives the sender while we block on the channel.
    std::atomic<bool> done{false};
    std::thread t([&] {
        while (!done.load()) {
            p.a.ctx->progress();
        }
    });
    auto ev = p.b.ctx->get_cq_event(*ch, 20s);
    done = true;
    t.join();
    REQUIRE(ev);
    CHECK(*ev == rcq);
    std::array<Wc, 4> wc{};
    CHECK(p.b.ctx->poll_cq(*rcq, wc) == 2);
    CHECK_FALSE(p.b.ctx->destroy_comp_channel(ch));  // the CQ still uses it: EBUSY
}

TEST_CASE("verbs rc: SQD finishes the messages begun, holds the rest, reports SQ_DRAINED",
          "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    constexpr std::size_t kLen = 256 * 1024;
    constexpr unsigned kN = 32;  // 32 × 65 frames: more than the send window, so some wait
    Buffers b = make(p.a, p.b, kLen * kN, 7);
    for (unsigned i = 0; i < kN; ++i) {
        post(p.a, *qa, WrOpcode::rdma_write, *b.smr, b.src.data() + i * kLen, kLen,
             reinterpret_cast<std::uint64_t>(b.dst.data() + i * kLen), b.dmr->rkey(), i);
    }
    QpAttr a{};
    a.qp_state = QpState::sqd;
    a.en_sqd_async_notify = 1;
    REQUIRE(p.a.ctx->modify_qp(*qa, a, kQpState | kQpEnSqdAsyncNotify));

    std::vector<Wc> got;
    std::array<Wc, 64> buf{};
    bool drained = false;
    const auto end = std::chrono::steady_clock::now() + 60s;
    while (!drained && std::chrono::steady_clock::now() < end) {
        const std::uint32_t k = p.a.ctx->poll_cq(*p.a.cq, buf);
        got.insert(got.end(), buf.begin(), buf.begin() + k);
        p.b.ctx->progress();
        AsyncEvent ev;
        while (p.a.ctx->get_async_event(ev, 0ms)) {
            drained |= ev.type == AsyncEventType::sq_drained && ev.object == qa->qpn();
        }
    }
    INFO("state " << static_cast<int>(qa->state()) << ", completions " << got.size()
                  << (got.empty() ? "" : ", last status ")
                  << (got.empty() ? 0 : static_cast<int>(got.back().status)) << ", first error "
                  << [&] {
                         for (const Wc& c : got) {
                             if (c.status != WcStatus::success) {
                                 return static_cast<int>(c.status);
                             }
                         }
                         return 0;
                     }());
    REQUIRE(drained);
    CHECK_FALSE(qa->sq_draining());
    // The event comes after the last completion of the drained messages; nothing else runs
    // while the QP stays in SQD.
    for (int round = 0; round < 2000; ++round) {
        const std::uint32_t k = p.a.ctx->poll_cq(*p.a.cq, buf);
        got.insert(got.end(), buf.begin(), buf.begin() + k);
        p.b.ctx->progress();
    }
    const std::size_t begun = got.size();
    INFO("messages finished in SQD: " << begun);
    CHECK(begun < kN);
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].status == WcStatus::success);
        CHECK(got[i].wr_id == i);
    }
    CHECK(std::memcmp(b.src.data(), b.dst.data(), begun * kLen) == 0);
    const std::vector<std::byte> zero(kLen);
    CHECK(std::memcmp(b.dst.data() + begun * kLen, zero.data(), kLen) == 0);

    // Back to RTS: the held messages go, in order.
    a = QpAttr{};
    a.qp_state = QpState::rts;
    REQUIRE(p.a.ctx->modify_qp(*qa, a, kQpState));
    auto rest = wait_wc(p.a, *p.a.cq, kN - begun, {&p.b});
    REQUIRE(rest.size() == kN - begun);
    for (std::size_t i = 0; i < rest.size(); ++i) {
        CHECK(rest[i].status == WcStatus::success);
        CHECK(rest[i].wr_id == begun + i);
    }
    CHECK(same_bytes(b.src, b.dst));
}
