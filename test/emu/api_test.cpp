// SPDX-License-Identifier: Apache-2.0
// The embedding API (include/tbv/tbv.hpp) as an application uses it, with nothing but the public
// headers: Address blobs, device names, then two emulated hosts on one shared-memory cable —
// within one process (one thread driving both) and across two (fork; addresses swapped over a
// socketpair) — doing WRITE, READ and SEND with every byte checked; finally the embed_pingpong
// example program as two processes (EMBED_PINGPONG_BIN).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "tbv/tbv.hpp"

using namespace std::chrono_literals;

namespace {

template <typename T>
T take(tbv::Result<T> r) {
    INFO(tbv::describe(r.error()));
    REQUIRE(r);
    return std::move(*r);
}

std::string unique_name(const char* what) {
    return std::string("api-") + what + "-" + std::to_string(::getpid());
}

std::vector<unsigned char> pattern(std::size_t n, unsigned seed) {
    std::vector<unsigned char> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) {
        b = static_cast<unsigned char>(rng());
    }
    return v;
}

/// Byte-for-byte equality as a plain bool (Catch2 would print whole vectors into the TAP stream).
bool same(const std::vector<unsigned char>& x, const std::vector<unsigned char>& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0;
}

/// Polls `cq` until one completion arrives, running `other`'s progress too (it lives in this
/// thread). Status failure (-1 wr_id) after `limit`.
tbv::Wc wait_wc(tbv::Cq& cq, tbv::Device* other = nullptr, std::chrono::seconds limit = 30s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    tbv::Wc wc;
    while (std::chrono::steady_clock::now() < end) {
        if (cq.poll({&wc, 1}) == 1) {
            return wc;
        }
        if (other != nullptr) {
            other->progress();
        }
    }
    wc.wr_id = ~0ull;
    wc.status = tbv::WcStatus::general_err;
    return wc;
}

}  // namespace

TEST_CASE("api: Address serialises to 32 versioned bytes and refuses anything else", "[emu][api]") {
    tbv::Address a;
    a.lid = 0x1234;
    a.qpn = 0xABCDEF;
    a.psn = 0x123456;
    for (std::size_t i = 0; i < a.gid.size(); ++i) {
        a.gid[i] = static_cast<std::uint8_t>(0xF0 + i);
    }
    const auto b = a.to_bytes();
    CHECK(b.size() == 32);
    // Little-endian fields at fixed offsets: "TBVA", version 1, LID, QPN, PSN, GID.
    const unsigned char want[16] = {'T',  'B',  'V',  'A', 1,    0,    0x34, 0x12,
                                    0xEF, 0xCD, 0xAB, 0,   0x56, 0x34, 0x12, 0};
    CHECK(std::memcmp(b.data(), want, sizeof want) == 0);
    CHECK(std::memcmp(b.data() + 16, a.gid.data(), 16) == 0);
    const auto back = take(tbv::Address::from_bytes(b));
    CHECK(back == a);

    const auto refused = [](std::span<const std::byte> x) {
        const auto r = tbv::Address::from_bytes(x);
        return !r && r.error() == tbv::Errc::malformed;
    };
    CHECK(refused(std::span(b).first(31)));
    std::vector<std::byte> longer(b.begin(), b.end());
    longer.push_back(std::byte{0});
    CHECK(refused(longer));
    auto bad = b;
    bad[0] = std::byte{'X'};  // magic
    CHECK(refused(bad));
    bad = b;
    bad[4] = std::byte{2};  // a future version
    CHECK(refused(bad));
    bad = b;
    bad[6] = bad[7] = std::byte{0};  // LID 0
    CHECK(refused(bad));
    bad = b;
    bad[11] = std::byte{1};  // QPN beyond 24 bits
    CHECK(refused(bad));
    bad = b;
    bad[15] = std::byte{1};  // PSN beyond 24 bits
    CHECK(refused(bad));
}

