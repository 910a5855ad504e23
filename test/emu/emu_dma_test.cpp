// SPDX-License-Identifier: Apache-2.0
// DMA engines of the emulated NHI (ref §3, §12.3): descriptor handling, frame and raw mode,
// overrun, PDF masks, RX overflow, bus-master gating, IOMMU faults, batches (a doorbell's
// descriptors reach the fabric kTxBatch at a time; receive_batch).
#include <algorithm>
#include <vector>

#include "emu_fixture.hpp"

using namespace tbv::emu_test;

namespace {

/// Captures what TX engines hand to the fabric.
class RecordingFabric final : public tbv::emu::Fabric {
public:
    struct Frame {
        EmuNhi* from;
        unsigned ring;
        unsigned sof;
        unsigned eof;
        std::vector<std::byte> data;
    };
    void transmit(EmuNhi& from, unsigned ring, const FrameView& f) noexcept override {
        frames.push_back({&from, ring, f.sof_pdf, f.eof_pdf, {f.data.begin(), f.data.end()}});
    }
    std::vector<Frame> frames;
};

/// Captures TX batches as the fabric gets them, and whether any descriptor of a batch was already
/// DONE while the fabric held it (it must not be: DONE follows the frame out).
class BatchFabric final : public tbv::emu::Fabric {
public:
    explicit BatchFabric(DmaRegion& descs, unsigned count) : descs_(descs), count_(count) {}
    void transmit(EmuNhi&, unsigned, const FrameView&) noexcept override { ++singles; }
    void transmit_batch(EmuNhi&, unsigned, std::span<const FrameView> fs) noexcept override {
        sizes.push_back(fs.size());
        for (const FrameView& f : fs) {
            done_early = done_early || DESC_DONE::get(load_ctl(desc_at(descs_, next_))) != 0;
            next_ = (next_ + 1) % count_;
            frames.emplace_back(f.data.begin(), f.data.end());
        }
    }
    std::vector<std::size_t> sizes;
    std::vector<std::vector<std::byte>> frames;
    unsigned singles = 0;
    bool done_early = false;

private:
    DmaRegion& descs_;
    unsigned count_;
    unsigned next_ = 0;
};

bool all_bytes(const std::byte* p, std::size_t n, std::byte v) {
    return std::all_of(p, p + n, [v](std::byte b) { return b == v; });
}

bool same_bytes(const std::byte* p, const std::vector<std::byte>& v) {
    return std::equal(v.begin(), v.end(), p);
}

}  // namespace

// ---- TX -------------------------------------------------------------------------------------

TEST_CASE("TX: the doorbell sends posted descriptors and writes DONE back (ref §12.3)",
          "[emu][dma][tx]") {
    EmuNhi nhi;
    RecordingFabric fab;
    nhi.attach(&fab);
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto bufs = make_region(nhi, 2 * 4096, DmaAccess::read);
    const auto a = pattern(100, 1);
    const auto b = pattern(4096, 2);
    std::copy(a.begin(), a.end(), bufs.data());
    std::copy(b.begin(), b.end(), bufs.data() + 4096);
    start_tx(nhi, 2, descs.iova(), 4);
    post_desc(desc_at(descs, 0), bufs.iova(), tx_ctl(100, 3, 4));
    post_desc(desc_at(descs, 1), bufs.iova_at(4096), tx_ctl(4096, 1, 2, true));  // length 0

    tx_doorbell(nhi, 2, 2);
    REQUIRE(fab.frames.size() == 2);
    CHECK(fab.frames[0].from == &nhi);
    CHECK(fab.frames[0].ring == 2);
    CHECK(fab.frames[0].sof == 3);
    CHECK(fab.frames[0].eof == 4);
    CHECK(fab.frames[0].data == a);
    CHECK(fab.frames[1].data == b);  // length field 0 means 4096 bytes
    CHECK(fab.frames[1].sof == 1);
    CHECK(load_ctl(desc_at(descs, 0)) == (tx_ctl(100, 3, 4) | DESC_DONE::make(1)));
    CHECK(load_ctl(desc_at(descs, 1)) == (tx_ctl(4096, 1, 2, true) | DESC_DONE::make(1)));
    CHECK(tx_hw_index(nhi, 2) == 2);
    const auto c = nhi.counters();
    CHECK(c.tx_frames == 2);
    CHECK(c.tx_bytes == 4196);
    CHECK(c.doorbells == 1);
    nhi.attach(nullptr);
}

