// SPDX-License-Identifier: Apache-2.0
// The ring driver (src/nhi) on the emulated NHI (src/emu): two controllers joined by the test
// fabric, frames both ways through wrap-around, raw control packets with good and bad CRC,
// interrupts raised / masked / throttled, and malformed input that must corrupt nothing.
#include <array>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "emu/nhi.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/frame_pool.hpp"
#include "nhi/irq_wait.hpp"
#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"

using namespace tbv;
using namespace std::chrono_literals;
using hw::nhi::IrqKind;

namespace {

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

/// Two emulated hosts' NHIs on one test fabric, each opened by the driver.
struct Pair {
    explicit Pair(emu::NhiConfig base = {}, unsigned vectors = 0) {
        base.name = "a";
        a = std::make_unique<emu::EmuNhi>(base);
        base.name = "b";
        b = std::make_unique<emu::EmuNhi>(base);
        fabric = std::make_unique<emu::PairFabric>(*a, *b);
        nhi::NhiOptions o;
        o.irq_vectors = vectors;
        na = take(nhi::Nhi::open(*a, o));
        nb = take(nhi::Nhi::open(*b, o));
    }
    std::unique_ptr<emu::EmuNhi> a, b;
    std::unique_ptr<emu::PairFabric> fabric;
    std::unique_ptr<nhi::Nhi> na, nb;
};

/// One direction of a data path: a TX ring on one side, an RX ring with buffers on the other.
struct Link {
    Link(nhi::Nhi& from, nhi::Nhi& to, unsigned ring, unsigned size,
         std::optional<unsigned> rx_vector = std::nullopt)
        : tx_pool(take(nhi::FramePool::create(from.device(), size, 4096, hw::DmaAccess::read))),
          rx_pool(take(nhi::FramePool::create(to.device(), size, 4096, hw::DmaAccess::write))) {
        nhi::RingConfig cfg;
        cfg.ring = ring;
        cfg.size = size;
        cfg.rx_sof_mask = 1u << 1;
        cfg.rx_eof_mask = 1u << 2;
        tx = take(nhi::TxRing::create(from, cfg));
        cfg.irq_vector = rx_vector;
        rx = take(nhi::RxRing::create(to, cfg));
        for (unsigned i = 0; i + 1 < size; ++i) {
            const nhi::RxBuffer b{rx_pool.iova(i), i};
            REQUIRE(rx->post({&b, 1}).posted == 1);
        }
    }

    /// Sends `len` bytes of pattern `seed` from TX buffer `slot`.
    bool send(unsigned slot, std::size_t len, unsigned seed, bool interrupt = false) {
        auto* p = tx_pool.data(slot);
        for (std::size_t i = 0; i < len; ++i) {
            p[i] = static_cast<std::byte>((seed * 31 + i * 7) & 0xff);
        }
        const nhi::TxFrame f{
            tx_pool.iova(slot), static_cast<std::uint32_t>(len), 1, 2, interrupt, slot};
        return tx->post({&f, 1}).posted == 1;
    }

    /// Receives one frame, checks it carries the pattern, refills its buffer.
    bool expect(std::size_t len, unsigned seed) {
        nhi::RxCompletion c;
        if (rx->poll({&c, 1}) != 1) {
            return false;
        }
        const auto buf = static_cast<unsigned>(c.cookie);
        bool good =
            c.length == len && !c.crc_error && !c.overrun && c.sof_pdf == 1 && c.eof_pdf == 2;
        const auto* p = rx_pool.data(buf);
        for (std::size_t i = 0; good && i < len; ++i) {
            good = p[i] == static_cast<std::byte>((seed * 31 + i * 7) & 0xff);
        }
        const nhi::RxBuffer b{rx_pool.iova(buf), buf};
        return rx->post({&b, 1}).posted == 1 && good;
    }

    void reap_all() {
        std::array<std::uint64_t, 64> done{};
        while (tx->reap(done) > 0) {
        }
    }

    nhi::FramePool tx_pool;
    nhi::FramePool rx_pool;
    std::unique_ptr<nhi::TxRing> tx;
    std::unique_ptr<nhi::RxRing> rx;
};

}  // namespace

