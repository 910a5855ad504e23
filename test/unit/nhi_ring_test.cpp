// SPDX-License-Identifier: Apache-2.0
// src/nhi over a scripted FakeDevice: the test is the hardware. Pins the programming sequences of
// nhi-reference §4.2–4.4 and §10, batching (one doorbell per batch), completion by DONE bit, and
// the refusal of malformed configuration.
#include <atomic>
#include <cstring>

#include "catch.hpp"
#include "fake_device.hpp"
#include "nhi/interrupts.hpp"
#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"

using namespace tbv;
using namespace tbv::hw::nhi;
using tbv::test::FakeDevice;

namespace {

std::unique_ptr<nhi::Nhi> open_nhi(FakeDevice& dev, unsigned vectors = 0) {
    nhi::NhiOptions o;
    o.irq_vectors = vectors;
    auto n = nhi::Nhi::open(dev, o);
    REQUIRE(n);
    return std::move(*n);
}

/// Reads the descriptor array of a ring back through the fake IOMMU.
RingDesc* descs_of(FakeDevice& dev, bool tx, unsigned ring) {
    const std::uint32_t regs = tx ? tx_ring_reg(ring) : rx_ring_reg(ring);
    const hw::Iova base =
        std::uint64_t{dev.reg(regs + RING_BASE_HI)} << 32 | dev.reg(regs + RING_BASE_LO);
    return reinterpret_cast<RingDesc*>(dev.translate(base));
}

void hw_complete(RingDesc& d, std::uint32_t writeback) {
    std::atomic_ref<std::uint32_t>(d.ctl).store(writeback, std::memory_order_release);
}

}  // namespace

TEST_CASE("Nhi::open refuses a gone or ringless device", "[unit][nhi]") {
    FakeDevice gone;
    gone.gone = true;
    auto r = nhi::Nhi::open(gone);
    REQUIRE_FALSE(r);
    CHECK(r.error() == Errc::device_gone);

    FakeDevice one_ring(1);
    auto r1 = nhi::Nhi::open(one_ring);
    REQUIRE_FALSE(r1);
    CHECK(r1.error() == Errc::not_supported);

    FakeDevice dev;
    nhi::NhiOptions o;
    o.irq_vectors = 17;
    CHECK(nhi::Nhi::open(dev, o).error() == std::errc::invalid_argument);
}

TEST_CASE("Nhi::open selects the vendor interrupt mode and quiets interrupts", "[unit][nhi]") {
    SECTION("AMD: disable auto-clear, W1C every status dword") {
        FakeDevice dev(3, 0x1022);
        dev.set_reg(REG_RING_INTERRUPT_BASE, 0xff);
        auto n = open_nhi(dev);
        CHECK(dev.bus_master());
        CHECK(n->hop_count() == 3);
        CHECK(n->interrupts().mode() == nhi::IrqMode::w1c);
        CHECK(DMA_MISC_DISABLE_AUTO_CLEAR::get(dev.reg(REG_DMA_MISC)) == 1);
        CHECK(DMA_MISC_INT_AUTO_CLEAR::get(dev.reg(REG_DMA_MISC)) == 0);
        CHECK(dev.reg(REG_RING_INTERRUPT_BASE) == 0);
        CHECK(dev.reg(REG_RING_INT_CLEAR) == 0xffffffffu);
        // 128 µs default in 256 ns units = 500, as Linux programs (ref §2.1).
        CHECK(dev.reg(throttle_reg(0)) == 500);
        CHECK(dev.reg(throttle_reg(15)) == 500);
    }
    SECTION("Intel: auto-clear") {
        FakeDevice dev(12, 0x8086);
        auto n = open_nhi(dev);
        CHECK(n->interrupts().mode() == nhi::IrqMode::auto_clear);
        CHECK(DMA_MISC_INT_AUTO_CLEAR::get(dev.reg(REG_DMA_MISC)) == 1);
        CHECK(DMA_MISC_DISABLE_AUTO_CLEAR::get(dev.reg(REG_DMA_MISC)) == 0);
        CHECK(dev.writes_in(REG_RING_INT_CLEAR, REG_RING_INT_CLEAR + 16).empty());
    }
}

