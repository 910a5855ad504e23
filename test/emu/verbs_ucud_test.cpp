// SPDX-License-Identifier: Apache-2.0
// UC, UD and SRQ over two emulated hosts: data verified, UC drops a message with a gap, UD checks
// the Q_Key, reports the sender and delivers a GRH for a global address handle (IB and RoCE v2
// forms), an SRQ feeds several QPs and raises its limit event.
// UC and UD are unreliable by definition, so their data tests switch the cable's fault injection
// off (TBV_EMU_FAULTS would make them lose messages, as it should); the UC loss test sets its own.
#include <algorithm>
#include <array>

#include "verbs_fixture.hpp"

using namespace tbv;
using namespace tbv::test;
using namespace tbv::verbs;

namespace {

std::uint64_t addr(const void* p) {
    return reinterpret_cast<std::uint64_t>(p);
}

unsigned be16(const std::byte* p) {
    return std::to_integer<unsigned>(p[0]) << 8 | std::to_integer<unsigned>(p[1]);
}

Qp* typed_qp(Node& n, QpType t, Srq* srq = nullptr) {
    QpInit qi;
    qi.type = t;
    qi.pd = n.pd;
    qi.send_cq = n.cq;
    qi.recv_cq = n.cq;
    qi.srq = srq;
    qi.cap = {64, 64, 8, 8, 128};
    return take(n.ctx->create_qp(qi));
}

void uc_up(Context& c, Qp& q, std::uint16_t lid, std::uint32_t dqpn, std::uint32_t sq,
           std::uint32_t rq) {
    QpAttr a{};
    a.qp_state = QpState::init;
    a.port_num = 1;
    a.qp_access_flags = kAccessRemoteWrite;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpPkeyIndex | kQpPort | kQpAccessFlags));
    a = QpAttr{};
    a.qp_state = QpState::rtr;
    a.path_mtu = Mtu::mtu4096;
    a.dest_qp_num = dqpn;
    a.rq_psn = rq;
    a.ah_attr.dlid = lid;
    a.ah_attr.port_num = 1;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn));
    a = QpAttr{};
    a.qp_state = QpState::rts;
    a.sq_psn = sq;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpSqPsn));
}

void ud_up(Context& c, Qp& q, std::uint32_t qkey) {
    QpAttr a{};
    a.qp_state = QpState::init;
    a.port_num = 1;
    a.qkey = qkey;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpPkeyIndex | kQpPort | kQpQkey));
    a = QpAttr{};
    a.qp_state = QpState::rtr;
    REQUIRE(c.modify_qp(q, a, kQpState));
    a = QpAttr{};
    a.qp_state = QpState::rts;
    a.sq_psn = 0;
    REQUIRE(c.modify_qp(q, a, kQpState | kQpSqPsn));
}

void recv(Node& n, Qp* q, Srq* s, Mr& mr, std::byte* p, std::size_t len, std::uint64_t id) {
    Sge g{addr(p), static_cast<std::uint32_t>(len), mr.lkey()};
    RecvWr wr;
    wr.wr_id = id;
    wr.sg_list = &g;
    wr.num_sge = 1;
    if (s != nullptr) {
        REQUIRE(n.ctx->post_srq_recv(*s, wr));
    } else {
        REQUIRE(n.ctx->post_recv(*q, wr));
    }
}

/// A signaled UD SEND of `len` bytes at `p` from `q` to `dest` (Q_Key 7) through `ah`.
void send_ud(Node& n, Qp& q, Ah* ah, const Qp& dest, Mr& mr, const std::byte* p, std::uint32_t len,
             std::uint64_t id) {
    Sge g{addr(p), len, mr.lkey()};
    SendWr s;
    s.wr_id = id;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send;
    s.send_flags = kSendSignaled;
    s.ah = ah;
    s.remote_qpn = dest.qpn();
    s.remote_qkey = 7;
    REQUIRE(n.ctx->post_send(q, s));
}

}  // namespace

