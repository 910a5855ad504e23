// SPDX-License-Identifier: Apache-2.0
// Register behaviour of the emulated NHI (ref §2, §12.2), driven by raw register access.
#include <chrono>
#include <thread>

#include "emu_fixture.hpp"

using namespace tbv::emu_test;

TEST_CASE("REG_CAPS reports hop count and version (ref §2.1)", "[emu][regs]") {
    EmuNhi amd(cfg_with(3, 0x20));
    CHECK(CAPS_HOP_COUNT::get(amd.read32(REG_CAPS)) == 3);
    CHECK(CAPS_VERSION::get(amd.read32(REG_CAPS)) == 0x20);
    EmuNhi intel(cfg_with(12, 0x40));
    CHECK(CAPS_HOP_COUNT::get(intel.read32(REG_CAPS)) == 12);
    CHECK(CAPS_VERSION::get(intel.read32(REG_CAPS)) == 0x40);
    intel.write32(REG_CAPS, 0);  // read-only
    CHECK(intel.read32(REG_CAPS) == 0x0040000cu);
}

TEST_CASE("no firmware: FW_STS reads 0, mailbox commands fail at once (ref §2.6, §12.2.9)",
          "[emu][regs]") {
    EmuNhi nhi;
    CHECK(nhi.read32(REG_FW_STS) == 0);
    nhi.write32(REG_FW_STS, ~0u);
    CHECK(nhi.read32(REG_FW_STS) == 0);
    nhi.write32(REG_INMAIL_DATA, 0x1234);
    nhi.write32(REG_INMAIL_CMD, INMAIL_CMD_OP_REQUEST::make(1) | INMAIL_CMD_CMD::make(0x23));
    const std::uint32_t cmd = nhi.read32(REG_INMAIL_CMD);
    CHECK(INMAIL_CMD_OP_REQUEST::get(cmd) == 0);
    CHECK(INMAIL_CMD_ERROR::get(cmd) == 1);
    CHECK(INMAIL_CMD_CMD::get(cmd) == 0x23);
    CHECK(nhi.read32(REG_OUTMAIL_CMD) == 0);
}

TEST_CASE("unimplemented offsets read 0 and ignore writes (ref §12.2.10)", "[emu][regs]") {
    EmuNhi nhi;
    for (std::uint32_t off :
         {0x39000u, 0x3a000u, 0x7fffcu, tx_options_reg(0) + 0x8u, rx_options_reg(1) + 0x1cu}) {
        nhi.write32(off, 0xdeadbeefu);
        CHECK(nhi.read32(off) == 0);
    }
}

TEST_CASE("unaligned and out-of-BAR accesses never reach a register", "[emu][regs]") {
    EmuNhi nhi;
    nhi.write32(tx_ring_reg(1) + RING_BASE_LO, 0x1000);
    nhi.write32(tx_ring_reg(1) + RING_BASE_LO + 2, 0xffffffffu);
    CHECK(nhi.read32(tx_ring_reg(1) + RING_BASE_LO) == 0x1000);
    CHECK(nhi.read32(tx_ring_reg(1) + RING_BASE_LO + 2) == 0xffffffffu);
    CHECK(nhi.read32(static_cast<std::uint32_t>(kBar0Size)) == 0xffffffffu);
}

TEST_CASE("TX index register: SW owns the producer half, HW the consumer half (ref §2.2)",
          "[emu][regs][rings]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    const std::uint32_t idx = tx_ring_reg(1) + RING_INDEX;

    // Stopped ring: the SW half stores, the HW half ignores what software writes.
    nhi.write32(idx, TX_INDEX_SW_PROD::make(5) | TX_INDEX_HW_CONS::make(3));
    CHECK(nhi.read32(idx) == TX_INDEX_SW_PROD::make(5));
    nhi.write32(idx, 0);

    start_tx(nhi, 1, descs.iova(), 8);
    for (unsigned i = 0; i < 2; ++i) {
        post_desc(desc_at(descs, i), buf.iova(), tx_ctl(64, 0, 0));
    }
    tx_doorbell(nhi, 1, 2);
    // Only DMA moved the HW half.
    CHECK(nhi.read32(idx) == (TX_INDEX_SW_PROD::make(2) | TX_INDEX_HW_CONS::make(2)));
    nhi.write32(idx, TX_INDEX_SW_PROD::make(2) | TX_INDEX_HW_CONS::make(7));
    CHECK(tx_hw_index(nhi, 1) == 2);

    stop_ring(nhi, true, 1);  // ENABLE 1→0: the HW half resets
    CHECK(nhi.read32(idx) == TX_INDEX_SW_PROD::make(2));
}

