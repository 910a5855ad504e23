// SPDX-License-Identifier: Apache-2.0
// Shared receive queue: receive WQEs any QP attached to it may take. A QP takes one when the
// first frame of a receive-consuming message arrives (with striping that need not be the message's
// first frame) and keeps it, by SSN, until the message is delivered and completed in order; then
// the slot goes back. The limit event (IBV_EVENT_SRQ_LIMIT_REACHED) fires once when the number of
// posted WQEs drops below the armed limit, and disarms itself, as ibv_modify_srq(3) describes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"
#include "verbs/cq.hpp"
#include "verbs/limits.hpp"
#include "verbs/mr.hpp"
#include "verbs/pd.hpp"
#include "verbs/seg.hpp"

namespace tbv::verbs {

class Srq {
public:
    /// ibv_create_srq: EINVAL beyond max_srq_wr / max_srq_sge.
    static Result<std::unique_ptr<Srq>> create(Pd& pd, MrTable& mrs, std::uint32_t max_wr,
                                               std::uint32_t max_sge, std::uint32_t limit,
                                               const DeviceLimits& limits, std::uint32_t handle,
                                               AsyncHandler async);
    ~Srq();
    Srq(const Srq&) = delete;
    Srq& operator=(const Srq&) = delete;

    std::uint32_t max_wr() const noexcept { return static_cast<std::uint32_t>(slots_.size()); }
    std::uint32_t max_sge() const noexcept { return max_sge_; }
    std::uint32_t limit() const noexcept { return limit_; }
    std::uint32_t posted() const noexcept { return static_cast<std::uint32_t>(ready_count_); }
    std::uint32_t handle() const noexcept { return handle_; }
    Pd& pd() const noexcept { return pd_; }

    /// ibv_modify_srq with IBV_SRQ_LIMIT (arms the event); resizing is refused (EINVAL).
    Result<void> arm(std::uint32_t limit);
    Result<void> post_recv(const RecvWr& wr, const RecvWr** bad) noexcept;

    /// A QP takes the oldest posted WQE; false if none. Fires the limit event if due.
    bool take(std::uint32_t& slot) noexcept;
    void give_back(std::uint32_t slot) noexcept;
    std::uint64_t wr_id(std::uint32_t slot) const noexcept { return slots_[slot].wr_id; }
    Seg* segs(std::uint32_t slot) noexcept { return segs_.data() + std::size_t{slot} * max_sge_; }
    std::uint32_t nseg(std::uint32_t slot) const noexcept { return slots_[slot].nseg; }
    std::uint32_t total(std::uint32_t slot) const noexcept { return slots_[slot].total; }
    bool faulty(std::uint32_t slot) const noexcept { return slots_[slot].fault; }

    void retain() noexcept { ++users_; }
    void release_user() noexcept { --users_; }
    std::uint32_t users() const noexcept { return users_; }

private:
    struct Slot {
        std::uint64_t wr_id = 0;
        std::uint32_t nseg = 0;
        std::uint32_t total = 0;
        bool fault = false;
    };
    Srq(Pd& pd, MrTable& mrs, std::uint32_t max_wr, std::uint32_t max_sge, std::uint32_t handle,
        AsyncHandler async);

    Pd& pd_;
    MrTable& mrs_;
    std::uint32_t max_sge_;
    std::uint32_t handle_;
    AsyncHandler async_;
    std::vector<Slot> slots_;
    std::vector<Seg> segs_;
    std::vector<std::uint32_t> free_;   ///< unposted slots (stack)
    std::vector<std::uint32_t> ready_;  ///< posted slots, FIFO ring
    std::uint64_t ready_head_ = 0, ready_tail_ = 0, ready_count_ = 0;
    std::uint32_t limit_ = 0;  ///< 0: not armed
    std::uint32_t users_ = 0;
};

}  // namespace tbv::verbs
