// SPDX-License-Identifier: Apache-2.0
// TX and RX descriptor rings (nhi-reference §3, §4).
//
// Ownership of the indices (ref §2.2, §4.4): software owns the producer (`head_`) and writes it to
// the ring's index register (the doorbell); hardware owns the consumer and reports completion only
// through the DONE bit it writes back into each descriptor, which is what we poll (Linux never
// reads the hardware half either). One slot always stays empty: full when head+1 == tail.
//
// Hot path rules: post()/reap()/poll() allocate nothing, make no system call and never throw; a
// batch costs descriptor writes, one io_wmb() and one MMIO doorbell. Each ring has one owner
// thread (no locking here).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "hw/dma_region.hpp"
#include "hw/nhi_regs.hpp"
#include "nhi/nhi.hpp"
#include "tbv/result.hpp"

namespace tbv::nhi {

struct RingConfig {
    /// Ring number; nullopt = lowest free in [1, H-1]. Ring 0 is the control channel.
    std::optional<unsigned> ring;
    /// Descriptor count, 2..65535 (usable slots = size - 1).
    unsigned size = 256;
    /// Raw mode: one USB4 packet per descriptor, software CRC (control ring). Else frame mode.
    bool raw = false;
    /// RX: bytes each posted buffer holds. Frame mode 1..4096, raw mode up to 256.
    std::uint32_t rx_buffer_size = 4096;
    /// RX frame mode: PDFs that start / end a frame (bit n = PDF n).
    std::uint16_t rx_sof_mask = 0xffff;
    std::uint16_t rx_eof_mask = 0xffff;
    /// Hardware end-to-end flow control (off on AMD, DESIGN.md); RX names the TX HopID for grants.
    bool e2e = false;
    unsigned rx_e2e_tx_hop = 0;
    /// MSI-X vector for this ring's completion interrupt; nullopt = polled only.
    std::optional<unsigned> irq_vector;
    /// With irq_vector: start with the interrupt routed but masked (Interrupts::route). The
    /// descriptors still ask for it (DESC_INTERRUPT), so unmasking is all it takes to sleep on it.
    bool irq_masked = false;
};

enum class PostStatus : std::uint8_t {
    ok,
    ring_full,      ///< stopped early: no free slot
    invalid_frame,  ///< stopped at a frame with a bad length or PDF; it was not posted
    stopped,        ///< ring is not running
};

struct PostResult {
    unsigned posted = 0;
    PostStatus status = PostStatus::ok;
};

/// One TX descriptor's worth: a frame (or raw packet incl. CRC) in DMA-readable memory.
struct TxFrame {
    hw::Iova iova = 0;
    std::uint32_t length = 0;  ///< 1..4096 bytes (raw: 1..256)
    std::uint8_t sof_pdf = 0;
    std::uint8_t eof_pdf = 0;
    bool interrupt = false;    ///< raise the ring's TX status on completion
    std::uint64_t cookie = 0;  ///< returned by reap()
};

/// An empty RX buffer of at least RingConfig::rx_buffer_size bytes, DMA-writable.
struct RxBuffer {
    hw::Iova iova = 0;
    std::uint64_t cookie = 0;
};

struct RxCompletion {
    std::uint64_t cookie = 0;
    std::uint32_t length = 0;  ///< bytes written (raw: includes the packet CRC)
    std::uint8_t sof_pdf = 0;
    std::uint8_t eof_pdf = 0;
    bool crc_error = false;  ///< frame mode: a packet of the frame failed its link CRC
    bool overrun = false;    ///< frame was larger than the buffer and was truncated
};

/// State and lifecycle shared by both directions.
class RingBase {
public:
    RingBase(const RingBase&) = delete;
    RingBase& operator=(const RingBase&) = delete;

    unsigned number() const noexcept { return ring_; }
    unsigned size() const noexcept { return size_; }
    unsigned in_flight() const noexcept {
        return head_ >= tail_ ? head_ - tail_ : head_ + size_ - tail_;
    }
    unsigned free_slots() const noexcept { return size_ - 1 - in_flight(); }
    bool running() const noexcept { return running_; }
    bool raw() const noexcept { return raw_; }

    /// Stops the ring in the order of ref §4.3 and returns the cookies of descriptors that were
    /// still owned by hardware (cancelled). Idempotent.
    std::vector<std::uint64_t> stop() noexcept;

protected:
    RingBase(Nhi& nhi, Direction dir, unsigned ring, unsigned size, bool raw, hw::DmaRegion descs,
             std::optional<unsigned> vector);
    ~RingBase();

    unsigned next(unsigned i) const noexcept { return i + 1 == size_ ? 0 : i + 1; }
    void start(std::uint32_t size_reg, std::uint32_t pdf_reg, std::uint32_t flags,
               std::uint32_t e2e_flags) noexcept;

    // Hot state first (style B7): touched on every post and poll.
    hw::nhi::RingDesc* desc_;
    std::uint64_t* cookies_;
    hw::Device* dev_;
    unsigned head_ = 0;  ///< next slot software fills (producer)
    unsigned tail_ = 0;  ///< oldest slot owned by hardware (consumer side, by DONE bit)
    unsigned size_;
    std::uint32_t index_reg_;
    bool running_ = false;
    bool raw_;
    // Cold state.
    Direction dir_;
    unsigned ring_;
    Nhi& nhi_;
    std::optional<unsigned> vector_;
    bool irq_masked_ = false;  ///< RingConfig::irq_masked (read by start())
    std::unique_ptr<std::uint64_t[]> cookie_store_;
    hw::DmaRegion descs_;  ///< destroyed after stop() ran in the destructor
};

class TxRing final : public RingBase {
public:
    static Result<std::unique_ptr<TxRing>> create(Nhi& nhi, const RingConfig& cfg);
    ~TxRing() = default;

    /// Posts frames in order until one does not fit; one barrier and one doorbell for the batch.
    PostResult post(std::span<const TxFrame> frames) noexcept;
    /// Retires completed descriptors in order, writing their cookies to `cookies`.
    unsigned reap(std::span<std::uint64_t> cookies) noexcept;

private:
    using RingBase::RingBase;
};

class RxRing final : public RingBase {
public:
    static Result<std::unique_ptr<RxRing>> create(Nhi& nhi, const RingConfig& cfg);
    ~RxRing() = default;

    std::uint32_t buffer_size() const noexcept { return buffer_size_; }
    /// Gives empty buffers to hardware; one barrier and one doorbell for the batch.
    PostResult post(std::span<const RxBuffer> buffers) noexcept;
    /// Returns received frames in order (their buffers now belong to software again).
    unsigned poll(std::span<RxCompletion> out) noexcept;

private:
    using RingBase::RingBase;
    std::uint32_t buffer_size_ = 0;
    bool interrupt_ = false;
};

}  // namespace tbv::nhi
