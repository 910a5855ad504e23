// SPDX-License-Identifier: Apache-2.0
// `tbv list` logic over a fake sysfs: which functions are USB4 hosts, VFIO states and reasons,
// the firmware connection manager, JSON shape; bind refusals that need no root.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "fake_sysfs.hpp"
#include "tools/commands.hpp"
#include "tools/devnode.hpp"
#include "tools/usb4_hosts.hpp"
#include "vfio/pci_sysfs.hpp"

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

TEST_CASE("tbv bind's /dev/infiniband link: to the VFIO group node, replaced, never over a file") {
    namespace fs = std::filesystem;
    tbv::test::FakeSysfs sys;
    sys.add("0000:c4:00.5", 0x1022, 0x1668, 0x0c0340, "vfio-pci", 12);
    sys.add("0000:c4:00.6", 0x1022, 0x1669, 0x0c0340, "thunderbolt", 13);
    fs::create_directories(sys.root() / "dev");  // /dev exists; /dev/infiniband need not
    const fs::path dir = tbv::vfio::sysfs::devnode_dir();
    // A function on vfio-pci: its group node (no /dev/iommu, no no-IOMMU node in this tree).
    auto l = tbv::tools::link_vfio_devnode("0000:c4:00.5");
    REQUIRE(l);
    CHECK(*l == (dir / "tbv-0000:c4:00.5").string() + " -> /dev/vfio/12");
    CHECK(fs::read_symlink(dir / "tbv-0000:c4:00.5") == "/dev/vfio/12");
    // Again: the old link is replaced, not an error.
    CHECK(tbv::tools::link_devnode("tbv-0000:c4:00.5", "/dev/vfio/13"));
    CHECK(fs::read_symlink(dir / "tbv-0000:c4:00.5") == "/dev/vfio/13");
    // Not on vfio-pci: no node to link to.
    auto n = tbv::tools::link_vfio_devnode("0000:c4:00.6");
    REQUIRE_FALSE(n);
    CHECK(n.error() == std::make_error_code(std::errc::no_such_device));
    // A real file under our name is someone else's.
    { std::ofstream(dir / "tbv-emu") << "x"; }
    auto e = tbv::tools::link_devnode(tbv::vfio::sysfs::kEmuDevnodeName, "/dev/null");
    REQUIRE_FALSE(e);
    CHECK(e.error() == std::make_error_code(std::errc::file_exists));
    auto keep = tbv::tools::unlink_devnode("tbv-emu");
    REQUIRE(keep);
    CHECK_FALSE(*keep);
    CHECK(fs::exists(dir / "tbv-emu"));
    // Removal: once, then there is nothing left.
    auto u1 = tbv::tools::unlink_devnode("tbv-0000:c4:00.5");
    REQUIRE(u1);
    CHECK(*u1);
    auto u2 = tbv::tools::unlink_devnode("tbv-0000:c4:00.5");
    REQUIRE(u2);
    CHECK_FALSE(*u2);
}