TEST_CASE("TX: a descriptor without POSTED stops the engine there (ref §12.3)", "[emu][dma][tx]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    start_tx(nhi, 1, descs.iova(), 8);
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(10, 0, 0));
    post_desc(desc_at(descs, 1), buf.iova(), tx_ctl(10, 0, 0) & ~DESC_POSTED::kMask);
    post_desc(desc_at(descs, 2), buf.iova(), tx_ctl(10, 0, 0));
    tx_doorbell(nhi, 1, 3);
    CHECK(tx_hw_index(nhi, 1) == 1);
    CHECK(DESC_DONE::get(load_ctl(desc_at(descs, 1))) == 0);
    CHECK(DESC_DONE::get(load_ctl(desc_at(descs, 2))) == 0);
    CHECK(nhi.counters().tx_unposted_stops == 1);
    // poll() does not retry: only a doorbell tells the device to look again.
    post_desc(desc_at(descs, 1), buf.iova(), tx_ctl(10, 0, 0));
    nhi.poll();
    CHECK(tx_hw_index(nhi, 1) == 1);
    tx_doorbell(nhi, 1, 3);
    CHECK(tx_hw_index(nhi, 1) == 3);
    CHECK(nhi.counters().tx_no_fabric_drops == 3);
}

TEST_CASE("TX: a doorbell of more descriptors than a batch: all leave in order, kTxBatch at a time",
          "[emu][dma][tx][batch]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    constexpr unsigned kCount = 64;
    constexpr unsigned kFrames = tbv::emu::kTxBatch + 8;
    auto descs = make_region(nhi, kCount * sizeof(RingDesc), DmaAccess::read_write);
    auto bufs = make_region(nhi, kFrames * 4096, DmaAccess::read);
    BatchFabric fab(descs, kCount);
    nhi.attach(&fab);
    start_tx(nhi, 1, descs.iova(), kCount);
    for (unsigned i = 0; i < kFrames; ++i) {
        const auto p = pattern(100 + i, i);
        std::copy(p.begin(), p.end(), bufs.data() + std::size_t{i} * 4096);
        post_desc(desc_at(descs, i), bufs.iova_at(std::size_t{i} * 4096),
                  tx_ctl(100 + i, 1, 2, i == 3));
    }
    tx_doorbell(nhi, 1, kFrames);
    CHECK(fab.sizes == std::vector<std::size_t>{tbv::emu::kTxBatch, 8});
    CHECK(fab.singles == 0);
    CHECK_FALSE(fab.done_early);
    REQUIRE(fab.frames.size() == kFrames);
    for (unsigned i = 0; i < kFrames; ++i) {
        CHECK(fab.frames[i] == pattern(100 + i, i));
        CHECK(load_ctl(desc_at(descs, i)) == (tx_ctl(100 + i, 1, 2, i == 3) | DESC_DONE::make(1)));
    }
    CHECK(tx_hw_index(nhi, 1) == kFrames);
    const auto c = nhi.counters();
    CHECK(c.tx_frames == kFrames);
    CHECK(c.doorbells == 1);
    // The INTERRUPT descriptor raised the TX status once.
    const unsigned bit = irq_bit(IrqKind::tx, 1, 3);
    CHECK((nhi.read32(bitmap_reg(REG_RING_NOTIFY_BASE, bit)) & bitmap_mask(bit)) != 0);
    nhi.attach(nullptr);
}

