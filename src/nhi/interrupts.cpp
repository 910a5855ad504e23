// SPDX-License-Identifier: Apache-2.0
#include "nhi/interrupts.hpp"

namespace tbv::nhi {

using namespace hw::nhi;

void Interrupts::init(std::uint32_t throttle_ns) noexcept {
    std::uint32_t misc = dev_.read32(REG_DMA_MISC);
    if (mode_ == IrqMode::w1c) {
        misc = DMA_MISC_DISABLE_AUTO_CLEAR::set(misc, 1);
        misc = DMA_MISC_INT_AUTO_CLEAR::set(misc, 0);
    } else {
        misc = DMA_MISC_INT_AUTO_CLEAR::set(misc, 1);
        misc = DMA_MISC_DISABLE_AUTO_CLEAR::set(misc, 0);
    }
    dev_.write32(REG_DMA_MISC, misc);

    for (unsigned i = 0; i < enable_dwords(hop_count_); ++i) {
        dev_.write32(REG_RING_INTERRUPT_BASE + 4 * i, 0);
    }
    for (unsigned i = 0; i < vec_alloc_dwords(hop_count_); ++i) {
        dev_.write32(REG_INT_VEC_ALLOC_BASE + 4 * i, 0);
    }
    (void)take_status();
    if (mode_ == IrqMode::w1c) {
        // Linux writes ~0 to every clear dword at init (ref §2.4) in case NOTIFY reads lag.
        for (unsigned i = 0; i < notify_dwords(hop_count_); ++i) {
            dev_.write32(REG_RING_INT_CLEAR + 4 * i, ~0u);
        }
    }
    for (unsigned v = 0; v < kMaxMsixVectors; ++v) {
        set_throttle(v, throttle_ns);
    }
}

void Interrupts::set_enable_bit(unsigned bit, bool on) noexcept {
    const std::uint32_t reg = bitmap_reg(REG_RING_INTERRUPT_BASE, bit);
    const std::uint32_t old = dev_.read32(reg);
    const std::uint32_t val = on ? old | bitmap_mask(bit) : old & ~bitmap_mask(bit);
    if (val != old) {
        dev_.write32(reg, val);
    }
}

void Interrupts::set_vector(unsigned irq_index, unsigned vector) noexcept {
    const std::uint32_t reg = vec_alloc_reg(irq_index);
    const unsigned shift = vec_alloc_shift(irq_index);
    std::uint32_t val = dev_.read32(reg);
    val &= ~(kVecAllocMask << shift);
    val |= (vector & kVecAllocMask) << shift;
    dev_.write32(reg, val);
}

void Interrupts::enable(IrqKind kind, unsigned ring, unsigned vector) noexcept {
    std::lock_guard g(rmw_mu_);
    const unsigned bit = irq_bit(kind, ring, hop_count_);
    // Order of ref §4.2 step 5: mode bit (set at init), vector nibble, then the enable bit, so the
    // first message already goes to the right vector.
    set_vector(bit, vector);
    set_enable_bit(bit, true);
}

void Interrupts::route(IrqKind kind, unsigned ring, unsigned vector) noexcept {
    std::lock_guard g(rmw_mu_);
    set_vector(irq_bit(kind, ring, hop_count_), vector);
}

void Interrupts::disable(IrqKind kind, unsigned ring) noexcept {
    std::lock_guard g(rmw_mu_);
    const unsigned bit = irq_bit(kind, ring, hop_count_);
    if (mode_ == IrqMode::w1c && hop_count_ <= kMaxHopCountMaskClear) {
        // Non-Intel stop path writes the bit to MASK_CLEAR (ref §4.3), no read-modify-write race
        // with an interrupt handler enabling another ring.
        dev_.write32(bitmap_reg(REG_RING_INTERRUPT_MASK_CLEAR_BASE, bit), bitmap_mask(bit));
    } else {
        set_enable_bit(bit, false);
    }
    set_vector(bit, 0);
}

void Interrupts::mask(IrqKind kind, unsigned ring) noexcept {
    std::lock_guard g(rmw_mu_);
    set_enable_bit(irq_bit(kind, ring, hop_count_), false);
}

void Interrupts::unmask(IrqKind kind, unsigned ring) noexcept {
    std::lock_guard g(rmw_mu_);
    set_enable_bit(irq_bit(kind, ring, hop_count_), true);
}

bool Interrupts::enabled(IrqKind kind, unsigned ring) noexcept {
    const unsigned bit = irq_bit(kind, ring, hop_count_);
    return (dev_.read32(bitmap_reg(REG_RING_INTERRUPT_BASE, bit)) & bitmap_mask(bit)) != 0;
}

IrqStatus Interrupts::take_status() noexcept {
    std::array<std::uint32_t, 6> words{};
    const unsigned n = notify_dwords(hop_count_);
    // Every dword is read: in clear-on-read mode new messages are raised only after all of them
    // have been read (ref §2.4, Linux comment).
    for (unsigned i = 0; i < n && i < words.size(); ++i) {
        words[i] = dev_.read32(REG_RING_NOTIFY_BASE + 4 * i);
    }
    if (mode_ == IrqMode::w1c && hop_count_ <= kMaxHopCountW1C) {
        // Clear exactly what we saw: an event that arrives between the read and this write stays
        // pending instead of being lost.
        for (unsigned i = 0; i < n; ++i) {
            if (words[i] != 0) {
                dev_.write32(REG_RING_INT_CLEAR + 4 * i, words[i]);
            }
        }
    }
    return IrqStatus(words, hop_count_);
}

bool Interrupts::clear(IrqKind kind, unsigned ring) noexcept {
    if (mode_ != IrqMode::w1c || hop_count_ > kMaxHopCountW1C) {
        (void)take_status();
        return false;
    }
    const unsigned bit = irq_bit(kind, ring, hop_count_);
    dev_.write32(bitmap_reg(REG_RING_INT_CLEAR, bit), bitmap_mask(bit));
    return true;
}

void Interrupts::set_throttle(unsigned vector, std::uint32_t ns) noexcept {
    if (vector >= kMaxMsixVectors) {
        return;
    }
    const std::uint32_t units = ns / kThrottleUnitNs + (ns % kThrottleUnitNs != 0 ? 1 : 0);
    dev_.write32(throttle_reg(vector), units);
}

}  // namespace tbv::nhi
