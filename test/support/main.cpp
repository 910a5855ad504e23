// SPDX-License-Identifier: Apache-2.0
// Shared test main: Catch2 with the TAP reporter available so Meson counts every case.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <catch2/catch_reporter_tap.hpp>
#endif

#include <cstdlib>

int main(int argc, char* argv[]) {
    Catch::Session session;
    if (int rc = session.applyCommandLine(argc, argv); rc != 0) {
        return rc;
    }
    // Seed printed on every run so a failure with randomised input can be replayed with --rng-seed.
    return session.run();
}