TEST_CASE("TX: a fault inside a batch: the frames before it leave and complete, then the halt",
          "[emu][dma][tx][batch][iommu]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    constexpr unsigned kCount = 16;
    auto descs = make_region(nhi, kCount * sizeof(RingDesc), DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    BatchFabric fab(descs, kCount);
    nhi.attach(&fab);
    start_tx(nhi, 1, descs.iova(), kCount);
    const tbv::hw::Iova bogus = 0xdead0000;
    for (unsigned i = 0; i < 10; ++i) {
        post_desc(desc_at(descs, i), i == 5 ? bogus : buf.iova(), tx_ctl(64, 0, 0));
    }
    tx_doorbell(nhi, 1, 10);
    CHECK(fab.sizes == std::vector<std::size_t>{5});
    CHECK_FALSE(fab.done_early);
    for (unsigned i = 0; i < 10; ++i) {
        CHECK(DESC_DONE::get(load_ctl(desc_at(descs, i))) == (i < 5 ? 1u : 0u));
    }
    CHECK(tx_hw_index(nhi, 1) == 5);
    CHECK(nhi.ring_halted(true, 1));
    REQUIRE(nhi.faults().size() == 1);
    CHECK(nhi.faults()[0].iova == bogus);
    // An unposted descriptor inside a batch ends it the same way, without a fault.
    auto descs2 = make_region(nhi, kCount * sizeof(RingDesc), DmaAccess::read_write);
    start_tx(nhi, 2, descs2.iova(), kCount);
    for (unsigned i = 0; i < 10; ++i) {
        post_desc(desc_at(descs2, i), buf.iova(),
                  i == 7 ? tx_ctl(64, 0, 0) & ~DESC_POSTED::kMask : tx_ctl(64, 0, 0));
    }
    tx_doorbell(nhi, 2, 10);
    CHECK(tx_hw_index(nhi, 2) == 7);
    CHECK(nhi.counters().tx_unposted_stops == 1);
    CHECK(nhi.counters().tx_frames == 5 + 7);
    nhi.attach(nullptr);
}

TEST_CASE("TX raw mode: one packet per descriptor, over 256 bytes is dropped (ref §3)",
          "[emu][dma][tx][raw]") {
    EmuNhi nhi;
    RecordingFabric fab;
    nhi.attach(&fab);
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    start_tx(nhi, 0, descs.iova(), 4, /*raw=*/true);
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(256, 5, 5));
    post_desc(desc_at(descs, 1), buf.iova(), tx_ctl(300, 5, 5));
    tx_doorbell(nhi, 0, 2);
    REQUIRE(fab.frames.size() == 1);
    CHECK(fab.frames[0].data.size() == 256);
    CHECK(DESC_DONE::get(load_ctl(desc_at(descs, 1))) == 1);  // completed, not wedged
    CHECK(tx_hw_index(nhi, 0) == 2);
    CHECK(nhi.counters().tx_raw_oversize_drops == 1);
    nhi.attach(nullptr);
}

