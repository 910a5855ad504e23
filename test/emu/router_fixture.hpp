// SPDX-License-Identifier: Apache-2.0
// Helpers for the router and cable tests: the test plays the connection manager through the real
// ring driver (nhi::Nhi + nhi::ControlRing on ring 0), building raw control packets from the
// fields in hw/usb4_regs.hpp, so the router model is pinned against the reference and driven
// exactly as src/usb4 will drive it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "catch.hpp"
#include "emu/host.hpp"
#include "hw/usb4_regs.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/frame_pool.hpp"
#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"

namespace tbv::router_test {

using namespace hw::usb4;
using namespace std::chrono_literals;

template <typename T>
T take(Result<T> r) {
    INFO(r.error().message());
    REQUIRE(r);
    return std::move(*r);
}

inline std::uint32_t addr(Space space, unsigned port, unsigned offset, unsigned len,
                          unsigned seq = 0) {
    return ADDR_OFFSET::make(offset) | ADDR_LENGTH::make(len) | ADDR_PORT::make(port) |
           ADDR_SPACE::make(static_cast<std::uint32_t>(space)) | ADDR_SEQ::make(seq);
}

/// The full 64-bit route of a received header, bit 63 (DW0 bit 31) included.
inline std::uint64_t rx_route(std::uint32_t dw0, std::uint32_t dw1) {
    return std::uint64_t{dw0} << 32 | dw1;
}

/// One host's connection-manager side: the driver on ring 0 of one NHI.
struct Cm {
    explicit Cm(emu::EmuNhi& dev, const nhi::NhiOptions& opts = {})
        : nhi(take(nhi::Nhi::open(dev, opts))), ctl(take(nhi::ControlRing::create(*nhi))) {}

    void send(Pdf pdf, const std::vector<std::uint32_t>& dw) {
        REQUIRE(ctl->send(static_cast<unsigned>(pdf), dw));
    }
    /// Polls (which also runs the router's timers) until a packet arrives; bounded.
    std::optional<nhi::ControlPacket> recv(unsigned polls = 200) {
        for (unsigned i = 0; i < polls; ++i) {
            if (auto p = ctl->receive()) {
                return p;
            }
        }
        return std::nullopt;
    }
    /// Receives the next packet, which must be of type `pdf`.
    nhi::ControlPacket expect(Pdf pdf) {
        auto p = recv();
        REQUIRE(p);
        INFO("pdf " << unsigned{p->pdf});
        REQUIRE(p->pdf == static_cast<unsigned>(pdf));
        return *p;
    }
    /// Nothing pending on ring 0.
    bool quiet() { return !recv(20); }

    void read_req(std::uint64_t route, Space space, unsigned port, unsigned off, unsigned len,
                  unsigned seq = 0) {
        const auto h = route_header(route);
        send(Pdf::read, {h[0], h[1], addr(space, port, off, len, seq)});
    }
    /// A route-0 read that must succeed; returns the data dwords.
    std::vector<std::uint32_t> read(Space space, unsigned port, unsigned off, unsigned len) {
        read_req(0, space, port, off, len);
        const auto p = expect(Pdf::write);
        REQUIRE(p.dword_count == 3 + len);
        CHECK(HDR_TAG::get(p.dwords[0]) == kHdrResponseTag);
        CHECK(ADDR_OFFSET::get(p.dwords[2]) == off);
        CHECK(ADDR_LENGTH::get(p.dwords[2]) == len);
        CHECK(ADDR_SPACE::get(p.dwords[2]) == static_cast<std::uint32_t>(space));
        return {p.dwords.begin() + 3, p.dwords.begin() + 3 + len};
    }
    std::uint32_t read1(Space space, unsigned port, unsigned off) {
        return read(space, port, off, 1)[0];
    }
    void write(Space space, unsigned port, unsigned off, const std::vector<std::uint32_t>& data,
               std::uint64_t route = 0) {
        const auto h = route_header(route);
        std::vector<std::uint32_t> dw{h[0], h[1],
                                      addr(space, port, off, static_cast<unsigned>(data.size()))};
        dw.insert(dw.end(), data.begin(), data.end());
        send(Pdf::write, dw);
        const auto p = expect(Pdf::read);
        REQUIRE(p.dword_count == 3);
        CHECK(ADDR_LENGTH::get(p.dwords[2]) == data.size());
    }
    void write1(Space space, unsigned port, unsigned off, std::uint32_t v) {
        write(space, port, off, {v});
    }
    /// Read-modify-write of bits `mask` to `value`.
    void rmw(Space space, unsigned port, unsigned off, std::uint32_t mask, std::uint32_t value) {
        const std::uint32_t v = read1(space, port, off);
        write1(space, port, off, (v & ~mask) | (value & mask));
    }
    /// Error code of the next packet, which must be a PDF 3.
    unsigned expect_error(unsigned* port = nullptr) {
        const auto p = expect(Pdf::error);
        REQUIRE(p.dword_count == 3);
        if (port != nullptr) {
            *port = ERR_PORT::get(p.dwords[2]);
        }
        return ERR_CODE::get(p.dwords[2]);
    }
    void ack(unsigned adapter, bool unplug, std::uint64_t route = 0) {
        const auto h = route_header(route);
        send(Pdf::error,
             {h[0], h[1],
              ERR_CODE::make(static_cast<std::uint32_t>(ErrorCode::ack_plug_event)) |
                  ERR_PORT::make(adapter) | ERR_PG::make(unplug ? kPgUnplug : kPgPlug)});
    }
    /// Hot plug on and adapter unlocked for every lane adapter (ref §7.2 steps 8, §7.3 step 3).
    void enable_lanes(unsigned first_lane, unsigned count) {
        for (unsigned a = first_lane; a < first_lane + count; ++a) {
            rmw(Space::adapter, a, ADP_CS_5, ADP5_DHP::kMask, 0);
            rmw(Space::adapter, a, ADP_CS_4, ADP4_LCK::kMask, 0);
        }
    }

