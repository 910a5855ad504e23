// SPDX-License-Identifier: Apache-2.0
// EmuNhi: a software USB4 host interface behind the layer-0 Device interface — "the second
// device, not a mock" (DESIGN.md). It models the BAR0 registers and the DMA engine of
// ../shared/docs/hardware/nhi-reference.md §12.1–12.3 ("ref §x" below), reaches host memory only
// through an IOMMU model (iommu.hpp), and hands frames to a Fabric (fabric.hpp).
//
// Where the work runs: there is no device thread. The TX engine runs inside the driver's doorbell
// write (write32 of a TX producer index) and, for doorbells that arrived while bus mastering was
// off, inside poll(). The RX engine runs inside receive(), i.e. in the thread of whoever sends the
// frame. Two helper threads exist, each started on first need and blocked otherwise: one
// delivers MSI-X messages that throttling held back (irq.hpp), the RX helper below.
//
// RX helper (DESIGN.md: "an idle-blocking helper only where the application sleeps"). A frame
// from another process (a shared-memory cable) reaches the RX ring only when this side polls,
// and a driver that sleeps on its RX interrupt does not poll: real hardware would take the frame
// in on its own and raise the interrupt. So while an RX ring's interrupt is armed (IrqBlock::
// rx_armed: ENABLE bit set, vector deliverable), the RX helper sleeps in Fabric::wait_inbound
// (the cable's doorbell, which the far end rings only while we ask it to) and, when woken, runs
// poll(): the frames go into the RX rings and the RX engine raises the interrupt as it would for
// any frame. While no RX interrupt is armed (the driver polls) it does nothing: the first arming
// starts it, disarming does not wake it (it goes idle on its next wake-up), so a driver that
// arms, re-checks and disarms costs no thread switch. Fabrics whose frames all come from this
// process need no helper (the sender's thread raises the interrupt) and it stays idle.
//
// Locking: per-ring mutexes (TX ring, RX ring) and leaf mutexes for interrupt state and fault
// records. Order: TX ring → (a peer's) RX ring → IOMMU (shared) → interrupts / fault records. A
// doorbell on A may run B's RX engine in A's thread; A→B and B→A at once take disjoint locks and
// cannot deadlock. The TX engine never holds its IOMMU while the fabric runs.
//
// Batching (dma_engine.cpp): a doorbell's descriptors go through the engine kTxBatch at a time,
// with the IOMMU taken once to read a batch and once to complete it, and the batch reaches the
// fabric in one Fabric::transmit_batch call; receive_batch() takes the RX ring and the IOMMU once
// per batch.
//
// Descriptor ctl words are read with acquire and written back with release through
// std::atomic_ref, after the data they describe (ref §12.3 "Ordering").
//
// Link model (link.hpp, off by default): NhiConfig::link.ring_gbps caps how fast each TX ring
// starts descriptors (the per-ring DMA ceiling of real NHIs); what the engine may not start yet
// stays pending until a later doorbell or poll(). Link rate and latency are the router's part.
//
// Not modelled: E2E flow control (the bits are stored and read back; its credit mechanics are
// unknown, ref §13.4), PCI no-snoop/isochronous bits, the MSI-X table itself (VFIO owns it;
// vectors are eventfds).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "emu/clock.hpp"
#include "emu/counters.hpp"
#include "emu/fabric.hpp"
#include "emu/iommu.hpp"
#include "emu/irq.hpp"
#include "emu/link.hpp"
#include "emu/ring.hpp"
#include "hw/device.hpp"
#include "hw/nhi_regs.hpp"

