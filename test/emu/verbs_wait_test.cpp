// SPDX-License-Identifier: Apache-2.0
// Context::wait(), the slow path of a thread with nothing to do (verbs/context.hpp "Sleeping"):
// it returns when a frame arrives (the rails' RX interrupt), when wake() is called (before or
// during the wait), and get_cq_event sleeps on it. Over a shared-memory cable with the
// connection-manager threads off once the link is up, the only things that move host B are the
// test's wait() loop and the emulated NHI's RX helper: a lost wake-up would show as a wait that
// runs into its (generous) hang guard, which the tests check never happens. (Under
// TBV_EMU_FAULTS, the suite's lossy run, the CM threads stay on: a pulled cable must be found
// again.) No check depends on how long anything took.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>

#include "hw/nhi_regs.hpp"
#include "verbs_fixture.hpp"

using namespace tbv;
using namespace tbv::test;
using namespace tbv::verbs;

namespace {

/// Hang guard of one wait: far beyond anything a loaded machine needs.
constexpr auto kGuard = std::chrono::seconds(20);

std::string unique_cable(const char* what) {
    static std::atomic<unsigned> n{0};
    return std::string("vwait-") + what + "-" + std::to_string(::getpid()) + "-" +
           std::to_string(n.fetch_add(1));
}

/// Whether any RX ring's interrupt is unmasked on `nhi` (read from the ENABLE registers, which
/// reads do not disturb): someone is in wait() with the interrupt armed.
bool rx_irq_armed(emu::EmuNhi& nhi) {
    using namespace hw::nhi;
    for (unsigned r = 0; r < nhi.hop_count(); ++r) {
        const unsigned bit = irq_bit(IrqKind::rx, r, nhi.hop_count());
        if ((nhi.read32(bitmap_reg(REG_RING_INTERRUPT_BASE, bit)) & bitmap_mask(bit)) != 0) {
            return true;
        }
    }
    return false;
}

/// Two hosts in this process joined by a shared-memory cable, each with a verbs Context whose
/// connection manager is driven by hand until the link is up, and not at all afterwards.
struct ShmVerbsPair {
    ShmVerbsPair() : name(unique_cable("pair")) {
        ContextOptions o = verbs_opts();
        o.cm_thread = std::getenv("TBV_EMU_FAULTS") != nullptr;
        a.open(ha, o);
        b.open(hb, o);
        REQUIRE(ha.open_shm_cable(0, name));
        REQUIRE(hb.open_shm_cable(0, name));
        const bool by_hand = !o.cm_thread;
        // One thread per side: a connection manager waits for the far router's answers, which
        // only come when the far side polls (nothing on a shared-memory cable runs by itself).
        std::atomic<bool> up{false};
        const auto drive = [&up, by_hand](Context& c) {
            const auto end = std::chrono::steady_clock::now() + 20s;
            while (by_hand && !up.load() && std::chrono::steady_clock::now() < end) {
                c.poll_cm();
                std::this_thread::sleep_for(200us);
            }
        };
        std::thread ta(drive, std::ref(*a.ctx));
        std::thread tb(drive, std::ref(*b.ctx));
        const auto end = std::chrono::steady_clock::now() + 20s;
        while (!(a.ctx->port_active() && b.ctx->port_active()) &&
               std::chrono::steady_clock::now() < end) {
            std::this_thread::sleep_for(1ms);
        }
        up = true;
        ta.join();
        tb.join();
        REQUIRE(a.ctx->port_active());
        REQUIRE(b.ctx->port_active());
    }
    ~ShmVerbsPair() {
        a.ctx.reset();
        b.ctx.reset();
        ha.close_shm_cable(0);
        hb.close_shm_cable(0);
    }