TEST_CASE("api: Device::open refuses malformed names", "[emu][api]") {
    for (const char* w : {"emu:", "emu:/a", "emu:x/c", "emu:x/", "emu:a/b/c", "bogus", "c3:00.5",
                          "0000:zz:00.5", "0000:c3:00.5x"}) {
        INFO(w);
        const auto d = tbv::Device::open(w);
        REQUIRE_FALSE(d);
        CHECK(d.error() == std::errc::invalid_argument);
        CHECK_FALSE(tbv::describe(d.error()).empty());
    }
    // A well-formed PCI address without such a function: refused by VFIO, with the reason.
    const auto absent = tbv::Device::open("0000:ff:1f.7");
    REQUIRE_FALSE(absent);
    CHECK(tbv::describe(absent.error()).find("0000:ff:1f.7") != std::string::npos);

    const char* saved = std::getenv("TBV_EMU");
    const std::string keep = saved != nullptr ? saved : "";
    ::unsetenv("TBV_EMU");
    const auto d = tbv::Device::open("");
    CHECK((!d && d.error() == std::errc::no_such_device));
    if (saved != nullptr) {
        ::setenv("TBV_EMU", keep.c_str(), 1);
    }
}

TEST_CASE("api: two devices on one cable in one process: WRITE, READ, SEND, byte for byte",
          "[emu][api]") {
    // Buffers outlive both devices: one thread drives both here, so when an MR goes the other
    // device may not have run since, and ~Mr (which runs only its own device) may have to leave
    // a registration that is still in use to the device's close.
    std::deque<std::vector<unsigned char>> keep;  // push_back keeps references valid
    const auto buffer = [&keep](std::vector<unsigned char> v) -> std::vector<unsigned char>& {
        keep.push_back(std::move(v));
        return keep.back();
    };
    const std::string cable = unique_name("inproc");
    auto a = take(tbv::Device::open("emu:" + cable + "/a"));
    auto b = take(tbv::Device::open("emu:" + cable + "/b"));
    // Both ends are taken: a third opener is told so.
    const auto third = tbv::Device::open("emu:" + cable);
    CHECK((!third && third.error() == std::errc::device_or_resource_busy));
    REQUIRE(a->wait_active());
    REQUIRE(b->wait_active());
    CHECK(a->lid() != b->lid());

    auto cqa = take(a->create_cq(64));
    auto cqb = take(b->create_cq(64));
    CHECK(cqa->capacity() >= 64);
    auto qa = take(a->create_qp(*cqa));
    auto qb = take(b->create_qp(*cqb));
    // A CQ of another device is refused.
    const auto foreign = a->create_qp(*cqb);
    CHECK((!foreign && foreign.error() == std::errc::invalid_argument));

    // An address whose GID does not give its LID is refused, and the QP can still connect.
    tbv::Address wrong = qb->local_address();
    wrong.lid = static_cast<std::uint16_t>(wrong.lid + 1);
    const auto r = qa->connect(wrong);
    CHECK((!r && r.error() == tbv::Errc::malformed));
    // Addresses travel as bytes.
    REQUIRE(qa->connect(take(tbv::Address::from_bytes(qb->local_address().to_bytes()))));
    REQUIRE(qb->connect(take(tbv::Address::from_bytes(qa->local_address().to_bytes()))));
    CHECK_FALSE(qa->connect(qb->local_address()));  // once only

    unsigned seed = 1;
    for (const std::size_t n : {std::size_t{1}, std::size_t{4044}, std::size_t{4045},
                                std::size_t{65536}, std::size_t{(1u << 20) + 17}}) {
        INFO("size " << n);
        const auto len = static_cast<std::uint32_t>(n);
        auto& src = buffer(pattern(n, seed++));
        auto& dst = buffer(std::vector<unsigned char>(n, 0));
        auto smr = take(a->reg_mr(src.data(), n, tbv::kAccessLocalWrite | tbv::kAccessRemoteRead));
        auto dmr = take(b->reg_mr(dst.data(), n, tbv::kAccessLocalWrite | tbv::kAccessRemoteWrite));
        CHECK(dmr->addr() == dst.data());
        CHECK(dmr->length() == n);

        // WRITE a → b.
        REQUIRE(qa->post_write(*smr, src.data(), len, dmr->remote(), 10));
        auto wc = wait_wc(*cqa, b.get());
        CHECK(wc.status == tbv::WcStatus::success);
        CHECK(wc.opcode == tbv::WcOpcode::rdma_write);
        CHECK(wc.wr_id == 10);
        CHECK(same(src, dst));

        // READ b's buffer back into a fresh one on a.
        auto& back = buffer(std::vector<unsigned char>(n, 0));
        auto bmr = take(a->reg_mr(back.data(), n, tbv::kAccessLocalWrite));
        auto rmr = take(b->reg_mr(dst.data(), n, tbv::kAccessRemoteRead));
        REQUIRE(qa->post_read(*bmr, back.data(), len, rmr->remote(), 11));
        wc = wait_wc(*cqa, b.get());
        CHECK(wc.status == tbv::WcStatus::success);
        CHECK(wc.opcode == tbv::WcOpcode::rdma_read);
        CHECK(same(back, src));

        // SEND b → a into a posted receive, from the middle of b's buffer.
        auto& got = buffer(std::vector<unsigned char>(n, 0));
        auto gmr = take(a->reg_mr(got.data(), n, tbv::kAccessLocalWrite));
        REQUIRE(qa->post_recv(*gmr, got.data(), len, 77));
        const std::uint32_t half = len / 2 + 1;
        REQUIRE(qb->post_send(*dmr, dst.data() + (n - half), half, 12));
        wc = wait_wc(*cqb, a.get());
        CHECK(wc.status == tbv::WcStatus::success);
        CHECK(wc.opcode == tbv::WcOpcode::send);
        wc = wait_wc(*cqa, b.get());
        CHECK(wc.status == tbv::WcStatus::success);
        CHECK(wc.opcode == tbv::WcOpcode::recv);
        CHECK(wc.wr_id == 77);
        CHECK(wc.byte_len == half);
        CHECK(wc.src_qp == qb->qpn());
        CHECK(std::memcmp(got.data(), src.data() + (n - half), half) == 0);
    }

    // A WRITE with immediate through the general post(): the receiver sees the immediate.
    auto& word = buffer(pattern(8, 99));
    auto& land = buffer(std::vector<unsigned char>(8, 0));
    auto wmr = take(a->reg_mr(word.data(), 8, tbv::kAccessLocalWrite));
    auto lmr = take(b->reg_mr(land.data(), 8, tbv::kAccessLocalWrite | tbv::kAccessRemoteWrite));
    REQUIRE(qb->post_recv(*lmr, land.data(), 0, 5));
    const tbv::verbs::Sge sge{reinterpret_cast<std::uintptr_t>(word.data()), 8, wmr->lkey()};
    tbv::verbs::SendWr wr;
    wr.wr_id = 6;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = tbv::verbs::WrOpcode::rdma_write_with_imm;
    wr.send_flags = tbv::kSendSignaled;
    wr.imm_data = 0x11223344;
    wr.remote_addr = lmr->remote().addr;
    wr.rkey = lmr->rkey();
    REQUIRE(qa->post(wr));
    CHECK(wait_wc(*cqa, b.get()).status == tbv::WcStatus::success);
    const auto rc = wait_wc(*cqb, a.get());
    CHECK(rc.status == tbv::WcStatus::success);
    CHECK(rc.opcode == tbv::WcOpcode::recv_rdma_with_imm);
    CHECK(rc.imm_data == 0x11223344);
    CHECK(same(land, word));

    // The Device may go first: its objects keep what they need alive until they go.
    a.reset();
    qa.reset();
    cqa.reset();
    wmr.reset();
}

