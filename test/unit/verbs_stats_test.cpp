// SPDX-License-Identifier: Apache-2.0
// verbs stats files (src/verbs/stats_shm): the fixed layout round trip (every counter lands in its
// own field), capacities, file names, the publisher's file handling (stale file replaced, planted
// symlink not followed, removed on close but not by a forked child), and the reader refusing
// whatever is not a consistent version-1 file: short, wrong magic/version/sizes, counts beyond
// capacity, a seqlock held odd.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "verbs/stats_shm.hpp"

using namespace tbv;
using namespace tbv::verbs;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    TempDir() {
        char tmpl[] = "/tmp/tbv-stats-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string path;
};

StatsIdentity identity(std::uint16_t lid = 0x1234) {
    StatsIdentity id;
    id.pid = static_cast<std::uint32_t>(::getpid());
    id.lid = lid;
    id.uuid = {0x11111111, 0x22222222, 0x33333333, 0x44444444};
    id.process = "unit-test";
    id.device = "emu-host-a.0";
    return id;
}

/// Every counter a different value, derived from `base`, so a field written into the wrong slot
/// shows.
PortStats make_port(std::uint32_t i, std::uint64_t base) {
    PortStats p;
    p.id = i;
    p.adapter = i == 0 ? 0 : 2;
    p.peer_lid = static_cast<std::uint16_t>(0x100 + i);
    p.data_credits = 200 + i;
    auto& c = p.counters;
    std::uint64_t v = base;
    for (std::uint64_t* f : {&c.tx_frames, &c.tx_bytes, &c.rx_frames, &c.rx_bytes, &c.credit_stalls,
                             &c.credit_frames, &c.doorbells, &c.credit_probes}) {
        *f = ++v;
    }
    for (auto& d : c.drops) {
        d = ++v;
    }
    return p;
}

QpStats make_qp(std::uint32_t i, std::uint64_t base) {
    QpStats q;
    q.qpn = 0x100 + i;
    q.type = i % 3 == 0 ? QpType::rc : (i % 3 == 1 ? QpType::uc : QpType::ud);
    q.state = QpState::rts;
    q.dlid = static_cast<std::uint16_t>(0x2000 + i);
    q.dest_qpn = 0x300 + i;
    std::uint64_t v = base;
    auto& c = q.counters;
    for (std::uint64_t* f : {&c.tx_frames,
                             &c.rx_frames,
                             &c.tx_bytes,
                             &c.rx_bytes,
                             &c.no_route,
                             &c.remote_access_faults,
                             &c.wrong_peer,
                             &c.dropped,
                             &c.replays,
                             &c.uc_dropped_messages,
                             &c.qkey_drops,
                             &q.sender.frames_sent,
                             &q.sender.retransmits,
                             &q.sender.timeouts,
                             &q.sender.naks,
                             &q.sender.rnr_naks,
                             &q.sender.rtt_samples,
                             &q.sender.bogus_acks,
                             &q.receiver.accepted,
                             &q.receiver.out_of_order,
                             &q.receiver.duplicates,
                             &q.receiver.dropped,
                             &q.receiver.naks,
                             &q.receiver.rnr_naks,
                             &q.receiver.acks}) {
        *f = ++v;
    }
    return q;
}

void check_port(const PortRecord& r, const PortStats& p) {
    CHECK(r.id == p.id);
    CHECK(r.adapter == p.adapter);
    CHECK(r.peer_lid == p.peer_lid);
    CHECK(r.data_credits == p.data_credits);
    CHECK(r.tx_frames == p.counters.tx_frames);
    CHECK(r.tx_bytes == p.counters.tx_bytes);
    CHECK(r.rx_frames == p.counters.rx_frames);
    CHECK(r.rx_bytes == p.counters.rx_bytes);
    CHECK(r.credit_stalls == p.counters.credit_stalls);
    CHECK(r.credit_frames == p.counters.credit_frames);
    CHECK(r.doorbells == p.counters.doorbells);
    CHECK(r.credit_probes == p.counters.credit_probes);
    for (std::size_t i = 0; i < p.counters.drops.size(); ++i) {
        CHECK(r.drops[i] == p.counters.drops[i]);
    }
    for (std::size_t i = p.counters.drops.size(); i < kStatsMaxDropReasons; ++i) {
        CHECK(r.drops[i] == 0);
    }
}