TEST_CASE("no DMA while bus mastering is off; poll() runs the held doorbell (ref §12.1)",
          "[emu][dma][busmaster]") {
    EmuNhi nhi;
    RecordingFabric fab;
    nhi.attach(&fab);
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read_write, 0x77);
    auto rdescs = make_region(nhi, 4096, DmaAccess::read_write);
    auto rbuf = make_region(nhi, 4096, DmaAccess::read_write, 0x66);
    start_tx(nhi, 1, descs.iova(), 4);
    start_rx(nhi, 1, rdescs.iova(), 4);
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(64, 0, 0));
    post_desc(desc_at(rdescs, 0), rbuf.iova(), rx_ctl());
    rx_publish(nhi, 1, 1);

    tx_doorbell(nhi, 1, 1);
    CHECK(fab.frames.empty());
    CHECK(load_ctl(desc_at(descs, 0)) == tx_ctl(64, 0, 0));
    CHECK(tx_hw_index(nhi, 1) == 0);
    CHECK(nhi.counters().tx_bus_master_stalls == 1);
    const auto data = pattern(64, 9);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::no_bus_master);
    CHECK(nhi.counters().rx_no_bus_master_drops == 1);
    CHECK(all_bytes(rbuf.data(), 4096, std::byte{0x66}));
    CHECK(load_ctl(desc_at(rdescs, 0)) == rx_ctl());

    nhi.poll();  // still off: nothing
    CHECK(fab.frames.empty());
    REQUIRE(nhi.set_bus_master(true));
    nhi.poll();
    CHECK(fab.frames.size() == 1);
    CHECK(DESC_DONE::get(load_ctl(desc_at(descs, 0))) == 1);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::delivered);
    nhi.attach(nullptr);
}

// ---- RX -------------------------------------------------------------------------------------

TEST_CASE("RX write-back: length, PDFs, DONE, INTERRUPT as posted, bit 22 cleared (ref §12.3)",
          "[emu][dma][rx]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto bufs = make_region(nhi, 3 * 4096, DmaAccess::write, 0xee);
    start_rx(nhi, 1, descs.iova(), 4);
    post_desc(desc_at(descs, 0), bufs.iova(), rx_ctl(true));
    post_desc(desc_at(descs, 1), bufs.iova_at(4096), rx_ctl(false));
    post_desc(desc_at(descs, 2), bufs.iova_at(8192), rx_ctl(false));
    rx_publish(nhi, 1, 3);

    const auto a = pattern(1500, 1);
    const auto full = pattern(4096, 2);
    REQUIRE(nhi.receive(1, frame_of(a, 1, 2)) == RxResult::delivered);
    REQUIRE(nhi.receive(1, frame_of(full, 3, 4)) == RxResult::delivered);
    REQUIRE(nhi.receive(1, frame_of(a, 1, 2, /*crc=*/true)) == RxResult::delivered);

    CHECK(load_ctl(desc_at(descs, 0)) ==
          (DESC_LENGTH::make(1500) | DESC_SOF_PDF::make(1) | DESC_EOF_PDF::make(2) |
           DESC_DONE::make(1) | DESC_INTERRUPT::make(1)));
    CHECK(same_bytes(bufs.data(), a));
    CHECK(bufs.data()[1500] == std::byte{0xee});  // nothing written past the frame
    // 4096 bytes: length field 0, no overrun.
    CHECK(load_ctl(desc_at(descs, 1)) ==
          (DESC_SOF_PDF::make(3) | DESC_EOF_PDF::make(4) | DESC_DONE::make(1)));
    CHECK(same_bytes(bufs.data() + 4096, full));
    CHECK(DESC_CRC_ERROR::get(load_ctl(desc_at(descs, 2))) == 1);
    CHECK(rx_hw_index(nhi, 1) == 3);
    const auto c = nhi.counters();
    CHECK(c.rx_frames == 3);
    CHECK(c.rx_bytes == 1500 + 4096 + 1500);
    CHECK(c.rx_crc_errors == 1);
    CHECK(c.rx_overruns == 0);
}

TEST_CASE("RX overrun: a frame larger than the buffer is truncated and flagged (ref §12.3)",
          "[emu][dma][rx]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write, 0xab);
    start_rx(nhi, 1, descs.iova(), 4, RxStart{.buf_size = 1024});
    post_desc(desc_at(descs, 0), buf.iova(), rx_ctl());
    rx_publish(nhi, 1, 1);
    const auto big = pattern(4096, 3);
    REQUIRE(nhi.receive(1, frame_of(big)) == RxResult::delivered);
    const std::uint32_t ctl = load_ctl(desc_at(descs, 0));
    CHECK(DESC_LENGTH::get(ctl) == 1024);
    CHECK(DESC_BUFFER_OVERRUN::get(ctl) == 1);
    CHECK(DESC_DONE::get(ctl) == 1);
    CHECK(std::equal(big.begin(), big.begin() + 1024, buf.data()));
    CHECK(all_bytes(buf.data() + 1024, 4096 - 1024, std::byte{0xab}));
    CHECK(nhi.counters().rx_overruns == 1);
}