TEST_CASE("frames flow both ways through wrap-around, verified byte for byte", "[emu][nhi]") {
    Pair p;
    constexpr unsigned kSize = 16;
    Link ab(*p.na, *p.nb, 1, kSize);
    Link ba(*p.nb, *p.na, 1, kSize);
    constexpr unsigned kFrames = 12 * kSize;  // ≥ 10× the ring size
    for (unsigned i = 0; i < kFrames; ++i) {
        const std::size_t len = 1 + (i * 613) % 4096;
        REQUIRE(ab.send(i % kSize, len, i));
        REQUIRE(ba.send(i % kSize, 4097 - len, i + 1000));
        REQUIRE(ab.expect(len, i));
        REQUIRE(ba.expect(4097 - len, i + 1000));
        ab.reap_all();
        ba.reap_all();
    }
    CHECK(ab.tx->in_flight() == 0);
    CHECK(p.a->counters().tx_frames == kFrames);
    CHECK(p.b->counters().rx_frames == kFrames);
    CHECK(p.a->faults().empty());
    CHECK(p.b->faults().empty());
}

TEST_CASE("batches fill the ring and 4096-byte frames use length 0", "[emu][nhi]") {
    Pair p;
    constexpr unsigned kSize = 32;
    Link ab(*p.na, *p.nb, 2, kSize);
    for (unsigned round = 0; round < 12; ++round) {
        std::vector<nhi::TxFrame> batch;
        for (unsigned i = 0; i + 1 < kSize; ++i) {
            std::memset(ab.tx_pool.data(i), static_cast<int>(round + i), 4096);
            batch.push_back({ab.tx_pool.iova(i), 4096, 1, 2, false, i});
        }
        const auto before = p.a->counters().doorbells;
        auto r = ab.tx->post(batch);
        REQUIRE(r.posted == kSize - 1);
        CHECK(p.a->counters().doorbells == before + 1);  // one doorbell per batch
        std::array<nhi::RxCompletion, kSize> got{};
        REQUIRE(ab.rx->poll(got) == kSize - 1);
        std::vector<nhi::RxBuffer> refill;
        for (unsigned i = 0; i + 1 < kSize; ++i) {
            CHECK(got[i].length == 4096);
            const auto* d = ab.rx_pool.data(static_cast<unsigned>(got[i].cookie));
            CHECK(d[0] == static_cast<std::byte>(round + i));
            CHECK(d[4095] == static_cast<std::byte>(round + i));
            refill.push_back(
                {ab.rx_pool.iova(static_cast<unsigned>(got[i].cookie)), got[i].cookie});
        }
        REQUIRE(ab.rx->post(refill).posted == kSize - 1);
        ab.reap_all();
    }
}

TEST_CASE("control ring carries raw packets; bad CRC is dropped and counted",
          "[emu][nhi][control]") {
    Pair p;
    auto ca = take(nhi::ControlRing::create(*p.na));
    auto cb = take(nhi::ControlRing::create(*p.nb));
    // More packets than the 10-slot rings hold, so both rings wrap many times.
    for (unsigned i = 0; i < 100; ++i) {
        std::vector<std::uint32_t> dw(1 + i % 63);
        for (unsigned k = 0; k < dw.size(); ++k) {
            dw[k] = 0x9e3779b9u * (i + 1) + k;
        }
        const unsigned pdf = 1 + i % 9;
        REQUIRE(ca->send(pdf, dw));
        auto got = cb->receive();
        REQUIRE(got);
        CHECK(got->pdf == pdf);
        REQUIRE(got->dword_count == dw.size());
        CHECK(std::equal(dw.begin(), dw.end(), got->payload().begin()));
    }
    const std::array<std::uint32_t, 3> read{0, 0, 0x0400a000};
    p.fabric->corrupt_next(1);
    REQUIRE(ca->send(1, read));
    CHECK_FALSE(cb->receive());
    CHECK(cb->counters().rx_crc_errors == 1);
    REQUIRE(ca->send(1, read));  // the ring still works and its buffer came back
    auto good = cb->receive();
    REQUIRE(good);
    CHECK(good->dwords[2] == 0x0400a000u);
    CHECK(cb->counters().rx_packets == 101);
    // And the other direction.
    REQUIRE(cb->send(2, read));
    CHECK(ca->receive());
}

TEST_CASE("RX with no posted buffer drops the frame and flags overflow", "[emu][nhi]") {
    Pair p;
    nhi::RingConfig cfg;
    cfg.ring = 1;
    cfg.size = 8;
    auto tx = take(nhi::TxRing::create(*p.na, cfg));
    auto rx = take(nhi::RxRing::create(*p.nb, cfg));  // started, but no buffers posted
    auto pool = take(nhi::FramePool::create(*p.a, 1, 4096, hw::DmaAccess::read));
    const nhi::TxFrame f{pool.iova(0), 64, 1, 2, false, 0};
    REQUIRE(tx->post({&f, 1}).posted == 1);
    std::array<std::uint64_t, 4> done{};
    CHECK(tx->reap(done) == 1);  // the sender completes: the loss is silent on the wire
    std::array<nhi::RxCompletion, 4> got{};
    CHECK(rx->poll(got) == 0);
    CHECK(p.b->counters().rx_overflow_drops == 1);
    auto st = p.nb->interrupts().take_status();
    CHECK(st.test(IrqKind::rx_overflow, 1));
    CHECK_FALSE(p.nb->interrupts().take_status().test(IrqKind::rx_overflow, 1));  // cleared
}