TEST_CASE("ring numbers: explicit, automatic from 1, and out of range", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    CHECK(*n->claim_ring(nhi::Direction::tx, std::nullopt) == 1);
    CHECK(*n->claim_ring(nhi::Direction::tx, std::nullopt) == 2);
    CHECK(n->claim_ring(nhi::Direction::tx, std::nullopt).error() == Errc::ring_unavailable);
    CHECK(*n->claim_ring(nhi::Direction::tx, 0u) == 0);
    CHECK(n->claim_ring(nhi::Direction::tx, 0u).error() == Errc::ring_unavailable);
    CHECK(n->claim_ring(nhi::Direction::rx, 3u).error() == Errc::ring_unavailable);
    n->release_ring(nhi::Direction::tx, 2);
    CHECK(*n->claim_ring(nhi::Direction::tx, std::nullopt) == 2);
    // RX numbering is independent of TX.
    CHECK(*n->claim_ring(nhi::Direction::rx, std::nullopt) == 1);
}

TEST_CASE("malformed ring configuration is refused and leaks nothing", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    const auto maps_before = dev.mapping_count();
    const auto writes_before = dev.writes.size();

    nhi::RingConfig zero;
    zero.size = 0;
    CHECK(nhi::TxRing::create(*n, zero).error() == std::errc::invalid_argument);
    nhi::RingConfig beyond;
    beyond.ring = 3;
    CHECK(nhi::RxRing::create(*n, beyond).error() == Errc::ring_unavailable);
    nhi::RingConfig big_buf;
    big_buf.rx_buffer_size = 4097;
    CHECK(nhi::RxRing::create(*n, big_buf).error() == std::errc::invalid_argument);
    nhi::RingConfig raw_buf;
    raw_buf.raw = true;
    raw_buf.rx_buffer_size = 512;
    CHECK(nhi::RxRing::create(*n, raw_buf).error() == std::errc::invalid_argument);
    nhi::RingConfig no_vector;
    no_vector.irq_vector = 0;  // opened without MSI-X
    CHECK(nhi::TxRing::create(*n, no_vector).error() == std::errc::invalid_argument);

    CHECK(dev.mapping_count() == maps_before);
    CHECK(dev.writes.size() == writes_before);           // no register touched
    CHECK(*n->claim_ring(nhi::Direction::rx, 1u) == 1);  // nothing left claimed
}

TEST_CASE("TX ring start and stop follow ref §4.2 / §4.3", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    dev.writes.clear();
    nhi::RingConfig cfg;
    cfg.ring = 1;
    cfg.size = 16;
    auto ring = nhi::TxRing::create(*n, cfg);
    REQUIRE(ring);
    const std::uint32_t regs = tx_ring_reg(1);
    const std::uint32_t opts = tx_options_reg(1);
    REQUIRE(dev.writes.size() == 5);
    CHECK(dev.writes[0].first == regs + RING_BASE_LO);
    CHECK(dev.writes[1].first == regs + RING_BASE_HI);
    CHECK(dev.writes[2] == std::pair{regs + RING_SIZE, 16u});
    CHECK(dev.writes[3] == std::pair{opts + OPTS_PDF, 0u});
    CHECK(dev.writes[4] == std::pair{opts + OPTS_FLAGS, RING_FLAG_ENABLE::make(1)});
    const hw::Iova base = std::uint64_t{dev.writes[1].second} << 32 | dev.writes[0].second;
    CHECK(base % 16 == 0);
    CHECK(dev.translate(base) != nullptr);
    // Descriptor memory starts all-ones (premature DMA would chase an unmapped address).
    CHECK(descs_of(dev, true, 1)[3].phys == ~std::uint64_t{0});

    dev.writes.clear();
    auto cancelled = (*ring)->stop();
    CHECK(cancelled.empty());
    REQUIRE(dev.writes.size() == 5);
    CHECK(dev.writes[0] == std::pair{opts + OPTS_FLAGS, 0u});
    CHECK(dev.writes[1] == std::pair{regs + RING_BASE_LO, 0u});
    CHECK(dev.writes[2] == std::pair{regs + RING_BASE_HI, 0u});
    CHECK(dev.writes[3] == std::pair{regs + RING_INDEX, 0u});
    CHECK(dev.writes[4] == std::pair{regs + RING_SIZE, 0u});
    const auto maps = dev.mapping_count();
    ring->reset();
    CHECK(dev.mapping_count() == maps - 1);  // descriptor array unmapped on destruction
}

