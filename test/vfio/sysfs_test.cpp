// SPDX-License-Identifier: Apache-2.0
// sysfs parsing over a fake tree: addresses, IDs, class, driver, IOMMU group and members.
#include "catch.hpp"
#include "fake_sysfs.hpp"
#include "vfio/pci_sysfs.hpp"

namespace sysfs = tbv::vfio::sysfs;

TEST_CASE("normalize_bdf accepts full and short PCI addresses only") {
    CHECK(sysfs::normalize_bdf("0000:C4:00.5") == std::optional<std::string>("0000:c4:00.5"));
    CHECK(sysfs::normalize_bdf("00:0d.2") == std::optional<std::string>("0000:00:0d.2"));
    CHECK_FALSE(sysfs::normalize_bdf("0000:00:0d.8"));
    CHECK_FALSE(sysfs::normalize_bdf("00:0d"));
    CHECK_FALSE(sysfs::normalize_bdf("../../etc"));
    CHECK_FALSE(sysfs::normalize_bdf(""));
}

TEST_CASE("read_function reads IDs, class, driver and IOMMU group from sysfs") {
    tbv::test::FakeSysfs fake;
    fake.add("0000:00:0d.2", 0x8086, 0xa73e, 0x0c0340, "thunderbolt", 7);
    fake.add("0000:00:0d.3", 0x8086, 0xa76d, 0x0c0340, "", 7);
    fake.add("0000:00:02.0", 0x1234, 0x1111, 0x030000, "", -1);

    CHECK(sysfs::pci_devices().size() == 3);
    auto f = sysfs::read_function("0000:00:0d.2");
    REQUIRE(f);
    CHECK(f->vendor == 0x8086);
    CHECK(f->device == 0xa73e);
    CHECK(f->class_code == 0x0c0340);
    CHECK(f->driver == "thunderbolt");
    CHECK(f->driver_override.empty());
    REQUIRE(f->iommu_group);
    CHECK(*f->iommu_group == 7);
    CHECK(f->group_members == std::vector<std::string>{"0000:00:0d.2", "0000:00:0d.3"});
    auto g = sysfs::read_function("0000:00:02.0");
    REQUIRE(g);
    CHECK_FALSE(g->iommu_group);
    CHECK(g->driver.empty());
    CHECK_FALSE(sysfs::read_function("0000:00:1f.0"));
    CHECK(sysfs::iommu_present());
}

TEST_CASE("vfio_bound_usb4_hosts lists USB4 NHIs bound to vfio-pci, by address") {
    {
        tbv::test::FakeSysfs fake;
        CHECK(sysfs::vfio_bound_usb4_hosts().empty());  // no PCI function at all
        fake.add("0000:c4:00.6", 0x1022, 0x1669, 0x0c0340, "vfio-pci", 12);    // AMD NHI1
        fake.add("0000:00:0d.2", 0x8086, 0xa73e, 0x0c0340, "vfio-pci", 7);     // Intel NHI0
        fake.add("0000:00:0d.3", 0x8086, 0xa76d, 0x0c0340, "thunderbolt", 7);  // kernel's
        fake.add("0000:c4:00.5", 0x1022, 0x1668, 0x0c0340, "", 11);            // no driver
        fake.add("0000:05:00.0", 0x8086, 0x15eb, 0x088000, "vfio-pci", 3);     // TB3: other class
        fake.add("0000:01:00.0", 0x10de, 0x2204, 0x030000, "vfio-pci", 1);     // a GPU
        const auto hosts = sysfs::vfio_bound_usb4_hosts();
        REQUIRE(hosts.size() == 2);
        CHECK(hosts[0] == "0000:00:0d.2");
        CHECK(hosts[1] == "0000:c4:00.6");
    }
    // A root with no sysfs at all: nothing, and no error.
    ::setenv("TBV_SYSFS_ROOT", "/nonexistent-tbv-sysfs", 1);
    CHECK(sysfs::vfio_bound_usb4_hosts().empty());
    ::unsetenv("TBV_SYSFS_ROOT");
}
