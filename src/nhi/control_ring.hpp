// SPDX-License-Identifier: Apache-2.0
// ControlRing: ring 0 as the control-packet pipe (nhi-reference §5.1). TX ring 0 and RX ring 0 in
// raw mode; each packet is N big-endian dwords followed by a big-endian CRC-32C over those bytes;
// the descriptor's SOF and EOF carry the PDF (packet type) on TX, and RX reports SOF 0, EOF = PDF.
//
// This layer moves packets and guarantees their integrity only; what the dwords mean (routes,
// config reads, XDomain) belongs to src/usb4. Malformed received packets are dropped and counted,
// and their buffer is given back to the hardware at once so ring 0 never runs dry.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "nhi/frame_pool.hpp"
#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"
#include "tbv/result.hpp"

namespace tbv::nhi {

/// Largest control packet: 256-byte buffer minus the 4-byte CRC = 63 dwords (ref §5.1).
inline constexpr unsigned kMaxControlDwords = 63;

struct ControlPacket {
    std::uint8_t pdf = 0;
    std::uint8_t dword_count = 0;
    std::array<std::uint32_t, kMaxControlDwords> dwords{};  ///< host byte order

    std::span<const std::uint32_t> payload() const noexcept { return {dwords.data(), dword_count}; }
};

struct ControlRingConfig {
    unsigned tx_size = 10;  ///< Linux uses 10 descriptors each way (ref §5.1)
    unsigned rx_size = 10;
    std::optional<unsigned> irq_vector;  ///< RX interrupt vector (events, replies)
};

struct ControlCounters {
    std::uint64_t tx_packets = 0;
    std::uint64_t rx_packets = 0;
    std::uint64_t rx_crc_errors = 0;
    std::uint64_t rx_malformed = 0;  ///< bad length, SOF != 0, PDF 0, overrun
};

class ControlRing {
public:
    static Result<std::unique_ptr<ControlRing>> create(Nhi& nhi, const ControlRingConfig& cfg = {});

    /// Sends one packet of PDF `pdf` (1..15) with 1..63 host-order dwords. Errc::ring_full if no
    /// descriptor is free after reaping completions; EINVAL for a bad PDF or size.
    Result<void> send(unsigned pdf, std::span<const std::uint32_t> dwords);

    /// Returns the next valid received packet, if any; invalid ones are counted and skipped.
    std::optional<ControlPacket> receive() noexcept;

    const ControlCounters& counters() const noexcept { return counters_; }
    TxRing& tx() noexcept { return *tx_; }
    RxRing& rx() noexcept { return *rx_; }

    /// Encodes dwords + CRC into `out` (wire format); returns the byte count or 0 if it does not
    /// fit.
    static std::size_t encode(std::span<const std::uint32_t> dwords,
                              std::span<std::byte> out) noexcept;
    /// Validates a received raw packet (length, CRC) and decodes it. Errc::crc_mismatch or
    /// Errc::malformed on failure.
    static Result<ControlPacket> decode(unsigned sof_pdf, unsigned eof_pdf,
                                        std::span<const std::byte> wire) noexcept;

private:
    ControlRing(FramePool tx_bufs, FramePool rx_bufs) noexcept
        : tx_bufs_(std::move(tx_bufs)), rx_bufs_(std::move(rx_bufs)) {}

    // Members in set-up order; destroyed in reverse: rings stop before their buffers unmap.
    FramePool tx_bufs_;
    FramePool rx_bufs_;
    std::unique_ptr<TxRing> tx_;
    std::unique_ptr<RxRing> rx_;
    unsigned tx_next_buf_ = 0;  ///< TX slot i uses buffer i: posting is strictly in ring order
    ControlCounters counters_{};
};

}  // namespace tbv::nhi
