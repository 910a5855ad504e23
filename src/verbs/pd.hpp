// SPDX-License-Identifier: Apache-2.0
// Protection domain: the isolation boundary every remote and local access is checked against (an
// MR is usable only through a QP of the same PD, IB spec §10.2.3). A Pd counts the objects that
// name it (MRs, QPs, SRQs, AHs) so that it cannot be deallocated under them (ibv_dealloc_pd:
// EBUSY while any resource is still associated with it).
#pragma once

#include <cstdint>

#include "tbv/result.hpp"

namespace tbv::verbs {

class Pd {
public:
    explicit Pd(std::uint32_t handle) noexcept : handle_(handle) {}
    Pd(const Pd&) = delete;
    Pd& operator=(const Pd&) = delete;

    std::uint32_t handle() const noexcept { return handle_; }

    /// An object starts (retain) or stops (release) naming this PD. Control path only.
    void retain() noexcept { ++users_; }
    void release() noexcept { --users_; }
    std::uint32_t users() const noexcept { return users_; }

    /// ok() if nothing names the PD any more, EBUSY otherwise.
    Result<void> check_dealloc() const {
        if (users_ != 0) {
            return fail(std::errc::device_or_resource_busy);
        }
        return ok();
    }

private:
    std::uint32_t handle_;
    std::uint32_t users_ = 0;
};

}  // namespace tbv::verbs