TEST_CASE("verbs uc: SEND and WRITE with immediate arrive; READ is refused", "[emu][verbs]") {
    VerbsPair p;
    p.cable->set_faults({});
    Qp* qa = typed_qp(p.a, QpType::uc);
    Qp* qb = typed_qp(p.b, QpType::uc);
    uc_up(*p.a.ctx, *qa, p.b.ctx->lid(), qb->qpn(), 0xFFFFFE, 0x10);
    uc_up(*p.b.ctx, *qb, p.a.ctx->lid(), qa->qpn(), 0x10, 0xFFFFFE);
    const std::size_t n = 50000;  // 13 frames, across the PSN wrap
    std::vector<std::byte> src = pattern(n, 21), dst(n), rx(n);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), n, kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), n, kAccessLocalWrite | kAccessRemoteWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), n, kAccessLocalWrite));
    recv(p.b, qb, nullptr, *rm, rx.data(), n, 1);
    recv(p.b, qb, nullptr, *rm, rx.data(), n, 2);
    Sge g{addr(src.data()), static_cast<std::uint32_t>(n), sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.send_flags = kSendSignaled;
    s.opcode = WrOpcode::send;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    s.opcode = WrOpcode::rdma_write_with_imm;
    s.remote_addr = addr(dst.data());
    s.rkey = dm->rkey();
    s.imm_data = 0x55;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    auto wc = wait_wc(p.a, *p.a.cq, 2, {&p.b});
    REQUIRE(wc.size() == 2);
    auto rc = wait_wc(p.b, *p.b.cq, 2, {&p.a});
    REQUIRE(rc.size() == 2);
    CHECK(rc[0].wr_id == 1);
    CHECK(rc[0].byte_len == n);
    CHECK(rc[1].opcode == WcOpcode::recv_rdma_with_imm);
    CHECK(rc[1].imm_data == 0x55);
    CHECK(same_bytes(rx, src));
    CHECK(same_bytes(dst, src));
    s.opcode = WrOpcode::rdma_read;
    const SendWr* bad = nullptr;
    CHECK_FALSE(p.a.ctx->post_send(*qa, s, &bad));
    CHECK(bad == &s);
}

