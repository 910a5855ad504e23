// SPDX-License-Identifier: Apache-2.0
// Memory regions: registration, deregistration and access checks (decisions in mr.hpp).
#include "verbs/mr.hpp"

#include <limits>
#include <utility>

namespace tbv::verbs {

namespace {

constexpr std::uint64_t kPageMask = hw::kDmaPageSize - 1;

/// True if [va, va+len) lies inside [start, start+size); no sum is formed, so nothing can wrap.
constexpr bool inside(std::uint64_t start, std::uint64_t size, std::uint64_t va,
                      std::uint64_t len) noexcept {
    return va >= start && len <= size && va - start <= size - len;
}

hw::DmaAccess device_access(std::uint32_t access) noexcept {
    // The device always reads an MR (send source, READ responses); it writes only where the MR
    // grants local write (receives, READ/atomic results, incoming WRITE and atomics).
    return (access & kAccessLocalWrite) != 0 ? hw::DmaAccess::read_write : hw::DmaAccess::read;
}

}  // namespace

MrTable::MrTable(hw::Device& dev, const DeviceLimits& limits, KeyTable keys)
    : dev_(dev), limits_(limits), keys_(std::move(keys)), mrs_(keys_.capacity()) {}

Result<std::unique_ptr<MrTable>> MrTable::create(hw::Device& dev, const DeviceLimits& limits,
                                                 const KeySecret& secret) {
    auto keys = KeyTable::create(limits.max_mr, secret);
    if (!keys) {
        return Failure{keys.error()};
    }
    return std::unique_ptr<MrTable>(new MrTable(dev, limits, std::move(*keys)));
}

Result<std::unique_ptr<MrTable>> MrTable::create(hw::Device& dev, const DeviceLimits& limits) {
    auto secret = KeySecret::from_getrandom();
    if (!secret) {
        return Failure{secret.error()};
    }
    return create(dev, limits, *secret);
}

MrTable::~MrTable() {
    for (auto& mr : mrs_) {
        if (mr && mr->map_len_ != 0) {
            (void)dev_.dma_unmap(mr->map_iova_, mr->map_len_);
        }
    }
}

Result<Mr*> MrTable::reg_mr(Pd& pd, void* addr, std::size_t length, std::uint32_t access) {
    if ((access & ~kAccessAll) != 0) {
        return fail(std::errc::invalid_argument);
    }
    if ((access & (kAccessRemoteWrite | kAccessRemoteAtomic)) != 0 &&
        (access & kAccessLocalWrite) == 0) {
        return fail(std::errc::invalid_argument);
    }
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (length > limits_.max_mr_size || (addr == nullptr && length != 0)) {
        return fail(std::errc::invalid_argument);
    }
    // The mapping covers whole pages: [start rounded down, start+length rounded up). Both the end
    // and its round-up must stay inside the address space.
    const std::uint64_t max = std::numeric_limits<std::uintptr_t>::max();
    if (length > max - start || (start + length) > max - kPageMask) {
        return fail(std::errc::invalid_argument);
    }
    const std::uint64_t map_base = start & ~kPageMask;
    const std::uint64_t map_end = (start + length + kPageMask) & ~kPageMask;

    auto keys = keys_.allocate();
    if (!keys) {
        return Failure{keys.error()};
    }
    auto mr = std::unique_ptr<Mr>(new Mr());
    mr->pd_ = &pd;
    mr->addr_ = start;
    mr->length_ = length;
    mr->access_ = access;
    mr->keys_ = *keys;
    mr->map_base_ = map_base;
    if (length != 0) {
        const auto map_len = static_cast<std::size_t>(map_end - map_base);
        auto iova = dev_.dma_map(reinterpret_cast<void*>(map_base), map_len, device_access(access));
        if (!iova) {
            keys_.release(keys->slot);
            return Failure{iova.error()};
        }
        mr->map_len_ = map_len;
        mr->map_iova_ = *iova;
    }
    pd.retain();
    Mr* out = mr.get();
    mrs_[keys->slot] = std::move(mr);
    return out;
}

Result<void> MrTable::dereg_mr(Mr& mr) {
    const std::uint32_t slot = mr.keys_.slot;
    if (slot >= mrs_.size() || mrs_[slot].get() != &mr) {
        return fail(std::errc::invalid_argument);
    }
    if (mr.refs() != 0) {
        return fail(std::errc::device_or_resource_busy);
    }
    if (mr.map_len_ != 0) {
        auto r = dev_.dma_unmap(mr.map_iova_, mr.map_len_);
        if (!r) {
            return r;
        }
    }
    keys_.release(slot);
    mr.pd_->release();
    mrs_[slot].reset();
    return ok();
}

AccessCheck MrTable::check(std::uint32_t slot, const Pd& pd, std::uint64_t va, std::uint64_t len,
                           std::uint32_t needed) const noexcept {
    if (slot == KeyTable::kNoSlot) {
        return {AccessFault::bad_key, {}};
    }
    Mr* mr = mrs_[slot].get();
    if (mr == nullptr) {
        return {AccessFault::bad_key, {}};
    }
    if (mr->pd_ != &pd) {
        return {AccessFault::wrong_pd, {}};
    }
    if ((mr->access_ & needed) != needed) {
        return {AccessFault::no_permission, {}};
    }
    if (!inside(mr->addr_, mr->length_, va, len)) {
        return {AccessFault::out_of_bounds, {}};
    }
    return {AccessFault::none,
            {mr, reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(va)), mr->iova_at(va)}};
}

AccessCheck MrTable::check_remote(std::uint32_t rkey, const Pd& pd, std::uint64_t va,
                                  std::uint64_t len, std::uint32_t needed) const noexcept {
    if (len == 0) {
        return {};
    }
    return check(keys_.lookup(rkey, KeyKind::remote), pd, va, len, needed);
}

AccessCheck MrTable::check_local(std::uint32_t lkey, const Pd& pd, std::uint64_t addr,
                                 std::uint64_t len, std::uint32_t needed) const noexcept {
    return check(keys_.lookup(lkey, KeyKind::local), pd, addr, len, needed);
}

}  // namespace tbv::verbs
