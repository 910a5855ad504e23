// SPDX-License-Identifier: Apache-2.0
#include "emu/ring.hpp"

namespace tbv::emu {

using namespace hw::nhi;

std::uint32_t RingRegs::read_ring(std::uint32_t off) const noexcept {
    switch (off) {
        case RING_BASE_LO: return base_lo_;
        case RING_BASE_HI: return base_hi_;
        case RING_INDEX:
            // ref §2.2: TX = [31:16] SW producer | [15:0] HW consumer; RX the other way round.
            return dir_ == RingDir::tx
                       ? TX_INDEX_SW_PROD::make(sw_index_) | TX_INDEX_HW_CONS::make(hw_index_)
                       : RX_INDEX_HW_CONS::make(hw_index_) | RX_INDEX_SW_PROD::make(sw_index_);
        case RING_SIZE: return size_;
        default: return 0;
    }
}

RingEvent RingRegs::write_ring(std::uint32_t off, std::uint32_t value) noexcept {
    switch (off) {
        case RING_BASE_LO: base_lo_ = value; return RingEvent::none;
        case RING_BASE_HI: base_hi_ = value; return RingEvent::none;
        case RING_INDEX:
            // ref §2.2: only the software half is writable; the hardware half of the value is
            // ignored (it moves only when the engine consumes descriptors).
            if (dir_ == RingDir::tx) {
                sw_index_ = TX_INDEX_SW_PROD::get(value);
                return RingEvent::doorbell;
            }
            sw_index_ = RX_INDEX_SW_PROD::get(value);
            return RingEvent::none;
        case RING_SIZE:
            // TX has only the count; RX also the buffer size in [31:16].
            size_ =
                dir_ == RingDir::tx ? RING_SIZE_COUNT::make(RING_SIZE_COUNT::get(value)) : value;
            return RingEvent::none;
        default: return RingEvent::none;
    }
}

std::uint32_t RingRegs::read_options(std::uint32_t off) const noexcept {
    switch (off) {
        case OPTS_FLAGS: return flags_;
        case OPTS_PDF: return pdf_;
        default: return 0;  // +0x8..0x1c: unknown (ref §13.6), read 0
    }
}

RingEvent RingRegs::write_options(std::uint32_t off, std::uint32_t value) noexcept {
    switch (off) {
        case OPTS_FLAGS: return set_flags(value);
        case OPTS_PDF: pdf_ = value; return RingEvent::none;
        default: return RingEvent::none;
    }
}

RingEvent RingRegs::set_flags(std::uint32_t value) noexcept {
    const bool was = RING_FLAG_ENABLE::get(flags_) != 0;
    const bool now = RING_FLAG_ENABLE::get(value) != 0;
    flags_ = value;
    if (was && !now) {
        // ref §12.2.2 / §4.3: the hardware half resets when ENABLE clears; a halt ends here too.
        running_ = false;
        halted_ = false;
        hw_index_ = 0;
        return RingEvent::stopped;
    }
    if (was || !now) {
        return RingEvent::none;  // 1→1 (e.g. E2E added after ENABLE, ref §4.2 step 4) or 0→0
    }
    // ref §12.2.3: latch the whole configuration at ENABLE 0→1.
    RingConfig c;
    c.base = (hw::Iova{base_hi_} << 32) | base_lo_;
    c.count = RING_SIZE_COUNT::get(size_);
    c.buf_size = dir_ == RingDir::rx ? RX_SIZE_BUFFER::get(size_) : 0;
    if (c.buf_size == 0) {
        c.buf_size = kMaxFrameSize;  // ref §2.2: 0 = 4096
    }
    c.raw = RING_FLAG_RAW::get(value) != 0;
    c.sof_mask = static_cast<std::uint16_t>(RX_PDF_SOF_MASK::get(pdf_));
    c.eof_mask = static_cast<std::uint16_t>(RX_PDF_EOF_MASK::get(pdf_));
    cfg_ = c;
    hw_index_ = 0;
    halted_ = false;
    // A ring with no descriptors or a descriptor array that is not 16-byte aligned (ref §3:
    // 16-byte descriptors) cannot run; the register keeps ENABLE but no DMA will happen.
    running_ = c.count != 0 && c.base % sizeof(RingDesc) == 0;
    return running_ ? RingEvent::started : RingEvent::start_rejected;
}

void RingRegs::power_on() noexcept {
    *this = RingRegs(dir_);
}

}  // namespace tbv::emu