TEST_CASE("verbs uc: a message with a lost frame is dropped, the next one arrives",
          "[emu][verbs]") {
    VerbsPair p;
    Qp* qa = typed_qp(p.a, QpType::uc);
    Qp* qb = typed_qp(p.b, QpType::uc);
    uc_up(*p.a.ctx, *qa, p.b.ctx->lid(), qb->qpn(), 0, 0);
    uc_up(*p.b.ctx, *qb, p.a.ctx->lid(), qa->qpn(), 0, 0);
    std::vector<std::byte> src = pattern(40000, 3), rx(40000);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    recv(p.b, qb, nullptr, *rm, rx.data(), rx.size(), 1);
    // Drop every data frame for a while: the first SEND loses frames (a gap)...
    emu::FaultConfig f;
    f.data_drop = 0.3;
    f.seed = 5;
    p.cable->set_faults(f);
    Sge g{addr(src.data()), 40000, sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    REQUIRE(wait_wc(p.a, *p.a.cq, 0, {&p.b}, std::chrono::seconds(0)).empty());
    for (int i = 0; i < 100; ++i) {
        p.a.ctx->progress();
        p.b.ctx->progress();
    }
    // ...then a clean link: the next SEND completes the receive, whole.
    p.cable->set_faults({});
    s.send_flags = kSendSignaled;
    s.wr_id = 2;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
    REQUIRE(rc.size() == 1);
    CHECK(rc[0].byte_len == 40000);
    CHECK(same_bytes(rx, src));
    CHECK(qb->counters().uc_dropped_messages >= 1);
}

TEST_CASE("verbs ud: datagrams to an address handle, Q_Key checked, sender reported",
          "[emu][verbs][ud]") {
    VerbsPair p;
    p.cable->set_faults({});
    Qp* qa = typed_qp(p.a, QpType::ud);
    Qp* qb = typed_qp(p.b, QpType::ud);
    ud_up(*p.a.ctx, *qa, 0x1111);
    ud_up(*p.b.ctx, *qb, 0x2222);
    AddressVector av;
    av.dlid = p.b.ctx->lid();
    av.port_num = 1;
    Ah* ah = take(p.a.ctx->create_ah(*p.a.pd, av));
    std::vector<std::byte> src = pattern(2048, 4), rx(2048 + 40);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    recv(p.b, qb, nullptr, *rm, rx.data(), rx.size(), 7);
    Sge g{addr(src.data()), 2048, sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send_with_imm;
    s.imm_data = 0xC0DE;
    s.send_flags = kSendSignaled;
    s.ah = ah;
    s.remote_qpn = qb->qpn();
    s.remote_qkey = 0x9999;  // wrong: dropped
    REQUIRE(p.a.ctx->post_send(*qa, s));
    s.remote_qkey = 0x2222;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    auto wc = wait_wc(p.a, *p.a.cq, 2, {&p.b});
    REQUIRE(wc.size() == 2);
    auto rc = wait_wc(p.b, *p.b.cq, 1, {&p.a});
    REQUIRE(rc.size() == 1);
    CHECK(rc[0].wr_id == 7);
    CHECK(rc[0].byte_len == 2048 + 40);
    CHECK(rc[0].src_qp == qa->qpn());
    CHECK(rc[0].slid == p.a.ctx->lid());
    CHECK(rc[0].imm_data == 0xC0DE);
    CHECK(std::memcmp(rx.data() + 40, src.data(), 2048) == 0);
    CHECK(qb->counters().qkey_drops == 1);
    // Larger than the MTU: refused at post time.
    std::vector<std::byte> big(2049);
    Mr* bm = take(p.a.ctx->reg_mr(*p.a.pd, big.data(), big.size(), kAccessLocalWrite));
    Sge bg{addr(big.data()), 2049, bm->lkey()};
    s.sg_list = &bg;
    CHECK_FALSE(p.a.ctx->post_send(*qa, s));
}

TEST_CASE("verbs srq: several RC QPs share receives; limit event", "[emu][verbs]") {
    VerbsPair p;
    Srq* srq = take(p.b.ctx->create_srq(*p.b.pd, 64, 4));
    constexpr unsigned kQps = 3, kMsgs = 8;
    constexpr std::size_t kLen = 9000;
    std::vector<std::byte> rx(kQps * kMsgs * kLen);
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    for (unsigned i = 0; i < kQps * kMsgs; ++i) {
        recv(p.b, nullptr, srq, *rm, rx.data() + i * kLen, kLen, 1000 + i);
    }
    REQUIRE(p.b.ctx->modify_srq(*srq, 10));
    std::vector<Qp*> qa, qb;
    for (unsigned i = 0; i < kQps; ++i) {
        qa.push_back(p.a.qp());
        verbs::QpInit qi;
        qi.pd = p.b.pd;
        qi.send_cq = p.b.cq;
        qi.recv_cq = p.b.cq;
        qi.srq = srq;
        qi.cap = {16, 0, 4, 0, 0};
        qb.push_back(take(p.b.ctx->create_qp(qi)));
        connect(p.a, *qa[i], p.b, *qb[i]);
    }
    std::vector<std::byte> src = pattern(kQps * kMsgs * kLen, 8);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    for (unsigned m = 0; m < kMsgs; ++m) {
        for (unsigned i = 0; i < kQps; ++i) {
            Sge g{addr(src.data() + (i * kMsgs + m) * kLen), kLen, sm->lkey()};
            SendWr s;
            s.wr_id = i * kMsgs + m;
            s.sg_list = &g;
            s.num_sge = 1;
            s.opcode = WrOpcode::send;
            s.send_flags = kSendSignaled;
            REQUIRE(p.a.ctx->post_send(*qa[i], s));
        }
    }
    auto wc = wait_wc(p.a, *p.a.cq, kQps * kMsgs, {&p.b});
    REQUIRE(wc.size() == kQps * kMsgs);
    auto rc = wait_wc(p.b, *p.b.cq, kQps * kMsgs, {&p.a});
    REQUIRE(rc.size() == kQps * kMsgs);
    // Each receive holds one message whole; per QP, messages arrive in order.
    std::vector<unsigned> next(kQps, 0);
    for (const Wc& c : rc) {
        REQUIRE(c.status == WcStatus::success);
        const unsigned slot = static_cast<unsigned>(c.wr_id - 1000);
        unsigned qi = 0;
        while (qb[qi]->qpn() != c.qp_num) {
            ++qi;
        }
        const unsigned m = next[qi]++;
        CHECK(std::memcmp(rx.data() + slot * kLen, src.data() + (qi * kMsgs + m) * kLen, kLen) ==
              0);
    }
    AsyncEvent ev;
    bool limit = false;
    while (p.b.ctx->get_async_event(ev, 0ms)) {
        limit |= ev.type == AsyncEventType::srq_limit_reached && ev.object == srq->handle();
    }
    CHECK(limit);
}

TEST_CASE("verbs ud: a burst larger than the posted receives waits instead of being dropped",
          "[emu][verbs][ud]") {
    VerbsPair p;
    p.cable->set_faults({});
    Qp* qa = typed_qp(p.a, QpType::ud);
    Qp* qb = typed_qp(p.b, QpType::ud);
    ud_up(*p.a.ctx, *qa, 7);
    ud_up(*p.b.ctx, *qb, 7);
    AddressVector av;
    av.dlid = p.b.ctx->lid();
    av.port_num = 1;
    Ah* ah = take(p.a.ctx->create_ah(*p.a.pd, av));
    constexpr unsigned kTotal = 600, kPosted = 32, kLen = 1024;
    std::vector<std::byte> src(kTotal * kLen), rx(kPosted * (kLen + 40));
    for (unsigned i = 0; i < kTotal; ++i) {
        std::memcpy(src.data() + i * kLen, &i, sizeof i);
    }
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    for (unsigned k = 0; k < kPosted; ++k) {
        recv(p.b, qb, nullptr, *rm, rx.data() + k * (kLen + 40), kLen + 40, k);
    }
    std::vector<bool> seen(kTotal, false);
    unsigned sent = 0, done = 0, got = 0;
    std::array<Wc, 64> wc{};
    const auto end = std::chrono::steady_clock::now() + 60s;
    while (got < kTotal && std::chrono::steady_clock::now() < end) {
        while (sent < kTotal && sent - done < 60) {  // keep the sender far ahead of the receives
            send_ud(p.a, *qa, ah, *qb, *sm, src.data() + sent * kLen, kLen, sent);
            ++sent;
        }
        done += p.a.ctx->poll_cq(*p.a.cq, wc);
        const unsigned k = p.b.ctx->poll_cq(*p.b.cq, wc);
        for (unsigned j = 0; j < k; ++j) {
            REQUIRE(wc[j].status == WcStatus::success);
            const auto slot = static_cast<unsigned>(wc[j].wr_id);
            unsigned id = 0;
            std::memcpy(&id, rx.data() + slot * (kLen + 40) + 40, sizeof id);
            REQUIRE(id < kTotal);
            CHECK_FALSE(seen[id]);
            seen[id] = true;
            ++got;
            recv(p.b, qb, nullptr, *rm, rx.data() + slot * (kLen + 40), kLen + 40, slot);
        }
    }
    CHECK(got == kTotal);
    CHECK(qb->counters().dropped == 0);
}

TEST_CASE("verbs ud: a full parked batch, then a full new one, gives every RX buffer back",
          "[emu][verbs][ud]") {
    // The receiver polls a batch while it has no receive (the whole batch parks), then gets
    // receives and takes the parked batch and a fresh one in one poll. Every buffer must go back
    // to the ring each round: a lost one shrinks the ring until datagrams are lost.
    VerbsPair p;
    p.cable->set_faults({});
    auto big_ud = [](Node& n) {  // room for more receives than a rail's ring holds frames
        QpInit qi;
        qi.type = QpType::ud;
        qi.pd = n.pd;
        qi.send_cq = n.cq;
        qi.recv_cq = n.cq;
        qi.cap = {128, 128, 1, 1, 0};
        return take(n.ctx->create_qp(qi));
    };
    Qp* qa = big_ud(p.a);
    Qp* qb = big_ud(p.b);
    ud_up(*p.a.ctx, *qa, 7);
    ud_up(*p.b.ctx, *qb, 7);
    AddressVector av;
    av.dlid = p.b.ctx->lid();
    av.port_num = 1;
    Ah* ah = take(p.a.ctx->create_ah(*p.a.pd, av));
    constexpr unsigned kBurst = 100, kRounds = 8, kLen = 256;
    std::vector<std::byte> src(kLen), rx(kBurst * (kLen + 40));
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    std::array<Wc, 64> wc{};
    unsigned got = 0;
    for (unsigned round = 0; round < kRounds; ++round) {
        for (unsigned i = 0; i < kBurst; ++i) {
            send_ud(p.a, *qa, ah, *qb, *sm, src.data(), kLen, i);
        }
        unsigned done = 0;
        const auto sent_by = std::chrono::steady_clock::now() + 60s;  // hang guards only
        while (done < kBurst && std::chrono::steady_clock::now() < sent_by) {
            done += p.a.ctx->poll_cq(*p.a.cq, wc);
        }
        REQUIRE(done == kBurst);
        p.b.ctx->progress();  // no receive posted: the first batch parks
        for (unsigned k = 0; k < kBurst; ++k) {
            recv(p.b, qb, nullptr, *rm, rx.data() + k * (kLen + 40), kLen + 40, k);
        }
        unsigned this_round = 0;
        const auto end = std::chrono::steady_clock::now() + 60s;
        while (this_round < kBurst && std::chrono::steady_clock::now() < end) {
            const unsigned k = p.b.ctx->poll_cq(*p.b.cq, wc);
            for (unsigned j = 0; j < k; ++j) {
                REQUIRE(wc[j].status == WcStatus::success);
            }
            this_round += k;
            p.a.ctx->progress();
        }
        INFO("round " << round);
        REQUIRE(this_round == kBurst);
        got += this_round;
    }
    CHECK(got == kBurst * kRounds);
    CHECK(qb->counters().dropped == 0);
}

TEST_CASE("verbs ud: a QP that posts no receive loses its datagrams, not the rail",
          "[emu][verbs][ud]") {
    VerbsPair p;
    p.cable->set_faults({});
    Qp* ua = typed_qp(p.a, QpType::ud);
    Qp* ub = typed_qp(p.b, QpType::ud);
    ud_up(*p.a.ctx, *ua, 7);
    ud_up(*p.b.ctx, *ub, 7);
    AddressVector av;
    av.dlid = p.b.ctx->lid();
    av.port_num = 1;
    Ah* ah = take(p.a.ctx->create_ah(*p.a.pd, av));
    // An RC pair on the same cable, sharing its rails with the UD traffic.
    Qp* ra = typed_qp(p.a, QpType::rc);
    Qp* rb = typed_qp(p.b, QpType::rc);
    connect(p.a, *ra, p.b, *rb);
    constexpr std::size_t kLen = 1024;
    std::vector<std::byte> src = pattern(kLen, 5), dst(kLen + 40), wdst(kLen);
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), kLen, kAccessLocalWrite));
    Mr* dm = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(), kAccessLocalWrite));
    Mr* wm =
        take(p.b.ctx->reg_mr(*p.b.pd, wdst.data(), kLen, kAccessLocalWrite | kAccessRemoteWrite));
    Sge g{addr(src.data()), kLen, sm->lkey()};
    for (std::uint64_t i = 0; i < 3; ++i) {
        send_ud(p.a, *ua, ah, *ub, *sm, src.data(), kLen, i);
    }
    // b posts no receive: its datagrams wait, then are dropped once it has starved for
    // kUdStarveLimit; the WRITE behind them on the rail still lands.
    SendWr w;
    w.wr_id = 99;
    w.sg_list = &g;
    w.num_sge = 1;
    w.opcode = WrOpcode::rdma_write;
    w.send_flags = kSendSignaled;
    w.remote_addr = addr(wdst.data());
    w.rkey = wm->rkey();
    REQUIRE(p.a.ctx->post_send(*ra, w));
    auto wc = wait_wc(p.a, *p.a.cq, 4, {&p.b}, 30s);
    REQUIRE(wc.size() == 4);
    for (const Wc& c : wc) {
        CHECK(c.status == WcStatus::success);
    }
    CHECK(std::memcmp(src.data(), wdst.data(), kLen) == 0);
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (ub->counters().dropped < 3 && std::chrono::steady_clock::now() < end) {
        p.b.ctx->progress();
        std::this_thread::sleep_for(1ms);
    }
    CHECK(ub->counters().dropped == 3);
    std::vector<PortStats> ports;
    std::vector<QpStats> qps;
    p.b.ctx->snapshot(ports, qps);
    std::uint64_t no_recv = 0;
    for (const PortStats& s : ports) {
        no_recv += s.counters.drops[static_cast<std::size_t>(transport::DropReason::no_recv)];
    }
    CHECK(no_recv == 3);
    // Once a receive is posted, the next datagram arrives.
    recv(p.b, ub, nullptr, *dm, dst.data(), dst.size(), 7);
    send_ud(p.a, *ua, ah, *ub, *sm, src.data(), kLen, 3);
    auto got = wait_wc(p.b, *p.b.cq, 1, {&p.a}, 30s);
    REQUIRE(got.size() == 1);
    CHECK(got[0].wr_id == 7);
    CHECK(got[0].status == WcStatus::success);
    CHECK(std::memcmp(src.data(), dst.data() + 40, kLen) == 0);
}