TEST_CASE("a descriptor pointing at unmapped memory faults only its ring", "[emu][nhi]") {
    Pair p;
    Link bad(*p.na, *p.nb, 1, 8);
    Link good(*p.na, *p.nb, 2, 8);
    std::array<std::byte, 4096> before{};
    std::memcpy(before.data(), bad.rx_pool.data(0), before.size());

    const nhi::TxFrame wild{0xdead0000, 128, 1, 2, false, 7};  // never mapped
    REQUIRE(bad.tx->post({&wild, 1}).posted == 1);
    std::array<std::uint64_t, 4> done{};
    CHECK(bad.tx->reap(done) == 0);  // never completes: the ring is halted
    REQUIRE(p.a->faults().size() == 1);
    CHECK(p.a->faults()[0].iova == 0xdead0000);
    CHECK(p.a->faults()[0].tx);
    CHECK(p.a->faults()[0].ring == 1);
    CHECK(p.a->ring_halted(true, 1));
    std::array<nhi::RxCompletion, 4> got{};
    CHECK(bad.rx->poll(got) == 0);
    CHECK(std::memcmp(before.data(), bad.rx_pool.data(0), before.size()) == 0);

    // Ring 2 of the same controller is unaffected.
    REQUIRE(good.send(0, 300, 5));
    CHECK(good.expect(300, 5));

    // Stopping returns the stuck descriptor as cancelled; a restarted ring works again.
    auto cancelled = bad.tx->stop();
    REQUIRE(cancelled.size() == 1);
    CHECK(cancelled[0] == 7);
}

TEST_CASE("a receive buffer the device may only read is never written", "[emu][nhi]") {
    Pair p;
    nhi::RingConfig cfg;
    cfg.ring = 1;
    cfg.size = 8;
    auto tx = take(nhi::TxRing::create(*p.na, cfg));
    auto rx = take(nhi::RxRing::create(*p.nb, cfg));
    auto src = take(nhi::FramePool::create(*p.a, 1, 4096, hw::DmaAccess::read));
    auto ro = take(nhi::FramePool::create(*p.b, 1, 4096, hw::DmaAccess::read));  // wrong permission
    std::memset(ro.data(0), 0x5a, 4096);
    std::memset(src.data(0), 0xa5, 4096);
    const nhi::RxBuffer b{ro.iova(0), 0};
    REQUIRE(rx->post({&b, 1}).posted == 1);
    const nhi::TxFrame f{src.iova(0), 512, 1, 2, false, 0};
    REQUIRE(tx->post({&f, 1}).posted == 1);
    std::array<nhi::RxCompletion, 2> got{};
    CHECK(rx->poll(got) == 0);
    REQUIRE(p.b->faults().size() == 1);
    CHECK_FALSE(p.b->faults()[0].tx);
    CHECK(p.b->faults()[0].access == hw::DmaAccess::write);
    CHECK(p.b->ring_halted(false, 1));
    for (std::size_t i = 0; i < 4096; ++i) {
        REQUIRE(ro.data(0)[i] == std::byte{0x5a});
    }
}

TEST_CASE("rings beyond the reported count and zero-size rings are refused", "[emu][nhi]") {
    Pair amd;  // H = 3
    nhi::RingConfig cfg;
    cfg.ring = 3;
    CHECK(nhi::TxRing::create(*amd.na, cfg).error() == Errc::ring_unavailable);
    cfg.ring = 2;
    cfg.size = 0;
    CHECK(nhi::RxRing::create(*amd.na, cfg).error() == std::errc::invalid_argument);

    emu::NhiConfig intel;
    intel.vendor = 0x8086;
    intel.device = 0x9a1b;
    intel.hop_count = 12;
    Pair tgl(intel);
    CHECK(tgl.na->hop_count() == 12);
    CHECK(tgl.na->interrupts().mode() == nhi::IrqMode::auto_clear);
    Link far(*tgl.na, *tgl.nb, 11, 4);
    REQUIRE(far.send(0, 99, 3));
    CHECK(far.expect(99, 3));
}

