// SPDX-License-Identifier: Apache-2.0
// Fault injection for emulated cables: what a real cable and NHI can do to traffic (lost frames,
// duplicated frames, bit errors that the receiver reports as CRC_ERROR, a cable pulled for a
// while), chosen by a seeded RNG so a failing run can be repeated. Every emulated cable, in one
// process or between two, applies the same FaultConfig; TBV_EMU_FAULTS fills it from the
// environment so any program over an emulated cable (perftest included) can run on a lossy link:
//
//   TBV_EMU_FAULTS=drop=0.01,dup=0.005,crc=0.001,unplug_ms=50[,unplug_after_ms=200][,seed=7]
//
//   drop  probability that a data frame or control packet is lost
//   dup   probability that a data frame arrives twice
//   crc   probability of a bit error: data frames arrive flagged CRC_ERROR, control packets fail
//         the receiving router's CRC check and are dropped there
//   unplug_ms / unplug_after_ms   the cable is pulled once for unplug_ms (default 0: never),
//         unplug_after_ms (default 200) after it was first plugged: both routers see the link
//         drop (hot-unplug events, lanes down), frames sent or in flight meanwhile are lost, and
//         then the link comes back (hot-plug events). An in-process cable counts from its first
//         plug; an end of a shared-memory cable from when it first saw its peer, and the first
//         end whose time is up pulls the cable for both (each process reads TBV_EMU_FAULTS
//         itself; one of them setting unplug_ms is enough). drop/dup/crc apply, on a
//         shared-memory cable, to what each end sends
//   seed  RNG seed (default 1); printed with the faults so a run can be replayed
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "emu/wire.hpp"
#include "hw/nhi_regs.hpp"
#include "tbv/result.hpp"

namespace tbv::emu {

struct FaultConfig {
    double ctl_drop = 0;
    double ctl_corrupt = 0;
    double data_drop = 0;
    double data_dup = 0;
    double data_corrupt = 0;
    std::uint64_t seed = 1;
    std::chrono::milliseconds unplug{0};  ///< 0: never
    std::chrono::milliseconds unplug_after{200};

    bool any() const noexcept {
        return ctl_drop > 0 || ctl_corrupt > 0 || data_drop > 0 || data_dup > 0 ||
               data_corrupt > 0 || unplug.count() > 0;
    }
};

/// Parses the TBV_EMU_FAULTS syntax above. EINVAL (with no partial result) for an unknown key, a
/// probability outside [0, 1] or a malformed number.
Result<FaultConfig> parse_faults(std::string_view spec);
/// TBV_EMU_FAULTS from the environment: nullopt when unset or empty; an invalid value is an error
/// the caller reports (running without the faults the user asked for would be a silent lie).
Result<std::optional<FaultConfig>> faults_from_env();
/// One line describing the faults, for logs ("drop=0.01 dup=0 crc=0.001 unplug_ms=50 seed=1").
std::string describe(const FaultConfig& f);

/// Decides per packet. Not thread safe: the owner serialises calls (a cable's lock).
class FaultInjector {
public:
    struct Verdict {
        bool drop = false;
        bool dup = false;
        bool corrupt = false;
    };

    FaultInjector() = default;
    explicit FaultInjector(const FaultConfig& f) { configure(f); }
    void configure(const FaultConfig& f);
    const FaultConfig& config() const noexcept { return cfg_; }
    bool active() const noexcept { return active_; }

    Verdict decide(WireKind kind) noexcept;

    /// A copy of `p` with one bit flipped in `buf` (data frames also flagged crc_error).
    static WirePacket corrupted(const WirePacket& p,
                                std::array<std::byte, hw::nhi::kMaxFrameSize>& buf) noexcept;

private:
    bool roll(double p) noexcept;

    FaultConfig cfg_{};
    bool active_ = false;
    std::mt19937_64 rng_{1};
};

}  // namespace tbv::emu
