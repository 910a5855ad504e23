// SPDX-License-Identifier: Apache-2.0
// HopIdAllocator: the input HopIDs of one adapter (ref §9.1). Lane adapters reserve 0–7 (HopID 0
// is the control path, TB_PATH_MIN_HOPID = 8, ref §6.5); their upper bound is the adapter's
// ADP_CS_5 max input HopID. NHI HopIDs are ring numbers and are handed out by nhi::Nhi instead.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>

#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"

namespace tbv::usb4 {

class HopIdAllocator {
public:
    /// Largest HopID the 11-bit path fields can name.
    static constexpr unsigned kMaxHopId = 2047;

    HopIdAllocator() = default;
    /// HopIDs [first, last] are allocatable; last is clamped to kMaxHopId.
    HopIdAllocator(unsigned first, unsigned last) noexcept
        : first_(first), last_(last > kMaxHopId ? kMaxHopId : last) {}

    /// For a lane adapter whose ADP_CS_5 reports `max_input_hop`.
    static HopIdAllocator for_lane(unsigned max_input_hop) noexcept {
        return {hw::usb4::kMinLaneHopId, max_input_hop};
    }

    /// Lowest free HopID, or Errc::hop_in_use when none is left.
    Result<unsigned> allocate();
    /// A specific HopID (e.g. one the peer asked us to receive on): EINVAL outside the range,
    /// Errc::hop_in_use when taken.
    Result<unsigned> claim(unsigned hop);
    void release(unsigned hop) noexcept;
    bool in_use(unsigned hop) const noexcept { return hop <= kMaxHopId && used_.test(hop); }
    unsigned first() const noexcept { return first_; }
    unsigned last() const noexcept { return last_; }

private:
    unsigned first_ = hw::usb4::kMinLaneHopId;
    unsigned last_ = 0;
    std::bitset<kMaxHopId + 1> used_{};
};

}  // namespace tbv::usb4