TEST_CASE("verbs ud: a global address handle brings a GRH; without one the 40 bytes stay",
          "[emu][verbs][ud]") {
    VerbsPair p;
    p.cable->set_faults({});
    Qp* qa = typed_qp(p.a, QpType::ud);
    Qp* qb = typed_qp(p.b, QpType::ud);
    ud_up(*p.a.ctx, *qa, 0x1111);
    ud_up(*p.b.ctx, *qb, 0x2222);
    REQUIRE(p.a.ctx->gid() != Gid{});
    REQUIRE(p.a.ctx->gid() != p.b.ctx->gid());
    AddressVector av;
    av.dlid = p.b.ctx->lid();
    av.port_num = 1;
    Ah* plain = take(p.a.ctx->create_ah(*p.a.pd, av));
    av.is_global = true;
    av.dgid = p.b.ctx->gid();
    av.traffic_class = 0x28;
    av.flow_label = 0x12345;
    av.hop_limit = 7;
    Ah* global = take(p.a.ctx->create_ah(*p.a.pd, av));

    constexpr std::uint32_t kLen = 100, kSlot = kLen + 40;
    std::vector<std::byte> src = pattern(kLen, 9), rx(2 * kSlot, std::byte{0xEE});
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.b.ctx->reg_mr(*p.b.pd, rx.data(), rx.size(), kAccessLocalWrite));
    recv(p.b, qb, nullptr, *rm, rx.data(), kSlot, 0);
    recv(p.b, qb, nullptr, *rm, rx.data() + kSlot, kSlot, 1);
    Sge g{addr(src.data()), kLen, sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send_with_imm;
    s.send_flags = kSendSignaled;
    s.remote_qpn = qb->qpn();
    s.remote_qkey = 0x2222;
    s.ah = global;
    s.imm_data = 1;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    s.ah = plain;
    s.imm_data = 2;
    REQUIRE(p.a.ctx->post_send(*qa, s));
    REQUIRE(wait_wc(p.a, *p.a.cq, 2, {&p.b}).size() == 2);
    auto rc = wait_wc(p.b, *p.b.cq, 2, {&p.a});
    REQUIRE(rc.size() == 2);
    // Datagrams may take different rails: which receive got which is told by the immediate.
    for (const Wc& wc : rc) {
        REQUIRE(wc.status == WcStatus::success);
        CHECK(wc.byte_len == kSlot);
        const std::byte* b = rx.data() + wc.wr_id * kSlot;
        CHECK(std::memcmp(b + 40, src.data(), kLen) == 0);
        if (wc.imm_data == 2) {
            CHECK((wc.wc_flags & kWcGrh) == 0);
            CHECK(std::all_of(b, b + 40, [](std::byte x) { return x == std::byte{0xEE}; }));
            continue;
        }
        REQUIRE(wc.imm_data == 1);
        CHECK((wc.wc_flags & kWcGrh) != 0);
        // IBA 8.3: IPVer 6, TClass, FlowLabel; PayLen = BTH 12 + DETH 8 + ImmDt 4 + 100 bytes
        // (already a multiple of 4) + ICRC 4; NxtHdr 0x1B; HopLmt; SGID; DGID.
        CHECK(std::to_integer<unsigned>(b[0]) >> 4 == 6);
        CHECK((be16(b) >> 4 & 0xFF) == 0x28);
        CHECK(((std::to_integer<unsigned>(b[1]) & 0xF) << 16 | be16(b + 2)) == 0x12345);
        CHECK(be16(b + 4) == 128);
        CHECK(b[6] == std::byte{0x1B});
        CHECK(b[7] == std::byte{7});
        CHECK(std::memcmp(b + 8, p.a.ctx->gid().data(), 16) == 0);
        CHECK(std::memcmp(b + 24, p.b.ctx->gid().data(), 16) == 0);
    }
    CHECK(rc[0].imm_data != rc[1].imm_data);
}

