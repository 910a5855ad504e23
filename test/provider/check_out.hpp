// SPDX-License-Identifier: Apache-2.0
// CHECK_OUT(cond, out): a check on a program's result that shows the program's output only when
// it fails (Catch2's TAP reporter breaks on multi-line INFO text, so no INFO on success).
#pragma once

#include "catch.hpp"

#define CHECK_OUT(cond, out)                                            \
    do {                                                                \
        if (cond) {                                                     \
            SUCCEED(#cond);                                             \
        } else {                                                        \
            FAIL_CHECK(#cond << "\n--- program output ---\n" << (out)); \
        }                                                               \
    } while (0)