namespace tbv::emu {

struct NhiConfig {
    std::string name = "emu0";
    std::uint16_t vendor = 0x1022, device = 0x1668;  ///< AMD Pink Sardine by default (ref §1.2)
    std::uint32_t hop_count = 3;  ///< REG_CAPS rings (ref §1.4): 3 like AMD, 12 like Intel; 1..1023
    std::uint8_t version = 0x20;  ///< REG_CAPS[23:16]; >= 0x40 enables REG_RESET.HRR (ref §2.7)
    unsigned msix_vectors = 16;   ///< 1..16 (ref §1.3)
    /// How long REG_RESET.HRR reads 1 after it is written (ref §12.6 "HRR duration").
    std::chrono::microseconds hrr_duration{1000};
    /// Link model: only ring_gbps / ring_desc matter here (the TX DMA ceiling per ring).
    LinkConfig link{};
    const Clock* clock = nullptr;  ///< the ring ceiling's time; nullptr: Clock::steady()
};

class EmuNhi final : public hw::Device {
public:
    using IommuFault = emu::IommuFault;
    using Counters = NhiCounters;

    explicit EmuNhi(NhiConfig cfg = {});
    ~EmuNhi() override;

    // ---- hw::Device ----
    const std::string& name() const noexcept override { return cfg_.name; }
    hw::PciIdentity identity() const noexcept override;
    std::size_t bar0_size() const noexcept override { return hw::nhi::kBar0Size; }
    std::uint32_t read32(std::uint32_t offset) noexcept override;
    void write32(std::uint32_t offset, std::uint32_t value) noexcept override;
    Result<hw::Iova> dma_map(void* addr, std::size_t len, hw::DmaAccess access) override;
    Result<void> dma_unmap(hw::Iova iova, std::size_t len) override;
    Result<void> set_bus_master(bool enable) override;
    bool bus_master() const noexcept override;
    unsigned irq_vector_count() const noexcept override { return cfg_.msix_vectors; }
    Result<void> enable_irqs(unsigned count) override;
    void disable_irqs() noexcept override;
    int irq_eventfd(unsigned vector) const noexcept override;
    Result<void> reset() override;
    void poll() noexcept override;

    // ---- fabric side ----
    /// Sends this NHI's TX frames to `fabric` (nullptr detaches: frames are then dropped and
    /// counted) and lets poll() call its Fabric::poll. Returns after no TX engine and no poll() of
    /// this NHI is still inside the previous fabric. Not to be called from inside
    /// Fabric::transmit or Fabric::poll.
    void attach(Fabric* fabric) noexcept;

    /// While alive, the RX helper (see the header) stays out of the fabric: it is in neither
    /// Fabric::wait_inbound nor poll(), and does not enter them.
    class RxHelperHold {
    public:
        explicit RxHelperHold(EmuNhi* n) noexcept : n_(n) {}
        RxHelperHold(RxHelperHold&& o) noexcept : n_(o.n_) { o.n_ = nullptr; }
        RxHelperHold(const RxHelperHold&) = delete;
        RxHelperHold& operator=(const RxHelperHold&) = delete;
        RxHelperHold& operator=(RxHelperHold&&) = delete;
        ~RxHelperHold() {
            if (n_ != nullptr) {
                n_->release_rx_helper();
            }
        }

    private:
        EmuNhi* n_;
    };
    /// For a fabric about to change what wait_inbound() or poll() reach (a cable end going
    /// away): wakes the RX helper and returns once it is out. Not from inside a fabric call.
    [[nodiscard]] RxHelperHold hold_rx_helper() noexcept;
    /// Whether the RX helper thread has been started (tests).
    bool rx_helper_started() const;
    Fabric* fabric() const noexcept { return fabric_.load(std::memory_order_acquire); }
    /// Delivers a frame into RX ring `ring` (ref §12.3 RX). Called by a fabric, from any thread.
    RxResult receive(unsigned ring, const FrameView& f) noexcept;
    /// Delivers frames into RX ring `ring` in order, each exactly as receive() would, with the
    /// ring's lock and the IOMMU taken once for the batch. Returns how many were delivered; the
    /// others are counted by reason in the counters, as receive() counts them.
    unsigned receive_batch(unsigned ring, std::span<const FrameView> frames) noexcept;

