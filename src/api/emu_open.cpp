// SPDX-License-Identifier: Apache-2.0
#include "api/emu_open.hpp"

#include <unistd.h>

#include <random>

namespace tbv::detail {

Result<EmuCableSpec> parse_emu_spec(std::string_view spec, std::string& detail) {
    EmuCableSpec out;
    std::string_view cable = spec;
    if (const auto slash = spec.rfind('/'); slash != std::string_view::npos) {
        const std::string_view side = spec.substr(slash + 1);
        if (side != "a" && side != "b") {
            detail = "the cable end must be /a or /b";
            return fail(std::errc::invalid_argument);
        }
        out.side = side == "a" ? emu::ShmSide::a : emu::ShmSide::b;
        cable = spec.substr(0, slash);
    }
    if (cable.empty() || cable.find('/') != std::string_view::npos) {
        detail = "expected emu:<cable>[/a|/b] with a cable name without '/'";
        return fail(std::errc::invalid_argument);
    }
    out.cable = std::string(cable);
    return out;
}

std::uint64_t random_emu_uid() {
    std::random_device rd;
    return 0x0438'020e'0000'0000ull | rd() | 1u;
}

std::string emu_host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') {
        return "tbverbs-emu";
    }
    return buf;
}

Result<EmuDevice> open_emu_device(const EmuCableSpec& spec, std::string name, std::uint64_t uid,
                                  verbs::ContextOptions options, std::string& detail) {
    EmuDevice d;
    emu::HostConfig hc;
    hc.name = std::move(name);
    hc.uid = uid;
    d.host = std::make_unique<emu::EmuHost>(std::move(hc));
    if (options.cm.host.device_name.empty()) {
        options.cm.host.device_name = emu_host_name();
    }
    auto ctx = verbs::Context::open(d.host->nhi(), std::move(options));
    if (!ctx) {
        detail = "cannot bring up the USB4 stack on emulated host " + d.host->name();
        return Failure{ctx.error()};
    }
    d.ctx = std::move(*ctx);
    emu::ShmCableConfig cc;
    cc.side = spec.side;
    if (auto r = d.host->open_shm_cable(0, spec.cable, cc); !r) {
        detail = r.error() == std::errc::device_or_resource_busy
                     ? "both ends of cable '" + spec.cable + "' are taken"
                     : "cannot open the shared-memory cable '" + spec.cable + "'";
        return Failure{r.error()};
    }
    return d;
}

}  // namespace tbv::detail
