// SPDX-License-Identifier: Apache-2.0
#include "emu/host.hpp"

#include <algorithm>
#include <cstdio>

namespace tbv::emu {

EmuHost::EmuHost(HostConfig cfg) : cfg_(std::move(cfg)) {
    cfg_.nhis = std::max(cfg_.nhis, 1u);
    if (!cfg_.link.any()) {
        // TBV_EMU_LINK applies to every emulated host, so any program over the emulator (a test,
        // the benchmarks, perftest through the provider) can run with the link model on. The
        // constructor cannot fail: an invalid value is reported loudly and the model stays off.
        if (std::optional<LinkParse> env = link_from_env()) {
            if (*env) {
                cfg_.link = env->config;
            } else {
                std::fprintf(stderr, "tbverbs: ignoring invalid TBV_EMU_LINK: %s\n",
                             env->error.c_str());
            }
        }
    }
    for (unsigned i = 0; i < cfg_.nhis; ++i) {
        NhiConfig n = cfg_.nhi;
        n.name = cfg_.name + "." + std::to_string(i);
        n.clock = cfg_.clock;
        if (cfg_.link.any()) {
            n.link = cfg_.link;
        }
        nhis_.push_back(std::make_unique<EmuNhi>(std::move(n)));
        RouterConfig r = cfg_.router;
        r.uid = uid(i);
        r.clock = cfg_.clock;
        if (cfg_.link.any()) {
            r.link = cfg_.link;
        }
        routers_.push_back(std::make_unique<Router>(*nhis_.back(), r));
    }
    shm_.resize(usb4_ports());
}

EmuHost::~EmuHost() {
    for (unsigned p = 0; p < shm_.size(); ++p) {
        close_shm_cable(p);
    }
    routers_.clear();  // detach from the NHIs before they go
    nhis_.clear();
}

hw::usb4::UuidDwords EmuHost::uuid(unsigned i) const noexcept {
    const std::uint64_t u = uid(i);
    return {static_cast<std::uint32_t>(u), static_cast<std::uint32_t>(u >> 32), 0xffffffffu,
            0xffffffffu};
}

std::unique_ptr<Cable> EmuHost::connect(EmuHost& a, unsigned a_port, EmuHost& b, unsigned b_port,
                                        bool plugged) {
    auto cable = std::make_unique<Cable>(a.router_of_port(a_port), a.local_port(a_port),
                                         b.router_of_port(b_port), b.local_port(b_port), plugged,
                                         a.cfg_.clock);
    // TBV_EMU_FAULTS applies to every emulated cable. An invalid value cannot be returned from
    // here; it is reported loudly (open_shm_cable, the user-facing path, fails instead).
    if (auto f = faults_from_env(); f && *f) {
        cable->set_faults(**f);
    } else if (!f) {
        std::fprintf(stderr, "tbverbs: ignoring invalid TBV_EMU_FAULTS: %s\n",
                     f.error().message().c_str());
    }
    return cable;
}

Result<void> EmuHost::open_shm_cable(unsigned port, const std::string& name, ShmCableConfig cfg) {
    if (port >= shm_.size()) {
        return fail(std::errc::invalid_argument);
    }
    close_shm_cable(port);
    if (cfg.clock == nullptr) {
        cfg.clock = cfg_.clock;
    }
    auto faults = faults_from_env();
    if (!faults) {
        return Failure{faults.error()};  // the user asked for faults we cannot honour
    }
    auto end = ShmCable::open(name, std::move(cfg));
    if (!end) {
        return Failure{end.error()};
    }
    if (*faults) {
        (*end)->set_faults(**faults);
    }
    shm_[port] = std::move(*end);
    router_of_port(port).connect_port(local_port(port), shm_[port].get());
    return ok();
}

ShmCable* EmuHost::shm_cable(unsigned port) noexcept {
    return port < shm_.size() ? shm_[port].get() : nullptr;
}

void EmuHost::close_shm_cable(unsigned port) noexcept {
    if (port < shm_.size() && shm_[port]) {
        router_of_port(port).disconnect_port(local_port(port));
        shm_[port].reset();
    }
}

}  // namespace tbv::emu
