// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <array>
#include <cstring>

#include "emu/nhi.hpp"

namespace tbv::emu {

PairFabric::PairFabric(EmuNhi& a, EmuNhi& b) : a_(a), b_(b) {
    a_.attach(this);
    b_.attach(this);
}

PairFabric::~PairFabric() {
    // Only undo our own attachment: someone may have rewired an NHI to another fabric since.
    if (a_.fabric() == this) {
        a_.attach(nullptr);
    }
    if (b_.fabric() == this) {
        b_.attach(nullptr);
    }
}

void PairFabric::corrupt_next(unsigned n) noexcept {
    corrupt_budget_.fetch_add(n, std::memory_order_relaxed);
}

void PairFabric::drop_next(unsigned n) noexcept {
    drop_budget_.fetch_add(n, std::memory_order_relaxed);
}

PairFabric::Stats PairFabric::stats() const noexcept {
    return {delivered_.load(std::memory_order_relaxed), refused_.load(std::memory_order_relaxed),
            dropped_.load(std::memory_order_relaxed), corrupted_.load(std::memory_order_relaxed)};
}

bool PairFabric::take_one(std::atomic<unsigned>& budget) noexcept {
    unsigned left = budget.load(std::memory_order_relaxed);
    while (left > 0) {
        if (budget.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

void PairFabric::transmit(EmuNhi& from, unsigned ring, const FrameView& frame) noexcept {
    EmuNhi& to = &from == &a_ ? b_ : a_;
    if (take_one(drop_budget_)) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    RxResult res;
    if (take_one(corrupt_budget_)) {
        // A bit error on the cable: the receiver gets different bytes and, in frame mode, the
        // link CRC failure (ref §12.5 fault injection). Built on the stack: no allocation, and
        // frames of two threads never share it. Frames are at most 4096 bytes (12-bit length).
        std::array<std::byte, hw::nhi::kMaxFrameSize> bad;
        const std::size_t n = std::min(frame.data.size(), bad.size());
        std::memcpy(bad.data(), frame.data.data(), n);
        if (n > 0) {
            bad[n / 2] ^= std::byte{0x10};
        }
        FrameView corrupted = frame;
        corrupted.data = std::span<const std::byte>(bad.data(), n);
        corrupted.crc_error = true;
        corrupted_.fetch_add(1, std::memory_order_relaxed);
        res = to.receive(ring, corrupted);
    } else {
        res = to.receive(ring, frame);
    }
    (res == RxResult::delivered ? delivered_ : refused_).fetch_add(1, std::memory_order_relaxed);
}

void PairFabric::transmit_batch(EmuNhi& from, unsigned ring,
                                std::span<const FrameView> frames) noexcept {
    if (drop_budget_.load(std::memory_order_relaxed) != 0 ||
        corrupt_budget_.load(std::memory_order_relaxed) != 0) {
        Fabric::transmit_batch(from, ring, frames);  // frame by frame: the budgets count frames
        return;
    }
    EmuNhi& to = &from == &a_ ? b_ : a_;
    const unsigned n = to.receive_batch(ring, frames);
    delivered_.fetch_add(n, std::memory_order_relaxed);
    refused_.fetch_add(frames.size() - n, std::memory_order_relaxed);
}

}  // namespace tbv::emu