TEST_CASE("RX raw mode: SOF 0, EOF = PDF, masks and CRC flag ignored (ref §3, §12.3)",
          "[emu][dma][rx][raw]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write);
    start_rx(nhi, 0, descs.iova(), 4,
             RxStart{.buf_size = 256, .sof_mask = 0, .eof_mask = 0, .raw = true});
    post_desc(desc_at(descs, 0), buf.iova(), rx_ctl());
    post_desc(desc_at(descs, 1), buf.iova(), rx_ctl());
    rx_publish(nhi, 0, 2);
    const auto pkt = pattern(20, 4);
    REQUIRE(nhi.receive(0, frame_of(pkt, 5, 5, /*crc=*/true)) == RxResult::delivered);
    CHECK(load_ctl(desc_at(descs, 0)) ==
          (DESC_LENGTH::make(20) | DESC_EOF_PDF::make(5) | DESC_DONE::make(1)));
    // Raw buffers are 256 bytes: a longer packet is an overrun.
    const auto longer = pattern(300, 5);
    REQUIRE(nhi.receive(0, frame_of(longer, 3, 3)) == RxResult::delivered);
    CHECK(DESC_LENGTH::get(load_ctl(desc_at(descs, 1))) == 256);
    CHECK(DESC_BUFFER_OVERRUN::get(load_ctl(desc_at(descs, 1))) == 1);
}

TEST_CASE("RX frame mode drops frames whose PDFs are outside the masks (ref §2.3)",
          "[emu][dma][rx]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write);
    start_rx(nhi, 1, descs.iova(), 4, RxStart{.sof_mask = 1u << 1, .eof_mask = 1u << 2});
    post_desc(desc_at(descs, 0), buf.iova(), rx_ctl());
    rx_publish(nhi, 1, 1);
    const auto data = pattern(64, 6);
    CHECK(nhi.receive(1, frame_of(data, 3, 2)) == RxResult::pdf_mismatch);
    CHECK(nhi.receive(1, frame_of(data, 1, 1)) == RxResult::pdf_mismatch);
    CHECK(nhi.receive(1, frame_of(data, 1, 16)) == RxResult::pdf_mismatch);
    CHECK(nhi.counters().rx_pdf_drops == 3);
    CHECK(rx_hw_index(nhi, 1) == 0);  // no descriptor was used
    CHECK(nhi.receive(1, frame_of(data, 1, 2)) == RxResult::delivered);
    CHECK(nhi.receive(1, frame_of({}, 1, 2)) == RxResult::pdf_mismatch);
    CHECK(nhi.counters().rx_malformed_drops == 1);
}

TEST_CASE("RX with no posted descriptor drops and flags overflow (ref §4.5)", "[emu][dma][rx]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    nhi.write32(REG_DMA_MISC, DMA_MISC_DISABLE_AUTO_CLEAR::make(1));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write, 0x11);
    start_rx(nhi, 1, descs.iova(), 4);
    const auto data = pattern(64, 7);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::no_descriptor);  // nothing published
    // Published but not POSTED: also no buffer.
    post_desc(desc_at(descs, 0), buf.iova(), 0);
    rx_publish(nhi, 1, 1);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::no_descriptor);
    CHECK(all_bytes(buf.data(), 4096, std::byte{0x11}));
    CHECK(nhi.counters().rx_overflow_drops == 2);
    const unsigned bit = irq_bit(IrqKind::rx_overflow, 1, 3);
    CHECK((nhi.read32(bitmap_reg(REG_RING_NOTIFY_BASE, bit)) & bitmap_mask(bit)) != 0);
    // A disabled ring is refused, not overflowed.
    CHECK(nhi.receive(2, frame_of(data)) == RxResult::ring_disabled);
}

