// SPDX-License-Identifier: Apache-2.0
// transport: 24-bit PSN arithmetic, exhaustively around the wrap.
#include <cstdint>

#include "catch.hpp"
#include "quiet.hpp"
#include "transport/psn.hpp"

using namespace tbv::transport;

TEST_CASE("psn add/sub wrap at 2^24", "[unit][transport][psn]") {
    CHECK(psn::add(psn::kMask, 1) == 0);
    CHECK(psn::add(psn::kMask - 2, 5) == 2);
    CHECK(psn::sub(2, 5) == psn::kMask - 2);
    CHECK(psn::add(0, psn::kModulus) == 0);
    CHECK(psn::valid(psn::kMask));
    CHECK_FALSE(psn::valid(psn::kModulus));
}

TEST_CASE("psn order exhaustively around the wrap and around zero", "[unit][transport][psn]") {
    // Every pair (a, a + k) for a in a band across the wrap and k in ±(small and near-half).
    const std::uint32_t bases[] = {psn::kMask - 300, 0, psn::kHalf - 150};
    for (std::uint32_t base : bases) {
        for (std::uint32_t i = 0; i < 300; ++i) {
            const std::uint32_t a = psn::add(base, i);
            for (std::int32_t k = -260; k <= 260; ++k) {
                const std::uint32_t b = k >= 0 ? psn::add(a, static_cast<std::uint32_t>(k))
                                               : psn::sub(a, static_cast<std::uint32_t>(-k));
                TBV_REQUIRE_QUIET(psn::diff(b, a) == k);
                TBV_REQUIRE_QUIET(psn::diff(a, b) == -k);
                TBV_REQUIRE_QUIET(psn::before(a, b) == (k > 0));
                TBV_REQUIRE_QUIET(psn::after(a, b) == (k < 0));
                TBV_REQUIRE_QUIET(psn::before_eq(a, b) == (k >= 0));
                if (k >= 0) {
                    TBV_REQUIRE_QUIET(psn::distance(a, b) == static_cast<std::uint32_t>(k));
                    TBV_REQUIRE_QUIET(psn::in_window(b, a, static_cast<std::uint32_t>(k) + 1));
                    TBV_REQUIRE_QUIET(!psn::in_window(b, a, static_cast<std::uint32_t>(k)));
                } else {
                    TBV_REQUIRE_QUIET(!psn::in_window(b, a, 1000));
                }
            }
        }
    }
}

TEST_CASE("psn half-circle boundary", "[unit][transport][psn]") {
    for (std::uint32_t a : {0u, 1u, psn::kMask, psn::kHalf, psn::kHalf - 1}) {
        const std::uint32_t far = psn::add(a, psn::kHalf - 1);
        CHECK(psn::diff(far, a) == static_cast<std::int32_t>(psn::kHalf - 1));
        CHECK(psn::before(a, far));
        const std::uint32_t half = psn::add(a, psn::kHalf);
        CHECK(psn::diff(half, a) == -static_cast<std::int32_t>(psn::kHalf));
    }
}