TEST_CASE("RX index register: SW owns the low half, HW the high half (ref §2.2)",
          "[emu][regs][rings]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write);
    const std::uint32_t idx = rx_ring_reg(2) + RING_INDEX;

    nhi.write32(idx, RX_INDEX_HW_CONS::make(0xffff) | RX_INDEX_SW_PROD::make(3));
    CHECK(nhi.read32(idx) == RX_INDEX_SW_PROD::make(3));
    nhi.write32(idx, 0);

    start_rx(nhi, 2, descs.iova(), 4);
    post_desc(desc_at(descs, 0), buf.iova(), rx_ctl());
    rx_publish(nhi, 2, 1);
    const auto data = pattern(100, 2);
    REQUIRE(nhi.receive(2, frame_of(data)) == RxResult::delivered);
    CHECK(nhi.read32(idx) == (RX_INDEX_HW_CONS::make(1) | RX_INDEX_SW_PROD::make(1)));
    nhi.write32(idx, RX_INDEX_HW_CONS::make(3) | RX_INDEX_SW_PROD::make(1));
    CHECK(rx_hw_index(nhi, 2) == 1);

    stop_ring(nhi, false, 2);
    CHECK(nhi.read32(idx) == RX_INDEX_SW_PROD::make(1));
}

TEST_CASE("ring registers read back; RX size carries the buffer size (ref §2.2, §2.3)",
          "[emu][regs][rings]") {
    EmuNhi nhi;
    nhi.write32(rx_ring_reg(1) + RING_BASE_LO, 0x12345670);
    nhi.write32(rx_ring_reg(1) + RING_BASE_HI, 0x9);
    nhi.write32(rx_ring_reg(1) + RING_SIZE, RX_SIZE_BUFFER::make(256) | 10);
    nhi.write32(rx_options_reg(1) + OPTS_PDF, 0x00060004);
    nhi.write32(rx_options_reg(1) + OPTS_FLAGS,
                RING_FLAG_RAW::make(1) | RING_FLAG_E2E::make(1) | RX_FLAG_E2E_HOP::make(2));
    CHECK(nhi.read32(rx_ring_reg(1) + RING_BASE_LO) == 0x12345670u);
    CHECK(nhi.read32(rx_ring_reg(1) + RING_BASE_HI) == 0x9u);
    CHECK(RX_SIZE_BUFFER::get(nhi.read32(rx_ring_reg(1) + RING_SIZE)) == 256);
    CHECK(RING_SIZE_COUNT::get(nhi.read32(rx_ring_reg(1) + RING_SIZE)) == 10);
    CHECK(nhi.read32(rx_options_reg(1) + OPTS_PDF) == 0x00060004u);
    CHECK(RX_FLAG_E2E_HOP::get(nhi.read32(rx_options_reg(1) + OPTS_FLAGS)) == 2);
    // TX size has only the count.
    nhi.write32(tx_ring_reg(1) + RING_SIZE, 0xffff0010u);
    CHECK(nhi.read32(tx_ring_reg(1) + RING_SIZE) == 0x10u);
}

TEST_CASE("configuration is latched when ENABLE goes 0→1 (ref §12.2.3)", "[emu][regs][rings]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    start_tx(nhi, 1, descs.iova(), 4);
    // Rewriting the size (and base) while the ring runs changes nothing until the next enable.
    nhi.write32(tx_ring_reg(1) + RING_SIZE, 8);
    nhi.write32(tx_ring_reg(1) + RING_BASE_LO, 0);
    nhi.write32(tx_ring_reg(1) + RING_BASE_HI, 0);
    for (unsigned i = 0; i < 4; ++i) {
        post_desc(desc_at(descs, i), buf.iova(), tx_ctl(16, 0, 0));
    }
    tx_doorbell(nhi, 1, 3);
    CHECK(tx_hw_index(nhi, 1) == 3);
    post_desc(desc_at(descs, 3), buf.iova(), tx_ctl(16, 0, 0));
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(16, 0, 0));
    tx_doorbell(nhi, 1, 1);  // wraps at the latched 4, not at 8
    CHECK(tx_hw_index(nhi, 1) == 1);
    CHECK(nhi.counters().tx_no_fabric_drops == 5);

    // A producer index beyond the latched size is ignored.
    tx_doorbell(nhi, 1, 6);
    CHECK(tx_hw_index(nhi, 1) == 1);
    CHECK(nhi.counters().bad_index_writes == 1);

    // Re-enable: the new values are latched (base 0 is outside every mapping: a fault).
    stop_ring(nhi, true, 1);
    nhi.write32(tx_options_reg(1) + OPTS_FLAGS, RING_FLAG_ENABLE::make(1));
    tx_doorbell(nhi, 1, 1);
    CHECK(nhi.counters().dma_faults == 1);
    CHECK(nhi.faults().at(0).iova == 0);
}

TEST_CASE("zero-size or misaligned ring is not started (ref §12.2.3)", "[emu][regs][rings]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read_write);
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(16, 0, 0));

    start_tx(nhi, 1, descs.iova(), 0);
    CHECK(RING_FLAG_ENABLE::get(nhi.read32(tx_options_reg(1) + OPTS_FLAGS)) == 1);  // as written
    tx_doorbell(nhi, 1, 1);
    CHECK(tx_hw_index(nhi, 1) == 0);
    CHECK(load_ctl(desc_at(descs, 0)) == tx_ctl(16, 0, 0));  // no DMA happened

    start_rx(nhi, 1, descs.iova() + 8, 4);  // not 16-byte aligned
    rx_publish(nhi, 1, 1);
    const auto data = pattern(16, 3);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::ring_disabled);
    CHECK(nhi.counters().ring_start_rejects == 2);
}

