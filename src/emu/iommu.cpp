// SPDX-License-Identifier: Apache-2.0
#include "emu/iommu.hpp"

#include <cstdint>
#include <mutex>

namespace tbv::emu {

Result<hw::Iova> Iommu::map(void* addr, std::size_t len, hw::DmaAccess access) {
    const auto va = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || va % hw::kDmaPageSize != 0 || len % hw::kDmaPageSize != 0) {
        return fail(std::errc::invalid_argument);
    }
    std::unique_lock lk(mu_);
    if (len > kIovaLimit - next_ || kGuardGap > kIovaLimit - next_ - len) {
        return fail(std::errc::not_enough_memory);
    }
    const hw::Iova iova = next_;
    maps_.emplace(iova, Mapping{static_cast<std::byte*>(addr), len, access});
    next_ = iova + len + kGuardGap;
    return iova;
}

Result<void> Iommu::unmap(hw::Iova iova, std::size_t len) {
    std::unique_lock lk(mu_);
    auto it = maps_.find(iova);
    if (it == maps_.end() || it->second.len != len) {
        return fail(std::errc::no_such_file_or_directory);
    }
    maps_.erase(it);
    return ok();
}

std::byte* Iommu::translate(hw::Iova iova, std::size_t len, hw::DmaAccess access) const noexcept {
    std::shared_lock lk(mu_);
    return translate_locked(iova, len, access);
}

std::byte* Iommu::translate_locked(hw::Iova iova, std::size_t len,
                                   hw::DmaAccess access) const noexcept {
    if (len == 0) {
        return nullptr;
    }
    // The mapping that could contain iova is the last one starting at or below it.
    auto it = maps_.upper_bound(iova);
    if (it == maps_.begin()) {
        return nullptr;
    }
    --it;
    const hw::Iova start = it->first;
    const Mapping& m = it->second;
    const hw::Iova offset = iova - start;
    // Written so that no sum can overflow: offset < m.len, then len ≤ what is left.
    if (offset >= m.len || len > m.len - offset) {
        return nullptr;
    }
    if (!hw::allows(m.access, access)) {
        return nullptr;
    }
    return m.host + offset;
}

std::size_t Iommu::mapping_count() const {
    std::shared_lock lk(mu_);
    return maps_.size();
}

}  // namespace tbv::emu
