// SPDX-License-Identifier: Apache-2.0
// Ring interrupt programming: enable/mask/clear in both vendor modes, MSI-X vector mapping and
// throttling (nhi-reference §2.4, §2.5, §10).
//
// Two status-clear modes exist (ref §1.4, §10):
//  * auto-clear (Intel, QUIRK_AUTO_CLEAR_INT): DMA_MISC bit 2; status clears when the MSI-X message
//    is sent or when NOTIFY is read; masking is a read-modify-write of the enable bitmap.
//  * W1C (AMD and other USB4 hosts): DMA_MISC bit 17 disables auto-clear; status is cleared by
//    writing 1s to REG_RING_INT_CLEAR, so reading NOTIFY never loses an event of another ring.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "hw/device.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::nhi {

using hw::nhi::IrqKind;

enum class IrqMode : std::uint8_t { auto_clear, w1c };

/// Largest hop count this driver programs: NOTIFY of 3·H bits must fit the snapshot below.
inline constexpr unsigned kMaxHopCount = 64;

/// A copy of the NOTIFY bitmaps taken (and cleared) at one instant.
class IrqStatus {
public:
    IrqStatus() = default;
    IrqStatus(const std::array<std::uint32_t, 6>& words, unsigned hop_count) noexcept
        : words_(words), hop_count_(hop_count) {}

    bool test(IrqKind kind, unsigned ring) const noexcept {
        const unsigned bit = hw::nhi::irq_bit(kind, ring, hop_count_);
        return (words_[bit / 32] & hw::nhi::bitmap_mask(bit)) != 0;
    }
    bool any() const noexcept {
        for (auto w : words_) {
            if (w != 0) {
                return true;
            }
        }
        return false;
    }
    const std::array<std::uint32_t, 6>& words() const noexcept { return words_; }

private:
    std::array<std::uint32_t, 6> words_{};
    unsigned hop_count_ = 0;
};

class Interrupts {
public:
    Interrupts(hw::Device& dev, unsigned hop_count, IrqMode mode) noexcept
        : dev_(dev), hop_count_(hop_count), mode_(mode) {}

    IrqMode mode() const noexcept { return mode_; }

    /// Initial state (ref §10 "Init"): select the clear mode, disable every ring interrupt, clear
    /// every status bit, program every vector's throttle.
    void init(std::uint32_t throttle_ns) noexcept;

    /// Routes ring `ring`'s TX or RX interrupt to MSI-X `vector` and enables it (ref §4.2 step 5).
    void enable(IrqKind kind, unsigned ring, unsigned vector) noexcept;
    /// Routes it to `vector` but leaves it masked (ENABLE clear): a NAPI-style owner unmasks it
    /// only while it sleeps, so a polling driver takes no interrupt (no MSI-X write per frame).
    void route(IrqKind kind, unsigned ring, unsigned vector) noexcept;
    /// Disables it and clears its vector nibble (ref §4.3).
    void disable(IrqKind kind, unsigned ring) noexcept;
    /// Temporarily stops messages for a ring that is being polled (NAPI style); unmask re-enables.
    void mask(IrqKind kind, unsigned ring) noexcept;
    void unmask(IrqKind kind, unsigned ring) noexcept;
    bool enabled(IrqKind kind, unsigned ring) noexcept;

    /// Reads and clears all status (both modes); returns what was pending.
    IrqStatus take_status() noexcept;
    /// Clears one status bit. In auto-clear mode a single bit cannot be cleared alone: callers
    /// use take_status() there (this reads NOTIFY, clearing all, and is reported as false).
    bool clear(IrqKind kind, unsigned ring) noexcept;

    /// Minimum interval between two messages on `vector`, rounded up to 256 ns units.
    void set_throttle(unsigned vector, std::uint32_t ns) noexcept;

private:
    void set_enable_bit(unsigned bit, bool on) noexcept;
    void set_vector(unsigned irq_index, unsigned vector) noexcept;

    hw::Device& dev_;
    unsigned hop_count_;
    IrqMode mode_;
    // Enable bits and vector nibbles of many rings share a register, changed by read-modify-write:
    // the CM thread starts and stops rings while a data thread masks and unmasks its rails. An
    // unserialised pair loses one write (a sleeper then waits on a masked ring). Slow path only.
    std::mutex rmw_mu_;
};

}  // namespace tbv::nhi
