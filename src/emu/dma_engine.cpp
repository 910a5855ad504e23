// SPDX-License-Identifier: Apache-2.0
// The emulated NHI's DMA engines (ref §12.3): TX runs in the doorbell write, RX when a fabric
// delivers a frame. Every byte of host memory is reached through the IOMMU model; a refused access
// is recorded and halts the ring, as an IOMMU fault stops a real DMA engine.
//
// Ordering with the driver: the driver publishes a descriptor by writing it and then the index
// register (taking the ring's mutex here), so the engine's plain reads of the descriptor body are
// ordered after it; ctl is still loaded with acquire, pairing with a driver's release store. On
// completion the engine writes the data, then hw::dma_wmb(), then the ctl word with a release store
// through std::atomic_ref: a driver that loads ctl with acquire and sees DONE also sees the data.
//
// Link model (link.hpp, off by default): a ring with a DMA ceiling starts its descriptors no faster
// than RingPacer allows. What it may not start yet stays pending (not DONE) and the ring is marked
// for poll(), which takes it up once the engine is free; each frame carries the time it started
// (FrameView::sent_at), so a late poll does not make the cable look idle in between.
//
// Batching: the TX engine works through a doorbell kTxBatch descriptors at a time. It reads the
// descriptors and copies their frames into the ring's staging buffer under one IOMMU access, hands
// the batch to the fabric with no IOMMU lock held (the fabric may run another NHI's RX engine),
// then writes DONE back for the batch in ring order under a second access. receive_batch() takes
// the RX ring's lock and one IOMMU access for a whole batch. Per frame the model does what it did
// frame by frame; what a driver can observe differs only in timing (a frame's DONE is written
// after the rest of its batch has left, as a prefetching DMA engine would), and in one error case:
// when the write-back of a descriptor faults, the later frames of its batch have already left.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <limits>
#include <optional>

#include "emu/batch.hpp"
#include "emu/dma_copy.hpp"
#include "emu/nhi.hpp"
#include "hw/barrier.hpp"
#include "util/endian.hpp"

namespace tbv::emu {

using namespace hw::nhi;

namespace {

constexpr std::size_t kDescSize = sizeof(RingDesc);
constexpr std::size_t kCtlOffset = offsetof(RingDesc, ctl);

std::atomic_ref<std::uint32_t> ctl_word(std::byte* desc) noexcept {
    // Descriptors are 16-byte aligned (checked when the ring starts), so ctl is 4-byte aligned.
    return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(desc + kCtlOffset));
}

struct Desc {
    hw::Iova phys;
    std::uint32_t ctl;
};

/// Reads the descriptor at `at` (device read access), or nullopt on an IOMMU fault.
std::optional<Desc> read_desc(const Iommu::Access& io, hw::Iova at) noexcept {
    std::byte* const p = io.translate(at, kDescSize, hw::DmaAccess::read);
    if (p == nullptr) {
        return std::nullopt;
    }
    Desc d{};
    d.ctl = util::le32_to_cpu(ctl_word(p).load(std::memory_order_acquire));
    std::uint64_t phys;
    std::memcpy(&phys, p + offsetof(RingDesc, phys), sizeof phys);
    d.phys = util::le64_to_cpu(phys);
    return d;
}

/// Completes a descriptor: only its ctl dword is written (device write access).
bool write_back(const Iommu::Access& io, hw::Iova at, std::uint32_t ctl) noexcept {
    std::byte* const p = io.translate(at + kCtlOffset, sizeof(std::uint32_t), hw::DmaAccess::write);
    if (p == nullptr) {
        return false;
    }
    hw::dma_wmb();  // frame data before the DONE it is announced by
    std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(p))
        .store(util::cpu_to_le32(ctl), std::memory_order_release);
    return true;
}

constexpr bool pdf_in(std::uint16_t mask, unsigned pdf) noexcept {
    return pdf < 16 && ((static_cast<unsigned>(mask) >> pdf) & 1u) != 0;
}

}  // namespace

// ---- TX -------------------------------------------------------------------------------------

