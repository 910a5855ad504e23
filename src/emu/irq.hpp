// SPDX-License-Identifier: Apache-2.0
// Interrupt block of the emulated NHI: NOTIFY status (three bitmaps), INT_CLEAR, the ENABLE bitmap
// and MASK_CLEAR, vector allocation nibbles, per-vector throttling and DMA_MISC (ref §2.1, §2.4,
// §2.5, §10, §12.2 items 4–7), plus the MSI-X vectors themselves as eventfds.
//
// Status-clear modes (ref §10, §1.4):
//  * DMA_MISC bit 17 (DISABLE_AUTO_CLEAR, AMD and other USB4 hosts): status bits stay set until
//    software writes 1s to REG_RING_INT_CLEAR; reading NOTIFY does not clear them.
//  * bit 17 clear: NOTIFY is clear-on-read. With bit 2 (INT_AUTO_CLEAR, Intel) a ring's status bit
//    also clears when its MSI-X message is sent.
//  REG_RING_INT_CLEAR clears in either mode (Linux writes ~0 there at init whatever the vendor).
//
// Message delivery (ref §12.1, §12.2.6): a TX or RX event sends the message of the vector its
// nibble names, if bus mastering is on (an MSI-X message is a memory write), the vector is enabled
// (has an eventfd) and the ring's ENABLE bit is set. RX-overflow events only set status: they have
// no enable bit and no vector. A message that would come sooner than the vector's throttle
// interval after the previous one is held back (several coalesce into one) and sent by a helper
// thread when the interval has passed, if the vector can still be delivered and some ring routed
// to it still has its ENABLE bit set. Clearing the status meanwhile does not cancel it: like an
// MSI-X pending bit, a held message is independent of the cause register. The helper is started
// the first time a message is held back and blocks on a condition variable in between.
//
// Thread safety: one mutex (a leaf: nothing else is locked while holding it) guards all state.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "emu/counters.hpp"
#include "hw/nhi_regs.hpp"
#include "tbv/result.hpp"

namespace tbv::emu {

class IrqBlock {
public:
    /// `bus_master` and `gone` are the owner's flags, read at delivery time.
    IrqBlock(unsigned hop_count, unsigned vectors, const std::atomic<bool>& bus_master,
             const std::atomic<bool>& gone, CounterSet& counters);
    ~IrqBlock();
    IrqBlock(const IrqBlock&) = delete;
    IrqBlock& operator=(const IrqBlock&) = delete;

    /// BAR0 access to the interrupt registers; nullopt / false if `offset` is not one of them.
    std::optional<std::uint32_t> read(std::uint32_t offset) noexcept;
    bool write(std::uint32_t offset, std::uint32_t value) noexcept;

    /// An engine event on `ring`: set its status bit and send its message if allowed.
    void raise(hw::nhi::IrqKind kind, unsigned ring) noexcept;

    /// Whether an RX ring's interrupt would be delivered now: its ENABLE bit is set and its
    /// vector can be sent (bus mastering on, vector enabled). The emulated NHI's RX helper runs
    /// only while this holds (nhi.hpp, "RX helper").
    bool rx_armed() const noexcept;

    /// Power-on register state (function reset, host-router reset); eventfds stay.
    void power_on() noexcept;

    /// MSI-X vectors as eventfds (hw::Device::enable_irqs and friends).
    Result<void> enable_vectors(unsigned count);
    void disable_vectors() noexcept;
    int eventfd(unsigned vector) const noexcept;

private:
    using Clock = std::chrono::steady_clock;

    struct Vector {
        Clock::time_point last_sent{};
        bool ever_sent = false;
        bool deferred = false;  ///< a held-back message waits for `due`
        Clock::time_point due{};
    };

    // All *_locked helpers need mu_.
    bool status_clears_on_read_locked() const noexcept;
    bool auto_clear_on_message_locked() const noexcept;
    unsigned vector_of_locked(unsigned irq_index) const noexcept;
    bool bit_set(const std::vector<std::uint32_t>& map, unsigned bit) const noexcept;
    bool deliverable_locked(unsigned vector) const noexcept;
    Clock::duration gap_locked(unsigned vector) const noexcept;
    void send_locked(unsigned vector, Clock::time_point now) noexcept;
    void clear_sources_locked(unsigned vector) noexcept;
    bool source_enabled_locked(unsigned vector) const noexcept;
    void defer_locked(unsigned vector) noexcept;
    void helper_main() noexcept;

    const unsigned hop_count_;
    const unsigned vectors_;
    const std::atomic<bool>& bus_master_;
    const std::atomic<bool>& gone_;
    CounterSet& ctr_;

    mutable std::mutex mu_;
    std::vector<std::uint32_t> notify_;     ///< ⌈3H/32⌉ dwords (ref §2.4)
    std::vector<std::uint32_t> enable_;     ///< ⌈2H/32⌉ dwords
    std::vector<std::uint32_t> vec_alloc_;  ///< ⌈2H/8⌉ dwords of nibbles (ref §2.5)
    std::array<std::uint32_t, hw::nhi::kMaxMsixVectors> throttle_{};
    std::uint32_t dma_misc_ = 0;
    std::array<Vector, hw::nhi::kMaxMsixVectors> vec_{};
    std::vector<int> fds_;  ///< eventfd per enabled vector

    std::condition_variable cv_;  ///< wakes the helper: new deferral, throttle change, stop
    bool stop_ = false;
    std::thread helper_;  ///< last member: started lazily, joined first in the destructor
};

}  // namespace tbv::emu
