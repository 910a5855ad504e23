// SPDX-License-Identifier: Apache-2.0
// `tbv status` run as the real program (TBV_BIN): the in-process discovery trace, and two
// processes that are two emulated hosts on one shared-memory cable.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "catch.hpp"

// Catch2's TAP reporter prints INFO text with every passing assertion too, and multi-line text
// breaks the TAP stream: the program's output is shown only with a failed check.
#define CHECK_RUN(cond, out)                                        \
    do {                                                            \
        if (cond) {                                                 \
            SUCCEED(#cond);                                         \
        } else {                                                    \
            FAIL_CHECK(#cond << "\n--- tbv output ---\n" << (out)); \
        }                                                           \
    } while (0)
#define REQUIRE_RUN(cond, out)                                \
    do {                                                      \
        if (cond) {                                           \
            SUCCEED(#cond);                                   \
        } else {                                              \
            FAIL(#cond << "\n--- tbv output ---\n" << (out)); \
        }                                                     \
    } while (0)

namespace {

struct Run {
    int status = -1;  ///< exit code, or -1 if it did not exit normally
    std::string out;
};

std::string tbv_bin() {
    const char* b = std::getenv("TBV_BIN");
    return b != nullptr ? b : "";
}

FILE* start(const std::string& args) {
    // TBV_EMU from the caller's environment would change what `tbv status` does.
    const std::string cmd = "env -u TBV_EMU '" + tbv_bin() + "' " + args;
    return ::popen(cmd.c_str(), "r");
}

Run finish(FILE* f) {
    Run r;
    if (f == nullptr) {
        return r;
    }
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        r.out.append(buf, n);
    }
    const int st = ::pclose(f);
    r.status = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::size_t count(const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) {
        ++n;
    }
    return n;
}

}  // namespace

TEST_CASE("tbv status --trace-demo: two hosts, every discovery step, two rails each",
          "[emu][tbv]") {
    REQUIRE_FALSE(tbv_bin().empty());
    const Run r = finish(start("status --trace-demo 2>&1"));
    REQUIRE_RUN(r.status == 0, r.out);
    // Each step appears for both hosts, in the order the CM takes them.
    for (const char* host : {"host-a", "host-b"}) {
        std::size_t at = 0;
        for (const char* step : {"plug event acked", "lane up", "XDomain peer", "peer UUID",
                                 "properties:", "rail(s) up"}) {
            bool found = false;
            for (auto p = r.out.find(step, at); p != std::string::npos;
                 p = r.out.find(step, p + 1)) {
                const auto bol = r.out.rfind('\n', p);
                const auto line = r.out.substr(bol == std::string::npos ? 0 : bol + 1,
                                               p - (bol == std::string::npos ? 0 : bol + 1));
                if (line.find(host) != std::string::npos) {
                    found = true;
                    at = p;
                    break;
                }
            }
            INFO(host << ": " << step);
            CHECK_RUN(found, r.out);
        }
    }
    CHECK_RUN(count(r.out, "2 rail(s) up") == 2, r.out);
    // A frame each way on each rail, delivered intact.
    CHECK_RUN(count(r.out, "intact") == 4, r.out);
    CHECK_RUN(count(r.out, "router   data TX 2 RX 2, dropped: no path 0") == 2, r.out);
    CHECK_RUN(count(r.out, "tbverbs") >= 2, r.out);
    // Status of both: each shows its link up and rails 0 and 1.
    CHECK_RUN(count(r.out, "USB4 port (lane adapter 2): up") == 2, r.out);
    CHECK_RUN(count(r.out, "    rail 0 ") == 2, r.out);
    CHECK_RUN(count(r.out, "    rail 1 ") == 2, r.out);
    CHECK_RUN(count(r.out, "    rail 2 ") == 0, r.out);
}

TEST_CASE("two tbv status --emu processes on one cable: link up, each names the other",
          "[emu][tbv]") {
    REQUIRE_FALSE(tbv_bin().empty());
    const std::string cable = "tbv-status-test-" + std::to_string(::getpid());
    const std::string args = "status --emu " + cable + " --json --wait --timeout 20";
    FILE* fa = start(args);
    FILE* fb = start(args);
    const Run a = finish(fa);
    const Run b = finish(fb);
    const std::string both = a.out + "\n--- second process ---\n" + b.out;
    REQUIRE_RUN(a.status == 0 && b.status == 0, both);
    const auto ja = nlohmann::json::parse(a.out, nullptr, false);
    const auto jb = nlohmann::json::parse(b.out, nullptr, false);
    REQUIRE_RUN(!ja.is_discarded() && !jb.is_discarded(), both);
    const auto& la = ja.at("links").at(0);
    const auto& lb = jb.at("links").at(0);
    CHECK(la.at("state") == "up");
    CHECK(lb.at("state") == "up");
    CHECK(ja.at("router").at("uuid") != jb.at("router").at("uuid"));
    CHECK(la.at("peer").at("uuid") == jb.at("router").at("uuid"));
    CHECK(lb.at("peer").at("uuid") == ja.at("router").at("uuid"));
    REQUIRE(la.at("rails").size() == 2);
    REQUIRE(lb.at("rails").size() == 2);
    for (std::size_t k = 0; k < 2; ++k) {
        const auto& ra = la.at("rails").at(k);
        const auto& rb = lb.at("rails").at(k);
        CHECK(ra.at("tx_hop") == rb.at("rx_hop"));
        CHECK(rb.at("tx_hop") == ra.at("rx_hop"));
        CHECK(ra.at("rx_path").at("valid") == true);
        CHECK(ra.at("tx_path").at("valid") == true);
    }
    // The lane adapter reports the trained link.
    bool lane_up = false;
    for (const auto& ad : ja.at("adapters")) {
        if (ad.at("number") == la.at("adapter")) {
            lane_up = ad.at("lane").at("up") == true && ad.at("lane").at("speed_gbps") > 0;
        }
    }
    CHECK(lane_up);
}

TEST_CASE("tbv status without an emulated host or a VFIO-bound NHI says so", "[emu][tbv]") {
    REQUIRE_FALSE(tbv_bin().empty());
    // No tbverbs process either: an empty stats directory (other tests' contexts publish theirs
    // in /dev/shm meanwhile).
    char dir[] = "/tmp/tbv-status-none-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    ::setenv("TBV_STATS_DIR", dir, 1);
    const Run r = finish(start("status 2>&1"));
    ::unsetenv("TBV_STATS_DIR");
    ::rmdir(dir);
    // A machine with a VFIO-bound NHI gets the "not yet" error instead of "nothing to show".
    const bool nothing = r.status == 0 && r.out.find("nothing to show") != std::string::npos;
    const bool vfio =
        r.status == 1 && r.out.find("no VFIO-bound NHI with a live peer yet") != std::string::npos;
    CHECK_RUN(nothing || vfio, r.out);
}
