// SPDX-License-Identifier: Apache-2.0
// Where frames leave an emulated NHI and how they reach another one. A Fabric receives every
// frame a TX engine sends (ref §12.3 "hand to the router data plane") and delivers it with
// EmuNhi::receive(); the USB4 router + cable model (ref §12.4, §12.5) will be one, PairFabric is
// the direct test wiring: ring N of one NHI to ring N of the other.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

#include "emu/clock.hpp"

namespace tbv::emu {

class EmuNhi;

/// One frame (frame mode) or one packet incl. its software CRC (raw mode) crossing the fabric.
struct FrameView {
    unsigned sof_pdf = 0;
    unsigned eof_pdf = 0;
    std::span<const std::byte> data;
    /// A link CRC error on the way (fault injection). In frame mode the receiving NHI reports it
    /// as CRC_ERROR in the descriptor; in raw mode software finds it by its own CRC check.
    bool crc_error = false;
    /// When the TX DMA engine started it, on the NHI's clock, if its ring is paced by the link
    /// model (link.hpp: a backlogged ring keeps sending while nobody polls, so a frame handed on
    /// late may have left earlier); kNoStamp otherwise.
    Clock::Duration::rep sent_at = kNoStamp;
};

/// Outcome of EmuNhi::receive().
enum class RxResult {
    delivered,      ///< written to the ring and the descriptor completed
    ring_disabled,  ///< ring absent, not enabled, not running, halted, or device gone
    no_descriptor,  ///< nothing posted: dropped, RX-overflow status set (ref §4.5)
    pdf_mismatch,   ///< frame mode: SOF/EOF PDF outside the masks (or an empty frame): dropped
    dma_fault,      ///< the IOMMU refused the descriptor or buffer: ring halted
    no_bus_master,  ///< bus mastering off: the device cannot write memory, dropped
};

class Fabric {
public:
    Fabric() = default;
    Fabric(const Fabric&) = delete;
    Fabric& operator=(const Fabric&) = delete;
    virtual ~Fabric() = default;

    /// Called by `from`'s TX engine, inside the driver's doorbell write or poll(), with that TX
    /// ring's lock held. `frame.data` is valid only during the call. An implementation may call
    /// receive() on any NHI, `from` included (a loopback); it must not write registers of `from`
    /// (that could re-enter the locked TX ring) and should not block.
    virtual void transmit(EmuNhi& from, unsigned ring, const FrameView& frame) noexcept = 0;

    /// Several frames of one TX ring, in ring order: what the TX engine read for one doorbell
    /// (up to kTxBatch at a time). Same rules as transmit(). A fabric overrides it to take its
    /// locks once per batch instead of once per frame; the default sends them one by one.
    virtual void transmit_batch(EmuNhi& from, unsigned ring,
                                std::span<const FrameView> frames) noexcept {
        for (const FrameView& f : frames) {
            transmit(from, ring, f);
        }
    }

    /// Called from `from.poll()` (every driver ring poll) with no NHI lock held: the fabric's
    /// chance to run timed work (link training, event re-sends) and to take in frames that
    /// arrived from outside (a shared-memory cable). Same rules as transmit(); may call
    /// from.receive().
    virtual void poll(EmuNhi& from) noexcept { (void)from; }

    // ---- sleeping until something comes from another process (EmuNhi's RX helper) ----------
    // A fabric whose frames all come from this process delivers them in the sender's thread:
    // nothing to wait for (the defaults). One that takes frames from another process (a
    // shared-memory cable, through poll()) lets a sleeping NHI be woken when they come.

    /// The NHI has an RX interrupt armed (true) or no longer (false): ask the far ends in other
    /// processes to wake wait_inbound() when they send, or stop asking (then sending costs them
    /// no system call). While on, wait_inbound() also returns for input already waiting and for
    /// frames the fabric holds itself falling due. Returns true if the fabric holds frames that
    /// fall due later (a waiter must look again: call wake_inbound()).
    virtual bool set_inbound_wakeups(bool on) noexcept {
        (void)on;
        return false;
    }
    /// Blocks until input from another process may wait for poll(), a held frame falls due,
    /// `timeout` passes or wake_inbound() is called. Returns at once if `abort` is set: it is
    /// read after the wake-up signal's state was taken, so setting `abort` and then calling
    /// wake_inbound() always ends the wait. False (at once): nothing here can be waited for.
    virtual bool wait_inbound(const std::atomic<bool>& abort,
                              std::chrono::nanoseconds timeout) noexcept {
        (void)abort;
        (void)timeout;
        return false;
    }
    /// Ends a wait_inbound() in progress (the next one waits normally).
    virtual void wake_inbound() noexcept {}
};

/// Test fabric: ring N of `a` <-> ring N of `b`, both directions, frames delivered synchronously
/// in the sender's thread (a and b may be the same NHI: TX ring N loops to RX ring N). Attaches
/// itself to both NHIs; destroy it before them.
class PairFabric final : public Fabric {
public:
    PairFabric(EmuNhi& a, EmuNhi& b);
    ~PairFabric() override;  ///< detaches from both (waits for frames in flight)

    /// Flip one bit of each of the next `n` frames' payload and mark them crc_error (a cable bit
    /// error). Counts add up.
    void corrupt_next(unsigned n) noexcept;
    /// Lose the next `n` frames. Counts add up; a dropped frame is not also corrupted.
    void drop_next(unsigned n) noexcept;

    struct Stats {
        std::uint64_t delivered = 0;  ///< receive() returned delivered
        std::uint64_t refused = 0;    ///< receive() returned anything else
        std::uint64_t dropped = 0;    ///< lost by drop_next
        std::uint64_t corrupted = 0;  ///< altered by corrupt_next
    };
    Stats stats() const noexcept;

    void transmit(EmuNhi& from, unsigned ring, const FrameView& frame) noexcept override;
    /// One EmuNhi::receive_batch() for the batch unless drop_next/corrupt_next are pending.
    void transmit_batch(EmuNhi& from, unsigned ring,
                        std::span<const FrameView> frames) noexcept override;

private:
    static bool take_one(std::atomic<unsigned>& budget) noexcept;

    EmuNhi& a_;
    EmuNhi& b_;
    std::atomic<unsigned> drop_budget_{0};
    std::atomic<unsigned> corrupt_budget_{0};
    std::atomic<std::uint64_t> delivered_{0};
    std::atomic<std::uint64_t> refused_{0};
    std::atomic<std::uint64_t> dropped_{0};
    std::atomic<std::uint64_t> corrupted_{0};
};

}  // namespace tbv::emu
