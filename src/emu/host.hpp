// SPDX-License-Identifier: Apache-2.0
// EmuHost: one emulated computer's USB4 side: N NHIs (Strix Halo has two controllers), each with
// its host router, and the cables plugged into their USB4 ports. USB4 ports are numbered across
// the host: port k is port k % ports_per_router of router k / ports_per_router.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "emu/cable.hpp"
#include "emu/link.hpp"
#include "emu/nhi.hpp"
#include "emu/router.hpp"
#include "emu/shm_cable.hpp"
#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"

namespace tbv::emu {

struct HostConfig {
    std::string name = "host";
    unsigned nhis = 1;
    NhiConfig nhi{};        ///< name is replaced by "<host>.<i>"
    RouterConfig router{};  ///< uid is replaced by uid + i for router i; clock by `clock`
    std::uint64_t uid = 0x0438'020e'0000'0001;
    const Clock* clock = nullptr;  ///< NHIs, routers and cables; nullptr: Clock::steady()
    /// Link model (link.hpp) for every NHI (ring ceiling) and router (cable rate, latency) of the
    /// host, replacing nhi.link and router.link when it is on. Left off, TBV_EMU_LINK from the
    /// environment fills it (an invalid value is reported on stderr and ignored).
    LinkConfig link{};
};

class EmuHost {
public:
    explicit EmuHost(HostConfig cfg = {});
    ~EmuHost();  ///< unplugs shared-memory cable ends, then routers, then NHIs
    EmuHost(const EmuHost&) = delete;
    EmuHost& operator=(const EmuHost&) = delete;

    const std::string& name() const noexcept { return cfg_.name; }
    /// The link model in force (HostConfig::link or TBV_EMU_LINK; any() false: off).
    const LinkConfig& link() const noexcept { return cfg_.link; }
    unsigned nhi_count() const noexcept { return static_cast<unsigned>(nhis_.size()); }
    EmuNhi& nhi(unsigned i = 0) { return *nhis_.at(i); }
    Router& router(unsigned i = 0) { return *routers_.at(i); }
    unsigned usb4_ports() const noexcept { return nhi_count() * routers_.front()->usb4_ports(); }
    /// Router UID i (ROUTER_CS_7..8).
    std::uint64_t uid(unsigned i = 0) const noexcept { return cfg_.uid + i; }
    /// Linux's host UUID of router i: {UID lo, UID hi, 0xffffffff, 0xffffffff} (ref §6.1).
    hw::usb4::UuidDwords uuid(unsigned i = 0) const noexcept;

    /// The router and local port number behind host-wide USB4 port `port`.
    Router& router_of_port(unsigned port) { return router(port / routers_.front()->usb4_ports()); }
    unsigned local_port(unsigned port) const noexcept {
        return port % routers_.front()->usb4_ports();
    }

    /// An in-process cable from port `a_port` of `a` to port `b_port` of `b`. Destroy it before
    /// either host.
    static std::unique_ptr<Cable> connect(EmuHost& a, unsigned a_port, EmuHost& b, unsigned b_port,
                                          bool plugged = true);

    /// Plugs port `port` into the shared-memory cable `name` (another process holds the other
    /// end). The host owns the end.
    Result<void> open_shm_cable(unsigned port, const std::string& name, ShmCableConfig cfg = {});
    ShmCable* shm_cable(unsigned port) noexcept;
    void close_shm_cable(unsigned port) noexcept;

private:
    HostConfig cfg_;
    std::vector<std::unique_ptr<EmuNhi>> nhis_;
    std::vector<std::unique_ptr<Router>> routers_;
    std::vector<std::unique_ptr<ShmCable>> shm_;  ///< by host-wide port; destroyed first
};

}  // namespace tbv::emu