void check_qp(const QpRecord& r, const QpStats& q) {
    CHECK(r.qpn == q.qpn);
    CHECK(r.type == static_cast<std::uint8_t>(q.type));
    CHECK(r.state == static_cast<std::uint8_t>(q.state));
    CHECK(r.dlid == q.dlid);
    CHECK(r.dest_qpn == q.dest_qpn);
    CHECK(r.tx_frames == q.counters.tx_frames);
    CHECK(r.rx_frames == q.counters.rx_frames);
    CHECK(r.tx_bytes == q.counters.tx_bytes);
    CHECK(r.rx_bytes == q.counters.rx_bytes);
    CHECK(r.no_route == q.counters.no_route);
    CHECK(r.remote_access_faults == q.counters.remote_access_faults);
    CHECK(r.wrong_peer == q.counters.wrong_peer);
    CHECK(r.dropped == q.counters.dropped);
    CHECK(r.replays == q.counters.replays);
    CHECK(r.uc_dropped_messages == q.counters.uc_dropped_messages);
    CHECK(r.qkey_drops == q.counters.qkey_drops);
    CHECK(r.snd_frames_sent == q.sender.frames_sent);
    CHECK(r.snd_retransmits == q.sender.retransmits);
    CHECK(r.snd_timeouts == q.sender.timeouts);
    CHECK(r.snd_naks == q.sender.naks);
    CHECK(r.snd_rnr_naks == q.sender.rnr_naks);
    CHECK(r.snd_rtt_samples == q.sender.rtt_samples);
    CHECK(r.snd_bogus_acks == q.sender.bogus_acks);
    CHECK(r.rcv_accepted == q.receiver.accepted);
    CHECK(r.rcv_out_of_order == q.receiver.out_of_order);
    CHECK(r.rcv_duplicates == q.receiver.duplicates);
    CHECK(r.rcv_dropped == q.receiver.dropped);
    CHECK(r.rcv_naks == q.receiver.naks);
    CHECK(r.rcv_rnr_naks == q.receiver.rnr_naks);
    CHECK(r.rcv_acks == q.receiver.acks);
}

std::vector<std::byte> slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    std::memcpy(b.data(), c.data(), c.size());
    return b;
}

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
}

StatsHeader& header_of(std::vector<std::byte>& bytes) {
    return *reinterpret_cast<StatsHeader*>(bytes.data());
}

}  // namespace