TEST_CASE("RX ring programs buffer size, PDF masks and E2E after enable", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    dev.writes.clear();
    nhi::RingConfig cfg;
    cfg.ring = 2;
    cfg.size = 8;
    cfg.rx_sof_mask = 1u << 1;
    cfg.rx_eof_mask = 1u << 2;
    cfg.e2e = true;
    cfg.rx_e2e_tx_hop = 2;
    auto ring = nhi::RxRing::create(*n, cfg);
    REQUIRE(ring);
    const std::uint32_t opts = rx_options_reg(2);
    CHECK(dev.reg(rx_ring_reg(2) + RING_SIZE) == 8u);  // buffer 4096 is written as 0
    CHECK(dev.reg(opts + OPTS_PDF) == ((1u << 1) << 16 | (1u << 2)));
    auto flag_writes = dev.writes_in(opts, opts + 4);
    REQUIRE(flag_writes.size() == 2);
    CHECK(flag_writes[0].second == RING_FLAG_ENABLE::make(1));
    CHECK(flag_writes[1].second ==
          (RING_FLAG_ENABLE::make(1) | RING_FLAG_E2E::make(1) | RX_FLAG_E2E_HOP::make(2)));

    nhi::RingConfig raw;
    raw.ring = 1;
    raw.size = 10;
    raw.raw = true;
    raw.rx_buffer_size = 256;
    auto raw_ring = nhi::RxRing::create(*n, raw);
    REQUIRE(raw_ring);
    CHECK(dev.reg(rx_ring_reg(1) + RING_SIZE) == (256u << 16 | 10u));
    CHECK(RING_FLAG_RAW::get(dev.reg(rx_options_reg(1) + OPTS_FLAGS)) == 1);
}

TEST_CASE("TX post writes a batch with one doorbell and reaps by DONE bit", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    nhi::RingConfig cfg;
    cfg.size = 8;
    auto ring = std::move(*nhi::TxRing::create(*n, cfg));
    const std::uint32_t index_reg = tx_ring_reg(ring->number()) + RING_INDEX;
    RingDesc* d = descs_of(dev, true, ring->number());

    std::vector<nhi::TxFrame> frames(5);
    for (unsigned i = 0; i < frames.size(); ++i) {
        frames[i].iova = 0x1000 * (i + 1);
        frames[i].length = i == 4 ? 4096 : 100 + i;
        frames[i].sof_pdf = 1;
        frames[i].eof_pdf = 2;
        frames[i].cookie = 50 + i;
    }
    frames[1].interrupt = true;
    dev.writes.clear();
    auto res = ring->post(frames);
    CHECK(res.posted == 5);
    CHECK(res.status == nhi::PostStatus::ok);
    REQUIRE(dev.writes.size() == 1);  // one doorbell for the whole batch
    CHECK(dev.writes[0] == std::pair{index_reg, 5u << 16});
    CHECK(d[0].phys == 0x1000);
    CHECK(DESC_LENGTH::get(d[0].ctl) == 100);
    CHECK(DESC_SOF_PDF::get(d[0].ctl) == 1);
    CHECK(DESC_EOF_PDF::get(d[0].ctl) == 2);
    CHECK(DESC_POSTED::get(d[0].ctl) == 1);
    CHECK(DESC_INTERRUPT::get(d[0].ctl) == 0);
    CHECK(DESC_INTERRUPT::get(d[1].ctl) == 1);
    CHECK(DESC_LENGTH::get(d[4].ctl) == 0);  // 4096 encodes as 0
    CHECK(d[2].time == 0);

    std::array<std::uint64_t, 8> done{};
    CHECK(ring->reap(done) == 0);  // hardware has not written DONE yet
    hw_complete(d[0], d[0].ctl | DESC_DONE::make(1));
    hw_complete(d[1], d[1].ctl | DESC_DONE::make(1));
    hw_complete(d[3], d[3].ctl | DESC_DONE::make(1));  // out of order: must wait for d[2]
    CHECK(ring->reap(done) == 2);
    CHECK(done[0] == 50);
    CHECK(done[1] == 51);
    CHECK(ring->in_flight() == 3);
    CHECK(dev.polls > 0);  // reap lets a software device run

    // Fill the ring: 8 slots, 7 usable, 3 in flight → 4 more fit.
    dev.writes.clear();
    res = ring->post(frames);
    CHECK(res.posted == 4);
    CHECK(res.status == nhi::PostStatus::ring_full);
    CHECK(dev.writes.size() == 1);
    CHECK(ring->free_slots() == 0);

    auto cancelled = ring->stop();
    CHECK(cancelled.size() == 7);
    CHECK(cancelled.front() == 52);
    CHECK(ring->post(frames).status == nhi::PostStatus::stopped);
}