    emu::EmuHost ha{verbs_host("a", 0x0438'020e'0000'00a1)};
    emu::EmuHost hb{verbs_host("b", 0x0438'020e'0000'00b2)};
    std::string name;
    Node a, b;
};

struct WaitTally {
    unsigned by[5] = {};
    unsigned errors = 0;
    void add(const Result<WaitOutcome>& w) {
        if (!w) {
            ++errors;
        } else {
            ++by[static_cast<unsigned>(*w)];
        }
    }
    unsigned operator[](WaitOutcome o) const { return by[static_cast<unsigned>(o)]; }
};

}  // namespace

TEST_CASE("verbs wait: a thread asleep in wait() is woken by the SEND that arrives",
          "[emu][verbs][wait]") {
    ShmVerbsPair p;
    REQUIRE(p.b.ctx->has_rx_irq());
    Qp* qa = p.a.qp();
    Qp* qb = p.b.qp();
    connect(p.a, *qa, p.b, *qb);
    constexpr unsigned kMessages = 20;
    constexpr std::size_t kLen = 64;
    std::vector<std::byte> src(kLen, std::byte{0x5a});
    std::vector<std::byte> dst(kLen * kMessages);
    Mr* mra = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
    Mr* mrb = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(), kAccessLocalWrite));
    for (unsigned i = 0; i < kMessages; ++i) {
        Sge g{reinterpret_cast<std::uint64_t>(dst.data() + i * kLen), kLen, mrb->lkey()};
        RecvWr wr;
        wr.wr_id = i;
        wr.sg_list = &g;
        wr.num_sge = 1;
        REQUIRE(p.b.ctx->post_recv(*qb, wr));
    }
    const auto fired0 = p.hb.nhi().counters().irqs_fired;

    // B: nothing but poll_cq and wait() until every message is in (Catch2 asserts only here).
    WaitTally tally;
    unsigned received = 0;
    unsigned bad = 0;
    std::thread b([&] {
        std::array<Wc, 8> wc{};
        for (unsigned spins = 0; received < kMessages && spins < 100000; ++spins) {
            const std::uint32_t n = p.b.ctx->poll_cq(*p.b.cq, wc);
            for (std::uint32_t k = 0; k < n; ++k) {
                bad += wc[k].status == WcStatus::success && wc[k].opcode == WcOpcode::recv ? 0 : 1;
            }
            received += n;
            if (received < kMessages) {
                tally.add(p.b.ctx->wait(kGuard));
            }
        }
    });
    // A: each SEND only once B has armed its interrupt (it is in wait(), about to sleep or
    // asleep), then A drives its own progress until B's ACK completes it.
    for (unsigned i = 0; i < kMessages; ++i) {
        const auto end = std::chrono::steady_clock::now() + kGuard;
        while (!rx_irq_armed(p.hb.nhi()) && std::chrono::steady_clock::now() < end) {
            std::this_thread::sleep_for(100us);
        }
        Sge g{reinterpret_cast<std::uint64_t>(src.data()), kLen, mra->lkey()};
        SendWr wr;
        wr.wr_id = i;
        wr.sg_list = &g;
        wr.num_sge = 1;
        wr.opcode = WrOpcode::send;
        wr.send_flags = kSendSignaled;
        REQUIRE(p.a.ctx->post_send(*qa, wr));
        const auto wc = wait_wc(p.a, *p.a.cq, 1, {}, std::chrono::seconds(20));
        REQUIRE(wc.size() == 1);
        CHECK(wc[0].status == WcStatus::success);
    }
    b.join();
    CHECK(received == kMessages);
    CHECK(bad == 0u);
    CHECK(tally.errors == 0u);
    CHECK(tally[WaitOutcome::timeout] == 0u);  // no wait ran into its hang guard
    INFO("interrupt " << tally[WaitOutcome::interrupt] << " work " << tally[WaitOutcome::work]
                      << " timer " << tally[WaitOutcome::timer] << " event "
                      << tally[WaitOutcome::event]);
    // Every SEND reached B while its interrupt was armed, so it was raised (A's thread does not
    // reach into B's rings on a shared-memory cable: B's own side took the frames in).
    CHECK(p.hb.nhi().counters().irqs_fired > fired0);
    CHECK(tally[WaitOutcome::interrupt] >= 1u);
    CHECK(std::all_of(dst.begin(), dst.end(), [](std::byte x) { return x == std::byte{0x5a}; }));
}

TEST_CASE("verbs wait: wake() ends a wait, and one that comes first is not lost",
          "[emu][verbs][wait]") {
    VerbsPair p;
    // Before: the next wait returns at once.
    p.b.ctx->wake();
    auto w = p.b.ctx->wait(kGuard);
    REQUIRE(w);
    CHECK(*w == WaitOutcome::event);
    // During, or just before: whichever comes first, the waiter returns.
    for (unsigned i = 0; i < 200; ++i) {
        Result<WaitOutcome> r = fail(std::errc::operation_canceled);
        std::thread t([&] { r = p.b.ctx->wait(kGuard); });
        if (i % 2 == 0) {
            std::this_thread::yield();
        }
        p.b.ctx->wake();
        t.join();
        REQUIRE(r);
        REQUIRE(*r == WaitOutcome::event);
    }
    // Several waiters at once: one wake() ends them all.
    Result<WaitOutcome> r1 = fail(std::errc::operation_canceled);
    Result<WaitOutcome> r2 = fail(std::errc::operation_canceled);
    std::thread t1([&] { r1 = p.b.ctx->wait(kGuard); });
    std::thread t2([&] { r2 = p.b.ctx->wait(kGuard); });
    // Both must be inside wait(): a wait that begins after the wake is not "in progress".
    const auto end = std::chrono::steady_clock::now() + kGuard;
    while (p.b.ctx->waiting() < 2 && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(100us);
    }
    CHECK(rx_irq_armed(p.hb.nhi()));
    p.b.ctx->wake();
    t1.join();
    t2.join();
    REQUIRE(r1);
    REQUIRE(r2);
    CHECK(*r1 == WaitOutcome::event);
    CHECK(*r2 == WaitOutcome::event);
    CHECK_FALSE(rx_irq_armed(p.hb.nhi()));  // the last sleeper masked it again
}

TEST_CASE("verbs wait: get_cq_event sleeps until the SEND arrives", "[emu][verbs][wait]") {
    VerbsPair p;
    CompChannel* ch = take(p.b.ctx->create_comp_channel());
    Cq* rcq = take(p.b.ctx->create_cq(64, ch));
    QpInit qi;
    qi.pd = p.b.pd;
    qi.send_cq = p.b.cq;
    qi.recv_cq = rcq;
    qi.cap = {16, 16, 1, 1, 64};
    Qp* qb = take(p.b.ctx->create_qp(qi));
    Qp* qa = p.a.qp();
    connect(p.a, *qa, p.b, *qb);
    std::vector<std::byte> buf(64, std::byte{1});
    Mr* mra = take(p.a.ctx->reg_mr(*p.a.pd, buf.data(), buf.size(), kAccessLocalWrite));
    Mr* mrb = take(p.b.ctx->reg_mr(*p.b.pd, buf.data(), buf.size(), kAccessLocalWrite));
    for (unsigned round = 0; round < 10; ++round) {
        Sge rg{reinterpret_cast<std::uint64_t>(buf.data()), 64, mrb->lkey()};
        RecvWr rwr;
        rwr.sg_list = &rg;
        rwr.num_sge = 1;
        REQUIRE(p.b.ctx->post_recv(*qb, rwr));
        REQUIRE(p.b.ctx->req_notify_cq(*rcq, false));
        Result<Cq*> got = fail(std::errc::operation_canceled);
        std::atomic<bool> done{false};
        std::thread t([&] {
            got = p.b.ctx->get_cq_event(*ch, kGuard);
            done = true;
        });
        if (round % 2 == 0) {
            // Every other round, send only once B sleeps with its interrupt armed.
            const auto end = std::chrono::steady_clock::now() + kGuard;
            while (!rx_irq_armed(p.hb.nhi()) && std::chrono::steady_clock::now() < end) {
                std::this_thread::sleep_for(100us);
            }
            CHECK(rx_irq_armed(p.hb.nhi()));
        }
        Sge g{reinterpret_cast<std::uint64_t>(buf.data()), 64, mra->lkey()};
        SendWr wr;
        wr.sg_list = &g;
        wr.num_sge = 1;
        wr.opcode = WrOpcode::send;
        wr.send_flags = kSendSignaled;
        REQUIRE(p.a.ctx->post_send(*qa, wr));
        // A drives only itself (its retransmissions on a lossy cable) until B's event came: B
        // is moved by nothing but its get_cq_event. Then both, until A's SEND is acknowledged.
        const auto end = std::chrono::steady_clock::now() + kGuard;
        while (!done && std::chrono::steady_clock::now() < end) {
            p.a.ctx->progress();
            std::this_thread::yield();
        }
        t.join();
        INFO("round " << round << ": " << (got ? "ok" : got.error().message()));
        REQUIRE(got);
        CHECK(*got == rcq);
        const auto sent = wait_wc(p.a, *p.a.cq, 1, {&p.b}, std::chrono::seconds(20));
        REQUIRE(sent.size() == 1);
        CHECK(sent[0].status == WcStatus::success);
        std::array<Wc, 4> wc{};
        CHECK(p.b.ctx->poll_cq(*rcq, wc) == 1u);
    }
    REQUIRE(p.b.ctx->destroy_qp(qb));
    REQUIRE(p.b.ctx->destroy_cq(rcq));
}
