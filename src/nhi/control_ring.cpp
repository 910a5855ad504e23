// SPDX-License-Identifier: Apache-2.0
#include "nhi/control_ring.hpp"

#include <cstring>

#include "hw/nhi_regs.hpp"
#include "util/crc32c.hpp"
#include "util/endian.hpp"

namespace tbv::nhi {

using hw::nhi::kRawFrameSize;

namespace {
constexpr std::size_t kCrcBytes = 4;
}  // namespace

Result<std::unique_ptr<ControlRing>> ControlRing::create(Nhi& nhi, const ControlRingConfig& cfg) {
    auto tx_bufs = FramePool::create(nhi.device(), cfg.tx_size, kRawFrameSize, hw::DmaAccess::read);
    if (!tx_bufs) {
        return Failure{tx_bufs.error()};
    }
    auto rx_bufs =
        FramePool::create(nhi.device(), cfg.rx_size, kRawFrameSize, hw::DmaAccess::write);
    if (!rx_bufs) {
        return Failure{rx_bufs.error()};
    }
    std::unique_ptr<ControlRing> cr(new ControlRing(std::move(*tx_bufs), std::move(*rx_bufs)));

    // ref §5.1: TX ring started before RX; RX masks 0xffff/0xffff (ignored in raw mode anyway).
    RingConfig tx_cfg;
    tx_cfg.ring = 0;
    tx_cfg.size = cfg.tx_size;
    tx_cfg.raw = true;
    auto tx = TxRing::create(nhi, tx_cfg);
    if (!tx) {
        return Failure{tx.error()};
    }
    RingConfig rx_cfg;
    rx_cfg.ring = 0;
    rx_cfg.size = cfg.rx_size;
    rx_cfg.raw = true;
    rx_cfg.rx_buffer_size = static_cast<std::uint32_t>(kRawFrameSize);
    rx_cfg.irq_vector = cfg.irq_vector;
    auto rx = RxRing::create(nhi, rx_cfg);
    if (!rx) {
        return Failure{rx.error()};
    }
    cr->tx_ = std::move(*tx);
    cr->rx_ = std::move(*rx);

    // Fill the RX ring (size - 1 usable slots); buffer i is cookie i.
    for (unsigned i = 0; i + 1 < cfg.rx_size; ++i) {
        const RxBuffer b{cr->rx_bufs_.iova(i), i};
        (void)cr->rx_->post({&b, 1});
    }
    return cr;
}

std::size_t ControlRing::encode(std::span<const std::uint32_t> dwords,
                                std::span<std::byte> out) noexcept {
    const std::size_t len = dwords.size() * 4 + kCrcBytes;
    if (dwords.empty() || dwords.size() > kMaxControlDwords || out.size() < len) {
        return 0;
    }
    for (std::size_t i = 0; i < dwords.size(); ++i) {
        util::store_be32(out.data() + 4 * i, dwords[i]);
    }
    const std::uint32_t crc = util::crc32c(out.first(dwords.size() * 4));
    util::store_be32(out.data() + dwords.size() * 4, crc);
    return len;
}

Result<ControlPacket> ControlRing::decode(unsigned sof_pdf, unsigned eof_pdf,
                                          std::span<const std::byte> wire) noexcept {
    // ref §5.1: RX reports SOF 0 and EOF = packet type; length includes the CRC.
    if (sof_pdf != 0 || eof_pdf == 0 || eof_pdf > 0xf) {
        return fail(Errc::malformed);
    }
    if (wire.size() < 4 + kCrcBytes || wire.size() > kRawFrameSize || wire.size() % 4 != 0) {
        return fail(Errc::malformed);
    }
    const std::size_t body = wire.size() - kCrcBytes;
    if (util::crc32c(wire.first(body)) != util::load_be32(wire.data() + body)) {
        return fail(Errc::crc_mismatch);
    }
    ControlPacket p;
    p.pdf = static_cast<std::uint8_t>(eof_pdf);
    p.dword_count = static_cast<std::uint8_t>(body / 4);
    for (std::size_t i = 0; i < p.dword_count; ++i) {
        p.dwords[i] = util::load_be32(wire.data() + 4 * i);
    }
    return p;
}

Result<void> ControlRing::send(unsigned pdf, std::span<const std::uint32_t> dwords) {
    if (pdf == 0 || pdf > 0xf || dwords.empty() || dwords.size() > kMaxControlDwords) {
        return fail(std::errc::invalid_argument);
    }
    std::array<std::uint64_t, 16> done{};
    while (tx_->reap(done) == done.size()) {
    }
    if (tx_->free_slots() == 0) {
        return fail(Errc::ring_full);
    }
    const unsigned slot = tx_next_buf_;
    const std::size_t len = encode(dwords, tx_bufs_.frame(slot));
    TxFrame f;
    f.iova = tx_bufs_.iova(slot);
    f.length = static_cast<std::uint32_t>(len);
    f.sof_pdf = static_cast<std::uint8_t>(pdf);
    f.eof_pdf = static_cast<std::uint8_t>(pdf);
    f.cookie = slot;
    const PostResult r = tx_->post({&f, 1});
    if (r.posted != 1) {
        return fail(r.status == PostStatus::ring_full ? Errc::ring_full : Errc::malformed);
    }
    tx_next_buf_ = tx_next_buf_ + 1 == tx_bufs_.count() ? 0 : tx_next_buf_ + 1;
    ++counters_.tx_packets;
    return ok();
}

std::optional<ControlPacket> ControlRing::receive() noexcept {
    RxCompletion c;
    while (rx_->poll({&c, 1}) == 1) {
        const auto buf = static_cast<unsigned>(c.cookie);
        std::optional<ControlPacket> out;
        if (c.overrun) {
            ++counters_.rx_malformed;
        } else {
            auto p = decode(c.sof_pdf, c.eof_pdf,
                            std::span<const std::byte>(rx_bufs_.data(buf), c.length));
            if (p) {
                ++counters_.rx_packets;
                out = *p;
            } else if (p.error() == Errc::crc_mismatch) {
                ++counters_.rx_crc_errors;
            } else {
                ++counters_.rx_malformed;
            }
        }
        // The packet was copied out: give the buffer straight back so ring 0 never runs dry.
        const RxBuffer b{rx_bufs_.iova(buf), buf};
        (void)rx_->post({&b, 1});
        if (out) {
            return out;
        }
    }
    return std::nullopt;
}

}  // namespace tbv::nhi
