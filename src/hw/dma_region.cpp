// SPDX-License-Identifier: Apache-2.0
#include "hw/dma_region.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace tbv::hw {

Result<DmaRegion> DmaRegion::create(Device& dev, std::size_t len, DmaAccess access,
                                    std::uint8_t fill) {
    if (len == 0) {
        return fail(std::errc::invalid_argument);
    }
    const std::size_t rounded = round_up_pages(len);
    // Anonymous private pages are page aligned and never shared with a child by fork's COW in a
    // way the device could observe (VFIO pins the pages at map time).
    void* mem =
        ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        return fail_errno(errno);
    }
    std::memset(mem, fill, rounded);
    auto iova = dev.dma_map(mem, rounded, access);
    if (!iova) {
        ::munmap(mem, rounded);
        return Failure{iova.error()};
    }
    return DmaRegion(&dev, static_cast<std::byte*>(mem), rounded, *iova);
}

DmaRegion::DmaRegion(DmaRegion&& other) noexcept
    : dev_(std::exchange(other.dev_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      len_(std::exchange(other.len_, 0)),
      iova_(std::exchange(other.iova_, 0)) {}

DmaRegion& DmaRegion::operator=(DmaRegion&& other) noexcept {
    if (this != &other) {
        (void)release();
        dev_ = std::exchange(other.dev_, nullptr);
        data_ = std::exchange(other.data_, nullptr);
        len_ = std::exchange(other.len_, 0);
        iova_ = std::exchange(other.iova_, 0);
    }
    return *this;
}

DmaRegion::~DmaRegion() {
    (void)release();
}

Result<void> DmaRegion::release() {
    if (data_ == nullptr) {
        return ok();
    }
    // Unmap first: the device must lose access before the pages return to the allocator.
    auto r = dev_->dma_unmap(iova_, len_);
    if (r) {
        ::munmap(data_, len_);
    }
    // else: leak the pages on purpose; freeing memory the IOMMU may still reach is worse.
    data_ = nullptr;
    dev_ = nullptr;
    len_ = 0;
    iova_ = 0;
    return r;
}

}  // namespace tbv::hw
