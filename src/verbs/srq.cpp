// SPDX-License-Identifier: Apache-2.0
#include "verbs/srq.hpp"

namespace tbv::verbs {

Result<std::unique_ptr<Srq>> Srq::create(Pd& pd, MrTable& mrs, std::uint32_t max_wr,
                                         std::uint32_t max_sge, std::uint32_t limit,
                                         const DeviceLimits& limits, std::uint32_t handle,
                                         AsyncHandler async) {
    if (max_wr == 0 || max_wr > limits.max_srq_wr || max_sge > limits.max_srq_sge ||
        limit > max_wr) {
        return fail(std::errc::invalid_argument);
    }
    auto s =
        std::unique_ptr<Srq>(new Srq(pd, mrs, max_wr, max_sge == 0 ? 1 : max_sge, handle, async));
    s->limit_ = limit;
    pd.retain();
    return s;
}

Srq::Srq(Pd& pd, MrTable& mrs, std::uint32_t max_wr, std::uint32_t max_sge, std::uint32_t handle,
         AsyncHandler async)
    : pd_(pd), mrs_(mrs), max_sge_(max_sge), handle_(handle), async_(async) {
    slots_.resize(max_wr);
    segs_.resize(std::size_t{max_wr} * max_sge);
    ready_.resize(max_wr);
    free_.reserve(max_wr);
    for (std::uint32_t i = max_wr; i-- > 0;) {
        free_.push_back(i);
    }
}

Srq::~Srq() {
    // Posted WQEs still hold MR references.
    for (std::uint64_t i = ready_head_; i != ready_tail_; ++i) {
        const std::uint32_t slot = ready_[i % ready_.size()];
        for (std::uint32_t k = 0; k < slots_[slot].nseg; ++k) {
            segs(slot)[k].mr->release();
        }
    }
    pd_.release();
}

Result<void> Srq::arm(std::uint32_t limit) {
    if (limit > max_wr()) {
        return fail(std::errc::invalid_argument);
    }
    limit_ = limit;
    return ok();
}

Result<void> Srq::post_recv(const RecvWr& first, const RecvWr** bad) noexcept {
    for (const RecvWr* wr = &first; wr != nullptr; wr = wr->next) {
        if (wr->num_sge > max_sge_ || (wr->num_sge != 0 && wr->sg_list == nullptr) ||
            free_.empty()) {
            if (bad != nullptr) {
                *bad = wr;
            }
            return fail(free_.empty() ? std::errc::not_enough_memory : std::errc::invalid_argument);
        }
        const std::uint32_t slot = free_.back();
        free_.pop_back();
        Slot& s = slots_[slot];
        s.wr_id = wr->wr_id;
        s.fault = !resolve_recv(mrs_, pd_, *wr, segs(slot), s.nseg, s.total);
        ready_[ready_tail_++ % ready_.size()] = slot;
        ++ready_count_;
    }
    return ok();
}

bool Srq::take(std::uint32_t& slot) noexcept {
    if (ready_count_ == 0) {
        return false;
    }
    slot = ready_[ready_head_++ % ready_.size()];
    --ready_count_;
    if (limit_ != 0 && ready_count_ < limit_) {
        limit_ = 0;  // one event per arming
        async_(AsyncEventType::srq_limit_reached, handle_);
    }
    return true;
}

void Srq::give_back(std::uint32_t slot) noexcept {
    // References were dropped by the QP when it completed the WQE.
    slots_[slot].nseg = 0;
    free_.push_back(slot);
}

}  // namespace tbv::verbs
