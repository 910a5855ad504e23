// SPDX-License-Identifier: Apache-2.0
// `tbv status` (the real program, TBV_BIN) reading the counters that two verbs Contexts in this
// process publish (src/verbs/stats_shm): after data moved over an in-process cable, every port's
// and QP's counters it reports equal Context::snapshot; files of dead processes are skipped and
// cleaned up, unreadable ones reported; a closed Context leaves no file behind.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "verbs/stats_shm.hpp"
#include "verbs_fixture.hpp"

using namespace tbv;
using namespace tbv::test;
using namespace tbv::verbs;
namespace fs = std::filesystem;

namespace {

// Catch2's TAP reporter breaks on multi-line INFO text: show the program's output only on failure.
#define REQUIRE_RUN(cond, out)                                \
    do {                                                      \
        if (cond) {                                           \
            SUCCEED(#cond);                                   \
        } else {                                              \
            FAIL(#cond << "\n--- tbv output ---\n" << (out)); \
        }                                                     \
    } while (0)

struct Run {
    int status = -1;
    std::string out;
};

Run run_tbv(const std::string& stats_dir, const std::string& args) {
    const char* bin = std::getenv("TBV_BIN");
    REQUIRE(bin != nullptr);
    const std::string cmd =
        "env -u TBV_EMU TBV_STATS_DIR='" + stats_dir + "' '" + bin + "' " + args;
    Run r;
    FILE* f = ::popen(cmd.c_str(), "r");
    REQUIRE(f != nullptr);
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        r.out.append(buf, n);
    }
    const int st = ::pclose(f);
    r.status = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

struct TempDir {
    TempDir() {
        char tmpl[] = "/tmp/tbv-status-counters-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string path;
};

/// Waits until the Context's file holds a snapshot taken after this call (two more updates).
void wait_published(const std::string& path) {
    auto f0 = read_stats(path);
    INFO(path << ": " << f0.error().message());
    REQUIRE(f0);
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < end) {
        auto f = read_stats(path);
        REQUIRE(f);
        if (f->updates >= f0->updates + 2) {
            return;
        }
        std::this_thread::sleep_for(20ms);
    }
    FAIL("no new snapshot in 10 s");
}

void post_one(Node& n, Qp& q, WrOpcode op, Mr& mr, std::vector<std::byte>& buf, std::uint64_t raddr,
              std::uint32_t rkey) {
    Sge g{reinterpret_cast<std::uint64_t>(buf.data()), static_cast<std::uint32_t>(buf.size()),
          mr.lkey()};
    SendWr wr;
    wr.wr_id = 1;
    wr.sg_list = &g;
    wr.num_sge = 1;
    wr.opcode = op;
    wr.send_flags = kSendSignaled;
    wr.remote_addr = raddr;
    wr.rkey = rkey;
    REQUIRE(n.ctx->post_send(q, wr));
}

const nlohmann::json* find_by(const nlohmann::json& arr, const char* key, std::uint64_t v) {
    for (const auto& e : arr) {
        if (e.at(key).get<std::uint64_t>() == v) {
            return &e;
        }
    }
    return nullptr;
}

/// What tbv printed for one process equals the Context's own snapshot, counter by counter.
void check_process(const nlohmann::json& p, Context& c) {
    std::vector<PortStats> ports;
    std::vector<QpStats> qps;
    c.snapshot(ports, qps);
    CHECK(p.at("lid") == c.lid());
    CHECK(p.at("stale") == false);
    REQUIRE(p.at("ports").size() == ports.size());
    REQUIRE(p.at("qps").size() == qps.size());
    std::uint64_t rail_frames = 0;
    for (const auto& s : ports) {
        INFO("port " << s.id);
        const auto* j = find_by(p.at("ports"), "id", s.id);
        REQUIRE(j != nullptr);
        CHECK(j->at("adapter") == s.adapter);
        CHECK(j->at("peer_lid") == s.peer_lid);
        CHECK(j->at("data_credits") == s.data_credits);
        CHECK(j->at("tx_frames") == s.counters.tx_frames);
        CHECK(j->at("tx_bytes") == s.counters.tx_bytes);
        CHECK(j->at("rx_frames") == s.counters.rx_frames);
        CHECK(j->at("rx_bytes") == s.counters.rx_bytes);
        CHECK(j->at("credit_stalls") == s.counters.credit_stalls);
        CHECK(j->at("credit_frames") == s.counters.credit_frames);
        CHECK(j->at("doorbells") == s.counters.doorbells);
        const auto& drops = j->at("drops");
        REQUIRE(drops.size() == s.counters.drops.size());
        for (std::size_t i = 0; i < s.counters.drops.size(); ++i) {
            const char* reason = transport::to_string(static_cast<transport::DropReason>(i));
            CHECK(drops.at(reason) == s.counters.drops[i]);
        }
        if (s.adapter != 0) {
            rail_frames += s.counters.tx_frames + s.counters.rx_frames;
        }
    }
    CHECK(rail_frames > 0);  // the data went over the rails, not loopback
    for (const auto& s : qps) {
        INFO("QP " << s.qpn);
        const auto* j = find_by(p.at("qps"), "qpn", s.qpn);
        REQUIRE(j != nullptr);
        CHECK(j->at("dlid") == s.dlid);
        CHECK(j->at("dest_qpn") == s.dest_qpn);
        const auto& k = s.counters;
        CHECK(j->at("tx_frames") == k.tx_frames);
        CHECK(j->at("tx_bytes") == k.tx_bytes);
        CHECK(j->at("rx_frames") == k.rx_frames);
        CHECK(j->at("rx_bytes") == k.rx_bytes);
        CHECK(j->at("no_route") == k.no_route);
        CHECK(j->at("remote_access_faults") == k.remote_access_faults);
        CHECK(j->at("wrong_peer") == k.wrong_peer);
        CHECK(j->at("dropped") == k.dropped);
        CHECK(j->at("replays") == k.replays);
        CHECK(j->at("uc_dropped_messages") == k.uc_dropped_messages);
        CHECK(j->at("qkey_drops") == k.qkey_drops);
        const auto& js = j->at("sender");
        CHECK(js.at("frames_sent") == s.sender.frames_sent);
        CHECK(js.at("retransmits") == s.sender.retransmits);
        CHECK(js.at("timeouts") == s.sender.timeouts);
        CHECK(js.at("naks") == s.sender.naks);
        CHECK(js.at("rnr_naks") == s.sender.rnr_naks);
        CHECK(js.at("rtt_samples") == s.sender.rtt_samples);
        CHECK(js.at("bogus_acks") == s.sender.bogus_acks);
        const auto& jr = j->at("receiver");
        CHECK(jr.at("accepted") == s.receiver.accepted);
        CHECK(jr.at("out_of_order") == s.receiver.out_of_order);
        CHECK(jr.at("duplicates") == s.receiver.duplicates);
        CHECK(jr.at("dropped") == s.receiver.dropped);
        CHECK(jr.at("naks") == s.receiver.naks);
        CHECK(jr.at("rnr_naks") == s.receiver.rnr_naks);
        CHECK(jr.at("acks") == s.receiver.acks);
    }
}

}  // namespace

TEST_CASE("tbv status shows the port and QP counters of running verbs contexts",
          "[emu][verbs][tbv]") {
    TempDir dir;
    ::setenv("TBV_STATS_DIR", dir.path.c_str(), 1);  // before any Context (and thread) exists
    const auto pid = static_cast<std::uint32_t>(::getpid());

    // A dead process's abandoned file (never published: stale) and an unreadable one of ours.
    const pid_t child = ::fork();
    if (child == 0) {
        ::_exit(0);
    }
    REQUIRE(child > 0);
    REQUIRE(::waitpid(child, nullptr, 0) == child);
    StatsIdentity dead;
    dead.pid = static_cast<std::uint32_t>(child);
    dead.lid = 7;
    auto dead_pub = StatsPublisher::create(dead, dir.path);
    REQUIRE(dead_pub);
    const std::string dead_path = (*dead_pub)->path();
    const std::string dead_copy = dir.path + "/copy";
    fs::copy_file(dead_path, dead_copy);
    dead_pub->reset();  // removes its file: put the copy back, as a crash would leave it
    fs::rename(dead_copy, dead_path);
    const std::string junk_path = dir.path + "/" + stats_file_name(pid, 3);
    std::ofstream(junk_path) << "not a stats file";

    {
        VerbsPair p;
        Qp* qa = p.a.qp();
        Qp* qb = p.b.qp();
        Qp* idle = p.a.qp();  // never connected: RESET, no traffic
        connect(p.a, *qa, p.b, *qb);
        REQUIRE(p.a.ctx->lid() != 3);
        REQUIRE(p.b.ctx->lid() != 3);

        // A 1 MiB WRITE a → b and a 64 KiB SEND b → a.
        auto src = pattern(1 << 20, 1);
        std::vector<std::byte> dst(src.size());
        Mr* smr = take(p.a.ctx->reg_mr(*p.a.pd, src.data(), src.size(), kAccessLocalWrite));
        Mr* dmr = take(p.b.ctx->reg_mr(*p.b.pd, dst.data(), dst.size(),
                                       kAccessLocalWrite | kAccessRemoteWrite));
        post_one(p.a, *qa, WrOpcode::rdma_write, *smr, src,
                 reinterpret_cast<std::uint64_t>(dst.data()), dmr->rkey());
        REQUIRE(wait_wc(p.a, *p.a.cq, 1, {&p.b}).size() == 1);
        auto msg = pattern(64 << 10, 2);
        std::vector<std::byte> got(msg.size());
        Mr* mmr = take(p.b.ctx->reg_mr(*p.b.pd, msg.data(), msg.size(), kAccessLocalWrite));
        Mr* gmr = take(p.a.ctx->reg_mr(*p.a.pd, got.data(), got.size(), kAccessLocalWrite));
        Sge rg{reinterpret_cast<std::uint64_t>(got.data()), static_cast<std::uint32_t>(got.size()),
               gmr->lkey()};
        RecvWr rw;
        rw.wr_id = 2;
        rw.sg_list = &rg;
        rw.num_sge = 1;
        REQUIRE(p.a.ctx->post_recv(*qa, rw));
        post_one(p.b, *qb, WrOpcode::send, *mmr, msg, 0, 0);
        REQUIRE(wait_wc(p.b, *p.b.cq, 1, {&p.a}).size() == 1);
        REQUIRE(wait_wc(p.a, *p.a.cq, 1, {&p.b}).size() == 1);
        REQUIRE(same_bytes(src, dst));
        REQUIRE(same_bytes(msg, got));
        // Let the last ACKs and credit updates settle, then stop driving progress: from here
        // the counters stand still, and the files catch up with them.
        const auto settle = std::chrono::steady_clock::now() + 50ms;
        while (std::chrono::steady_clock::now() < settle) {
            p.a.ctx->progress();
            p.b.ctx->progress();
            std::this_thread::sleep_for(1ms);
        }
        const std::string path_a = dir.path + "/" + stats_file_name(pid, p.a.ctx->lid());
        const std::string path_b = dir.path + "/" + stats_file_name(pid, p.b.ctx->lid());
        wait_published(path_a);
        wait_published(path_b);

        const Run r = run_tbv(dir.path, "status --json");
        REQUIRE_RUN(r.status == 0, r.out);
        const auto j = nlohmann::json::parse(r.out, nullptr, false);
        REQUIRE_RUN(!j.is_discarded() && j.contains("processes"), r.out);
        const auto& procs = j.at("processes");
        // Ours: a, b and the unreadable one; the dead process's file is gone.
        REQUIRE_RUN(procs.size() == 3, r.out);
        CHECK_FALSE(fs::exists(dead_path));
        for (const auto& e : procs) {
            CHECK(e.at("pid") == pid);
        }
        const auto* ja = find_by(procs, "lid", p.a.ctx->lid());
        const auto* jb = find_by(procs, "lid", p.b.ctx->lid());
        const auto* junk = find_by(procs, "lid", 3);
        REQUIRE(ja != nullptr);
        REQUIRE(jb != nullptr);
        REQUIRE(junk != nullptr);
        CHECK(junk->contains("error"));
        CHECK(ja->at("device") == p.ha.nhi().name());
        CHECK(ja->at("file") == path_a);
        {
            INFO("host a");
            check_process(*ja, *p.a.ctx);
        }
        {
            INFO("host b");
            check_process(*jb, *p.b.ctx);
        }
        // The numbers say what happened: a wrote 1 MiB and received 64 KiB on its QP.
        const auto* qj = find_by(ja->at("qps"), "qpn", qa->qpn());
        REQUIRE(qj != nullptr);
        CHECK(qj->at("type") == "RC");
        CHECK(qj->at("state") == "RTS");
        CHECK(qj->at("dest_qpn") == qb->qpn());
        CHECK(qj->at("tx_bytes").get<std::uint64_t>() >= src.size());
        CHECK(qj->at("rx_bytes").get<std::uint64_t>() >= msg.size());
        CHECK(qj->at("tx_frames").get<std::uint64_t>() >= src.size() / 4096);
        const auto* ij = find_by(ja->at("qps"), "qpn", idle->qpn());
        REQUIRE(ij != nullptr);
        CHECK(ij->at("state") == "RESET");
        CHECK(ij->at("tx_frames") == 0);

        // The text form: one table per process, the QPs by number.
        const Run t = run_tbv(dir.path, "status");
        REQUIRE_RUN(t.status == 0, t.out);
        char qpn[16];
        std::snprintf(qpn, sizeof qpn, "0x%06x", qa->qpn());
        REQUIRE_RUN(t.out.find("process " + std::to_string(pid) + " ") != std::string::npos, t.out);
        REQUIRE_RUN(t.out.find(qpn) != std::string::npos, t.out);
        REQUIRE_RUN(t.out.find("RESET") != std::string::npos, t.out);
        REQUIRE_RUN(t.out.find("cannot read") != std::string::npos, t.out);
    }
    // Closed contexts leave only the junk behind.
    fs::remove(junk_path);
    CHECK(fs::is_empty(dir.path));
    const Run r = run_tbv(dir.path, "status --json 2>/dev/null");  // not "nothing to show"
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE_RUN(!j.is_discarded() && j.at("processes").empty(), r.out);
    ::unsetenv("TBV_STATS_DIR");
}