namespace {

/// Two processes are scheduled independently: on a loaded machine (sanitizers, parallel suites)
/// one may not run, and so not answer, for a long time. IB timeout 0 (never give up) keeps these
/// tests about data, not about the scheduler.
tbv::ConnectOptions patient() {
    tbv::ConnectOptions o;
    o.timeout = 0;
    return o;
}

/// Sizes of the two-process exchange: several frames, not a multiple of anything.
constexpr std::size_t kForkBytes = 300'001;
constexpr unsigned kSeedWrite = 11, kSeedRead = 12, kSeedSend = 13;

/// Blob each side sends: address, then its buffer (addr u64, rkey u32), native order (same host).
struct Hello {
    tbv::Address::Bytes address{};
    std::uint64_t addr = 0;
    std::uint32_t rkey = 0;
};

bool write_all(int fd, const void* p, std::size_t n) {
    return ::write(fd, p, n) == static_cast<ssize_t>(n);
}
bool read_all(int fd, void* p, std::size_t n) {
    auto* c = static_cast<char*>(p);
    while (n > 0) {
        const ssize_t k = ::read(fd, c, n);
        if (k <= 0) {
            return false;
        }
        c += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

/// Keeps `dev` running until a byte arrives on `fd` (the peer may still need our ACKs).
bool progress_until_byte(tbv::Device& dev, int fd, char& got) {
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < end) {
        dev.progress();
        const ssize_t k = ::recv(fd, &got, 1, MSG_DONTWAIT);
        if (k == 1) {
            return true;
        }
        if (k == 0) {
            return false;
        }
    }
    return false;
}

/// The child: device b. Its buffer is [0, n) written by the parent, [n, 2n) read by it; a posted
/// receive takes the parent's SEND. No Catch macros: the exit code says what failed.
[[noreturn]] void child(const std::string& cable, int fd) {
    auto dev = tbv::Device::open("emu:" + cable + "/b");
    if (!dev || !(*dev)->wait_active()) {
        ::_exit(10);
    }
    tbv::Device& d = **dev;
    auto cq = d.create_cq(16);
    if (!cq) {
        ::_exit(11);
    }
    auto qp = d.create_qp(**cq);
    std::vector<unsigned char> buf(2 * kForkBytes, 0);
    const auto readable = pattern(kForkBytes, kSeedRead);
    std::memcpy(buf.data() + kForkBytes, readable.data(), kForkBytes);
    std::vector<unsigned char> recv(kForkBytes, 0);
    auto mr = d.reg_mr(buf.data(), buf.size(),
                       tbv::kAccessLocalWrite | tbv::kAccessRemoteWrite | tbv::kAccessRemoteRead);
    auto rmr = d.reg_mr(recv.data(), recv.size(), tbv::kAccessLocalWrite);
    if (!qp || !mr || !rmr) {
        ::_exit(11);
    }
    const Hello mine{(*qp)->local_address().to_bytes(),
                     reinterpret_cast<std::uintptr_t>(buf.data()), (*mr)->rkey()};
    Hello theirs;
    if (!write_all(fd, &mine, sizeof mine) || !read_all(fd, &theirs, sizeof theirs)) {
        ::_exit(12);
    }
    auto peer = tbv::Address::from_bytes(theirs.address);
    if (!peer || !(*qp)->connect(*peer, patient()) ||
        !(*qp)->post_recv(**rmr, recv.data(), static_cast<std::uint32_t>(kForkBytes), 1)) {
        ::_exit(13);
    }
    char go = 'G';
    if (!write_all(fd, &go, 1)) {
        ::_exit(14);
    }
    // The SEND comes after the WRITE on the same QP: when it is delivered the WRITE has landed.
    auto wc = (*cq)->wait(30s);
    if (!wc || wc->status != tbv::WcStatus::success || wc->byte_len != kForkBytes) {
        ::_exit(15);
    }
    const bool ok =
        recv == pattern(kForkBytes, kSeedSend) &&
        std::memcmp(buf.data(), pattern(kForkBytes, kSeedWrite).data(), kForkBytes) == 0;
    const char verdict = ok ? 'Y' : 'N';
    char done = 0;
    if (!write_all(fd, &verdict, 1) || !progress_until_byte(d, fd, done)) {
        ::_exit(16);
    }
    ::_exit(ok ? 0 : 17);
}

}  // namespace

TEST_CASE("api: two processes on one cable: WRITE, READ, SEND, byte for byte", "[emu][api][fork]") {
    const std::string cable = unique_name("fork");
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    std::fflush(stdout);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(sv[0]);
        child(cable, sv[1]);
    }
    REQUIRE(pid > 0);
    ::close(sv[1]);
    const int fd = sv[0];
    struct Reaper {
        pid_t pid;
        int fd;
        ~Reaper() {
            ::close(fd);
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } reaper{pid, fd};

