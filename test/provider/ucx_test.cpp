// SPDX-License-Identifier: Apache-2.0
// UCX (Debian 12's ucx-utils 1.13) over an emulated cable, as a user runs it: `tbv devnode --emu`
// links /dev/infiniband/tbv-emu (UCX skips a device without a node it may open), then
// ucx_perftest as server and client, each an emulated host on one end of a fresh cable, at the
// UCT level on rc_verbs (RDMA WRITE, and SEND/receive through an SRQ). The UCP level (tag_lat,
// how MPI uses UCX; its wire-up needs ud_verbs too) passes by hand but hung in this harness:
// not tested here yet (docs/usage.md).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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

constexpr auto kPair = std::chrono::seconds(90);
constexpr const char* kNode = "/dev/infiniband/tbv-emu";

bool node_usable() {
    struct stat st {};
    return ::stat(kNode, &st) == 0 && S_ISCHR(st.st_mode) && ::access(kNode, R_OK | W_OK) == 0;
}

/// The emulator's node for the test's duration: made with `tbv devnode --emu` if missing (root),
/// removed again only if this test made it.
class EmuNode {
public:
    EmuNode() {
        if (node_usable()) {
            ok_ = true;
            return;
        }
        const char* tbv = std::getenv("TBV_BIN");
        if (tbv == nullptr || ::geteuid() != 0) {
            return;
        }
        ProcResult r = Proc({tbv, "devnode", "--emu"}, {}).finish(std::chrono::seconds(10));
        made_ = r.status == 0;
        ok_ = made_ && node_usable();
        INFO(r.out);
        CHECK(ok_);
    }
    ~EmuNode() {
        if (made_) {
            (void)Proc({std::getenv("TBV_BIN"), "devnode", "--emu", "--remove"}, {})
                .finish(std::chrono::seconds(10));
        }
    }
    EmuNode(const EmuNode&) = delete;
    EmuNode& operator=(const EmuNode&) = delete;
    bool ok() const noexcept { return ok_; }

private:
    bool ok_ = false;
    bool made_ = false;
};

/// ucx_perftest `args` as server, then as client of 127.0.0.1, on a fresh cable: both exit 0 and
/// the client prints its final row. Returns the client's output.
std::string ucx_pair(const std::vector<std::string>& args) {
    const tbv::test::CableFile cable(tbv::test::unique_name("pt-ucx-"));
    const std::string port = std::to_string(tbv::test::free_tcp_port());
    std::vector<std::string> srv = {"ucx_perftest", "-p", port};
    srv.insert(srv.end(), args.begin(), args.end());
    std::vector<std::string> cli = srv;
    cli.push_back("127.0.0.1");
    // Both open the device only after their TCP handshake, together: neither waits for the
    // other to listen (TBV_LINK_SETTLE_MS=0); query_port waits for the link.
    const std::vector<std::string> env = {"LD_PRELOAD=" + tbv::test::preload_path(),
                                          "TBV_EMU=" + cable.name(),
                                          "TBV_LINK_WAIT_MS=30000",
                                          "TBV_LINK_SETTLE_MS=0",
                                          "UCX_NET_DEVICES=tbv0:1",
                                          "UCX_TLS=rc_verbs,ud_verbs,self",
                                          "UCX_WARN_UNUSED_ENV_VARS=n"};
    Proc server(srv, env);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // listening
    Proc client(cli, env);
    const ProcResult c = client.finish(kPair);
    const ProcResult s = server.finish(kPair);
    CHECK_OUT(c.status == 0, c.out);
    CHECK_OUT(s.status == 0, s.out);
    CHECK_OUT(c.out.find("Final:") != std::string::npos, c.out);
    return c.out;
}

bool ready(const EmuNode& node) {
    if (!tbv::test::have_program("ucx_perftest")) {
        tbv::test::mark_skipped("ucx_perftest not installed (scripts/deps provider)");
        return false;
    }
    if (!node.ok()) {
        tbv::test::mark_skipped("no /dev/infiniband/tbv-emu and not root to make it");
        return false;
    }
    return true;
}

}  // namespace

TEST_CASE("UCX sees tbv0 once its node exists: ucx_info lists rc_verbs and ud_verbs",
          "[provider][ucx]") {
    const EmuNode node;
    if (!ready(node)) {
        return;
    }
    // One process, one end of the cable: the port stays down, and UCX then lists no transport.
    // ucx_info needs a peer, which ucx_perftest below has; here only the memory domain.
    const tbv::test::CableFile cable(tbv::test::unique_name("pt-ucxi-"));
    ProcResult r = Proc({"ucx_info", "-d"}, {"LD_PRELOAD=" + tbv::test::preload_path(),
                                             "TBV_EMU=" + cable.name(), "TBV_LINK_WAIT_MS=0"})
                       .finish(std::chrono::seconds(30));
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(r.out.find("Memory domain: tbv0") != std::string::npos, r.out);
}

TEST_CASE("UCX UCT rc_verbs over an emulated cable: put_lat, am_lat, put_bw", "[provider][ucx]") {
    const EmuNode node;
    if (!ready(node)) {
        return;
    }
    ucx_pair({"-d", "tbv0:1", "-x", "rc_verbs", "-t", "put_lat", "-n", "1000"});
    ucx_pair({"-d", "tbv0:1", "-x", "rc_verbs", "-t", "am_lat", "-n", "1000"});
    ucx_pair({"-d", "tbv0:1", "-x", "rc_verbs", "-t", "put_bw", "-D", "zcopy", "-s", "65536", "-n",
              "1000"});
}