TEST_CASE("verbs ud: on a RoCE v2 (IPv4-mapped) GID the GRH is an IPv4 header in bytes 20..39",
          "[emu][verbs][ud]") {
    ContextOptions o = verbs_opts();
    o.gid = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7};  // ::ffff:10.0.0.7
    o.gid_roce_v2 = true;
    VerbsPair p(false, o);  // loopback: a UD QP sends to itself
    Qp* q = typed_qp(p.a, QpType::ud);
    ud_up(*p.a.ctx, *q, 0x3333);
    CHECK(p.a.ctx->gid() == o.gid);
    AddressVector av;
    av.dlid = p.a.ctx->lid();
    av.port_num = 1;
    av.is_global = true;
    av.dgid = o.gid;
    av.traffic_class = 0x10;
    av.flow_label = 0x777;
    av.hop_limit = 64;
    Ah* ah = take(p.a.ctx->create_ah(*p.a.pd, av));
    constexpr std::uint32_t kLen = 33, kSlot = kLen + 40;
    std::vector<std::byte> src = pattern(kLen, 3), rx(kSlot, std::byte{0xEE});
    Mr* sm = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* rm = take(p.a.ctx->reg_mr(*p.a.pd, rx.data(), rx.size(), kAccessLocalWrite));
    recv(p.a, q, nullptr, *rm, rx.data(), kSlot, 5);
    Sge g{addr(src.data()), kLen, sm->lkey()};
    SendWr s;
    s.sg_list = &g;
    s.num_sge = 1;
    s.opcode = WrOpcode::send;
    s.ah = ah;
    s.remote_qpn = q->qpn();
    s.remote_qkey = 0x3333;
    REQUIRE(p.a.ctx->post_send(*q, s));
    auto wc = wait_wc(p.a, *p.a.cq, 1);
    REQUIRE(wc.size() == 1);
    REQUIRE(wc[0].status == WcStatus::success);
    CHECK(wc[0].wr_id == 5);
    CHECK(wc[0].byte_len == kSlot);
    CHECK((wc[0].wc_flags & kWcGrh) != 0);
    const std::byte* b = rx.data();
    CHECK(std::all_of(b, b + 20, [](std::byte x) { return x == std::byte{0}; }));
    const std::byte* ip = b + 20;
    CHECK(ip[0] == std::byte{0x45});  // IPv4, 5-word header
    CHECK(ip[1] == std::byte{0x10});  // TOS = traffic class
    // Total length: IPv4 20 + UDP 8 + BTH 12 + DETH 8 + 33 bytes padded to 36 + ICRC 4.
    CHECK(be16(ip + 2) == 88);
    CHECK(be16(ip + 6) == 0x4000);  // don't fragment
    CHECK(ip[8] == std::byte{64});  // TTL = hop limit
    CHECK(ip[9] == std::byte{17});  // UDP
    unsigned sum = 0;
    for (std::size_t i = 0; i < 20; i += 2) {
        sum += be16(ip + i);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    CHECK(sum == 0xFFFF);  // the header checksum is right
    const std::array<std::byte, 4> a10007{std::byte{10}, std::byte{0}, std::byte{0}, std::byte{7}};
    CHECK(std::memcmp(ip + 12, a10007.data(), 4) == 0);  // source: the sender's address
    CHECK(std::memcmp(ip + 16, a10007.data(), 4) == 0);  // destination: ours
    CHECK(std::memcmp(b + 40, src.data(), kLen) == 0);
}