    // ---- fault injection and inspection ----
    /// The function left the bus: every read returns all-ones, writes are ignored, no DMA and no
    /// interrupts from now on; reset() and set_bus_master(true) fail with Errc::device_gone.
    void surprise_remove() noexcept;
    /// IOMMU faults so far, oldest first (at most kMaxFaultRecords are kept; dma_faults counts
    /// all).
    std::vector<IommuFault> faults() const;
    Counters counters() const noexcept { return ctr_.snapshot(); }
    /// True when an IOMMU fault stopped the ring; cleared by disabling and re-enabling it.
    bool ring_halted(bool tx, unsigned ring) const;

    unsigned hop_count() const noexcept { return hop_count_; }
    const Iommu& iommu() const noexcept { return iommu_; }

    static constexpr std::size_t kMaxFaultRecords = 256;

private:
    // Register decode (nhi.cpp).
    std::uint32_t read_misc(std::uint32_t offset) noexcept;
    void write_misc(std::uint32_t offset, std::uint32_t value) noexcept;
    void write_tx_ring(unsigned ring, std::uint32_t off, std::uint32_t value,
                       bool options) noexcept;
    void write_rx_ring(unsigned ring, std::uint32_t off, std::uint32_t value,
                       bool options) noexcept;
    /// Power-on state of rings, interrupt block and misc registers (reset and HRR).
    void power_on_registers() noexcept;

    // DMA engine (dma_engine.cpp). *_locked: the ring's mutex is held.
    void run_tx_locked(unsigned ring, TxRingState& r) noexcept;
    RxResult receive_locked(unsigned ring, RxRingState& r, const Iommu::Access& io,
                            const FrameView& f) noexcept;
    void record_fault(hw::Iova iova, std::size_t len, hw::DmaAccess access, bool tx,
                      unsigned ring) noexcept;

    NhiConfig cfg_;
    const unsigned hop_count_;
    const Clock& clock_;
    CounterSet ctr_;
    std::atomic<bool> bus_master_{false};
    std::atomic<bool> gone_{false};
    Iommu iommu_;
    std::atomic<Fabric*> fabric_{nullptr};
    /// Held shared by poll() while it is inside Fabric::poll, exclusively by attach().
    mutable std::shared_mutex fabric_poll_mu_;
    std::unique_ptr<TxRingState[]> tx_;
    std::unique_ptr<RxRingState[]> rx_;
    /// TX rings with a doorbell held back by bus mastering off; lets poll() skip the scan.
    std::atomic<unsigned> kicks_pending_{0};

    mutable std::mutex misc_mu_;  ///< leaf: mailbox, HRR
    std::uint32_t inmail_data_ = 0;
    std::uint32_t inmail_cmd_ = 0;
    std::chrono::steady_clock::time_point hrr_until_{};

    mutable std::mutex faults_mu_;  ///< leaf
    std::vector<IommuFault> faults_;

    // RX helper (see the header). helper_mu_ is taken before the fabric's wake-up locks and the
    // interrupt block's lock, never after them.
    void rx_helper_main() noexcept;
    /// After anything that may change IrqBlock::rx_armed(): interrupt registers, vectors, bus
    /// mastering, reset. Tells the fabric and starts the helper on the first arming.
    void rx_arm_changed() noexcept;
    void release_rx_helper() noexcept;
    mutable std::mutex helper_mu_;
    std::condition_variable helper_cv_;
    bool helper_armed_ = false;          ///< helper_mu_; the last rx_armed() told to the fabric
    unsigned helper_holds_ = 0;          ///< helper_mu_
    bool helper_stop_ = false;           ///< helper_mu_
    std::uint64_t helper_gen_ = 0;       ///< helper_mu_; bumped on every change above
    std::atomic<bool> rx_armed_{false};  ///< helper_armed_, readable without the lock
    /// holds > 0 or stopping: ends a wait_inbound and keeps the helper out (seq_cst, see
    /// Fabric::wait_inbound).
    std::atomic<bool> helper_abort_{false};
    std::mutex helper_gate_;  ///< held by the helper while it is inside the fabric
    std::thread helper_;      ///< joined in ~EmuNhi, before any member goes

    IrqBlock irq_;  ///< after everything its helper thread reads; destroyed (joined) first
};

}  // namespace tbv::emu
