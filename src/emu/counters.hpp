// SPDX-License-Identifier: Apache-2.0
// Event counters of the emulated NHI. Tests and benchmarks assert on these instead of wall-clock
// time (style B10: "never fail CI on wall-clock numbers, only on counters"). Every drop the model
// makes is counted under its own name, so a test can tell an RX overflow from a PDF mismatch.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tbv::emu {

/// A snapshot (EmuNhi::counters()); each field only ever grows, reset() does not clear them.
struct NhiCounters {
    // TX engine (ref §12.3)
    std::uint64_t tx_frames = 0;              ///< descriptors sent to an attached fabric
    std::uint64_t tx_bytes = 0;               ///< bytes of those frames
    std::uint64_t tx_unposted_stops = 0;      ///< engine stopped at a descriptor without POSTED
    std::uint64_t tx_no_fabric_drops = 0;     ///< completed but dropped: nothing attached
    std::uint64_t tx_raw_oversize_drops = 0;  ///< raw descriptor > 256 bytes: completed, dropped
    std::uint64_t tx_bus_master_stalls = 0;   ///< doorbell while bus mastering was off (deferred)
    std::uint64_t tx_paced_stops = 0;  ///< link model: the ring's DMA ceiling left descriptors
                                       ///< pending (taken up by a later doorbell or poll)
    // RX engine (ref §12.3, §4.5)
    std::uint64_t rx_frames = 0;               ///< frames written into an RX ring
    std::uint64_t rx_bytes = 0;                ///< bytes written (after truncation)
    std::uint64_t rx_overflow_drops = 0;       ///< no posted descriptor: dropped, overflow status
    std::uint64_t rx_disabled_drops = 0;       ///< ring absent, disabled, not running or halted
    std::uint64_t rx_pdf_drops = 0;            ///< frame mode: SOF/EOF PDF not in the masks
    std::uint64_t rx_overruns = 0;             ///< frame larger than the buffer: truncated
    std::uint64_t rx_crc_errors = 0;           ///< delivered with CRC_ERROR (fault injection)
    std::uint64_t rx_no_bus_master_drops = 0;  ///< dropped: bus mastering off
    std::uint64_t rx_malformed_drops = 0;      ///< zero-length frame from a fabric
    // Both engines and registers
    std::uint64_t dma_faults = 0;          ///< IOMMU refusals (each halts its ring)
    std::uint64_t doorbells = 0;           ///< TX producer-index writes
    std::uint64_t bad_index_writes = 0;    ///< producer index ≥ ring size: ignored
    std::uint64_t ring_start_rejects = 0;  ///< ENABLE 0→1 with size 0 or unaligned base
    std::uint64_t host_router_resets = 0;  ///< REG_RESET.HRR accepted (version ≥ 0x40)
    // Interrupts (ref §2.4, §10)
    std::uint64_t irqs_fired = 0;      ///< MSI-X messages written to an eventfd
    std::uint64_t irqs_throttled = 0;  ///< messages held back by the throttle interval
    std::uint64_t irqs_masked = 0;     ///< event or held message not sent: enable bit, vector
                                       ///< or bus mastering off
};

namespace detail {

/// Every counter, in storage order.
inline constexpr std::array kCounterFields = {
    &NhiCounters::tx_frames,
    &NhiCounters::tx_bytes,
    &NhiCounters::tx_unposted_stops,
    &NhiCounters::tx_no_fabric_drops,
    &NhiCounters::tx_raw_oversize_drops,
    &NhiCounters::tx_bus_master_stalls,
    &NhiCounters::tx_paced_stops,
    &NhiCounters::rx_frames,
    &NhiCounters::rx_bytes,
    &NhiCounters::rx_overflow_drops,
    &NhiCounters::rx_disabled_drops,
    &NhiCounters::rx_pdf_drops,
    &NhiCounters::rx_overruns,
    &NhiCounters::rx_crc_errors,
    &NhiCounters::rx_no_bus_master_drops,
    &NhiCounters::rx_malformed_drops,
    &NhiCounters::dma_faults,
    &NhiCounters::doorbells,
    &NhiCounters::bad_index_writes,
    &NhiCounters::ring_start_rejects,
    &NhiCounters::host_router_resets,
    &NhiCounters::irqs_fired,
    &NhiCounters::irqs_throttled,
    &NhiCounters::irqs_masked,
};
// Every field of NhiCounters is listed above (each one is a uint64_t counter).
static_assert(sizeof(NhiCounters) == kCounterFields.size() * sizeof(std::uint64_t));

/// Storage index of counter `F`; kCounterFields.size() if it is not listed.
template <std::uint64_t NhiCounters::*F>
inline constexpr std::size_t kCounterIndex = [] {
    for (std::size_t i = 0; i < kCounterFields.size(); ++i) {
        if (kCounterFields[i] == F) {
            return i;
        }
    }
    return kCounterFields.size();
}();

}  // namespace detail

/// The live counters: relaxed atomics, because they are bumped under different ring locks and
/// read from any thread; they order nothing. A counter is named by its NhiCounters member, e.g.
/// `add<&NhiCounters::tx_frames>()`, so there is no second list of names to keep in step.
class CounterSet {
public:
    template <std::uint64_t NhiCounters::*F>
    void add(std::uint64_t n = 1) noexcept {
        constexpr std::size_t i = detail::kCounterIndex<F>;
        static_assert(i < detail::kCounterFields.size(), "counter missing from kCounterFields");
        v_[i].fetch_add(n, std::memory_order_relaxed);
    }

    NhiCounters snapshot() const noexcept {
        NhiCounters s;
        for (std::size_t i = 0; i < v_.size(); ++i) {
            s.*detail::kCounterFields[i] = v_[i].load(std::memory_order_relaxed);
        }
        return s;
    }

private:
    std::array<std::atomic<std::uint64_t>, detail::kCounterFields.size()> v_{};
};

}  // namespace tbv::emu
