// SPDX-License-Identifier: Apache-2.0
// `tbv status` building blocks: an emulated host with its whole driver stack (EmuNhi + host
// router → Nhi → ring 0 → control channel → connection manager), a snapshot of one controller as
// JSON (everything read from the CM, the router through the control channel, and the emulator's
// counters; nothing made up) and the text rendering of that snapshot.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "emu/host.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/nhi.hpp"
#include "tbv/result.hpp"
#include "usb4/connection_manager.hpp"
#include "usb4/control_channel.hpp"

namespace tbv::tools {

/// One emulated computer (a single NHI) and the tbverbs stack that drives it.
class EmuStack {
public:
    /// Builds the host and brings its stack up (enumeration included). No cable yet.
    static Result<std::unique_ptr<EmuStack>> create(emu::HostConfig host, usb4::CmOptions opts);
    ~EmuStack();  ///< CM (rails) first, then channel, ring, Nhi, then the host
    EmuStack(const EmuStack&) = delete;
    EmuStack& operator=(const EmuStack&) = delete;

    emu::EmuHost& host() noexcept { return *host_; }
    usb4::ConnectionManager& cm() noexcept { return *cm_; }
    usb4::ControlChannel& channel() noexcept { return *ch_; }
    nhi::Nhi& nhi() noexcept { return *nhi_; }

    /// True when no USB4 port is half-way through discovery and at least one found its peer
    /// (rails up, or a peer without tbverbs: discovered).
    bool settled() const;
    bool any_up() const;

private:
    EmuStack() = default;
    std::unique_ptr<emu::EmuHost> host_;
    std::unique_ptr<nhi::Nhi> nhi_;
    std::unique_ptr<nhi::ControlRing> ring_;
    std::unique_ptr<usb4::ControlChannel> ch_;
    std::unique_ptr<usb4::ConnectionManager> cm_;
};

/// Snapshot of one controller. Lane adapters are read through the control channel at call time.
/// `cable` names what port 0 is plugged into (shown as is; may be empty).
nlohmann::json status_json(EmuStack& s, std::string_view cable);

/// Human-readable rendering of status_json() output.
std::string render_status(const nlohmann::json& controller);

/// Human name of an adapter type (hw::usb4::AdapterType value).
std::string adapter_type_name(std::uint32_t type);

}  // namespace tbv::tools