TEST_CASE("TX post stops at an invalid frame without posting it", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    nhi::RingConfig cfg;
    cfg.size = 8;
    cfg.raw = true;
    auto ring = std::move(*nhi::TxRing::create(*n, cfg));
    std::vector<nhi::TxFrame> frames(3);
    for (auto& f : frames) {
        f.iova = 0x2000;
        f.length = 64;
        f.sof_pdf = f.eof_pdf = 1;
    }
    frames[1].length = 257;  // raw packets are at most 256 bytes
    dev.writes.clear();
    auto res = ring->post(frames);
    CHECK(res.posted == 1);
    CHECK(res.status == nhi::PostStatus::invalid_frame);
    CHECK(dev.writes.size() == 1);
    frames[1].length = 0;
    CHECK(ring->post(std::span(frames).subspan(1)).posted == 0);
    frames[1].length = 8;
    frames[1].eof_pdf = 16;
    CHECK(ring->post(std::span(frames).subspan(1)).status == nhi::PostStatus::invalid_frame);
    CHECK(ring->in_flight() == 1);
}

TEST_CASE("RX ring posts buffers and reports write-backs", "[unit][nhi]") {
    FakeDevice dev(3);
    auto n = open_nhi(dev);
    nhi::RingConfig cfg;
    cfg.size = 4;
    auto ring = std::move(*nhi::RxRing::create(*n, cfg));
    const std::uint32_t index_reg = rx_ring_reg(ring->number()) + RING_INDEX;
    RingDesc* d = descs_of(dev, false, ring->number());
    std::array<nhi::RxBuffer, 4> bufs{};
    for (unsigned i = 0; i < bufs.size(); ++i) {
        bufs[i] = {0x10000u + 0x1000u * i, i};
    }
    dev.writes.clear();
    auto res = ring->post(bufs);
    CHECK(res.posted == 3);
    CHECK(res.status == nhi::PostStatus::ring_full);
    REQUIRE(dev.writes.size() == 1);
    CHECK(dev.writes[0] == std::pair{index_reg, 3u});  // low half: software producer
    CHECK(d[0].ctl == DESC_POSTED::make(1));

    // Hardware writes back: length 0 = 4096, SOF/EOF, CRC error, and an overrun (bit 22).
    hw_complete(d[0], DESC_DONE::make(1) | DESC_SOF_PDF::make(1) | DESC_EOF_PDF::make(2));
    hw_complete(d[1], DESC_DONE::make(1) | DESC_LENGTH::make(60) | DESC_CRC_ERROR::make(1));
    hw_complete(d[2], DESC_DONE::make(1) | DESC_LENGTH::make(99) | DESC_BUFFER_OVERRUN::make(1));
    std::array<nhi::RxCompletion, 8> out{};
    REQUIRE(ring->poll(out) == 3);
    CHECK(out[0].length == 4096);
    CHECK(out[0].sof_pdf == 1);
    CHECK(out[0].eof_pdf == 2);
    CHECK_FALSE(out[0].crc_error);
    CHECK_FALSE(out[0].overrun);
    CHECK(out[1].length == 60);
    CHECK(out[1].crc_error);
    CHECK(out[2].overrun);
    CHECK(out[2].cookie == 2);
    CHECK(ring->poll(out) == 0);
    CHECK(ring->post(bufs).posted == 3);  // refill wraps around the 4-slot ring
}