TEST_CASE("interrupts are raised, masked and throttled", "[emu][nhi][irq]") {
    for (const bool intel : {false, true}) {
        DYNAMIC_SECTION((intel ? "auto-clear (Intel)" : "W1C (AMD)")) {
            emu::NhiConfig c;
            if (intel) {
                c.vendor = 0x8086;
                c.hop_count = 12;
            }
            Pair p(c, 4);
            Link ab(*p.na, *p.nb, 1, 16, 2);  // B's RX ring 1 → vector 2
            auto waiter = take(nhi::IrqWaiter::create());
            const int fd = p.b->irq_eventfd(2);
            REQUIRE(fd >= 0);
            const unsigned slot = take(waiter->watch(fd));
            p.nb->interrupts().set_throttle(2, 0);

            // Raised: a frame arrives → vector 2 fires.
            REQUIRE(ab.send(0, 64, 1));
            auto fired = take(waiter->wait(5s));
            CHECK((fired & (1u << slot)) != 0);
            CHECK(ab.expect(64, 1));
            if (!intel) {
                CHECK(p.nb->interrupts().clear(IrqKind::rx, 1));
            } else {
                (void)p.nb->interrupts().take_status();
            }

            // Masked: no message while masked.
            p.nb->interrupts().mask(IrqKind::rx, 1);
            REQUIRE(ab.send(1, 64, 2));
            CHECK(take(waiter->wait(30ms)) == 0);
            CHECK(ab.expect(64, 2));
            (void)p.nb->interrupts().take_status();
            p.nb->interrupts().unmask(IrqKind::rx, 1);
            REQUIRE(ab.send(2, 64, 3));
            CHECK(take(waiter->wait(5s)) != 0);
            CHECK(ab.expect(64, 3));
            (void)p.nb->interrupts().take_status();
            ab.reap_all();

            // Throttled: with a 200 ms minimum gap, a burst of frames yields at most one message
            // now and the deferred one later — never one per frame.
            p.nb->interrupts().set_throttle(2, 200'000'000);
            const auto before = waiter->count(slot);
            const auto throttled_before = p.b->counters().irqs_throttled;
            // Status stays pending during the burst (nobody services it), so the held-back
            // message still has a cause when the gap has passed.
            for (unsigned i = 0; i < 6; ++i) {
                REQUIRE(ab.send(3 + i, 64, 10 + i));
            }
            for (unsigned i = 0; i < 6; ++i) {
                CHECK(ab.expect(64, 10 + i));
            }
            for (int tries = 0; tries < 50 && waiter->count(slot) == before; ++tries) {
                (void)take(waiter->wait(100ms));
            }
            const std::uint64_t got = waiter->count(slot) - before;
            CHECK(got >= 1);
            CHECK(got < 6);
            CHECK(p.b->counters().irqs_throttled > throttled_before);
        }
    }
}

TEST_CASE("two threads drive two controllers both ways at once", "[emu][nhi][threads]") {
    Pair p;
    constexpr unsigned kSize = 64;
    constexpr unsigned kFrames = 4000;
    Link ab(*p.na, *p.nb, 1, kSize);
    Link ba(*p.nb, *p.na, 1, kSize);
    // Each thread owns one TX ring and one RX ring (rings have one owner), and its doorbells run
    // the peer's RX engine: the emulator's locking must neither deadlock nor race.
    auto worker = [](Link& out, Link& in, unsigned seed, bool& ok) {
        unsigned sent = 0;
        unsigned received = 0;
        ok = true;
        while (received < kFrames) {
            if (sent < kFrames && out.tx->free_slots() > 0 && sent - received < kSize / 4) {
                if (!out.send(sent % kSize, 1 + (sent * 37) % 4096, seed + sent)) {
                    ok = false;
                    return;
                }
                ++sent;
            }
            out.reap_all();
            nhi::RxCompletion c;
            if (in.rx->poll({&c, 1}) == 1) {
                const auto buf = static_cast<unsigned>(c.cookie);
                ok = ok && c.length == 1 + (received * 37) % 4096;
                const nhi::RxBuffer b{in.rx_pool.iova(buf), buf};
                ok = ok && in.rx->post({&b, 1}).posted == 1;
                ++received;
            }
        }
    };
    bool ok_a = false;
    bool ok_b = false;
    std::thread ta([&] { worker(ab, ba, 0, ok_a); });
    std::thread tb([&] { worker(ba, ab, 7, ok_b); });
    ta.join();
    tb.join();
    CHECK(ok_a);
    CHECK(ok_b);
    CHECK(p.a->counters().rx_overflow_drops == 0);
    CHECK(p.b->counters().rx_overflow_drops == 0);
}
