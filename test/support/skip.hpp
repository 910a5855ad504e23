// SPDX-License-Identifier: Apache-2.0
// TBV_SKIP(reason): mark the running test case skipped (Catch2 v2 has no SKIP) and leave it.
#pragma once

namespace tbv::test {
void mark_skipped(const char* reason);
}  // namespace tbv::test

#define TBV_SKIP(reason)                   \
    do {                                   \
        ::tbv::test::mark_skipped(reason); \
        return;                            \
    } while (false)
