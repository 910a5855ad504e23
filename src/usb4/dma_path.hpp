// SPDX-License-Identifier: Apache-2.0
// The two single-hop path entries that carry one rail between two hosts (ref §9.2, §9.3). Each
// host programs only its own router; the HopID on the cable is the only value the two share:
//
//   TX: entry at the NHI adapter, HopID = our TX ring   → out lane adapter, out HopID = tx_hop
//   RX: entry at the lane adapter, HopID = rx_hop        → out NHI adapter,  out HopID = our RX
//   ring
//
// Pure functions: they compute the two dwords of each entry; src/usb4/paths (the connection
// manager) writes them with config writes and drains the pending bit when tearing down.
#pragma once

#include <array>
#include <cstdint>

#include "hw/usb4_regs.hpp"

namespace tbv::usb4 {

using PathEntry = std::array<std::uint32_t, hw::usb4::kPathEntryDwords>;

/// Credits for a DMA path: min_not_zero(TB_DMA_CREDITS, baMaxHI), at least 1 (ref §9.2).
constexpr unsigned dma_credits(unsigned ba_max_hi) noexcept {
    const unsigned c =
        ba_max_hi != 0 && ba_max_hi < hw::usb4::kDmaCredits ? ba_max_hi : hw::usb4::kDmaCredits;
    return c == 0 ? 1 : c;
}

/// Counter index Linux writes for "no counter" (ref §6.5).
inline constexpr std::uint32_t kNoCounter = 0x7ff;

/// RX entry at the lane adapter (ref §9.2 "DMA RX"): IFC on, EFC off, priority 5, weight 1.
constexpr PathEntry rx_path_entry(unsigned nhi_adapter, unsigned rx_ring,
                                  unsigned credits) noexcept {
    using namespace hw::usb4;
    return {PATH0_OUT_HOP::make(rx_ring) | PATH0_OUT_ADAPTER::make(nhi_adapter) |
                PATH0_CREDITS::make(credits) | PATH0_VALID::make(1),
            PATH1_WEIGHT::make(1) | PATH1_PRIORITY::make(5) | PATH1_COUNTER::make(kNoCounter) |
                PATH1_IFC::make(1)};
}

/// TX entry at the NHI adapter (ref §9.2 "DMA TX"): IFC and EFC on, priority 5, weight 1.
constexpr PathEntry tx_path_entry(unsigned lane_adapter, unsigned tx_hop,
                                  unsigned credits) noexcept {
    using namespace hw::usb4;
    return {PATH0_OUT_HOP::make(tx_hop) | PATH0_OUT_ADAPTER::make(lane_adapter) |
                PATH0_CREDITS::make(credits) | PATH0_VALID::make(1),
            PATH1_WEIGHT::make(1) | PATH1_PRIORITY::make(5) | PATH1_COUNTER::make(kNoCounter) |
                PATH1_IFC::make(1) | PATH1_EFC::make(1)};
}

/// The entry with `valid` cleared, for the first step of deactivation (ref §9.2: clear valid,
/// wait for pending = 0, then clear EFC/ESE).
constexpr PathEntry invalidated(PathEntry e) noexcept {
    e[0] = hw::usb4::PATH0_VALID::set(e[0], 0);
    return e;
}
constexpr PathEntry flow_control_cleared(PathEntry e) noexcept {
    e[1] = hw::usb4::PATH1_EFC::set(hw::usb4::PATH1_ESE::set(e[1], 0), 0);
    return e;
}

/// Dword offset of HopID `hop`'s entry in an adapter's path space.
constexpr std::uint32_t path_entry_offset(unsigned hop) noexcept {
    return hop * hw::usb4::kPathEntryDwords;
}

}  // namespace tbv::usb4
