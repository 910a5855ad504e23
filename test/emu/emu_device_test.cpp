// SPDX-License-Identifier: Apache-2.0
// EmuNhi as a layer-0 Device: the shared conformance check, plus the PCI facts of ref §12.1 and
// surprise removal.
#include <memory>

#include "device_conformance.hpp"
#include "emu_fixture.hpp"

using namespace tbv::emu_test;

TEST_CASE("EmuNhi passes the layer-0 device conformance check", "[emu][device]") {
    tbv::test::check_device_conformance(
        [] { return std::make_unique<EmuNhi>(); },
        REG_INMAIL_DATA);  // a plain data register: ignored unaligned writes must not reach it
}

TEST_CASE("EmuNhi conformance holds for an Intel-like configuration", "[emu][device]") {
    tbv::test::check_device_conformance([] {
        NhiConfig c;
        c.vendor = 0x8086;
        c.device = 0x9a1b;
        c.hop_count = 12;
        c.msix_vectors = 4;
        return std::make_unique<EmuNhi>(c);
    });
}

TEST_CASE("EmuNhi PCI identity is a USB4 host interface (ref §12.1)", "[emu][device]") {
    EmuNhi nhi;
    const auto id = nhi.identity();
    CHECK(id.vendor == 0x1022);
    CHECK(id.device == 0x1668);
    CHECK(id.class_code == 0x0c0340u);
    CHECK(nhi.bar0_size() == kBar0Size);
    CHECK(nhi.irq_vector_count() == 16);
    CHECK(nhi.name() == "emu0");
    CHECK_FALSE(nhi.bus_master());  // power-on: off until the driver enables it
}

TEST_CASE("EmuNhi IOVAs are never the host virtual address", "[emu][device][iommu]") {
    EmuNhi nhi;
    auto r = make_region(nhi, 4096, DmaAccess::read_write);
    CHECK(r.iova() != reinterpret_cast<std::uintptr_t>(r.data()));
    CHECK(r.iova() >= tbv::emu::Iommu::kIovaBase);
}

TEST_CASE("surprise_remove: all-ones everywhere, writes ignored, no DMA, no irqs",
          "[emu][device]") {
    EmuNhi nhi;
    REQUIRE(nhi.set_bus_master(true));
    REQUIRE(nhi.enable_irqs(1));
    auto descs = make_region(nhi, 4096, DmaAccess::read_write);
    auto buf = make_region(nhi, 4096, DmaAccess::read_write, 0x5a);
    start_rx(nhi, 1, descs.iova(), 4);
    post_desc(desc_at(descs, 0), buf.iova(), rx_ctl(true));
    rx_publish(nhi, 1, 1);
    nhi.write32(REG_RING_INTERRUPT_BASE, ~0u);

    nhi.surprise_remove();
    for (std::uint32_t off : {REG_CAPS, REG_FW_STS, REG_DMA_MISC, rx_ring_reg(1) + RING_INDEX,
                              REG_RING_NOTIFY_BASE, 0u, 0x7fffcu}) {
        CHECK(nhi.read32(off) == 0xffffffffu);
    }
    const auto data = pattern(64, 1);
    CHECK(nhi.receive(1, frame_of(data)) == RxResult::ring_disabled);
    CHECK(load_ctl(desc_at(descs, 0)) == rx_ctl(true));  // descriptor untouched
    CHECK(buf.data()[0] == std::byte{0x5a});
    CHECK(take_irqs(nhi.irq_eventfd(0)) == 0);
    CHECK_FALSE(nhi.reset());
    CHECK_FALSE(nhi.set_bus_master(true));
    // The host can still tear its IOMMU mappings down (DmaRegion destructors below rely on it).
    CHECK(buf.release());
}