    auto d = take(tbv::Device::open("emu:" + cable + "/a"));
    REQUIRE(d->wait_active());
    auto cq = take(d->create_cq(16));
    auto qp = take(d->create_qp(*cq));
    auto wsrc = pattern(kForkBytes, kSeedWrite);
    auto ssrc = pattern(kForkBytes, kSeedSend);
    std::vector<unsigned char> rdst(kForkBytes, 0);
    auto wmr = take(d->reg_mr(wsrc.data(), kForkBytes, tbv::kAccessLocalWrite));
    auto smr = take(d->reg_mr(ssrc.data(), kForkBytes, tbv::kAccessLocalWrite));
    auto rmr = take(d->reg_mr(rdst.data(), kForkBytes, tbv::kAccessLocalWrite));

    const Hello mine{qp->local_address().to_bytes(), 0, 0};
    Hello theirs;
    REQUIRE(write_all(fd, &mine, sizeof mine));
    REQUIRE(read_all(fd, &theirs, sizeof theirs));
    REQUIRE(qp->connect(take(tbv::Address::from_bytes(theirs.address)), patient()));
    char go = 0;
    REQUIRE(read_all(fd, &go, 1));  // the child is in RTS with its receive posted
    const tbv::RemoteBuffer peer{theirs.addr, theirs.rkey, 2 * kForkBytes};
    const auto len = static_cast<std::uint32_t>(kForkBytes);

