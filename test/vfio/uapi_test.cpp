// SPDX-License-Identifier: Apache-2.0
// UAPI layouts of vfio/uapi.hpp against the kernel's documented ABI (include/uapi/linux/iommufd.h
// and vfio.h of 6.12): sizes, offsets and ioctl numbers must never drift.
#include "vfio/uapi.hpp"

#include <cstddef>

#include "catch.hpp"

TEST_CASE("iommufd UAPI structs have the kernel's layout") {
    STATIC_REQUIRE(sizeof(iommu_destroy) == 8);
    STATIC_REQUIRE(sizeof(iommu_ioas_alloc) == 12);
    STATIC_REQUIRE(sizeof(iommu_iova_range) == 16);
    STATIC_REQUIRE(sizeof(iommu_ioas_iova_ranges) == 32);
    STATIC_REQUIRE(offsetof(iommu_ioas_iova_ranges, allowed_iovas) == 16);
    STATIC_REQUIRE(offsetof(iommu_ioas_iova_ranges, out_iova_alignment) == 24);
    STATIC_REQUIRE(sizeof(iommu_ioas_map) == 40);
    STATIC_REQUIRE(offsetof(iommu_ioas_map, user_va) == 16);
    STATIC_REQUIRE(offsetof(iommu_ioas_map, iova) == 32);
    STATIC_REQUIRE(sizeof(iommu_ioas_unmap) == 24);
    STATIC_REQUIRE(offsetof(iommu_ioas_unmap, iova) == 8);
    CHECK(IOMMU_IOAS_MAP_FIXED_IOVA == 1);
    CHECK(IOMMU_IOAS_MAP_WRITEABLE == 2);
    CHECK(IOMMU_IOAS_MAP_READABLE == 4);
}

TEST_CASE("iommufd and vfio cdev ioctl numbers") {
    // _IO(type, nr) = (type << 8) | nr
    CHECK(IOMMU_DESTROY == 0x3b80);
    CHECK(IOMMU_IOAS_ALLOC == 0x3b81);
    CHECK(IOMMU_IOAS_IOVA_RANGES == 0x3b84);
    CHECK(IOMMU_IOAS_MAP == 0x3b85);
    CHECK(IOMMU_IOAS_UNMAP == 0x3b86);
    CHECK(VFIO_DEVICE_BIND_IOMMUFD == 0x3b76);  // VFIO_BASE 100 + 18
    CHECK(VFIO_DEVICE_ATTACH_IOMMUFD_PT == 0x3b77);
    CHECK(VFIO_DEVICE_DETACH_IOMMUFD_PT == 0x3b78);
    CHECK(VFIO_NOIOMMU_IOMMU == 8);
}

TEST_CASE("vfio cdev structs have the kernel's layout") {
    STATIC_REQUIRE(sizeof(vfio_device_bind_iommufd) == 16);
    STATIC_REQUIRE(offsetof(vfio_device_bind_iommufd, iommufd) == 8);
    STATIC_REQUIRE(sizeof(vfio_device_attach_iommufd_pt) == 12);
    STATIC_REQUIRE(sizeof(vfio_device_detach_iommufd_pt) == 8);
    STATIC_REQUIRE(sizeof(vfio_iommu_type1_dma_map) == 32);
    STATIC_REQUIRE(sizeof(vfio_iommu_type1_dma_unmap) == 24);
}