void EmuNhi::run_tx_locked(unsigned ring, TxRingState& r) noexcept {
    if (std::exchange(r.kick_pending, false)) {
        kicks_pending_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (gone_.load(std::memory_order_acquire) || !r.regs.running()) {
        return;
    }
    const RingConfig& cfg = r.regs.config();
    const std::uint32_t prod = r.regs.sw_index();
    if (prod >= cfg.count) {
        ctr_.add<&NhiCounters::bad_index_writes>();  // would never be reached by the consumer:
                                                     // ignore
        return;
    }
    Fabric* const fabric = fabric_.load(std::memory_order_acquire);
    // Link model: the ring's DMA ceiling (RingPacer). Descriptors the engine left pending last
    // time (`backlog`) have kept it busy since, so they start back to back from where it got to,
    // even if this poll comes late; a descriptor first seen now cannot start before now.
    const bool pacing = r.pacer.on();
    const Ps now_ps = pacing ? clock_.now().count() * kPsPerNs : 0;
    const auto pending = [&] {
        const std::uint32_t hw = r.regs.hw_index();
        return prod >= hw ? prod - hw : prod + cfg.count - hw;
    };
    std::uint32_t backlog = pacing ? std::min(r.paced_backlog, pending()) : 0;
    r.paced_backlog = 0;
    if (backlog > 0 && r.pacer.free_at() > now_ps) {
        // Still busy with the backlog (a poll, or a doorbell adding to it): nothing can start and
        // nothing is counted. Whatever a doorbell added now follows the backlog, which ends after
        // now, so it joins the backlog.
        r.paced_backlog = pending();
        r.kick_pending = true;
        kicks_pending_.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    // Why a batch ended before kTxBatch descriptors or the producer index.
    enum class Stop : std::uint8_t { none, gone, no_bus_master, unposted, fault, paced };
    struct Slot {
        hw::Iova at;        ///< descriptor
        std::uint32_t ctl;  ///< as read
    };
    std::array<Slot, kTxBatch> slots;
    BatchBuffer<FrameView, kTxBatch> frames;
    while (r.regs.hw_index() != prod) {
        // 1. Up to kTxBatch posted descriptors and their frames, read under one IOMMU access.
        unsigned n = 0;  // descriptors to complete; frames: what leaves (a raw oversize descriptor
                         // completes but sends nothing)
        frames.clear();
        std::uint64_t bytes = 0;
        Stop stop = Stop::none;
        IommuFault fault{};
        {
            const Iommu::Access io(iommu_);
            std::uint32_t idx = r.regs.hw_index();
            while (n < kTxBatch && idx != prod) {
                if (gone_.load(std::memory_order_acquire)) {
                    stop = Stop::gone;
                    break;
                }
                if (!bus_master_.load(std::memory_order_acquire)) {
                    stop = Stop::no_bus_master;  // ref §12.1: no DMA without bus mastering
                    break;
                }
                const hw::Iova at = cfg.base + hw::Iova{idx} * kDescSize;
                const std::optional<Desc> d = read_desc(io, at);
                if (!d) {
                    stop = Stop::fault;
                    fault = {at, kDescSize, hw::DmaAccess::read, true, ring};
                    break;
                }
                if (DESC_POSTED::get(d->ctl) == 0) {
                    stop = Stop::unposted;  // ref §12.3: POSTED is required
                    break;
                }
                const std::size_t len = desc_length_bytes(d->ctl);
                Clock::Duration::rep sent_at = kNoStamp;
                if (pacing) {
                    const Ps posted = backlog > 0 ? std::numeric_limits<Ps>::min() / 2 : now_ps;
                    const std::optional<Ps> start = r.pacer.start(posted, now_ps, len);
                    if (!start) {
                        stop = Stop::paced;  // the engine is still busy with earlier ones
                        break;
                    }
                    backlog -= backlog > 0 ? 1 : 0;
                    sent_at = *start / kPsPerNs;
                }
                if (cfg.raw && len > kRawFrameSize) {
                    // ref §3: a raw descriptor is one USB4 packet, at most 256 bytes incl. CRC.
                    // The descriptor completes (the ring must not wedge) but nothing leaves.
                    ctr_.add<&NhiCounters::tx_raw_oversize_drops>();
                } else {
                    const std::byte* const src = io.translate(d->phys, len, hw::DmaAccess::read);
                    if (src == nullptr) {
                        stop = Stop::fault;
                        fault = {d->phys, len, hw::DmaAccess::read, true, ring};
                        break;
                    }
                    std::byte* const staging = r.staging.get() + frames.size() * kMaxFrameSize;
                    dma_copy(staging, src, len);
                    frames.push(FrameView{DESC_SOF_PDF::get(d->ctl), DESC_EOF_PDF::get(d->ctl),
                                          std::span<const std::byte>(staging, len), false,
                                          sent_at});
                    bytes += len;
                }
                slots[n++] = Slot{at, d->ctl};
                idx = idx + 1 == cfg.count ? 0 : idx + 1;
            }
        }
        // 2. The frames leave, with no IOMMU lock held: the fabric may run another NHI's RX
        // engine, which takes that NHI's IOMMU.
        if (!frames.empty()) {
            if (fabric != nullptr) {
                fabric->transmit_batch(*this, ring, frames.span());
                ctr_.add<&NhiCounters::tx_frames>(frames.size());
                ctr_.add<&NhiCounters::tx_bytes>(bytes);
            } else {
                // No cable: the frames go nowhere.
                ctr_.add<&NhiCounters::tx_no_fabric_drops>(frames.size());
            }
        }
        // 3. ref §12.3: write back DONE keeping the other bits, in ring order.
        {
            const Iommu::Access io(iommu_);
            for (unsigned i = 0; i < n; ++i) {
                if (!write_back(io, slots[i].at, DESC_DONE::set(slots[i].ctl, 1))) {
                    stop = Stop::fault;
                    fault = {slots[i].at + kCtlOffset, sizeof(std::uint32_t), hw::DmaAccess::write,
                             true, ring};
                    break;
                }
                r.regs.advance_hw();
                if (DESC_INTERRUPT::get(slots[i].ctl) != 0) {
                    irq_.raise(IrqKind::tx, ring);
                }
            }
        }
        // 4. Whatever ended the batch early.
        switch (stop) {
            case Stop::none: break;
            case Stop::gone: return;
            case Stop::no_bus_master:
                // Remember the doorbell for poll().
                r.kick_pending = true;
                kicks_pending_.fetch_add(1, std::memory_order_relaxed);
                ctr_.add<&NhiCounters::tx_bus_master_stalls>();
                return;
            case Stop::unposted:
                // The next doorbell retries this slot.
                ctr_.add<&NhiCounters::tx_unposted_stops>();
                return;
            case Stop::fault:
                record_fault(fault.iova, fault.len, fault.access, true, ring);
                r.regs.halt();
                return;
            case Stop::paced:
                // The rest waits for the engine: a later doorbell or poll() takes it up.
                r.paced_backlog = pending();
                r.kick_pending = true;
                kicks_pending_.fetch_add(1, std::memory_order_relaxed);
                ctr_.add<&NhiCounters::tx_paced_stops>();
                return;
        }
    }
}

// ---- RX -------------------------------------------------------------------------------------

RxResult EmuNhi::receive(unsigned ring, const FrameView& f) noexcept {
    if (ring >= hop_count_) {
        ctr_.add<&NhiCounters::rx_disabled_drops>();
        return RxResult::ring_disabled;
    }
    RxRingState& r = rx_[ring];
    std::lock_guard lk(r.mu);
    const Iommu::Access io(iommu_);
    return receive_locked(ring, r, io, f);
}

unsigned EmuNhi::receive_batch(unsigned ring, std::span<const FrameView> frames) noexcept {
    if (frames.empty()) {
        return 0;
    }
    if (ring >= hop_count_) {
        ctr_.add<&NhiCounters::rx_disabled_drops>(frames.size());
        return 0;
    }
    RxRingState& r = rx_[ring];
    std::lock_guard lk(r.mu);
    const Iommu::Access io(iommu_);
    unsigned delivered = 0;
    for (const FrameView& f : frames) {
        delivered += receive_locked(ring, r, io, f) == RxResult::delivered ? 1u : 0u;
    }
    return delivered;
}

RxResult EmuNhi::receive_locked(unsigned ring, RxRingState& r, const Iommu::Access& io,
                                const FrameView& f) noexcept {
    if (gone_.load(std::memory_order_acquire) || !r.regs.running()) {
        ctr_.add<&NhiCounters::rx_disabled_drops>();
        return RxResult::ring_disabled;
    }
    if (!bus_master_.load(std::memory_order_acquire)) {
        ctr_.add<&NhiCounters::rx_no_bus_master_drops>();
        return RxResult::no_bus_master;
    }
    const RingConfig& cfg = r.regs.config();
    if (f.data.empty()) {
        // No descriptor can report a zero-byte frame (length 0 means 4096): a fabric bug.
        ctr_.add<&NhiCounters::rx_malformed_drops>();
        return RxResult::pdf_mismatch;
    }
    if (!cfg.raw && !(pdf_in(cfg.sof_mask, f.sof_pdf) && pdf_in(cfg.eof_mask, f.eof_pdf))) {
        ctr_.add<&NhiCounters::rx_pdf_drops>();  // ref §2.3: masks decide what frames this ring
                                                 // takes
        return RxResult::pdf_mismatch;
    }

    // ref §4.5: no posted descriptor ⇒ drop and set the RX-overflow status.
    const auto overflow = [&] {
        ctr_.add<&NhiCounters::rx_overflow_drops>();
        irq_.raise(IrqKind::rx_overflow, ring);
        return RxResult::no_descriptor;
    };
    // The driver's latest refill (acquire: the descriptors it published come with it).
    r.regs.set_sw_index(r.sw_index.load(std::memory_order_acquire));
    const std::uint32_t prod = r.regs.sw_index();
    if (prod >= cfg.count || r.regs.hw_index() == prod) {
        return overflow();
    }
    const hw::Iova at = cfg.base + hw::Iova{r.regs.hw_index()} * kDescSize;
    const std::optional<Desc> d = read_desc(io, at);
    if (!d) {
        record_fault(at, kDescSize, hw::DmaAccess::read, false, ring);
        r.regs.halt();
        return RxResult::dma_fault;
    }
    if (DESC_POSTED::get(d->ctl) == 0) {
        return overflow();
    }

    const std::size_t cap = std::min<std::size_t>(cfg.buf_size, kMaxFrameSize);
    const std::size_t n = std::min(f.data.size(), cap);
    const bool overrun = f.data.size() > n;
    std::byte* const dst = io.translate(d->phys, n, hw::DmaAccess::write);
    if (dst == nullptr) {
        record_fault(d->phys, n, hw::DmaAccess::write, false, ring);
        r.regs.halt();
        return RxResult::dma_fault;
    }
    dma_copy(dst, f.data.data(), n);

    // ref §12.3 RX write-back: length (4096 ⇒ 0 through the 12-bit field), PDFs (raw: SOF 0,
    // EOF = PDF), DONE, INTERRUPT as posted, and bit 22 cleared unless it reports an overrun.
    const auto len = static_cast<std::uint32_t>(n);
    const auto eof = static_cast<std::uint32_t>(f.eof_pdf);
    const auto sof = cfg.raw ? 0u : static_cast<std::uint32_t>(f.sof_pdf);
    std::uint32_t ctl = DESC_LENGTH::make(len) | DESC_EOF_PDF::make(eof) | DESC_SOF_PDF::make(sof) |
                        DESC_DONE::make(1) | (d->ctl & DESC_INTERRUPT::kMask);
    if (f.crc_error && !cfg.raw) {
        ctl |= DESC_CRC_ERROR::make(1);
        ctr_.add<&NhiCounters::rx_crc_errors>();
    }
    if (overrun) {
        ctl |= DESC_BUFFER_OVERRUN::make(1);
        ctr_.add<&NhiCounters::rx_overruns>();
    }
    if (!write_back(io, at, ctl)) {
        record_fault(at + kCtlOffset, sizeof(std::uint32_t), hw::DmaAccess::write, false, ring);
        r.regs.halt();
        return RxResult::dma_fault;
    }
    r.regs.advance_hw();
    ctr_.add<&NhiCounters::rx_frames>();
    ctr_.add<&NhiCounters::rx_bytes>(n);
    if (DESC_INTERRUPT::get(d->ctl) != 0) {
        irq_.raise(IrqKind::rx, ring);
    }
    return RxResult::delivered;
}

}  // namespace tbv::emu