TEST_CASE("receive_batch: each frame as receive() would take it, one lock for the batch",
          "[emu][dma][rx][batch]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto bufs = make_region(nhi, 4 * 4096, DmaAccess::write);
    start_rx(nhi, 1, descs.iova(), 4, RxStart{.sof_mask = 1u << 1, .eof_mask = 1u << 2});
    for (unsigned i = 0; i < 3; ++i) {
        post_desc(desc_at(descs, i), bufs.iova_at(std::size_t{i} * 4096), rx_ctl());
    }
    rx_publish(nhi, 1, 3);
    std::vector<std::vector<std::byte>> data;
    for (unsigned i = 0; i < 5; ++i) {
        data.push_back(pattern(64 + i, 20 + i));
    }
    // Frame 1 has the wrong PDFs; frames 0, 2, 3 take the three posted buffers; 4 overflows.
    const std::vector<FrameView> batch{frame_of(data[0], 1, 2), frame_of(data[1], 3, 3),
                                       frame_of(data[2], 1, 2), frame_of(data[3], 1, 2, true),
                                       frame_of(data[4], 1, 2)};
    CHECK(nhi.receive_batch(1, batch) == 3);
    CHECK(same_bytes(bufs.data(), data[0]));
    CHECK(same_bytes(bufs.data() + 4096, data[2]));
    CHECK(same_bytes(bufs.data() + 8192, data[3]));
    CHECK(DESC_CRC_ERROR::get(load_ctl(desc_at(descs, 2))) == 1);
    CHECK(rx_hw_index(nhi, 1) == 3);
    const auto c = nhi.counters();
    CHECK(c.rx_frames == 3);
    CHECK(c.rx_pdf_drops == 1);
    CHECK(c.rx_overflow_drops == 1);
    CHECK(c.rx_crc_errors == 1);
    // Out-of-range and disabled rings refuse the whole batch.
    CHECK(nhi.receive_batch(7, batch) == 0);
    CHECK(nhi.receive_batch(2, batch) == 0);
    CHECK(nhi.counters().rx_disabled_drops == 10);
}

// ---- IOMMU faults ---------------------------------------------------------------------------

TEST_CASE("TX from an unmapped IOVA faults and halts only that ring (ref §12.3)",
          "[emu][dma][iommu]") {
    EmuNhi nhi;
    RecordingFabric fab;
    nhi.attach(&fab);
    REQUIRE(nhi.set_bus_master(true));
    auto descs1 = make_region(nhi, 4096, DmaAccess::read_write);
    auto descs2 = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    start_tx(nhi, 1, descs1.iova(), 4);
    start_tx(nhi, 2, descs2.iova(), 4);
    const tbv::hw::Iova bogus = 0xdead0000;
    post_desc(desc_at(descs1, 0), bogus, tx_ctl(64, 0, 0));
    post_desc(desc_at(descs1, 1), buf.iova(), tx_ctl(64, 0, 0));
    tx_doorbell(nhi, 1, 2);

    CHECK(fab.frames.empty());
    CHECK(nhi.ring_halted(true, 1));
    CHECK(DESC_DONE::get(load_ctl(desc_at(descs1, 0))) == 0);
    CHECK(tx_hw_index(nhi, 1) == 0);
    const auto faults = nhi.faults();
    REQUIRE(faults.size() == 1);
    CHECK(faults[0].iova == bogus);
    CHECK(faults[0].len == 64);
    CHECK(faults[0].access == DmaAccess::read);
    CHECK(faults[0].tx);
    CHECK(faults[0].ring == 1);

    // Another doorbell on the halted ring does nothing; ring 2 is unaffected.
    tx_doorbell(nhi, 1, 2);
    CHECK(nhi.counters().dma_faults == 1);
    post_desc(desc_at(descs2, 0), buf.iova(), tx_ctl(64, 0, 0));
    tx_doorbell(nhi, 2, 1);
    CHECK(fab.frames.size() == 1);

    // Disable + re-enable clears the halt.
    stop_ring(nhi, true, 1);
    CHECK_FALSE(nhi.ring_halted(true, 1));
    nhi.write32(tx_ring_reg(1) + RING_INDEX, 0);
    start_tx(nhi, 1, descs1.iova(), 4);
    post_desc(desc_at(descs1, 0), buf.iova(), tx_ctl(64, 0, 0));
    tx_doorbell(nhi, 1, 1);
    CHECK(fab.frames.size() == 2);
    nhi.attach(nullptr);
}

