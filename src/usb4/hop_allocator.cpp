// SPDX-License-Identifier: Apache-2.0
#include "usb4/hop_allocator.hpp"

namespace tbv::usb4 {

Result<unsigned> HopIdAllocator::allocate() {
    for (unsigned h = first_; h <= last_; ++h) {
        if (!used_.test(h)) {
            used_.set(h);
            return h;
        }
    }
    return fail(Errc::hop_in_use);
}

Result<unsigned> HopIdAllocator::claim(unsigned hop) {
    if (hop < first_ || hop > last_) {
        return fail(std::errc::invalid_argument);
    }
    if (used_.test(hop)) {
        return fail(Errc::hop_in_use);
    }
    used_.set(hop);
    return hop;
}

void HopIdAllocator::release(unsigned hop) noexcept {
    if (hop <= kMaxHopId) {
        used_.reset(hop);
    }
}

}  // namespace tbv::usb4
