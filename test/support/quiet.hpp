// SPDX-License-Identifier: Apache-2.0
// Assertions for exhaustive loops: record only failures. Catch2 reports every passing CHECK as a
// TAP line, and a loop over millions of cases would turn the test log into hundreds of MB.
#pragma once

#include "catch.hpp"

/// Like CHECK(cond) but silent when it holds.
#define TBV_CHECK_QUIET(cond)             \
    do {                                  \
        if (!(cond)) {                    \
            FAIL_CHECK("failed: " #cond); \
        }                                 \
    } while (false)

/// Like REQUIRE(cond) but silent when it holds.
#define TBV_REQUIRE_QUIET(cond)     \
    do {                            \
        if (!(cond)) {              \
            FAIL("failed: " #cond); \
        }                           \
    } while (false)
