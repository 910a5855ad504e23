// SPDX-License-Identifier: Apache-2.0
// Unmodified ibverbs-utils programs with the interposer preloaded (what `tbv run` does): the
// device list, the device attributes, and ibv_rc_pingpong as two processes, each an emulated host
// on its end of one shared-memory cable, exchanging addresses over loopback TCP.
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "../vfio/fake_sysfs.hpp"
#include "catch.hpp"
#include "check_out.hpp"
#include "process.hpp"
#include "skip.hpp"

using tbv::test::Proc;
using tbv::test::ProcResult;

namespace {

constexpr auto kShort = std::chrono::seconds(20);
constexpr auto kPair = std::chrono::seconds(60);

bool contains(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

/// The environment of a program under the provider on cable `cable`.
std::vector<std::string> env_for(const std::string& cable) {
    return {"LD_PRELOAD=" + tbv::test::preload_path(), "TBV_EMU=" + cable,
            // The first of two processes starts before its peer: let query_port wait for the
            // link as `tbv run` does.
            "TBV_LINK_WAIT_MS=30000"};
}

}  // namespace

TEST_CASE("ibv_devices lists tbv0 through the interposer", "[provider][utils]") {
    if (!tbv::test::have_program("ibv_devices")) {
        TBV_SKIP("ibv_devices not installed (scripts/deps provider)");
    }
    REQUIRE_FALSE(tbv::test::preload_path().empty());
    Proc p({"ibv_devices"}, env_for(tbv::test::unique_name("pt-devices-")));
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(contains(r.out, "tbv0"), r.out);
    // The node GUID comes from the interposed ibv_get_device_guid (libibverbs' reads sysfs).
    CHECK_OUT(!contains(r.out, "0000000000000000"), r.out);
}

TEST_CASE("without TBV_EMU or a VFIO-bound NHI: an empty device list, and no error",
          "[provider][utils]") {
    if (!tbv::test::have_program("ibv_devices")) {
        TBV_SKIP("ibv_devices not installed (scripts/deps provider)");
    }
    const tbv::test::FakeSysfs no_pci;  // this machine's own NHIs must not change the answer
    Proc plain({"env", "-u", "TBV_EMU", "-u", "LD_PRELOAD", "ibv_devices"}, {});
    const ProcResult a = plain.finish(kShort);
    Proc pre({"env", "-u", "TBV_EMU", "ibv_devices"}, {"LD_PRELOAD=" + tbv::test::preload_path()});
    const ProcResult b = pre.finish(kShort);
    if (a.status == 0) {
        // A kernel RDMA stack: exactly its answer, nothing of ours added.
        CHECK_OUT(a.out == b.out, a.out + "\n--- preloaded ---\n" + b.out);
    } else {
        // None (libibverbs: NULL + ENOSYS, "Failed to get IB devices list"): with the provider
        // loaded, devices need no kernel stack, so no device is an empty list, not an error.
        CHECK_OUT(b.status == 0, b.out);
        CHECK_OUT(contains(b.out, "node GUID"), b.out);
        CHECK_OUT(!contains(b.out, "Failed"), b.out);
        CHECK_OUT(!contains(b.out, "tbverbs"), b.out);
    }
    CHECK_OUT(!contains(b.out, "tbv0"), b.out);
}

TEST_CASE("VFIO-bound USB4 NHIs follow the emulated tbv0, by PCI address (fake sysfs)",
          "[provider][utils]") {
    if (!tbv::test::have_program("ibv_devices") || !tbv::test::have_program("ibv_devinfo")) {
        TBV_SKIP("ibverbs-utils not installed (scripts/deps provider)");
    }
    tbv::test::FakeSysfs fake;  // TBV_SYSFS_ROOT for the programs started below
    // IOMMU groups that no real /dev/vfio is likely to have: opening fails without touching one.
    fake.add("0000:c4:00.6", 0x1022, 0x1669, 0x0c0340, "vfio-pci", 4243);
    fake.add("0000:00:0d.2", 0x8086, 0xa73e, 0x0c0340, "vfio-pci", 4242);
    fake.add("0000:00:0d.3", 0x8086, 0xa76d, 0x0c0340, "thunderbolt", 4242);  // not ours
    fake.add("0000:01:00.0", 0x10de, 0x2204, 0x030000, "vfio-pci", 4241);     // not an NHI
    const tbv::test::CableFile cable(tbv::test::unique_name("pt-vfio-"));
    Proc p({"ibv_devices"}, env_for(cable.name()));
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    const auto t0 = r.out.find("tbv0");
    const auto t1 = r.out.find("tbv1");
    const auto t2 = r.out.find("tbv2");
    CHECK_OUT(t0 != std::string::npos && t1 != std::string::npos && t2 != std::string::npos &&
                  t0 < t1 && t1 < t2,
              r.out);
    CHECK_OUT(!contains(r.out, "tbv3"), r.out);
    CHECK_OUT(!contains(r.out, "0000000000000000"), r.out);
    // TBV_VFIO=0: the emulated host only.
    auto env = env_for(cable.name());
    env.push_back("TBV_VFIO=0");
    Proc q({"ibv_devices"}, env);
    const ProcResult rq = q.finish(kShort);
    CHECK_OUT(rq.status == 0, rq.out);
    CHECK_OUT(contains(rq.out, "tbv0") && !contains(rq.out, "tbv1"), rq.out);
    // Without TBV_EMU, tbv0 is the lowest PCI address. Opening it goes to VFIO, which has no
    // such group here: a clean failure that names the function.
    Proc o({"env", "-u", "TBV_EMU", "ibv_devinfo", "-d", "tbv0"},
           {"LD_PRELOAD=" + tbv::test::preload_path()});
    const ProcResult ro = o.finish(kShort);
    CHECK_OUT(ro.status != 0, ro.out);
    CHECK_OUT(contains(ro.out, "tbverbs: tbv0 (0000:00:0d.2)"), ro.out);
}

TEST_CASE("ibv_devinfo -v shows tbv0 with IB attributes and its GID", "[provider][utils]") {
    if (!tbv::test::have_program("ibv_devinfo")) {
        TBV_SKIP("ibv_devinfo not installed (scripts/deps provider)");
    }
    const tbv::test::CableFile cable(tbv::test::unique_name("pt-devinfo-"));
    auto env = env_for(cable.name());
    env.back() = "TBV_LINK_WAIT_MS=0";  // no peer: report the port as it is, at once
    Proc p({"ibv_devinfo", "-v"}, env);
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(contains(r.out, "hca_id:\ttbv0"), r.out);
    CHECK_OUT(contains(r.out, "transport:\t\t\tInfiniBand (0)"), r.out);
    CHECK_OUT(contains(r.out, "vendor_id:\t\t\t0x8086"), r.out);
    CHECK_OUT(contains(r.out, "link_layer:\t\tInfiniBand"), r.out);
    CHECK_OUT(contains(r.out, "active_mtu:\t\t2048 (4)"), r.out);
    CHECK_OUT(contains(r.out, "state:\t\t\tPORT_DOWN (1)"), r.out);  // nobody on the cable
    CHECK_OUT(contains(r.out, "GID[  0]:\t\tfe80:0000:0000:0000:"), r.out);
    CHECK_OUT(!contains(r.out, "port_lid:\t\t0\n"), r.out);
}

namespace {

/// `prog args...` as server, then as client of 127.0.0.1, on a fresh cable: both must finish
/// their 1000 iterations.
std::string pingpong(const std::string& prog, const std::vector<std::string>& args,
                     const std::vector<std::string>& srv_env = {},
                     const std::vector<std::string>& cli_env = {}) {
    if (!tbv::test::have_program(prog)) {
        tbv::test::mark_skipped("ibverbs-utils not installed (scripts/deps provider)");
        return {};
    }
    const tbv::test::CableFile cable_file(tbv::test::unique_name("pt-pp-"));
    const std::string& cable = cable_file.name();
    const std::string port = std::to_string(tbv::test::free_tcp_port());
    std::vector<std::string> srv = {prog, "-d", "tbv0", "-p", port};
    srv.insert(srv.end(), args.begin(), args.end());
    std::vector<std::string> cli = srv;
    cli.push_back("127.0.0.1");
    auto se = env_for(cable);
    se.insert(se.end(), srv_env.begin(), srv_env.end());
    auto ce = env_for(cable);
    ce.insert(ce.end(), cli_env.begin(), cli_env.end());
    Proc server(srv, se);
    // The client connects over TCP as soon as its port is up: the server goes first, by more than
    // the 2 s within which the provider counts a process as the second of a pair.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    Proc client(cli, ce);
    const ProcResult c = client.finish(kPair);
    const ProcResult s = server.finish(kPair);
    CHECK_OUT(c.status == 0, c.out);
    CHECK_OUT(s.status == 0, s.out);
    CHECK_OUT(contains(c.out, "1000 iters in"), c.out);
    CHECK_OUT(contains(s.out, "1000 iters in"), s.out);
    return c.out;
}

}  // namespace

TEST_CASE("ibv_rc_pingpong: server and client over an emulated cable", "[provider][utils]") {
    pingpong("ibv_rc_pingpong", {});
}

TEST_CASE("ibv_rc_pingpong -e: completion channel events", "[provider][utils]") {
    pingpong("ibv_rc_pingpong", {"-e"});
}

TEST_CASE("ibv_uc_pingpong", "[provider][utils]") {
    pingpong("ibv_uc_pingpong", {});
}

TEST_CASE("ibv_srq_pingpong", "[provider][utils]") {
    pingpong("ibv_srq_pingpong", {});
}

TEST_CASE("ibv_ud_pingpong", "[provider][utils]") {
    pingpong("ibv_ud_pingpong", {});
}

// ---- the RoCE-style GID mode (TBV_GID_ADDR, rdma_provider/gid.hpp) --------------------------

TEST_CASE("ibv_devinfo -v in the RoCE-style mode: Ethernet link layer, IPv4-mapped GID",
          "[provider][utils][roce]") {
    if (!tbv::test::have_program("ibv_devinfo")) {
        TBV_SKIP("ibv_devinfo not installed (scripts/deps provider)");
    }
    const tbv::test::CableFile cable(tbv::test::unique_name("pt-roce-info-"));
    auto env = env_for(cable.name());
    env.back() = "TBV_LINK_WAIT_MS=0";
    env.push_back("TBV_GID_ADDR=10.0.0.7");
    Proc p({"ibv_devinfo", "-v"}, env);
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(contains(r.out, "link_layer:\t\tEthernet"), r.out);
    CHECK_OUT(contains(r.out, "port_lid:\t\t0\n"), r.out);
    CHECK_OUT(contains(r.out, "GID[  0]:\t\t::ffff:10.0.0.7, RoCE v2"), r.out);
    // A malformed address is said once and ignored (IB mode).
    env.back() = "TBV_GID_ADDR=10.0.0";
    Proc q({"ibv_devinfo", "-v"}, env);
    const ProcResult rq = q.finish(kShort);
    CHECK_OUT(rq.status == 0, rq.out);
    CHECK_OUT(contains(rq.out, "TBV_GID_ADDR='10.0.0' ignored"), rq.out);
    CHECK_OUT(contains(rq.out, "link_layer:\t\tInfiniBand"), rq.out);
}

TEST_CASE("ibv_rc_pingpong -g 0 in the RoCE-style mode: peers found by their GIDs",
          "[provider][utils][roce]") {
    const std::string out = pingpong("ibv_rc_pingpong", {"-g", "0"}, {"TBV_GID_ADDR=10.0.0.1"},
                                     {"TBV_GID_ADDR=10.0.0.2"});
    if (!out.empty()) {
        CHECK_OUT(contains(out, "local address:  LID 0x0000"), out);
        CHECK_OUT(contains(out, "GID ::ffff:10.0.0.2"), out);
        CHECK_OUT(contains(out, "GID ::ffff:10.0.0.1"), out);
    }
}

TEST_CASE("ibv_ud_pingpong -g 0 in the RoCE-style mode", "[provider][utils][roce]") {
    pingpong("ibv_ud_pingpong", {"-g", "0"}, {"TBV_GID_ADDR=10.0.0.1"}, {"TBV_GID_ADDR=10.0.0.2"});
}

TEST_CASE("ibv_rc_pingpong -g 0 in IB mode: a GRH with the peer's LID", "[provider][utils]") {
    pingpong("ibv_rc_pingpong", {"-g", "0"});
}

TEST_CASE("tbv run -- ibv_devices: the provider preloaded by the tbv command",
          "[provider][utils]") {
    const char* tbv = std::getenv("TBV_BIN");
    if (tbv == nullptr || !tbv::test::have_program("ibv_devices")) {
        TBV_SKIP("TBV_BIN unset or ibv_devices not installed");
    }
    const tbv::test::CableFile cable_file(tbv::test::unique_name("pt-run-"));
    const std::string& cable = cable_file.name();
    // No LD_PRELOAD of ours in its environment: tbv run sets it.
    Proc p({"env", "-u", "LD_PRELOAD", "-u", "TBV_EMU", tbv, "run", "--emu", cable, "--",
            "ibv_devices"},
           {});
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(contains(r.out, "tbv0"), r.out);
    Proc missing({tbv, "run", "--", "tbv-no-such-program"}, {});
    const ProcResult m = missing.finish(kShort);
    CHECK_OUT(m.status == 127, m.out);
}

TEST_CASE("a libibverbs with another private ABI is refused, not loaded into", "[.refusal]") {
    const char* probe = std::getenv("TBV_REFUSAL_PROBE");
    const char* stub_dir = std::getenv("TBV_STUB57_DIR");
    REQUIRE(probe != nullptr);
    REQUIRE(stub_dir != nullptr);
    // The stand-in libibverbs.so.1 (IBVERBS_PRIVATE_57 only) comes first in the library path.
    Proc p({probe}, {std::string("LD_LIBRARY_PATH=") + stub_dir, "TBV_EMU=pt-refused"});
    const ProcResult r = p.finish(kShort);
    CHECK_OUT(r.status == 0, r.out);
    CHECK_OUT(contains(r.out, "refused errno=" + std::to_string(EPROTONOSUPPORT)), r.out);
    CHECK_OUT(contains(r.out, "private provider ABI IBVERBS_PRIVATE_57"), r.out);
    CHECK_OUT(contains(r.out, "built for IBVERBS_PRIVATE_34"), r.out);
    // TBV_QUIET silences the message, not the refusal.
    Proc q({probe},
           {std::string("LD_LIBRARY_PATH=") + stub_dir, "TBV_EMU=pt-refused", "TBV_QUIET=1"});
    const ProcResult rq = q.finish(kShort);
    CHECK_OUT(contains(rq.out, "refused errno="), rq.out);
    CHECK_OUT(!contains(rq.out, "IBVERBS_PRIVATE_57"), rq.out);
}
