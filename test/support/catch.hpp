// SPDX-License-Identifier: Apache-2.0
// Catch2 v2 (Debian 12 ships 2.13) or v3, whichever is installed.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define TBV_CATCH_V3 1
#else
#include <catch2/catch.hpp>
#define TBV_CATCH_V2 1
#endif
