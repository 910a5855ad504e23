// SPDX-License-Identifier: Apache-2.0
// Unmodified perftest (Debian's perftest 4.5) over the provider: each test as a server and a
// client process, each an emulated host on its end of one shared-memory cable, with perftest's
// own out-of-band exchange over loopback TCP. Both must exit 0 and print the result table.
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "check_out.hpp"
#include "process.hpp"
#include "skip.hpp"

using tbv::test::Proc;
using tbv::test::ProcResult;

namespace {

bool contains(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

/// A result row: a line starting with the message size, after the table's header.
bool has_result_row(const std::string& out) {
    const auto h = out.find("#bytes");
    if (h == std::string::npos) {
        return false;
    }
    const auto nl = out.find('\n', h);
    if (nl == std::string::npos) {
        return false;
    }
    std::size_t p = nl + 1;
    while (p < out.size() && out[p] == ' ') {
        ++p;
    }
    return p < out.size() && out[p] >= '0' && out[p] <= '9';
}

/// Runs `prog args...` as server and client on a fresh cable; checks both. `srv_env` and
/// `cli_env` are added to each side's environment.
void run_pair(const std::string& prog, const std::vector<std::string>& args,
              const std::vector<std::string>& srv_env = {},
              const std::vector<std::string>& cli_env = {}) {
    if (!tbv::test::have_program(prog)) {
        TBV_SKIP("perftest not installed (scripts/deps provider)");
    }
    const tbv::test::CableFile cable_file(tbv::test::unique_name("pt-perf-"));
    const std::string& cable = cable_file.name();
    const std::string port = std::to_string(tbv::test::free_tcp_port());
    const std::vector<std::string> env = {"LD_PRELOAD=" + tbv::test::preload_path(),
                                          "TBV_EMU=" + cable, "TBV_LINK_WAIT_MS=30000"};
    std::vector<std::string> srv = {prog, "-d", "tbv0", "-p", port};
    srv.insert(srv.end(), args.begin(), args.end());
    std::vector<std::string> cli = srv;
    cli.push_back("127.0.0.1");
    auto se = env;
    se.insert(se.end(), srv_env.begin(), srv_env.end());
    auto ce = env;
    ce.insert(ce.end(), cli_env.begin(), cli_env.end());
    Proc server(srv, se);
    // perftest's client does not retry its TCP connect, and both processes leave their link wait
    // at the same moment. The provider of the process that started later (the client) returns
    // from that first port query only once the other one listens on TCP (it finds the peer's pid
    // in the cable file; rdma_provider/context.cpp), so the server only has to start first: by
    // more than the process start time's resolution (a clock tick), not by any settle time.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    Proc client(cli, ce);
    const ProcResult c = client.finish(std::chrono::seconds(120));
    const ProcResult s = server.finish(std::chrono::seconds(30));
    CHECK_OUT(c.status == 0, c.out);
    CHECK_OUT(s.status == 0, s.out);
    CHECK_OUT(has_result_row(c.out), c.out);
    CHECK_OUT(contains(c.out, "Device         : tbv0"), c.out);
}

}  // namespace

TEST_CASE("perftest ib_write_bw", "[provider][perftest]") {
    run_pair("ib_write_bw", {});
}

TEST_CASE("perftest ib_write_lat (inline)", "[provider][perftest]") {
    run_pair("ib_write_lat", {});
}

TEST_CASE("perftest ib_read_bw", "[provider][perftest]") {
    run_pair("ib_read_bw", {});
}

TEST_CASE("perftest ib_read_lat", "[provider][perftest]") {
    run_pair("ib_read_lat", {});
}

TEST_CASE("perftest ib_send_bw", "[provider][perftest]") {
    run_pair("ib_send_bw", {});
}

TEST_CASE("perftest ib_send_lat (inline)", "[provider][perftest]") {
    run_pair("ib_send_lat", {});
}

TEST_CASE("perftest ib_atomic_bw", "[provider][perftest]") {
    run_pair("ib_atomic_bw", {});
}

TEST_CASE("perftest ib_atomic_lat", "[provider][perftest]") {
    run_pair("ib_atomic_lat", {});
}

// ---- variants ---------------------------------------------------------------------------------

TEST_CASE("perftest ib_write_bw -q 4 (four QPs)", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-q", "4", "-n", "2000"});
}

TEST_CASE("perftest ib_write_bw -b (bidirectional)", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-b", "-n", "2000"});
}

TEST_CASE("perftest ib_send_bw -e (completion channel events)", "[provider][perftest]") {
    run_pair("ib_send_bw", {"-e"});
}

TEST_CASE("perftest ib_send_bw --use-srq", "[provider][perftest]") {
    run_pair("ib_send_bw", {"--use-srq"});
}

TEST_CASE("perftest ib_write_bw -c UC", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-c", "UC", "-n", "2000"});
}

// UD: the server posts a receive for every datagram (perftest's RX depth is -n for UD) and
// counts completions, so one datagram lost anywhere hangs it. 5000 datagrams keep both rails'
// credits (2 x 239 in flight) above the shared-memory cable's 256 slots per direction for
// long stretches: the cable must hold frames back, not drop them.
TEST_CASE("perftest ib_send_bw -c UD", "[provider][perftest]") {
    run_pair("ib_send_bw", {"-c", "UD", "-n", "5000"});
}

TEST_CASE("perftest ib_send_lat -c UD", "[provider][perftest]") {
    run_pair("ib_send_lat", {"-c", "UD"});
}

TEST_CASE("perftest ib_write_lat -I 128 (inline size)", "[provider][perftest]") {
    run_pair("ib_write_lat", {"-I", "128"});
}

TEST_CASE("perftest ib_write_bw -l 16 (post lists)", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-l", "16", "-n", "2048"});
}

TEST_CASE("perftest ib_write_bw -Q 8 (CQ moderation)", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-Q", "8", "-n", "2000"});
}

TEST_CASE("perftest ib_write_bw --mr_per_qp -q 2", "[provider][perftest]") {
    run_pair("ib_write_bw", {"--mr_per_qp", "-q", "2", "-n", "2000"});
}

TEST_CASE("perftest ib_write_bw -s 1048576", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-s", "1048576", "-n", "300"});
}

TEST_CASE("perftest ib_write_bw -a (every size 2 B to 8 MiB)", "[provider][perftest]") {
    run_pair("ib_write_bw", {"-a", "-n", "50"});
}

// ---- the RoCE-style GID mode (TBV_GID_ADDR): link layer Ethernet, peers addressed by GID
// ---------

TEST_CASE("perftest ib_write_bw -x 0 (RoCE-style GIDs)", "[provider][perftest][roce]") {
    run_pair("ib_write_bw", {"-x", "0", "-n", "2000"}, {"TBV_GID_ADDR=10.0.0.1"},
             {"TBV_GID_ADDR=10.0.0.2"});
}

TEST_CASE("perftest ib_send_bw -c UD (RoCE-style GIDs: address handles by GID)",
          "[provider][perftest][roce]") {
    run_pair("ib_send_bw", {"-c", "UD"}, {"TBV_GID_ADDR=10.0.0.1"}, {"TBV_GID_ADDR=10.0.0.2"});
}

TEST_CASE("perftest ib_read_lat -x 0 (IB mode with a GRH)", "[provider][perftest]") {
    run_pair("ib_read_lat", {"-x", "0"});
}

// ---- qperf ----------------------------------------------------------------------------------

TEST_CASE("qperf rc_* tests against a qperf server", "[provider][qperf]") {
    if (!tbv::test::have_program("qperf")) {
        TBV_SKIP("qperf not installed (scripts/deps provider)");
    }
    const tbv::test::CableFile cable_file(tbv::test::unique_name("pt-qperf-"));
    const std::string& cable = cable_file.name();
    const std::string port = std::to_string(tbv::test::free_tcp_port());
    const std::vector<std::string> env = {"LD_PRELOAD=" + tbv::test::preload_path(),
                                          "TBV_EMU=" + cable, "TBV_LINK_WAIT_MS=30000"};
    Proc server({"qperf", "-lp", port}, env);  // serves until killed (Proc's destructor)
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    const std::vector<std::string> tests = {"rc_lat",
                                            "rc_bw",
                                            "rc_rdma_write_bw",
                                            "rc_rdma_write_lat",
                                            "rc_rdma_read_bw",
                                            "rc_rdma_read_lat",
                                            "rc_compare_swap_mr",
                                            "rc_fetch_add_mr"};
    std::vector<std::string> argv = {"qperf", "-lp", port, "-t", "1", "127.0.0.1"};
    argv.insert(argv.end(), tests.begin(), tests.end());
    Proc client(argv, env);
    const ProcResult c = client.finish(std::chrono::seconds(120));
    CHECK_OUT(c.status == 0, c.out);
    CHECK_OUT(!contains(c.out, "failed"), c.out);
    for (const auto& t : tests) {
        CHECK_OUT(contains(c.out, t + ":\n"), c.out);
    }
    CHECK_OUT(contains(c.out, "latency  ="), c.out);
    CHECK_OUT(contains(c.out, "bw  ="), c.out);
    CHECK_OUT(contains(c.out, "msg_rate  ="), c.out);
}