TEST_CASE("stats file: every port and QP counter round-trips through its own field",
          "[verbs][stats]") {
    TempDir dir;
    auto p = StatsPublisher::create(identity(), dir.path);
    REQUIRE(p);
    const std::string path = (*p)->path();
    CHECK(path == dir.path + "/tbverbs-stats-" + std::to_string(::getpid()) + "-4660");
    CHECK(fs::file_size(path) == stats_file_size(kStatsMaxPorts, kStatsMaxQps));

    // Freshly created: a valid, empty snapshot.
    auto empty = read_stats(path);
    REQUIRE(empty);
    CHECK(empty->updates == 0);
    CHECK(empty->ports.empty());
    CHECK(empty->qps.empty());

    std::vector<PortStats> ports;
    std::vector<QpStats> qps;
    for (std::uint32_t i = 0; i < 3; ++i) {
        ports.push_back(make_port(i, 1000 * (i + 1)));
    }
    for (std::uint32_t i = 0; i < 5; ++i) {
        qps.push_back(make_qp(i, 100000 * (i + 1)));
    }
    (*p)->publish(ports, qps);
    auto f = read_stats(path);
    INFO(f.error().message());
    REQUIRE(f);
    CHECK(f->pid == static_cast<std::uint32_t>(::getpid()));
    CHECK(f->lid == 0x1234);
    CHECK(f->uuid == identity().uuid);
    CHECK(f->process == "unit-test");
    CHECK(f->device == "emu-host-a.0");
    CHECK(f->updates == 1);
    CHECK(f->drop_reasons == static_cast<std::uint32_t>(transport::DropReason::count_));
    CHECK(f->total_ports == 3);
    CHECK(f->total_qps == 5);
    CHECK(f->started_unix_ns > 0);
    CHECK(f->updated_mono_ns <= stats_mono_now_ns());
    REQUIRE(f->ports.size() == 3);
    REQUIRE(f->qps.size() == 5);
    for (std::size_t i = 0; i < ports.size(); ++i) {
        check_port(f->ports[i], ports[i]);
    }
    for (std::size_t i = 0; i < qps.size(); ++i) {
        check_qp(f->qps[i], qps[i]);
    }

    // A second snapshot with fewer QPs replaces the first.
    qps.resize(2);
    qps[1].counters.tx_frames = 424242;
    (*p)->publish(ports, qps);
    f = read_stats(path);
    REQUIRE(f);
    CHECK(f->updates == 2);
    REQUIRE(f->qps.size() == 2);
    check_qp(f->qps[1], qps[1]);

    p->reset();
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("stats file: more ports and QPs than it holds are cut, the totals say so",
          "[verbs][stats]") {
    TempDir dir;
    auto p = StatsPublisher::create(identity(), dir.path, 8);
    REQUIRE(p);
    CHECK(fs::file_size((*p)->path()) == stats_file_size(kStatsMaxPorts, 8));
    std::vector<PortStats> ports;
    std::vector<QpStats> qps;
    for (std::uint32_t i = 0; i < kStatsMaxPorts + 6; ++i) {
        ports.push_back(make_port(i, i));
    }
    for (std::uint32_t i = 0; i < 10; ++i) {
        qps.push_back(make_qp(i, i));
    }
    (*p)->publish(ports, qps);
    auto f = read_stats((*p)->path());
    REQUIRE(f);
    CHECK(f->ports.size() == kStatsMaxPorts);
    CHECK(f->total_ports == kStatsMaxPorts + 6);
    CHECK(f->qps.size() == 8);
    CHECK(f->total_qps == 10);
    check_qp(f->qps[7], qps[7]);
}

TEST_CASE("stats file names: pid and LID, nothing else", "[verbs][stats]") {
    CHECK(stats_file_name(4321, 65535) == "tbverbs-stats-4321-65535");
    auto n = parse_stats_file_name("tbverbs-stats-4321-65535");
    REQUIRE(n);
    CHECK(n->pid == 4321);
    CHECK(n->lid == 65535);
    n = parse_stats_file_name("tbverbs-stats-4294967295-0");
    REQUIRE(n);
    CHECK(n->pid == 4294967295u);
    CHECK(n->lid == 0);
    for (const char* bad :
         {"", "tbverbs-stats-", "tbverbs-stats-1", "tbverbs-stats-1-", "tbverbs-stats--1-2",
          "tbverbs-stats-0-1", "tbverbs-stats-01-1", "tbverbs-stats-1-01", "tbverbs-stats-1-65536",
          "tbverbs-stats-4294967296-1", "tbverbs-stats-1-2-3", "tbverbs-stats-1-2.tmp",
          "tbverbs-stats-x-2", "tbverbs-stats-1-2 ", "tbverbs-stat-1-2", "TBVERBS-stats-1-2",
          "tbverbs-stats-99999999999999999999-1"}) {
        INFO(bad);
        CHECK_FALSE(parse_stats_file_name(bad));
    }
}

TEST_CASE("stats publisher: replaces a stale file, never follows a planted symlink",
          "[verbs][stats]") {
    TempDir dir;
    const std::string path = dir.path + "/" + stats_file_name(identity().pid, 0x1234);
    SECTION("a stale file of a dead process with our pid") {
        write_file(path, std::vector<std::byte>(100, std::byte{0x5a}));
        auto p = StatsPublisher::create(identity(), dir.path);
        REQUIRE(p);
        CHECK(read_stats(path));
    }
    SECTION("a symlink to someone else's file") {
        const std::string victim = dir.path + "/victim";
        write_file(victim, std::vector<std::byte>(10, std::byte{1}));
        fs::create_symlink(victim, path);
        auto p = StatsPublisher::create(identity(), dir.path);
        REQUIRE(p);
        CHECK(fs::file_size(victim) == 10);
        CHECK_FALSE(fs::is_symlink(path));
        CHECK(read_stats(path));
    }
    SECTION("a forked child closing its copy leaves the parent's file") {
        auto p = StatsPublisher::create(identity(), dir.path);
        REQUIRE(p);
        const pid_t child = ::fork();
        if (child == 0) {
            p->reset();
            ::_exit(0);
        }
        REQUIRE(child > 0);
        int st = -1;
        REQUIRE(::waitpid(child, &st, 0) == child);
        CHECK(st == 0);
        CHECK(fs::exists(path));
        p->reset();
        CHECK_FALSE(fs::exists(path));
    }
    SECTION("the file is removed only while it is still ours") {
        auto p = StatsPublisher::create(identity(), dir.path);
        REQUIRE(p);
        fs::remove(path);
        write_file(path, std::vector<std::byte>(10, std::byte{1}));  // someone else's now
        p->reset();
        CHECK(fs::exists(path));
    }
}

TEST_CASE("stats reader: refuses short, foreign, newer and inconsistent files", "[verbs][stats]") {
    TempDir dir;
    auto p = StatsPublisher::create(identity(), dir.path, 16);
    REQUIRE(p);
    std::vector<PortStats> ports{make_port(0, 1), make_port(1, 50)};
    std::vector<QpStats> qps{make_qp(0, 7), make_qp(1, 70), make_qp(2, 700)};
    (*p)->publish(ports, qps);
    const std::vector<std::byte> good = slurp((*p)->path());
    REQUIRE(good.size() == stats_file_size(kStatsMaxPorts, 16));
    const std::string path = dir.path + "/copy";
    const auto malformed = make_error_code(Errc::malformed);

    write_file(path, good);
    REQUIRE(read_stats(path));

    SECTION("short files") {
        for (std::size_t len : {std::size_t{0}, std::size_t{8}, sizeof(StatsHeader) - 1,
                                sizeof(StatsHeader), good.size() - 1}) {
            INFO(len);
            write_file(path, std::vector<std::byte>(good.begin(), good.begin() + len));
            const auto r = read_stats(path);
            REQUIRE_FALSE(r);
            CHECK(r.error() == malformed);
        }
    }
    SECTION("header fields out of range") {
        const auto check_bad = [&](auto mutate, std::error_code want) {
            auto bytes = good;
            mutate(header_of(bytes));
            write_file(path, bytes);
            const auto r = read_stats(path, 3);
            REQUIRE_FALSE(r);
            CHECK(r.error() == want);
        };
        check_bad([](StatsHeader& h) { h.magic ^= 1; }, malformed);
        check_bad([](StatsHeader& h) { h.magic = 0; }, malformed);  // not yet complete
        check_bad([](StatsHeader& h) { h.version = kStatsVersion + 1; },
                  std::make_error_code(std::errc::protocol_not_supported));
        check_bad([](StatsHeader& h) { h.header_size = 512; }, malformed);
        check_bad([](StatsHeader& h) { h.port_record_size += 8; }, malformed);
        check_bad([](StatsHeader& h) { h.qp_record_size -= 8; }, malformed);
        check_bad([](StatsHeader& h) { h.port_capacity = kStatsMaxPorts + 1; }, malformed);
        check_bad([](StatsHeader& h) { h.qp_capacity = 17; }, malformed);  // beyond the file
        check_bad([](StatsHeader& h) { h.qp_capacity = 0xFFFF'FFFF; }, malformed);
        check_bad([](StatsHeader& h) { h.drop_reasons = kStatsMaxDropReasons + 1; }, malformed);
        check_bad([](StatsHeader& h) { h.lid = 0x10000; }, malformed);
        check_bad([](StatsHeader& h) { h.n_ports = kStatsMaxPorts + 1; }, malformed);
        check_bad([](StatsHeader& h) { h.n_qps = 17; }, malformed);
        check_bad([](StatsHeader& h) { h.n_qps = 0xFFFF'FFFF; }, malformed);
        check_bad([](StatsHeader& h) { h.total_qps = 1; }, malformed);  // fewer than n_qps
        // A writer that died inside the seqlock: no consistent snapshot, ever.
        check_bad([](StatsHeader& h) { h.seq |= 1; },
                  std::make_error_code(std::errc::resource_unavailable_try_again));
    }
    SECTION("a smaller capacity in a smaller file is fine") {
        auto bytes = good;
        header_of(bytes).qp_capacity = 3;
        bytes.resize(stats_file_size(kStatsMaxPorts, 3));
        write_file(path, bytes);
        const auto r = read_stats(path);
        REQUIRE(r);
        REQUIRE(r->qps.size() == 3);
        check_qp(r->qps[2], qps[2]);
    }
    SECTION("text from the file is made printable") {
        auto bytes = good;
        std::memcpy(header_of(bytes).process, "a\x1b[2Jb\x7f\xff", 9);
        std::memset(header_of(bytes).device, 'd', sizeof(StatsHeader::device));  // no NUL
        write_file(path, bytes);
        const auto r = read_stats(path);
        REQUIRE(r);
        CHECK(r->process == "a?[2Jb??");
        CHECK(r->device == std::string(sizeof(StatsHeader::device), 'd'));
    }
    SECTION("not a regular file, a symlink, nothing") {
        fs::remove(path);
        fs::create_directory(path);
        CHECK(read_stats(path).error() == malformed);
        fs::remove(path);
        fs::create_symlink((*p)->path(), path);
        CHECK(read_stats(path).error() ==
              std::make_error_code(std::errc::too_many_symbolic_link_levels));
        fs::remove(path);
        CHECK(read_stats(path).error() ==
              std::make_error_code(std::errc::no_such_file_or_directory));
    }
}

TEST_CASE("stats seqlock: a reader racing the publisher only ever sees whole snapshots",
          "[verbs][stats]") {
    TempDir dir;
    auto p = StatsPublisher::create(identity(), dir.path, 64);
    REQUIRE(p);
    StatsPublisher& pub = **p;
    std::atomic<bool> stop{false};
    // Snapshot k: every counter of every record equal to k.
    std::thread writer([&] {
        std::vector<PortStats> ports(4);
        std::vector<QpStats> qps(64);
        for (std::uint64_t k = 1; !stop.load(std::memory_order_relaxed); ++k) {
            for (auto& s : ports) {
                s.counters.tx_frames = s.counters.rx_bytes = s.counters.doorbells = k;
            }
            for (auto& s : qps) {
                s.counters.tx_frames = s.sender.retransmits = s.receiver.acks = k;
            }
            pub.publish(ports, qps);
            // The real publisher writes every 200 ms; back to back, a reader would rarely find
            // the seqlock still for its three system calls. Short pauses keep the race frequent.
            if (k % 4 == 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(20));
            }
        }
    });
    unsigned reads = 0;
    unsigned torn = 0;
    std::uint64_t last = 0;
    bool monotonic = true;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < end || reads < 50) {
        auto f = read_stats(pub.path(), 10000);
        if (!f) {
            INFO(f.error().message());
            FAIL_CHECK("read_stats failed under a busy publisher");
            break;
        }
        ++reads;
        if (f->qps.empty()) {
            continue;  // before the first snapshot
        }
        const std::uint64_t k = f->ports[0].tx_frames;
        for (const auto& r : f->ports) {
            torn += r.tx_frames != k || r.rx_bytes != k || r.doorbells != k ? 1 : 0;
        }
        for (const auto& r : f->qps) {
            torn += r.tx_frames != k || r.snd_retransmits != k || r.rcv_acks != k ? 1 : 0;
        }
        monotonic = monotonic && k >= last && f->updates == k;
        last = k;
    }
    stop.store(true);
    writer.join();
    CHECK(reads >= 50);
    CHECK(torn == 0);
    CHECK(monotonic);
}
