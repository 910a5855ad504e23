// SPDX-License-Identifier: Apache-2.0
#include "nhi/ring.hpp"

#include <atomic>

#include "hw/barrier.hpp"
#include "util/endian.hpp"

namespace tbv::nhi {

using namespace hw::nhi;

namespace {

/// The ctl word is the hand-off point with the device: always accessed atomically (acquire when
/// reading what hardware wrote), which also gives ThreadSanitizer the edge with the emulator.
std::uint32_t load_ctl(RingDesc& d) noexcept {
    return util::le32_to_cpu(std::atomic_ref<std::uint32_t>(d.ctl).load(std::memory_order_acquire));
}
void store_ctl(RingDesc& d, std::uint32_t ctl) noexcept {
    // Relaxed is enough: the device reads descriptors only after the doorbell, which io_wmb()
    // orders after every descriptor write of the batch.
    std::atomic_ref<std::uint32_t>(d.ctl).store(util::cpu_to_le32(ctl), std::memory_order_relaxed);
}

Result<void> validate(const Nhi& nhi, const RingConfig& cfg, Direction dir) {
    if (cfg.size < 2 || cfg.size > kMaxRingSize) {
        return fail(std::errc::invalid_argument);
    }
    if (cfg.ring && *cfg.ring >= nhi.hop_count()) {
        return fail(Errc::ring_unavailable);
    }
    if (dir == Direction::rx) {
        const std::uint32_t max = cfg.raw ? kRawFrameSize : kMaxFrameSize;
        if (cfg.rx_buffer_size == 0 || cfg.rx_buffer_size > max) {
            return fail(std::errc::invalid_argument);
        }
        if (cfg.e2e && !RX_FLAG_E2E_HOP::fits(cfg.rx_e2e_tx_hop)) {
            return fail(std::errc::invalid_argument);
        }
    }
    if (cfg.irq_vector && *cfg.irq_vector >= nhi.irq_vectors()) {
        return fail(std::errc::invalid_argument);
    }
    return ok();
}

/// Claims the ring number and allocates its descriptor array (filled with 0xff so a premature
/// DMA activation would chase an all-ones address, the ixy/Snabb trick).
Result<std::pair<unsigned, hw::DmaRegion>> prepare(Nhi& nhi, const RingConfig& cfg, Direction dir) {
    if (auto v = validate(nhi, cfg, dir); !v) {
        return Failure{v.error()};
    }
    auto ring = nhi.claim_ring(dir, cfg.ring);
    if (!ring) {
        return Failure{ring.error()};
    }
    auto descs = hw::DmaRegion::create(nhi.device(), std::size_t{cfg.size} * sizeof(RingDesc),
                                       hw::DmaAccess::read_write, 0xff);
    if (!descs) {
        nhi.release_ring(dir, *ring);
        return Failure{descs.error()};
    }
    return std::pair<unsigned, hw::DmaRegion>{*ring, std::move(*descs)};
}

}  // namespace

RingBase::RingBase(Nhi& nhi, Direction dir, unsigned ring, unsigned size, bool raw,
                   hw::DmaRegion descs, std::optional<unsigned> vector)
    : desc_(reinterpret_cast<RingDesc*>(descs.data())),
      cookies_(nullptr),
      dev_(&nhi.device()),
      size_(size),
      index_reg_((dir == Direction::tx ? tx_ring_reg(ring) : rx_ring_reg(ring)) + RING_INDEX),
      raw_(raw),
      dir_(dir),
      ring_(ring),
      nhi_(nhi),
      vector_(vector),
      cookie_store_(std::make_unique<std::uint64_t[]>(size)),
      descs_(std::move(descs)) {
    cookies_ = cookie_store_.get();
}

RingBase::~RingBase() {
    (void)stop();
    nhi_.release_ring(dir_, ring_);
}

void RingBase::start(std::uint32_t size_reg, std::uint32_t pdf_reg, std::uint32_t flags,
                     std::uint32_t e2e_flags) noexcept {
    const bool tx = dir_ == Direction::tx;
    const std::uint32_t regs = tx ? tx_ring_reg(ring_) : rx_ring_reg(ring_);
    const std::uint32_t opts = tx ? tx_options_reg(ring_) : rx_options_reg(ring_);
    const hw::Iova base = descs_.iova();
    // ref §4.2: base lo, base hi, size, PDF masks, then the flags word with ENABLE last so the
    // hardware latches a complete configuration.
    dev_->write32(regs + RING_BASE_LO, static_cast<std::uint32_t>(base));
    dev_->write32(regs + RING_BASE_HI, static_cast<std::uint32_t>(base >> 32));
    dev_->write32(regs + RING_SIZE, size_reg);
    dev_->write32(opts + OPTS_PDF, pdf_reg);
    dev_->write32(opts + OPTS_FLAGS, flags);
    if (e2e_flags != 0) {
        // ref §4.2 step 4: E2E is added after ENABLE.
        dev_->write32(opts + OPTS_FLAGS, flags | e2e_flags);
    }
    if (vector_ && irq_masked_) {
        nhi_.interrupts().route(tx ? IrqKind::tx : IrqKind::rx, ring_, *vector_);
    } else if (vector_) {
        nhi_.interrupts().enable(tx ? IrqKind::tx : IrqKind::rx, ring_, *vector_);
    }
    head_ = tail_ = 0;
    running_ = true;
}

std::vector<std::uint64_t> RingBase::stop() noexcept {
    std::vector<std::uint64_t> cancelled;
    if (!running_) {
        return cancelled;
    }
    const bool tx = dir_ == Direction::tx;
    const std::uint32_t regs = tx ? tx_ring_reg(ring_) : rx_ring_reg(ring_);
    const std::uint32_t opts = tx ? tx_options_reg(ring_) : rx_options_reg(ring_);
    // ref §4.3: interrupt off, options 0, base 0, index 0, size 0.
    if (vector_) {
        nhi_.interrupts().disable(tx ? IrqKind::tx : IrqKind::rx, ring_);
    }
    dev_->write32(opts + OPTS_FLAGS, 0);
    dev_->write32(regs + RING_BASE_LO, 0);
    dev_->write32(regs + RING_BASE_HI, 0);
    dev_->write32(regs + RING_INDEX, 0);
    dev_->write32(regs + RING_SIZE, 0);
    running_ = false;
    try {
        cancelled.reserve(in_flight());
    } catch (...) {
        // Out of memory on a cold path: report nothing rather than throw through noexcept.
    }
    for (unsigned i = tail_; i != head_; i = next(i)) {
        if (cancelled.size() < cancelled.capacity()) {
            cancelled.push_back(cookies_[i]);
        }
    }
    head_ = tail_ = 0;
    return cancelled;
}

// ---- TX ------------------------------------------------------------------------------------

Result<std::unique_ptr<TxRing>> TxRing::create(Nhi& nhi, const RingConfig& cfg) {
    auto prep = prepare(nhi, cfg, Direction::tx);
    if (!prep) {
        return Failure{prep.error()};
    }
    std::unique_ptr<TxRing> ring(new TxRing(nhi, Direction::tx, prep->first, cfg.size, cfg.raw,
                                            std::move(prep->second), cfg.irq_vector));
    ring->irq_masked_ = cfg.irq_masked;
    std::uint32_t flags = RING_FLAG_ENABLE::make(1);
    if (cfg.raw) {
        flags |= RING_FLAG_RAW::make(1);
    }
    ring->start(RING_SIZE_COUNT::make(cfg.size), 0, flags, cfg.e2e ? RING_FLAG_E2E::make(1) : 0);
    return ring;
}

PostResult TxRing::post(std::span<const TxFrame> frames) noexcept {
    if (!running_) {
        return {0, PostStatus::stopped};
    }
    const std::uint32_t max_len = raw_ ? kRawFrameSize : kMaxFrameSize;
    PostResult res;
    for (const TxFrame& f : frames) {
        if (next(head_) == tail_) {
            res.status = PostStatus::ring_full;
            break;
        }
        if (f.length == 0 || f.length > max_len || f.sof_pdf > 0xf || f.eof_pdf > 0xf) {
            res.status = PostStatus::invalid_frame;
            break;
        }
        RingDesc& d = desc_[head_];
        d.phys = util::cpu_to_le64(f.iova);
        d.time = 0;
        std::uint32_t ctl = DESC_LENGTH::make(f.length) | DESC_EOF_PDF::make(f.eof_pdf) |
                            DESC_SOF_PDF::make(f.sof_pdf) | DESC_POSTED::make(1);
        if (f.interrupt) {
            ctl |= DESC_INTERRUPT::make(1);
        }
        store_ctl(d, ctl);  // 4096 encodes as length 0 through the 12-bit field
        cookies_[head_] = f.cookie;
        head_ = next(head_);
        ++res.posted;
    }
    if (res.posted > 0) {
        hw::io_wmb();  // descriptors visible before the doorbell
        dev_->write32(index_reg_, TX_INDEX_SW_PROD::make(head_));
    }
    return res;
}

unsigned TxRing::reap(std::span<std::uint64_t> cookies) noexcept {
    dev_->poll();
    unsigned n = 0;
    while (tail_ != head_ && n < cookies.size()) {
        const std::uint32_t ctl = load_ctl(desc_[tail_]);
        if (DESC_DONE::get(ctl) == 0) {
            break;
        }
        hw::dma_rmb();  // nothing else of the descriptor is read before DONE was seen
        cookies[n++] = cookies_[tail_];
        tail_ = next(tail_);
    }
    return n;
}

// ---- RX ------------------------------------------------------------------------------------

Result<std::unique_ptr<RxRing>> RxRing::create(Nhi& nhi, const RingConfig& cfg) {
    auto prep = prepare(nhi, cfg, Direction::rx);
    if (!prep) {
        return Failure{prep.error()};
    }
    std::unique_ptr<RxRing> ring(new RxRing(nhi, Direction::rx, prep->first, cfg.size, cfg.raw,
                                            std::move(prep->second), cfg.irq_vector));
    ring->buffer_size_ = cfg.rx_buffer_size;
    ring->interrupt_ = cfg.irq_vector.has_value();
    ring->irq_masked_ = cfg.irq_masked;
    std::uint32_t flags = RING_FLAG_ENABLE::make(1);
    if (cfg.raw) {
        flags |= RING_FLAG_RAW::make(1);
    }
    // Buffer size 4096 is written as 0 (ref §2.2).
    const std::uint32_t size_reg =
        RING_SIZE_COUNT::make(cfg.size) | RX_SIZE_BUFFER::make(cfg.rx_buffer_size & 0xfffu);
    const std::uint32_t pdf =
        RX_PDF_SOF_MASK::make(cfg.rx_sof_mask) | RX_PDF_EOF_MASK::make(cfg.rx_eof_mask);
    const std::uint32_t e2e =
        cfg.e2e ? RING_FLAG_E2E::make(1) | RX_FLAG_E2E_HOP::make(cfg.rx_e2e_tx_hop) : 0;
    ring->start(size_reg, pdf, flags, e2e);
    return ring;
}

PostResult RxRing::post(std::span<const RxBuffer> buffers) noexcept {
    if (!running_) {
        return {0, PostStatus::stopped};
    }
    PostResult res;
    const std::uint32_t ctl = DESC_POSTED::make(1) | (interrupt_ ? DESC_INTERRUPT::make(1) : 0u);
    for (const RxBuffer& b : buffers) {
        if (next(head_) == tail_) {
            res.status = PostStatus::ring_full;
            break;
        }
        RingDesc& d = desc_[head_];
        d.phys = util::cpu_to_le64(b.iova);
        d.time = 0;
        store_ctl(d, ctl);
        cookies_[head_] = b.cookie;
        head_ = next(head_);
        ++res.posted;
    }
    if (res.posted > 0) {
        hw::io_wmb();  // descriptors visible before the doorbell
        dev_->write32(index_reg_, RX_INDEX_SW_PROD::make(head_));
    }
    return res;
}

unsigned RxRing::poll(std::span<RxCompletion> out) noexcept {
    dev_->poll();
    unsigned n = 0;
    while (tail_ != head_ && n < out.size()) {
        const std::uint32_t ctl = load_ctl(desc_[tail_]);
        if (DESC_DONE::get(ctl) == 0) {
            break;
        }
        hw::dma_rmb();  // length/PDF/flags only after DONE
        RxCompletion& c = out[n++];
        c.cookie = cookies_[tail_];
        c.length = static_cast<std::uint32_t>(desc_length_bytes(ctl));
        c.sof_pdf = static_cast<std::uint8_t>(DESC_SOF_PDF::get(ctl));
        c.eof_pdf = static_cast<std::uint8_t>(DESC_EOF_PDF::get(ctl));
        c.crc_error = !raw_ && DESC_CRC_ERROR::get(ctl) != 0;
        // On RX write-back bit 22 means BUFFER_OVERRUN (hardware clears our POSTED there).
        c.overrun = DESC_BUFFER_OVERRUN::get(ctl) != 0;
        tail_ = next(tail_);
    }
    return n;
}

}  // namespace tbv::nhi