TEST_CASE("rings at or above H do not exist (ref §2)", "[emu][regs][rings]") {
    EmuNhi nhi(cfg_with(3));
    REQUIRE(nhi.set_bus_master(true));
    for (std::uint32_t off : {tx_ring_reg(3) + RING_BASE_LO, rx_ring_reg(3) + RING_SIZE,
                              tx_options_reg(3) + OPTS_FLAGS, rx_options_reg(5) + OPTS_PDF}) {
        nhi.write32(off, 0x80000010u);
        CHECK(nhi.read32(off) == 0);
    }
    const auto data = pattern(16, 4);
    CHECK(nhi.receive(3, frame_of(data)) == RxResult::ring_disabled);
    CHECK(nhi.receive(1000, frame_of(data)) == RxResult::ring_disabled);
    // Status bits of rings ≥ H cannot be enabled either.
    nhi.write32(REG_RING_INTERRUPT_BASE, ~0u);
    CHECK(nhi.read32(REG_RING_INTERRUPT_BASE) == 0x3fu);  // 2H = 6 sources
    CHECK_FALSE(nhi.ring_halted(true, 3));
}

TEST_CASE("HRR exists only on version >= 0x40 and resets ring and interrupt state (ref §2.7)",
          "[emu][regs][reset]") {
    SECTION("v1 NHI: REG_RESET is unimplemented") {
        EmuNhi nhi(cfg_with(3, 0x20));
        nhi.write32(REG_RING_INTERRUPT_BASE, 0x3);
        nhi.write32(REG_RESET, RESET_HRR::make(1));
        CHECK(nhi.read32(REG_RESET) == 0);
        CHECK(nhi.read32(REG_RING_INTERRUPT_BASE) == 0x3);
        CHECK(nhi.counters().host_router_resets == 0);
    }
    SECTION("v2 NHI: reads 1 while the reset runs, then 0; state is back at power-on") {
        NhiConfig c = cfg_with(12, 0x40);
        c.hrr_duration = std::chrono::hours(1);  // "in progress" for the whole check
        EmuNhi nhi(c);
        REQUIRE(nhi.set_bus_master(true));
        nhi.write32(REG_RING_INTERRUPT_BASE, 0x3);
        nhi.write32(REG_DMA_MISC, DMA_MISC_DISABLE_AUTO_CLEAR::make(1));
        nhi.write32(tx_ring_reg(1) + RING_BASE_LO, 0x1000);
        nhi.write32(tx_options_reg(1) + OPTS_FLAGS, RING_FLAG_ENABLE::make(1));
        nhi.write32(REG_RESET, RESET_HRR::make(1));
        CHECK(nhi.read32(REG_RESET) == 1);
        CHECK(nhi.read32(REG_RING_INTERRUPT_BASE) == 0);
        CHECK(nhi.read32(REG_DMA_MISC) == 0);
        CHECK(nhi.read32(tx_ring_reg(1) + RING_BASE_LO) == 0);
        CHECK(nhi.read32(tx_options_reg(1) + OPTS_FLAGS) == 0);
        CHECK(nhi.counters().host_router_resets == 1);
        CHECK(nhi.bus_master());  // a router reset is not a PCI function reset
    }
    SECTION("v2 NHI: the bit clears by itself") {
        NhiConfig c = cfg_with(12, 0x40);
        c.hrr_duration = std::chrono::microseconds(100);
        EmuNhi nhi(c);
        nhi.write32(REG_RESET, RESET_HRR::make(1));
        // Poll like Linux does (ref §2.7); the deadline only guards against a hang.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (nhi.read32(REG_RESET) != 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        CHECK(nhi.read32(REG_RESET) == 0);
    }
}

TEST_CASE("reset(): power-on registers, bus mastering off, mappings kept", "[emu][regs][reset]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read_write);
    start_rx(nhi, 1, descs.iova(), 4);
    nhi.write32(REG_RING_INTERRUPT_BASE, 0x3f);
    nhi.write32(REG_INT_VEC_ALLOC_BASE, 0x321);
    nhi.write32(throttle_reg(2), 500);
    REQUIRE(nhi.reset());
    CHECK_FALSE(nhi.bus_master());
    CHECK(nhi.read32(rx_options_reg(1) + OPTS_FLAGS) == 0);
    CHECK(nhi.read32(rx_ring_reg(1) + RING_BASE_LO) == 0);
    CHECK(nhi.read32(REG_RING_INTERRUPT_BASE) == 0);
    CHECK(nhi.read32(REG_INT_VEC_ALLOC_BASE) == 0);
    CHECK(nhi.read32(throttle_reg(2)) == 0);
    CHECK(nhi.iommu().translate(buf.iova(), 4096, DmaAccess::write) == buf.data());
    // The ring is stopped: frames are refused until software starts it again.
    REQUIRE(nhi.set_bus_master(true));
    const auto data = pattern(16, 5);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::ring_disabled);
}
