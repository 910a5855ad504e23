// SPDX-License-Identifier: Apache-2.0
// First-fit IOVA allocation inside the IOMMU's usable ranges (see iova_allocator.hpp).
#include "vfio/iova_allocator.hpp"

#include <algorithm>
#include <iterator>

namespace tbv::vfio {

namespace {

constexpr hw::Iova kPage = hw::kDmaPageSize;

constexpr hw::Iova align_up(hw::Iova v) noexcept {
    return (v + kPage - 1) & ~(kPage - 1);
}

}  // namespace

IovaAllocator::IovaAllocator(std::vector<IovaRange> usable, hw::Iova min, hw::Iova max) {
    std::sort(usable.begin(), usable.end(),
              [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
    for (IovaRange r : usable) {
        if (r.last < r.start || r.last < min || r.start > max) {
            continue;
        }
        r.start = std::max(r.start, min);
        r.last = std::min(r.last, max);
        // Whole pages only: start rounded up, end rounded down to a page's last byte.
        if (r.start > ~hw::Iova{0} - kPage) {
            continue;
        }
        r.start = align_up(r.start);
        if (r.last != ~hw::Iova{0}) {
            const hw::Iova end = (r.last + 1) & ~(kPage - 1);
            if (end == 0) {
                continue;
            }
            r.last = end - 1;
        }
        if (r.last < r.start) {
            continue;
        }
        if (!ranges_.empty() && r.start <= ranges_.back().last + 1 &&
            ranges_.back().last != ~hw::Iova{0}) {
            ranges_.back().last = std::max(ranges_.back().last, r.last);
        } else if (ranges_.empty() || ranges_.back().last != ~hw::Iova{0}) {
            ranges_.push_back(r);
        }
    }
}

std::optional<hw::Iova> IovaAllocator::allocate(std::size_t len) {
    if (len == 0 || len % kPage != 0) {
        return std::nullopt;
    }
    const hw::Iova want = len;
    for (const IovaRange& r : ranges_) {
        hw::Iova cand = r.start;
        // First allocation that could overlap [cand, ...): the one before cand, then onwards.
        auto it = used_.upper_bound(cand);
        if (it != used_.begin()) {
            --it;
        }
        for (;;) {
            if (r.last - cand < want - 1 || cand > r.last) {
                break;  // does not fit in this range
            }
            while (it != used_.end() && it->first + it->second <= cand) {
                ++it;
            }
            if (it == used_.end() || it->first > cand + (want - 1)) {
                used_.emplace(cand, len);
                allocated_ += len;
                return cand;
            }
            const hw::Iova next = it->first + it->second;  // page aligned already
            if (next == 0 || next - 1 >= r.last) {
                break;
            }
            cand = next;
        }
    }
    return std::nullopt;
}

bool IovaAllocator::is_allocation(hw::Iova iova, std::size_t len) const {
    auto it = used_.find(iova);
    return it != used_.end() && it->second == len;
}

bool IovaAllocator::release(hw::Iova iova, std::size_t len) {
    auto it = used_.find(iova);
    if (it == used_.end() || it->second != len) {
        return false;
    }
    allocated_ -= len;
    used_.erase(it);
    return true;
}

}  // namespace tbv::vfio
