// SPDX-License-Identifier: Apache-2.0
// `tbv list` logic over a fake sysfs: which functions are USB4 hosts, VFIO states and reasons,
// the firmware connection manager, JSON shape; bind refusals that need no root.
#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "fake_sysfs.hpp"
#include "tools/commands.hpp"
#include "tools/usb4_hosts.hpp"

using tbv::tools::VfioState;

namespace {

const tbv::tools::HostReport* find(const std::vector<tbv::tools::HostReport>& v,
                                   const std::string& bdf) {
    for (const auto& h : v) {
        if (h.fn.bdf == bdf) {
            return &h;
        }
    }
    return nullptr;
}

}  // namespace

TEST_CASE("tbv list: USB4 hosts by class and ID, with VFIO state and reason") {
    tbv::test::FakeSysfs fake;
    fake.add("0000:c4:00.5", 0x1022, 0x1668, 0x0c0340, "thunderbolt", 12);  // AMD, own group
    fake.add("0000:c4:00.6", 0x1022, 0x1669, 0x0c0340, "vfio-pci", 13);     // ready
    fake.add("0000:00:0d.2", 0x8086, 0x9a1b, 0x0c0340, "thunderbolt", 5);   // TGL, ICM on
    fake.add_bar0("0000:00:0d.2", 0x1);
    fake.add("0000:00:0d.3", 0x8086, 0x9a1d, 0x0c0340, "vfio-pci", 6);  // shares group 6 ...
    fake.add("0000:00:0d.0", 0x8086, 0x9a13, 0x0c0330, "xhci_hcd", 6);  // ... with xHCI
    fake.add_bar0("0000:00:0d.3", 0x0);
    fake.add("0000:00:14.0", 0x8086, 0x7ae0, 0x0c0330, "xhci_hcd", 8);  // not an NHI
    fake.add("0000:05:00.0", 0x1234, 0x5678, 0x0c0340, "", -1);         // unknown USB4, no IOMMU

    const auto hosts = tbv::tools::list_hosts(false);
    CHECK(hosts.size() == 5);
    CHECK(find(hosts, "0000:00:14.0") == nullptr);

    const auto* amd = find(hosts, "0000:c4:00.5");
    REQUIRE(amd);
    CHECK(amd->state == VfioState::bindable);
    CHECK(amd->name == std::string("AMD Pink Sardine USB4 NHI0"));
    CHECK(amd->reason.find("tbv bind 0000:c4:00.5") != std::string::npos);
    CHECK(amd->icm_active == std::optional<bool>(false));

    CHECK(find(hosts, "0000:c4:00.6")->state == VfioState::ready);

    const auto* icm = find(hosts, "0000:00:0d.2");
    REQUIRE(icm);
    CHECK(icm->state == VfioState::blocked);
    CHECK(icm->icm_active == std::optional<bool>(true));
    CHECK(icm->reason.find("firmware connection manager") != std::string::npos);

    const auto* shared = find(hosts, "0000:00:0d.3");
    REQUIRE(shared);
    CHECK(shared->state == VfioState::blocked);
    CHECK(shared->reason.find("0000:00:0d.0 (xhci_hcd)") != std::string::npos);

    const auto* noiommu = find(hosts, "0000:05:00.0");
    REQUIRE(noiommu);
    CHECK(noiommu->state == VfioState::blocked);
    CHECK(noiommu->reason.find("intel_iommu=on") != std::string::npos);

    const auto j = nlohmann::json::parse(tbv::tools::render_list(hosts, true));
    REQUIRE(j.is_array());
    REQUIRE(j.size() == 5);
    for (const auto& h : j) {
        for (const char* key : {"address", "vendor", "device", "class", "driver", "iommu_group",
                                "group_members", "firmware_cm", "vfio"}) {
            CHECK(h.contains(key));
        }
        CHECK(h["vfio"].contains("state"));
        CHECK(h["vfio"].contains("usable"));
        CHECK(h["vfio"].contains("reason"));
    }
    const std::string text = tbv::tools::render_list(hosts, false);
    CHECK(text.find("ADDRESS") == 0);
    CHECK(text.find("0000:c4:00.5") != std::string::npos);
    CHECK(tbv::tools::list_hosts(true).size() == 7);
}

TEST_CASE("tbv bind refuses non-NHIs and bad addresses before touching sysfs") {
    tbv::test::FakeSysfs fake;
    fake.add("0000:00:14.0", 0x8086, 0x7ae0, 0x0c0330, "xhci_hcd", 8);
    const tbv::tools::BindOptions opts;
    auto r1 = tbv::tools::bind_vfio("0000:00:14.0", opts);
    CHECK_FALSE(r1);
    CHECK(r1.error() == std::make_error_code(std::errc::no_such_device));
    auto r2 = tbv::tools::bind_vfio("nonsense", opts);
    CHECK_FALSE(r2);
    CHECK(r2.error() == std::make_error_code(std::errc::invalid_argument));
    auto r3 = tbv::tools::bind_vfio("0000:00:15.0", opts);
    CHECK_FALSE(r3);
}