    REQUIRE(qp->post_write(*wmr, wsrc.data(), len, peer, 1));
    REQUIRE(qp->post_read(*rmr, rdst.data(), len, peer.at(kForkBytes), 2));
    REQUIRE(qp->post_send(*smr, ssrc.data(), len, 3));
    for (std::uint64_t id = 1; id <= 3; ++id) {
        const auto wc = take(cq->wait(30s));
        CHECK(wc.status == tbv::WcStatus::success);
        CHECK(wc.wr_id == id);  // completions in order
    }
    CHECK(same(rdst, pattern(kForkBytes, kSeedRead)));

    char verdict = 0;
    REQUIRE(progress_until_byte(*d, fd, verdict));
    CHECK(verdict == 'Y');
    const char done = 'D';
    REQUIRE(write_all(fd, &done, 1));
    int status = -1;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    reaper.pid = -1;
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

namespace {

/// A TCP port on 127.0.0.1 free right now (the kernel's pick for port 0).
int free_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof in;
    int port = -1;
    if (::bind(s, reinterpret_cast<sockaddr*>(&in), sizeof in) == 0 &&
        ::getsockname(s, reinterpret_cast<sockaddr*>(&in), &len) == 0) {
        port = ntohs(in.sin_port);
    }
    ::close(s);
    return port;
}

std::string read_pipe(FILE* f, int& status) {
    std::string out;
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        out.append(buf, n);
    }
    const int st = ::pclose(f);
    status = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

}  // namespace

TEST_CASE("api: the embed_pingpong example runs as two processes", "[emu][api][fork]") {
    const char* bin = std::getenv("EMBED_PINGPONG_BIN");
    REQUIRE(bin != nullptr);
    const int port = free_port();
    REQUIRE(port > 0);
    const std::string cable = unique_name("pingpong");
    // -u 0: see patient().
    const std::string common =
        std::string(" -p ") + std::to_string(port) + " -n 200 -s 5000 -u 0 2>&1";
    FILE* server =
        ::popen(("'" + std::string(bin) + "' emu:" + cable + "/a" + common).c_str(), "r");
    REQUIRE(server != nullptr);
    FILE* client =
        ::popen(("'" + std::string(bin) + "' emu:" + cable + "/b 127.0.0.1" + common).c_str(), "r");
    REQUIRE(client != nullptr);
    int cs = -1;
    int ss = -1;
    const std::string cout = read_pipe(client, cs);
    const std::string sout = read_pipe(server, ss);
    // Catch2's TAP reporter would print an INFO with every passing check, and multi-line text
    // breaks the TAP stream: the programs' output is shown only when something failed.
    const bool ok = cs == 0 && ss == 0 && cout.find("one-way latency") != std::string::npos &&
                    sout.find("one-way latency") != std::string::npos;
    if (ok) {
        SUCCEED("client and server both printed their latency");
    } else {
        FAIL_CHECK("exit codes " << cs << ", " << ss << "\n--- client ---\n"
                                 << cout << "--- server ---\n"
                                 << sout);
    }
}
