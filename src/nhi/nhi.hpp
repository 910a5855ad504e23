// SPDX-License-Identifier: Apache-2.0
// Nhi: one USB4 host interface on top of a layer-0 Device. Identifies the controller, applies the
// vendor interrupt mode, hands out ring numbers, and owns the interrupt programming. Rings
// (ring.hpp) and the control channel (control_ring.hpp) are created against it.
//
// Not thread safe: one thread sets up and tears down rings; each ring then has one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "hw/device.hpp"
#include "nhi/interrupts.hpp"
#include "tbv/result.hpp"

namespace tbv::nhi {

enum class Direction : std::uint8_t { tx, rx };

struct NhiOptions {
    /// MSI-X vectors to enable (0: polled operation only, no eventfds).
    unsigned irq_vectors = 0;
    /// Interrupt moderation for every vector (Linux uses 128 µs).
    std::uint32_t throttle_ns = 128'000;
    /// Force a status-clear mode instead of the vendor default (tests exercise both).
    std::optional<IrqMode> irq_mode;
};

class Nhi {
public:
    /// Reads REG_CAPS, refuses a device that is gone (all-ones) or reports no rings, enables bus
    /// mastering and interrupts, and puts the interrupt block in its initial state.
    static Result<std::unique_ptr<Nhi>> open(hw::Device& dev, const NhiOptions& opts = {});

    Nhi(const Nhi&) = delete;
    Nhi& operator=(const Nhi&) = delete;
    ~Nhi();

    hw::Device& device() noexcept { return dev_; }
    /// H: rings 0..H-1 exist; ring 0 is the control channel.
    unsigned hop_count() const noexcept { return hop_count_; }
    std::uint8_t version() const noexcept { return version_; }
    Interrupts& interrupts() noexcept { return irq_; }
    unsigned irq_vectors() const noexcept { return irq_vectors_; }

    /// Reserves ring `ring` in one direction, or the lowest free ring in [1, H-1] when nullopt
    /// (ref §4.1). Errc::ring_unavailable when out of range or taken.
    Result<unsigned> claim_ring(Direction dir, std::optional<unsigned> ring);
    void release_ring(Direction dir, unsigned ring) noexcept;

    /// True if register reads say the function has left the bus.
    bool gone() noexcept;

private:
    Nhi(hw::Device& dev, unsigned hop_count, std::uint8_t version, IrqMode mode,
        unsigned vectors) noexcept
        : dev_(dev),
          hop_count_(hop_count),
          version_(version),
          irq_(dev, hop_count, mode),
          irq_vectors_(vectors) {}

    hw::Device& dev_;
    unsigned hop_count_;
    std::uint8_t version_;
    Interrupts irq_;
    unsigned irq_vectors_;
    std::uint64_t tx_used_ = 0;  ///< bit r: TX ring r claimed
    std::uint64_t rx_used_ = 0;
};

/// Vendor default (ref §1.4): Intel NHIs auto-clear, every other vendor needs W1C.
constexpr IrqMode default_irq_mode(std::uint16_t vendor) noexcept {
    return vendor == 0x8086 ? IrqMode::auto_clear : IrqMode::w1c;
}

}  // namespace tbv::nhi
