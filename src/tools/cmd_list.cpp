// SPDX-License-Identifier: Apache-2.0
// `tbv list`: USB4 host interfaces, their driver and IOMMU group, and whether tbverbs can own
// them through VFIO (and if not, why and what to do).
#include <cstdio>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "tools/commands.hpp"

namespace tbv::tools {

namespace {

std::string hex4(std::uint32_t v) {
    return fmt::format("{:04x}", v);
}

nlohmann::json to_json(const HostReport& h) {
    nlohmann::json j;
    j["address"] = h.fn.bdf;
    j["name"] = h.name;
    j["vendor"] = hex4(h.fn.vendor);
    j["device"] = hex4(h.fn.device);
    j["class"] = fmt::format("{:06x}", h.fn.class_code);
    j["subsystem"] = hex4(h.fn.subsystem_vendor) + ":" + hex4(h.fn.subsystem_device);
    j["driver"] = h.fn.driver.empty() ? nlohmann::json(nullptr) : nlohmann::json(h.fn.driver);
    j["iommu_group"] = h.fn.iommu_group ? nlohmann::json(*h.fn.iommu_group) : nlohmann::json();
    j["group_members"] = h.fn.group_members;
    j["vfio_cdev"] = h.fn.vfio_cdev.empty() ? nlohmann::json() : nlohmann::json(h.fn.vfio_cdev);
    j["firmware_cm"] = h.icm_active ? nlohmann::json(*h.icm_active) : nlohmann::json();
    j["vfio"] = {{"state", state_name(h.state)},
                 {"usable", h.state == VfioState::ready},
                 {"reason", h.reason}};
    return j;
}

}  // namespace

std::string render_list(const std::vector<HostReport>& hosts, bool json) {
    if (json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& h : hosts) {
            arr.push_back(to_json(h));
        }
        return arr.dump(2) + "\n";
    }
    if (hosts.empty()) {
        return "no USB4 host interface found (class 0c0340 or a known Thunderbolt NHI)\n";
    }
    std::string out = fmt::format("{:<14} {:<9} {:<30} {:<12} {:<6} {}\n", "ADDRESS", "ID", "NAME",
                                  "DRIVER", "GROUP", "VFIO");
    for (const auto& h : hosts) {
        out += fmt::format("{:<14} {:<9} {:<30} {:<12} {:<6} {}\n", h.fn.bdf,
                           hex4(h.fn.vendor) + ":" + hex4(h.fn.device), h.name,
                           h.fn.driver.empty() ? "-" : h.fn.driver,
                           h.fn.iommu_group ? std::to_string(*h.fn.iommu_group) : "-",
                           state_name(h.state));
        if (!h.reason.empty()) {
            out += fmt::format("    {}\n", h.reason);
        }
    }
    return out;
}

void add_list_command(CLI::App& app, int& exit_code) {
    auto* cmd = app.add_subcommand("list", "List USB4 host interfaces and their VFIO readiness");
    static bool json = false;
    static bool all = false;
    cmd->add_flag("--json", json, "Machine-readable output");
    // Hidden: every PCI function, for tests on machines without an NHI.
    cmd->add_flag("--all", all, "")->group("");
    cmd->callback([&exit_code] {
        std::fputs(render_list(list_hosts(all), json).c_str(), stdout);
        exit_code = 0;
    });
}

}  // namespace tbv::tools
