// SPDX-License-Identifier: Apache-2.0
// Register state of one emulated TX or RX ring: the descriptor-ring registers with the
// half-register ownership of ref §2.2, the option registers of ref §2.3, and the configuration
// the engine latches when ENABLE goes 0→1 (ref §12.2 items 2–3).
//
// Not thread safe: the owner (EmuNhi) holds the ring's mutex around every call.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "emu/link.hpp"
#include "hw/device.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::emu {

enum class RingDir : std::uint8_t { tx, rx };

/// What the engine runs with. Captured at ENABLE 0→1 so that register writes while the ring runs
/// (Linux adds E2E after ENABLE, and tears down by zeroing base/size after clearing it) cannot
/// change a running ring under the engine.
struct RingConfig {
    hw::Iova base = 0;           ///< descriptor array IOVA
    std::uint32_t count = 0;     ///< descriptors
    std::uint32_t buf_size = 0;  ///< RX: bytes per buffer (register value 0 = 4096)
    bool raw = false;            ///< one packet per descriptor, PDF masks ignored (ref §3)
    std::uint16_t sof_mask = 0;  ///< RX frame mode: PDFs that may start a frame
    std::uint16_t eof_mask = 0;  ///< RX frame mode: PDFs that may end a frame
};

/// What a register write asks the owner to do next.
enum class RingEvent : std::uint8_t {
    none,
    doorbell,        ///< TX producer index written: run the TX engine
    started,         ///< ENABLE 0→1 with a valid configuration
    start_rejected,  ///< ENABLE 0→1 but size 0 or base not 16-byte aligned: ring stays stopped
    stopped,         ///< ENABLE 1→0
};

class RingRegs {
public:
    explicit RingRegs(RingDir dir) noexcept : dir_(dir) {}

    /// Descriptor-ring registers (ref §2.2); `off` is RING_BASE_LO..RING_SIZE.
    std::uint32_t read_ring(std::uint32_t off) const noexcept;
    RingEvent write_ring(std::uint32_t off, std::uint32_t value) noexcept;
    /// Option registers (ref §2.3); `off` is 0x00..0x1c within the ring's 32-byte block.
    std::uint32_t read_options(std::uint32_t off) const noexcept;
    RingEvent write_options(std::uint32_t off, std::uint32_t value) noexcept;

    /// Power-on state: every register 0, stopped, not halted.
    void power_on() noexcept;

    /// Enabled with a valid latched configuration and not halted by an IOMMU fault.
    bool running() const noexcept { return running_ && !halted_; }
    const RingConfig& config() const noexcept { return cfg_; }
    /// Index half software writes (TX producer, RX first slot not given to hardware).
    std::uint32_t sw_index() const noexcept { return sw_index_; }
    /// RX: the producer index written without the ring lock (RxRingState::sw_index).
    void set_sw_index(std::uint32_t v) noexcept { sw_index_ = v; }
    /// Index half hardware owns (next descriptor the engine will use).
    std::uint32_t hw_index() const noexcept { return hw_index_; }
    void advance_hw() noexcept { hw_index_ = hw_index_ + 1 == cfg_.count ? 0 : hw_index_ + 1; }
    /// An IOMMU fault stops the ring until software disables and re-enables it.
    void halt() noexcept { halted_ = true; }
    bool halted() const noexcept { return halted_; }

private:
    RingEvent set_flags(std::uint32_t value) noexcept;

    RingDir dir_;
    // Registers as software wrote them.
    std::uint32_t base_lo_ = 0;
    std::uint32_t base_hi_ = 0;
    std::uint32_t sw_index_ = 0;
    std::uint32_t size_ = 0;
    std::uint32_t flags_ = 0;
    std::uint32_t pdf_ = 0;
    // Hardware state.
    std::uint32_t hw_index_ = 0;
    RingConfig cfg_{};
    bool running_ = false;
    bool halted_ = false;
};

/// Descriptors the TX engine reads, sends and completes together (dma_engine.cpp).
inline constexpr unsigned kTxBatch = 32;

/// One TX ring of the model: its lock, registers, and the frame staging buffer. The buffer is
/// where the engine reads a batch of frames before handing it to the fabric, so no IOMMU lock is
/// held across the call into another NHI; allocated once, so no allocation happens per frame
/// (default-initialised: pages of a ring that never sends are never touched).
struct alignas(64) TxRingState {
    std::mutex mu;
    RingRegs regs{RingDir::tx};
    /// Work a doorbell left for poll(): bus mastering was off, or the ring's DMA ceiling (link
    /// model) held descriptors back.
    bool kick_pending = false;
    /// The link model's per-ring DMA ceiling (off unless NhiConfig::link sets ring_gbps).
    RingPacer pacer;
    /// Descriptors the pacer left pending at the end of the last run: the engine has seen them,
    /// so they follow one another with no gap even if the next poll comes late.
    std::uint32_t paced_backlog = 0;
    std::unique_ptr<std::byte[]> staging{
        new std::byte[std::size_t{kTxBatch} * hw::nhi::kMaxFrameSize]};
};

/// One RX ring of the model.
struct alignas(64) RxRingState {
    std::mutex mu;
    RingRegs regs{RingDir::rx};
    /// The RX producer index as the driver last wrote it (ref §2.2), stored without `mu`: the
    /// refill doorbell never waits for a batch the RX engine writes in another thread (with the
    /// lock, nearly every such meeting was a futex sleep and wake-up). A release store after the
    /// driver's descriptor writes, an acquire load by the engine, which copies it into `regs`
    /// under `mu` before it uses it (and so does a read of the register).
    std::atomic<std::uint32_t> sw_index{0};
};

}  // namespace tbv::emu
