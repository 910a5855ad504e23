// SPDX-License-Identifier: Apache-2.0
// EmuNhi: PCI function, BAR0 register decode, reset. The DMA engines are in dma_engine.cpp.
#include "emu/nhi.hpp"

#include <algorithm>
#include <system_error>
#include <utility>

namespace tbv::emu {

using namespace hw::nhi;

namespace {

/// REG_CAPS holds 10 bits of hop count (ref §2, §13.8); the vector nibble 4 bits (ref §2.5).
NhiConfig sanitize(NhiConfig cfg) {
    cfg.hop_count = std::clamp<std::uint32_t>(cfg.hop_count, 1, CAPS_HOP_COUNT::kMax);
    cfg.msix_vectors = std::clamp<unsigned>(cfg.msix_vectors, 1, kMaxMsixVectors);
    return cfg;
}

constexpr std::uint32_t kAllOnes = 0xffffffffu;

// Register blocks of ref §2.1 that are decoded per ring, and where each ends.
constexpr std::uint32_t kTxRingEnd = REG_RX_RING_BASE;
constexpr std::uint32_t kRxRingEnd = REG_TX_OPTIONS_BASE;
constexpr std::uint32_t kTxOptsEnd = REG_RX_OPTIONS_BASE;
constexpr std::uint32_t kRxOptsEnd = REG_RING_NOTIFY_BASE;

/// Which per-ring register `offset` addresses, if any.
struct RingReg {
    bool tx;
    bool options;
    unsigned ring;
    std::uint32_t off;  ///< within the ring's block
};

std::optional<RingReg> decode_ring_reg(std::uint32_t offset) noexcept {
    if (offset < kTxRingEnd) {
        return RingReg{true, false, (offset - REG_TX_RING_BASE) / 16u, offset % 16u};
    }
    if (offset < kRxRingEnd) {
        return RingReg{false, false, (offset - REG_RX_RING_BASE) / 16u, offset % 16u};
    }
    if (offset < kTxOptsEnd) {
        return RingReg{true, true, (offset - REG_TX_OPTIONS_BASE) / 32u,
                       (offset - REG_TX_OPTIONS_BASE) % 32u};
    }
    if (offset < kRxOptsEnd) {
        return RingReg{false, true, (offset - REG_RX_OPTIONS_BASE) / 32u,
                       (offset - REG_RX_OPTIONS_BASE) % 32u};
    }
    return std::nullopt;
}

}  // namespace

EmuNhi::EmuNhi(NhiConfig cfg)
    : cfg_(sanitize(std::move(cfg))),
      hop_count_(cfg_.hop_count),
      clock_(cfg_.clock != nullptr ? *cfg_.clock : Clock::steady()),
      tx_(std::make_unique<TxRingState[]>(hop_count_)),
      rx_(std::make_unique<RxRingState[]>(hop_count_)),
      irq_(hop_count_, cfg_.msix_vectors, bus_master_, gone_, ctr_) {
    faults_.reserve(kMaxFaultRecords);  // recording a fault never allocates
    // Link model: the ceiling paces data rings only (off unless ring_gbps is set). Ring 0 carries
    // a few small control packets whose timing the CM's own timers model; pacing it would only
    // slow every control exchange of a test that steps a ManualClock.
    for (unsigned i = 1; i < hop_count_; ++i) {
        tx_[i].pacer = RingPacer(cfg_.link);
    }
}

EmuNhi::~EmuNhi() {
    {
        std::lock_guard lk(helper_mu_);
        helper_stop_ = true;
        helper_abort_.store(true, std::memory_order_seq_cst);
        ++helper_gen_;
    }
    helper_cv_.notify_all();
    if (Fabric* const f = fabric_.load(std::memory_order_acquire)) {
        f->wake_inbound();
    }
    if (helper_.joinable()) {
        helper_.join();
    }
}

hw::PciIdentity EmuNhi::identity() const noexcept {
    // ref §12.1: class 0x0c0340 (USB4 host interface).
    return {cfg_.vendor, cfg_.device, hw::kClassUsb4Nhi, 0, cfg_.vendor, cfg_.device};
}

// ---- BAR0 ----------------------------------------------------------------------------------

std::uint32_t EmuNhi::read32(std::uint32_t offset) noexcept {
    // Device contract / ref §12.2.10: outside BAR0 or unaligned is a master abort: all-ones. A
    // removed function answers all-ones everywhere.
    if (gone_.load(std::memory_order_acquire) || offset % 4u != 0 || offset >= kBar0Size) {
        return kAllOnes;
    }
    if (auto rr = decode_ring_reg(offset)) {
        if (rr->ring >= hop_count_) {
            return 0;  // rings beyond REG_CAPS do not exist: unimplemented, read 0
        }
        if (rr->tx) {
            std::lock_guard lk(tx_[rr->ring].mu);
            const RingRegs& regs = tx_[rr->ring].regs;
            return rr->options ? regs.read_options(rr->off) : regs.read_ring(rr->off);
        }
        RxRingState& r = rx_[rr->ring];
        std::lock_guard lk(r.mu);
        r.regs.set_sw_index(r.sw_index.load(std::memory_order_acquire));
        return rr->options ? r.regs.read_options(rr->off) : r.regs.read_ring(rr->off);
    }
    if (auto v = irq_.read(offset)) {
        return *v;
    }
    return read_misc(offset);
}

void EmuNhi::write32(std::uint32_t offset, std::uint32_t value) noexcept {
    if (gone_.load(std::memory_order_acquire) || offset % 4u != 0 || offset >= kBar0Size) {
        return;
    }
    if (auto rr = decode_ring_reg(offset)) {
        if (rr->ring >= hop_count_) {
            return;
        }
        if (rr->tx) {
            write_tx_ring(rr->ring, rr->off, value, rr->options);
        } else {
            write_rx_ring(rr->ring, rr->off, value, rr->options);
        }
        return;
    }
    if (irq_.write(offset, value)) {
        rx_arm_changed();  // interrupt registers: only ever written on the driver's slow path
        return;
    }
    write_misc(offset, value);
}

void EmuNhi::write_tx_ring(unsigned ring, std::uint32_t off, std::uint32_t value,
                           bool options) noexcept {
    TxRingState& r = tx_[ring];
    std::lock_guard lk(r.mu);
    const RingEvent ev = options ? r.regs.write_options(off, value) : r.regs.write_ring(off, value);
    switch (ev) {
        case RingEvent::doorbell:
            ctr_.add<&NhiCounters::doorbells>();
            run_tx_locked(ring, r);  // ref §12.3: the doorbell starts the TX engine
            break;
        case RingEvent::start_rejected:
            ctr_.add<&NhiCounters::ring_start_rejects>();
            [[fallthrough]];
        case RingEvent::started:
        case RingEvent::stopped:
            // A doorbell held back by bus mastering, or descriptors held back by the link
            // model's ceiling, belong to the previous life of the ring.
            if (std::exchange(r.kick_pending, false)) {
                kicks_pending_.fetch_sub(1, std::memory_order_relaxed);
            }
            r.paced_backlog = 0;
            break;
        case RingEvent::none: break;
    }
}

void EmuNhi::write_rx_ring(unsigned ring, std::uint32_t off, std::uint32_t value,
                           bool options) noexcept {
    RxRingState& r = rx_[ring];
    if (!options && off == RING_INDEX) {
        // ref §2.2: only the software half is writable. No lock (RxRingState::sw_index).
        r.sw_index.store(RX_INDEX_SW_PROD::get(value), std::memory_order_release);
        return;
    }
    std::lock_guard lk(r.mu);
    // RX index writes only publish buffers: the engine runs when a frame arrives (receive()).
    const RingEvent ev = options ? r.regs.write_options(off, value) : r.regs.write_ring(off, value);
    if (ev == RingEvent::start_rejected) {
        ctr_.add<&NhiCounters::ring_start_rejects>();
    }
}

std::uint32_t EmuNhi::read_misc(std::uint32_t offset) noexcept {
    switch (offset) {
        case REG_CAPS: return CAPS_HOP_COUNT::make(hop_count_) | CAPS_VERSION::make(cfg_.version);
        case REG_RESET: {
            if (cfg_.version < kCapsVersionV2) {
                return 0;  // ref §2.7: no HRR on v1 NHIs; the register is unimplemented
            }
            std::lock_guard lk(misc_mu_);
            return RESET_HRR::make(std::chrono::steady_clock::now() < hrr_until_ ? 1 : 0);
        }
        case REG_INMAIL_DATA: {
            std::lock_guard lk(misc_mu_);
            return inmail_data_;
        }
        case REG_INMAIL_CMD: {
            std::lock_guard lk(misc_mu_);
            return inmail_cmd_;
        }
        case REG_OUTMAIL_CMD:  // ref §12.2.9: no firmware
        case REG_FW_STS:       // ref §2.6: ICM_EN clear, no firmware connection manager
        default:               // ref §12.2.10: unimplemented offsets read 0
            return 0;
    }
}

void EmuNhi::write_misc(std::uint32_t offset, std::uint32_t value) noexcept {
    switch (offset) {
        case REG_INMAIL_DATA: {
            std::lock_guard lk(misc_mu_);
            inmail_data_ = value;
            return;
        }
        case REG_INMAIL_CMD: {
            std::lock_guard lk(misc_mu_);
            // ref §2.6, §12.2.9: there is no firmware to take the request; it completes at once
            // (OP_REQUEST clear) with ERROR set, which a driver polling bit 31 sees immediately.
            if (INMAIL_CMD_OP_REQUEST::get(value) != 0) {
                value = INMAIL_CMD_OP_REQUEST::set(value, 0);
                value = INMAIL_CMD_ERROR::set(value, 1);
            }
            inmail_cmd_ = value;
            return;
        }
        case REG_RESET:
            // ref §2.7, §12.2.8: host-router reset only exists on v2 NHIs (version ≥ 0x40).
            if (cfg_.version >= kCapsVersionV2 && RESET_HRR::get(value) != 0) {
                power_on_registers();
                ctr_.add<&NhiCounters::host_router_resets>();
                std::lock_guard lk(misc_mu_);
                hrr_until_ = std::chrono::steady_clock::now() + cfg_.hrr_duration;
            }
            return;
        default: return;  // read-only (REG_CAPS, REG_FW_STS, ...) or unimplemented: ignored
    }
}

void EmuNhi::power_on_registers() noexcept {
    // One ring at a time, in the global lock order (TX rings, then RX rings, then leaves).
    for (unsigned i = 0; i < hop_count_; ++i) {
        std::lock_guard lk(tx_[i].mu);
        tx_[i].regs.power_on();
        if (std::exchange(tx_[i].kick_pending, false)) {
            kicks_pending_.fetch_sub(1, std::memory_order_relaxed);
        }
        tx_[i].paced_backlog = 0;
        tx_[i].pacer.reset();
    }
    for (unsigned i = 0; i < hop_count_; ++i) {
        std::lock_guard lk(rx_[i].mu);
        rx_[i].regs.power_on();
        rx_[i].sw_index.store(0, std::memory_order_release);
    }
    irq_.power_on();
    rx_arm_changed();
    std::lock_guard lk(misc_mu_);
    inmail_data_ = 0;
    inmail_cmd_ = 0;
    hrr_until_ = {};
}

// ---- PCI function -----------------------------------------------------------------------------

Result<hw::Iova> EmuNhi::dma_map(void* addr, std::size_t len, hw::DmaAccess access) {
    return iommu_.map(addr, len, access);
}

Result<void> EmuNhi::dma_unmap(hw::Iova iova, std::size_t len) {
    // Mappings belong to the host's IOMMU, not the function: they can be torn down after removal.
    return iommu_.unmap(iova, len);
}

Result<void> EmuNhi::set_bus_master(bool enable) {
    if (enable && gone_.load(std::memory_order_acquire)) {
        return fail(Errc::device_gone);
    }
    // Doorbells written while this was off wait for poll() (ref §12.1 bus-master gating).
    bus_master_.store(enable, std::memory_order_release);
    rx_arm_changed();  // no bus mastering, no MSI-X message
    return ok();
}

bool EmuNhi::bus_master() const noexcept {
    return bus_master_.load(std::memory_order_acquire);
}

Result<void> EmuNhi::enable_irqs(unsigned count) {
    auto r = irq_.enable_vectors(count);
    rx_arm_changed();
    return r;
}

void EmuNhi::disable_irqs() noexcept {
    irq_.disable_vectors();
    rx_arm_changed();
}

int EmuNhi::irq_eventfd(unsigned vector) const noexcept {
    return irq_.eventfd(vector);
}

Result<void> EmuNhi::reset() {
    if (gone_.load(std::memory_order_acquire)) {
        return fail(Errc::device_gone);
    }
    // Function-level reset: bus mastering off first so no engine starts DMA while rings reset.
    bus_master_.store(false, std::memory_order_release);
    power_on_registers();  // also tells the RX helper
    return ok();
}

void EmuNhi::poll() noexcept {
    // Called on every driver poll: one relaxed load when nothing was held back (a doorbell while
    // bus mastering was off, or descriptors the link model's ring ceiling left pending).
    if (kicks_pending_.load(std::memory_order_relaxed) != 0) {
        for (unsigned i = 0; i < hop_count_; ++i) {
            TxRingState& r = tx_[i];
            std::lock_guard lk(r.mu);
            if (r.kick_pending) {
                run_tx_locked(i, r);
            }
        }
    }
    // The fabric's timed work (router timers, a shared-memory cable's inbox) runs here, with no
    // ring lock held, so it may deliver into this NHI's RX rings.
    std::shared_lock lk(fabric_poll_mu_);
    if (Fabric* const f = fabric_.load(std::memory_order_acquire)) {
        f->poll(*this);
    }
}

// ---- fabric side, fault injection, inspection ---------------------------------------------------

void EmuNhi::attach(Fabric* fabric) noexcept {
    const RxHelperHold hold = hold_rx_helper();  // it must not be inside the previous fabric
    {
        // The armed state moves to the new fabric (helper_mu_ orders this with rx_arm_changed).
        std::lock_guard lk(helper_mu_);
        Fabric* const old = fabric_.load(std::memory_order_acquire);
        if (old != nullptr && helper_armed_) {
            (void)old->set_inbound_wakeups(false);
        }
        fabric_.store(fabric, std::memory_order_release);
        if (fabric != nullptr && helper_armed_) {
            (void)fabric->set_inbound_wakeups(true);
        }
    }
    {
        // Waits out a poll() still inside the previous fabric.
        std::unique_lock lk(fabric_poll_mu_);
    }
    // TX engines load the pointer under their ring lock: taking each lock once waits out any
    // engine that may still be using the previous fabric.
    for (unsigned i = 0; i < hop_count_; ++i) {
        std::lock_guard lk(tx_[i].mu);
    }
}

void EmuNhi::surprise_remove() noexcept {
    gone_.store(true, std::memory_order_release);
    rx_arm_changed();  // a removed function sends no interrupts
}

// ---- RX helper ---------------------------------------------------------------------------------

namespace {
/// Longest single sleep of the RX helper: after the interrupt is disarmed it notices on its next
/// wake-up at the latest, then blocks without a timeout until the next arming.
constexpr std::chrono::seconds kRxHelperSleep{1};
}  // namespace

void EmuNhi::rx_arm_changed() noexcept {
    std::lock_guard lk(helper_mu_);
    const bool armed = irq_.rx_armed();
    if (armed == helper_armed_) {
        return;
    }
    helper_armed_ = armed;
    rx_armed_.store(armed, std::memory_order_release);
    ++helper_gen_;
    // The far end must know before the driver re-checks its rings after arming (Router /
    // ShmCable::want_wakeups order this with the far end's sends).
    Fabric* const f = fabric_.load(std::memory_order_acquire);
    const bool look_again = f != nullptr && f->set_inbound_wakeups(armed);
    if (armed && !helper_.joinable() && !helper_stop_) {
        try {
            helper_ = std::thread([this] { rx_helper_main(); });
        } catch (const std::system_error&) {
            // No thread: frames from another process then wait for the driver's own next poll
            // (its wait has a timeout); nothing is lost.
        }
    }
    if (look_again) {
        f->wake_inbound();  // frames held by the fabric fall due later: the helper must look
    }
    helper_cv_.notify_all();
}

EmuNhi::RxHelperHold EmuNhi::hold_rx_helper() noexcept {
    {
        std::lock_guard lk(helper_mu_);
        ++helper_holds_;
        ++helper_gen_;
        helper_abort_.store(true, std::memory_order_seq_cst);
    }
    if (Fabric* const f = fabric_.load(std::memory_order_acquire)) {
        f->wake_inbound();  // ends a wait in progress: it read the doorbell before `abort`
    }
    // The helper holds the gate for the whole time it is inside the fabric.
    { std::lock_guard gate(helper_gate_); }
    return RxHelperHold(this);
}

void EmuNhi::release_rx_helper() noexcept {
    {
        std::lock_guard lk(helper_mu_);
        --helper_holds_;
        ++helper_gen_;
        helper_abort_.store(helper_stop_ || helper_holds_ != 0, std::memory_order_seq_cst);
    }
    helper_cv_.notify_all();
}

bool EmuNhi::rx_helper_started() const {
    std::lock_guard lk(helper_mu_);
    return helper_.joinable();
}

void EmuNhi::rx_helper_main() noexcept {
    std::uint64_t gen = 0;
    for (;;) {
        {
            std::unique_lock lk(helper_mu_);
            // Idle while nothing is armed (the driver polls) or a hold is on.
            helper_cv_.wait(lk,
                            [&] { return helper_stop_ || (helper_armed_ && helper_holds_ == 0); });
            if (helper_stop_) {
                return;
            }
            gen = helper_gen_;
        }
        std::unique_lock gate(helper_gate_);
        if (helper_abort_.load(std::memory_order_seq_cst)) {
            continue;  // a hold began after the check above: back to waiting for its end
        }
        Fabric* const f = fabric_.load(std::memory_order_acquire);
        if (f == nullptr || !f->wait_inbound(helper_abort_, kRxHelperSleep)) {
            // Nothing from another process here: senders raise the interrupt in their own
            // thread. Block until something changes (arming, a new fabric, stop).
            gate.unlock();
            std::unique_lock lk(helper_mu_);
            helper_cv_.wait(lk, [&] { return helper_gen_ != gen; });
            continue;
        }
        if (rx_armed_.load(std::memory_order_acquire) &&
            !helper_abort_.load(std::memory_order_acquire)) {
            poll();  // the device's own work: into the RX rings, raising the RX interrupt
        }
    }
}

std::vector<EmuNhi::IommuFault> EmuNhi::faults() const {
    std::lock_guard lk(faults_mu_);
    return faults_;
}

bool EmuNhi::ring_halted(bool tx, unsigned ring) const {
    if (ring >= hop_count_) {
        return false;
    }
    if (tx) {
        std::lock_guard lk(tx_[ring].mu);
        return tx_[ring].regs.halted();
    }
    std::lock_guard lk(rx_[ring].mu);
    return rx_[ring].regs.halted();
}

void EmuNhi::record_fault(hw::Iova iova, std::size_t len, hw::DmaAccess access, bool tx,
                          unsigned ring) noexcept {
    ctr_.add<&NhiCounters::dma_faults>();
    std::lock_guard lk(faults_mu_);
    if (faults_.size() < kMaxFaultRecords) {
        faults_.push_back(IommuFault{iova, len, access, tx, ring});
    }
}

}  // namespace tbv::emu