TEST_CASE("interrupt enable, mask and disable in both vendor modes", "[unit][nhi]") {
    SECTION("W1C (AMD)") {
        FakeDevice dev(3, 0x1022);
        auto n = open_nhi(dev, 4);
        auto& irq = n->interrupts();
        irq.enable(IrqKind::rx, 1, 3);  // RX ring 1 → bit H+1 = 4, vector nibble 4 = 3
        CHECK(dev.reg(REG_RING_INTERRUPT_BASE) == (1u << 4));
        CHECK(dev.reg(REG_INT_VEC_ALLOC_BASE) == (3u << 16));
        irq.mask(IrqKind::rx, 1);
        CHECK_FALSE(irq.enabled(IrqKind::rx, 1));
        irq.unmask(IrqKind::rx, 1);
        CHECK(irq.enabled(IrqKind::rx, 1));
        dev.writes.clear();
        irq.disable(IrqKind::rx, 1);
        REQUIRE_FALSE(dev.writes.empty());
        CHECK(dev.writes[0] == std::pair{REG_RING_INTERRUPT_MASK_CLEAR_BASE, 1u << 4});
        CHECK(dev.reg(REG_INT_VEC_ALLOC_BASE) == 0);

        // Status: read NOTIFY, write back exactly what was seen to INT_CLEAR.
        dev.set_reg(REG_RING_NOTIFY_BASE, (1u << 1) | (1u << 7));  // TX ring 1, RX overflow ring 1
        dev.writes.clear();
        auto st = irq.take_status();
        CHECK(st.test(IrqKind::tx, 1));
        CHECK(st.test(IrqKind::rx_overflow, 1));
        CHECK_FALSE(st.test(IrqKind::rx, 1));
        CHECK(dev.writes_in(REG_RING_INT_CLEAR, REG_RING_INT_CLEAR + 4) ==
              std::vector<std::pair<std::uint32_t, std::uint32_t>>{
                  {REG_RING_INT_CLEAR, (1u << 1) | (1u << 7)}});
        CHECK(irq.clear(IrqKind::rx, 2));
        CHECK(dev.reg(REG_RING_INT_CLEAR) == (1u << 5));
    }
    SECTION("auto-clear (Intel)") {
        FakeDevice dev(12, 0x8086);
        auto n = open_nhi(dev, 2);
        auto& irq = n->interrupts();
        irq.enable(IrqKind::tx, 0, 1);
        irq.enable(IrqKind::rx, 0, 1);  // RX ring 0 → bit 12 (ref §2.4 Intel example)
        CHECK(dev.reg(REG_RING_INTERRUPT_BASE) == ((1u << 12) | 1u));
        CHECK(dev.reg(vec_alloc_reg(12)) == 1u << vec_alloc_shift(12));  // 0x38c44 [19:16]
        CHECK(dev.reg(vec_alloc_reg(0)) == 1u);
        dev.writes.clear();
        irq.disable(IrqKind::tx, 0);  // Intel: read-modify-write of the enable bitmap
        CHECK(dev.reg(REG_RING_INTERRUPT_BASE) == (1u << 12));
        CHECK(dev.writes_in(REG_RING_INTERRUPT_MASK_CLEAR_BASE,
                            REG_RING_INTERRUPT_MASK_CLEAR_BASE + 4)
                  .empty());
        dev.writes.clear();
        (void)irq.take_status();
        CHECK(dev.writes.empty());  // clear-on-read: no W1C writes
    }
    SECTION("throttle rounds up to 256 ns units") {
        FakeDevice dev(3);
        auto n = open_nhi(dev, 1);
        n->interrupts().set_throttle(2, 1000);
        CHECK(dev.reg(throttle_reg(2)) == 4);
        n->interrupts().set_throttle(2, 0);
        CHECK(dev.reg(throttle_reg(2)) == 0);
    }
}
