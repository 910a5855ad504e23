// SPDX-License-Identifier: Apache-2.0
// Helpers for the emulator-model tests: the test itself plays the driver with raw register writes
// and hand-written descriptors in DmaRegion memory (deliberately not through src/nhi, so the model
// is pinned against the reference, not against our own driver).
#pragma once

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "emu/nhi.hpp"
#include "hw/barrier.hpp"
#include "hw/dma_region.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::emu_test {

using namespace tbv::hw::nhi;
using tbv::emu::EmuNhi;
using tbv::emu::FrameView;
using tbv::emu::NhiConfig;
using tbv::emu::PairFabric;
using tbv::emu::RxResult;
using tbv::hw::DmaAccess;
using tbv::hw::DmaRegion;

inline DmaRegion make_region(hw::Device& dev, std::size_t len, DmaAccess access,
                             std::uint8_t fill = 0) {
    auto r = DmaRegion::create(dev, len, access, fill);
    REQUIRE(r);
    return std::move(*r);
}

inline RingDesc& desc_at(DmaRegion& ring, unsigned i) {
    return reinterpret_cast<RingDesc*>(ring.data())[i];
}

/// ctl as the driver sees it: acquire, pairing with the model's release write-back.
inline std::uint32_t load_ctl(RingDesc& d) {
    return std::atomic_ref<std::uint32_t>(d.ctl).load(std::memory_order_acquire);
}

/// Fills a descriptor the way a driver posts it (ref §4.4).
inline void post_desc(RingDesc& d, hw::Iova buf, std::uint32_t ctl) {
    d.phys = buf;
    d.time = 0;
    std::atomic_ref<std::uint32_t>(d.ctl).store(ctl, std::memory_order_release);
}

/// TX ctl: length (4096 → 0), PDFs, POSTED, optional INTERRUPT.
inline std::uint32_t tx_ctl(std::uint32_t len, unsigned sof, unsigned eof, bool irq = false) {
    return DESC_LENGTH::make(len) | DESC_SOF_PDF::make(sof) | DESC_EOF_PDF::make(eof) |
           DESC_POSTED::make(1) | (irq ? DESC_INTERRUPT::make(1) : 0u);
}
inline std::uint32_t rx_ctl(bool irq = false) {
    return DESC_POSTED::make(1) | (irq ? DESC_INTERRUPT::make(1) : 0u);
}

/// Ring start in the order of ref §4.2.
inline void start_tx(EmuNhi& nhi, unsigned ring, hw::Iova base, unsigned count, bool raw = false) {
    nhi.write32(tx_ring_reg(ring) + RING_BASE_LO, static_cast<std::uint32_t>(base));
    nhi.write32(tx_ring_reg(ring) + RING_BASE_HI, static_cast<std::uint32_t>(base >> 32));
    nhi.write32(tx_ring_reg(ring) + RING_SIZE, count);
    nhi.write32(tx_options_reg(ring) + OPTS_PDF, 0);
    nhi.write32(tx_options_reg(ring) + OPTS_FLAGS,
                RING_FLAG_ENABLE::make(1) | (raw ? RING_FLAG_RAW::make(1) : 0u));
}

struct RxStart {
    std::uint32_t buf_size = 0;  ///< register value: 0 = 4096
    std::uint16_t sof_mask = 0xffff;
    std::uint16_t eof_mask = 0xffff;
    bool raw = false;
};

inline void start_rx(EmuNhi& nhi, unsigned ring, hw::Iova base, unsigned count, RxStart s = {}) {
    nhi.write32(rx_ring_reg(ring) + RING_BASE_LO, static_cast<std::uint32_t>(base));
    nhi.write32(rx_ring_reg(ring) + RING_BASE_HI, static_cast<std::uint32_t>(base >> 32));
    nhi.write32(rx_ring_reg(ring) + RING_SIZE,
                RING_SIZE_COUNT::make(count) | RX_SIZE_BUFFER::make(s.buf_size));
    nhi.write32(rx_options_reg(ring) + OPTS_PDF,
                RX_PDF_SOF_MASK::make(s.sof_mask) | RX_PDF_EOF_MASK::make(s.eof_mask));
    nhi.write32(rx_options_reg(ring) + OPTS_FLAGS,
                RING_FLAG_ENABLE::make(1) | (s.raw ? RING_FLAG_RAW::make(1) : 0u));
}

inline void stop_ring(EmuNhi& nhi, bool tx, unsigned ring) {
    nhi.write32((tx ? tx_options_reg(ring) : rx_options_reg(ring)) + OPTS_FLAGS, 0);
}

inline void tx_doorbell(EmuNhi& nhi, unsigned ring, unsigned prod) {
    nhi.write32(tx_ring_reg(ring) + RING_INDEX, TX_INDEX_SW_PROD::make(prod));
}
inline void rx_publish(EmuNhi& nhi, unsigned ring, unsigned prod) {
    nhi.write32(rx_ring_reg(ring) + RING_INDEX, RX_INDEX_SW_PROD::make(prod));
}
inline std::uint32_t tx_hw_index(EmuNhi& nhi, unsigned ring) {
    return TX_INDEX_HW_CONS::get(nhi.read32(tx_ring_reg(ring) + RING_INDEX));
}
inline std::uint32_t rx_hw_index(EmuNhi& nhi, unsigned ring) {
    return RX_INDEX_HW_CONS::get(nhi.read32(rx_ring_reg(ring) + RING_INDEX));
}

/// Drains an eventfd without blocking: the number of messages since the last drain.
inline std::uint64_t take_irqs(int fd) {
    std::uint64_t n = 0;
    if (::read(fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) {
        REQUIRE(errno == EAGAIN);
        return 0;
    }
    return n;
}

/// Waits for an eventfd to become readable. The timeout is a hang guard, never a speed claim.
inline bool wait_irq(int fd, int timeout_ms = 10'000) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        v[i] = static_cast<std::byte>((i * 31 + seed * 7 + 1) & 0xff);
    }
    return v;
}

inline FrameView frame_of(std::span<const std::byte> data, unsigned sof = 0, unsigned eof = 0,
                          bool crc = false) {
    return FrameView{sof, eof, data, crc};
}

/// An NHI with bus mastering on, ready for raw register programming.
inline NhiConfig cfg_with(std::uint32_t hops, std::uint8_t version = 0x20) {
    NhiConfig c;
    c.hop_count = hops;
    c.version = version;
    return c;
}

}  // namespace tbv::emu_test