TEST_CASE("RX into a read-only mapping faults, leaves memory untouched, halts the ring",
          "[emu][dma][iommu]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto ro = make_region(nhi, 4096, DmaAccess::read, 0x3c);
    auto rw = make_region(nhi, 4096, DmaAccess::write, 0x3c);
    auto descs2 = make_region(nhi, 4096, DmaAccess::read_write);
    start_rx(nhi, 1, descs.iova(), 4);
    start_rx(nhi, 2, descs2.iova(), 4);
    post_desc(desc_at(descs, 0), ro.iova(), rx_ctl());
    post_desc(desc_at(descs, 1), rw.iova(), rx_ctl());
    rx_publish(nhi, 1, 2);
    post_desc(desc_at(descs2, 0), rw.iova(), rx_ctl());
    rx_publish(nhi, 2, 1);

    const auto data = pattern(512, 8);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::dma_fault);
    CHECK(all_bytes(ro.data(), 4096, std::byte{0x3c}));
    CHECK(load_ctl(desc_at(descs, 0)) == rx_ctl());
    CHECK(nhi.ring_halted(false, 1));
    const auto f = nhi.faults();
    REQUIRE(f.size() == 1);
    CHECK(f[0].iova == ro.iova());
    CHECK(f[0].len == 512);
    CHECK(f[0].access == DmaAccess::write);
    CHECK_FALSE(f[0].tx);
    CHECK(f[0].ring == 1);
    // Halted: the next frame is refused even though a good buffer is posted.
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::ring_disabled);
    CHECK(all_bytes(rw.data(), 4096, std::byte{0x3c}));
    // Other rings keep working.
    CHECK(nhi.receive(2, frame_of(data)) == RxResult::delivered);
    CHECK(same_bytes(rw.data(), data));
}

TEST_CASE("a descriptor array the device may not write faults on write-back", "[emu][dma][iommu]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read);
    auto buf = make_region(nhi, 4096, DmaAccess::read);
    start_tx(nhi, 1, descs.iova(), 4);
    post_desc(desc_at(descs, 0), buf.iova(), tx_ctl(64, 0, 0));
    tx_doorbell(nhi, 1, 1);
    CHECK(load_ctl(desc_at(descs, 0)) == tx_ctl(64, 0, 0));
    CHECK(nhi.ring_halted(true, 1));
    REQUIRE(nhi.faults().size() == 1);
    CHECK(nhi.faults()[0].access == DmaAccess::write);
    CHECK(nhi.faults()[0].iova == descs.iova() + 8);
}

TEST_CASE("a stale IOVA faults after dma_unmap", "[emu][dma][iommu]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::write);
    start_rx(nhi, 1, descs.iova(), 4);
    const auto stale = buf.iova();
    REQUIRE(buf.release());
    post_desc(desc_at(descs, 0), stale, rx_ctl());
    rx_publish(nhi, 1, 1);
    const auto data = pattern(64, 10);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::dma_fault);
    CHECK(nhi.faults().at(0).iova == stale);
}