    std::unique_ptr<nhi::Nhi> nhi;
    std::unique_ptr<nhi::ControlRing> ctl;
};

/// Path entry dwords as Linux programs a DMA path (ref §9.2).
inline std::vector<std::uint32_t> path_entry(unsigned out_adapter, unsigned out_hop,
                                             unsigned credits, bool valid = true) {
    return {PATH0_OUT_HOP::make(out_hop) | PATH0_OUT_ADAPTER::make(out_adapter) |
                PATH0_CREDITS::make(credits) | PATH0_VALID::make(valid ? 1 : 0),
            PATH1_WEIGHT::make(1) | PATH1_PRIORITY::make(5) | PATH1_COUNTER::make(0x7ff) |
                PATH1_IFC::make(1)};
}

/// A data ring pair on one NHI: TX ring `ring` and RX ring `ring` with posted buffers.
struct Rail {
    /// `rx_irq_vector`: the RX ring's interrupt goes to that vector, masked (RingConfig::
    /// irq_masked) until the test unmasks it.
    Rail(nhi::Nhi& n, unsigned ring, unsigned size = 16,
         std::optional<unsigned> rx_irq_vector = std::nullopt)
        : tx_pool(take(nhi::FramePool::create(n.device(), size, 4096, hw::DmaAccess::read))),
          rx_pool(take(nhi::FramePool::create(n.device(), size, 4096, hw::DmaAccess::write))) {
        nhi::RingConfig cfg;
        cfg.ring = ring;
        cfg.size = size;
        cfg.rx_sof_mask = 1u << 1;
        cfg.rx_eof_mask = 1u << 2;
        tx = take(nhi::TxRing::create(n, cfg));
        cfg.irq_vector = rx_irq_vector;
        cfg.irq_masked = true;
        rx = take(nhi::RxRing::create(n, cfg));
        for (unsigned i = 0; i + 1 < size; ++i) {
            const nhi::RxBuffer b{rx_pool.iova(i), i};
            REQUIRE(rx->post({&b, 1}).posted == 1);
        }
    }
    void send(std::size_t len, unsigned seed) {
        std::array<std::uint64_t, 16> done{};
        while (tx->reap(done) > 0) {
        }
        const unsigned slot = next_++ % tx_pool.count();
        auto* p = tx_pool.data(slot);
        for (std::size_t i = 0; i < len; ++i) {
            p[i] = static_cast<std::byte>((seed * 31 + i * 7) & 0xff);
        }
        const nhi::TxFrame f{
            tx_pool.iova(slot), static_cast<std::uint32_t>(len), 1, 2, false, slot};
        REQUIRE(tx->post({&f, 1}).posted == 1);
    }
    /// Receives one frame if any and checks its contents.
    std::optional<bool> recv(std::size_t len, unsigned seed) {
        nhi::RxCompletion c;
        if (rx->poll({&c, 1}) != 1) {
            return std::nullopt;
        }
        const auto buf = static_cast<unsigned>(c.cookie);
        bool good =
            c.length == len && !c.crc_error && !c.overrun && c.sof_pdf == 1 && c.eof_pdf == 2;
        const auto* p = rx_pool.data(buf);
        for (std::size_t i = 0; good && i < len; ++i) {
            good = p[i] == static_cast<std::byte>((seed * 31 + i * 7) & 0xff);
        }
        const nhi::RxBuffer b{rx_pool.iova(buf), buf};
        REQUIRE(rx->post({&b, 1}).posted == 1);
        return good;
    }
    unsigned count() {
        unsigned n = 0;
        nhi::RxCompletion c;
        while (rx->poll({&c, 1}) == 1) {
            const auto buf = static_cast<unsigned>(c.cookie);
            const nhi::RxBuffer b{rx_pool.iova(buf), buf};
            REQUIRE(rx->post({&b, 1}).posted == 1);
            ++n;
        }
        return n;
    }

    nhi::FramePool tx_pool;
    nhi::FramePool rx_pool;
    std::unique_ptr<nhi::TxRing> tx;
    std::unique_ptr<nhi::RxRing> rx;
    unsigned next_ = 0;
};

}  // namespace tbv::router_test
