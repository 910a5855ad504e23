// SPDX-License-Identifier: Apache-2.0
// HostRouter: the connection manager's view of the router behind its NHI (route 0): enumeration
// (ref §7.2), adapter discovery with the capability walk (ref §6.2–6.4), hot-plug enable, and the
// lane/USB4-port operations the XDomain and path code need. Everything goes through the
// ControlChannel as config reads and writes; nothing here knows whether the router is real.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"
#include "usb4/control_channel.hpp"

namespace tbv::usb4 {

struct AdapterInfo {
    unsigned number = 0;
    std::uint32_t type = 0;  ///< hw::usb4::AdapterType value
    unsigned max_in_hop = 0;
    unsigned max_out_hop = 0;
    unsigned total_buffers = 0;
    std::optional<unsigned> lane_cap;  ///< dword offset of the lane (PHY) capability
    std::optional<unsigned> usb4_cap;  ///< dword offset of the USB4 port capability
    unsigned ctl_credits = 0;          ///< lane adapters: path entry 0 initial credits

    bool is_lane() const noexcept {
        return type == static_cast<std::uint32_t>(hw::usb4::AdapterType::lane);
    }
    bool is_nhi() const noexcept {
        return type == static_cast<std::uint32_t>(hw::usb4::AdapterType::nhi);
    }
};

struct LaneStatus {
    hw::usb4::LaneState state = hw::usb4::LaneState::disabled;
    unsigned speed = 0;  ///< LANE1_CURRENT_SPEED encoding (0x8 Gen2, 0x4 Gen3, 0x2 Gen4)
    unsigned width = 0;  ///< 1 = x1, 2 = x2
    bool up() const noexcept { return hw::usb4::lane_up(static_cast<std::uint32_t>(state)); }
};

/// Gb/s per lane for a LANE1_CURRENT_SPEED value (0 when unknown).
constexpr unsigned lane_gbps(unsigned speed) noexcept {
    return speed == hw::usb4::kSpeedGen2   ? 10
           : speed == hw::usb4::kSpeedGen3 ? 20
           : speed == hw::usb4::kSpeedGen4 ? 40
                                           : 0;
}

class HostRouter {
public:
    explicit HostRouter(ControlChannel& ch) noexcept : ch_(ch) {}

    /// ref §7.2 steps 4–8: identify (upstream adapter, CS_0..4), enumerate (CS_3.valid, CMUV,
    /// notification timeout; CS_1..4 written in one go), read the UID and baMaxHI, read every
    /// adapter header and walk its capabilities, and enable hot plug on lane adapters.
    Result<void> enumerate();

    std::uint16_t vendor() const noexcept { return vendor_; }
    std::uint16_t device() const noexcept { return device_; }
    std::uint64_t uid() const noexcept { return uid_; }
    /// Linux's host UUID: {UID lo, UID hi, 0xffffffff, 0xffffffff} (ref §6.1).
    hw::usb4::UuidDwords uuid() const noexcept;
    unsigned nhi_adapter() const noexcept { return upstream_; }
    unsigned ba_max_hi() const noexcept { return ba_max_hi_; }
    const std::vector<AdapterInfo>& adapters() const noexcept { return adapters_; }
    const AdapterInfo* adapter(unsigned number) const noexcept;
    /// Primary lane adapters (lane 0 of each USB4 port): where cables plug in.
    std::vector<unsigned> usb4_ports() const;

    Result<LaneStatus> lane_status(unsigned adapter);
    /// Clears ADP_CS_4.LCK so the CM may talk through the adapter (ref §7.3 step 3).
    Result<void> unlock(unsigned adapter);
    /// PORT_CS_19.PID: the port leads to another domain (ref §7.3 step 5/6).
    Result<void> set_inter_domain(unsigned adapter, bool on);
    /// Writes a path entry (two dwords at 2·hop of `adapter`'s path space).
    Result<void> write_path(unsigned adapter, unsigned hop, std::span<const std::uint32_t> entry);
    Result<std::array<std::uint32_t, 2>> read_path(unsigned adapter, unsigned hop);

    ControlChannel& channel() noexcept { return ch_; }

private:
    Result<AdapterInfo> read_adapter(unsigned number);
    Result<std::uint32_t> read_ba_max_hi();

    ControlChannel& ch_;
    std::uint16_t vendor_ = 0;
    std::uint16_t device_ = 0;
    std::uint64_t uid_ = 0;
    unsigned upstream_ = 0;
    unsigned max_adapter_ = 0;
    unsigned ba_max_hi_ = 0;
    std::vector<AdapterInfo> adapters_;
};

}  // namespace tbv::usb4
