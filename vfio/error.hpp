// SPDX-License-Identifier: Apache-2.0
// Error detail for the VFIO control plane. A Result carries an errno-style code; the sentence a
// user needs (which device is in the way, which limit to raise and how) is kept per thread and
// read with last_error_detail() right after the failing call. The tbv command prints both.
#pragma once

#include <string>

#include "tbv/result.hpp"

namespace tbv::vfio {

/// Detail of the most recent failure reported by tbv::vfio on this thread ("" if none).
const std::string& last_error_detail() noexcept;

/// Records `detail` and returns a Failure with errno `err`.
Failure fail_detail(int err, std::string detail);
/// Records `detail` and returns a Failure with the project code `e`.
Failure fail_detail(Errc e, std::string detail);

/// "message: detail" for an error returned by tbv::vfio (just the message without detail).
std::string describe(std::error_code ec);

}  // namespace tbv::vfio
