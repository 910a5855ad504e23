// SPDX-License-Identifier: Apache-2.0
// Per-thread error detail for the VFIO control plane (see error.hpp).
#include "vfio/error.hpp"

#include <utility>

namespace tbv::vfio {

namespace {
thread_local std::string t_detail;
}  // namespace

const std::string& last_error_detail() noexcept {
    return t_detail;
}

Failure fail_detail(int err, std::string detail) {
    t_detail = std::move(detail);
    return fail_errno(err);
}

Failure fail_detail(Errc e, std::string detail) {
    t_detail = std::move(detail);
    return fail(e);
}

std::string describe(std::error_code ec) {
    if (t_detail.empty()) {
        return ec.message();
    }
    return ec.message() + ": " + t_detail;
}

}  // namespace tbv::vfio
