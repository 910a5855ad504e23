// SPDX-License-Identifier: Apache-2.0
// Shared test main for every Catch2 suite.
//
// Besides Catch2's own reporting, a listener appends one line per test case to the file named by
// TBV_TEST_RESULTS ("pass|fail|skip <TAB> executable <TAB> test name"), which .ci/run sums into its
// final "N passed, N failed, N skipped" line. Catch2 v2 has no SKIP, so tests call TBV_SKIP(msg)
// (test/support/skip.hpp), which records the reason and returns from the test case.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define TBV_CATCH_V3 1
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <catch2/catch_reporter_tap.hpp>
#endif

#include <cstdio>
#include <cstdlib>
#include <string>

#include "skip.hpp"

namespace tbv::test {

namespace {
std::string g_skip_reason;
bool g_skipped = false;
std::string g_exe = "test";
}  // namespace

void mark_skipped(const char* reason) {
    g_skipped = true;
    g_skip_reason = reason;
    std::fprintf(stderr, "SKIPPED: %s\n", reason);
}

namespace {

void record(const char* status, const std::string& name) {
    const char* path = std::getenv("TBV_TEST_RESULTS");
    if (path == nullptr || *path == '\0') {
        return;
    }
    if (std::FILE* f = std::fopen(path, "a")) {
        std::fprintf(f, "%s\t%s\t%s\n", status, g_exe.c_str(), name.c_str());
        std::fclose(f);
    }
}

#ifdef TBV_CATCH_V3
class ResultListener : public Catch::EventListenerBase {
public:
    using Catch::EventListenerBase::EventListenerBase;
    void testCaseStarting(const Catch::TestCaseInfo&) override { g_skipped = false; }
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        const bool skipped = g_skipped || stats.totals.testCases.skipped > 0;
        record(skipped ? "skip" : (stats.totals.assertions.allOk() ? "pass" : "fail"),
               stats.testInfo->name);
    }
};
#else
class ResultListener : public Catch::TestEventListenerBase {
public:
    using Catch::TestEventListenerBase::TestEventListenerBase;
    void testCaseStarting(const Catch::TestCaseInfo&) override { g_skipped = false; }
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        record(g_skipped ? "skip" : (stats.totals.assertions.allOk() ? "pass" : "fail"),
               stats.testInfo.name);
    }
};
#endif

}  // namespace
}  // namespace tbv::test

using tbv::test::ResultListener;
CATCH_REGISTER_LISTENER(ResultListener)

int main(int argc, char* argv[]) {
    if (argc > 0) {
        std::string exe = argv[0];
        auto slash = exe.find_last_of('/');
        tbv::test::g_exe = slash == std::string::npos ? exe : exe.substr(slash + 1);
    }
    Catch::Session session;
    if (int rc = session.applyCommandLine(argc, argv); rc != 0) {
        return rc;
    }
    return session.run();
}
