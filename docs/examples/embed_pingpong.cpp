// SPDX-License-Identifier: Apache-2.0
// embed_pingpong: RDMA WRITE ping-pong between two processes through the embedding API
// (include/tbv/tbv.hpp), with no libibverbs. Walk-through in docs/embedding.md.
//
//   embed_pingpong emu:mycable/a                 # server: waits for the client on TCP port 18515
//   embed_pingpong emu:mycable/b 127.0.0.1       # client: connects to the server's host
//   options: -p PORT (18515)  -n ITERATIONS (1000)  -s SIZE in bytes (8)
//            -u TIMEOUT: the QP's local ACK timeout exponent (14; 0 = never give up), as perftest
//
// The device is an emulated host on a shared-memory cable ("emu:<cable>[/a|/b]") or a USB4
// controller bound to vfio-pci ("0000:c3:00.5"). The two processes swap their QP addresses and
// buffer locations over TCP, connect their QPs, then take turns: the client WRITEs SIZE bytes all
// equal to the round's value into the server's buffer; the server sees every byte arrive and
// WRITEs the same back. Half the round trip is the one-way latency, reported like ib_write_lat.
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tbv/tbv.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
    std::string device;
    std::string server;  ///< empty: we are the server
    std::string port = "18515";
    unsigned iterations = 1000;
    std::uint32_t size = 8;
    std::uint8_t timeout = 14;
};

/// What each side sends the other: its QP address and where its receive buffer is.
struct Hello {
    tbv::Address::Bytes address{};
    std::uint64_t addr = 0;
    std::uint32_t rkey = 0;
    std::uint32_t size = 0;
};
constexpr std::size_t kHelloSize = tbv::Address::kSize + 16;

int usage() {
    std::fputs(
        "usage: embed_pingpong DEVICE [SERVER_HOST] [-p PORT] [-n ITERATIONS] [-s SIZE] "
        "[-u TIMEOUT]\n"
        "  DEVICE: emu:<cable>[/a|/b] or a PCI address such as 0000:c3:00.5\n",
        stderr);
    return 2;
}

// ---- out-of-band channel: one TCP connection, blocking, only outside the measured loop --------

int tcp_connect(const Args& a) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = a.server.empty() ? AI_PASSIVE : 0;
    addrinfo* res = nullptr;
    if (::getaddrinfo(a.server.empty() ? nullptr : a.server.c_str(), a.port.c_str(), &hints,
                      &res) != 0) {
        return -1;
    }
    int fd = -1;
    if (a.server.empty()) {
        const int lfd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const int one = 1;
        ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (lfd >= 0 && ::bind(lfd, res->ai_addr, res->ai_addrlen) == 0 && ::listen(lfd, 1) == 0) {
            fd = ::accept(lfd, nullptr, nullptr);
        }
        if (lfd >= 0) {
            ::close(lfd);
        }
    } else {
        // The server may not be listening yet: retry for a while.
        for (int tries = 0; tries < 300 && fd < 0; ++tries) {
            fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
                ::close(fd);
                fd = -1;
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
    }
    ::freeaddrinfo(res);
    return fd;
}

bool send_all(int fd, const void* p, std::size_t n) {
    const auto* b = static_cast<const char*>(p);
    while (n > 0) {
        const ssize_t k = ::send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0) {
            return false;
        }
        b += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

bool recv_all(int fd, void* p, std::size_t n) {
    auto* b = static_cast<char*>(p);
    while (n > 0) {
        const ssize_t k = ::recv(fd, b, n, 0);
        if (k <= 0) {
            return false;
        }
        b += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

void put_le(unsigned char* p, std::uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
        p[i] = static_cast<unsigned char>(v >> (8 * i));
    }
}
std::uint64_t get_le(const unsigned char* p, unsigned n) {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < n; ++i) {
        v |= std::uint64_t{p[i]} << (8 * i);
    }
    return v;
}

bool exchange(int fd, const Hello& mine, Hello& theirs) {
    unsigned char out[kHelloSize];
    unsigned char in[kHelloSize];
    std::memcpy(out, mine.address.data(), tbv::Address::kSize);
    put_le(out + 32, mine.addr, 8);
    put_le(out + 40, mine.rkey, 4);
    put_le(out + 44, mine.size, 4);
    if (!send_all(fd, out, sizeof out) || !recv_all(fd, in, sizeof in)) {
        return false;
    }
    std::memcpy(theirs.address.data(), in, tbv::Address::kSize);
    theirs.addr = get_le(in + 32, 8);
    theirs.rkey = static_cast<std::uint32_t>(get_le(in + 40, 4));
    theirs.size = static_cast<std::uint32_t>(get_le(in + 44, 4));
    return true;
}

/// Both sides are done: each says so and keeps the device running (ACKs the peer may still need)
/// until the other said so too.
bool finish(int fd, tbv::Device& dev) {
    const char done = 'D';
    if (!send_all(fd, &done, 1)) {
        return false;
    }
    const auto end = Clock::now() + std::chrono::seconds(30);
    char got = 0;
    while (Clock::now() < end) {
        dev.progress();
        const ssize_t k = ::recv(fd, &got, 1, MSG_DONTWAIT);
        if (k == 1) {
            return got == done;
        }
        if (k == 0) {
            return false;
        }
    }
    return false;
}

// ---- the ping-pong ------------------------------------------------------------------------------

/// True once all `n` bytes at `p` equal `v`. Frames of one message may be placed in any order
/// (they are striped over rails), so the last byte alone does not prove the message is complete.
bool arrived(const volatile unsigned char* p, std::uint32_t n, unsigned char v) {
    if (p[n - 1] != v) {
        return false;
    }
    for (std::uint32_t i = 0; i < n; ++i) {
        if (p[i] != v) {
            return false;
        }
    }
    return true;
}

int fail(const char* what, std::error_code ec) {
    std::fprintf(stderr, "embed_pingpong: %s: %s\n", what, tbv::describe(ec).c_str());
    return 1;
}

int run(const Args& a) {
    const bool server = a.server.empty();
    auto dev = tbv::Device::open(a.device);
    if (!dev) {
        return fail("cannot open the device", dev.error());
    }
    tbv::Device& d = **dev;
    std::printf("device %s, LID %u; waiting for the link\n", d.name().c_str(), d.lid());
    std::fflush(stdout);
    if (auto r = d.wait_active(std::chrono::seconds(30)); !r) {
        return fail("no peer on the cable", r.error());
    }
    auto cq = d.create_cq(256);
    if (!cq) {
        return fail("create_cq", cq.error());
    }
    auto qp = d.create_qp(**cq);
    if (!qp) {
        return fail("create_qp", qp.error());
    }
    // [0, size): where the peer writes; [size, 2 size): what we write.
    std::vector<unsigned char> buf(2 * std::size_t{a.size}, 0);
    unsigned char* const in = buf.data();
    unsigned char* const out = buf.data() + a.size;
    auto mr = d.reg_mr(buf.data(), buf.size(), tbv::kAccessLocalWrite | tbv::kAccessRemoteWrite);
    if (!mr) {
        return fail("reg_mr", mr.error());
    }

    std::printf("%s: exchanging addresses on port %s\n", server ? "server" : "client",
                a.port.c_str());
    std::fflush(stdout);
    const int fd = tcp_connect(a);
    if (fd < 0) {
        std::fputs("embed_pingpong: no TCP connection to the peer\n", stderr);
        return 1;
    }
    Hello mine{(*qp)->local_address().to_bytes(), reinterpret_cast<std::uintptr_t>(in),
               (*mr)->rkey(), a.size};
    Hello theirs;
    if (!exchange(fd, mine, theirs)) {
        std::fputs("embed_pingpong: the peer hung up during the exchange\n", stderr);
        return 1;
    }
    if (theirs.size != a.size) {
        std::fprintf(stderr, "embed_pingpong: the peer uses -s %u, we use -s %u\n", theirs.size,
                     a.size);
        return 1;
    }
    auto peer = tbv::Address::from_bytes(theirs.address);
    if (!peer) {
        return fail("the peer's address", peer.error());
    }
    tbv::ConnectOptions co;
    co.timeout = a.timeout;
    if (auto r = (*qp)->connect(*peer, co); !r) {
        return fail("connect", r.error());
    }
    const tbv::RemoteBuffer dst{theirs.addr, theirs.rkey, theirs.size};
    char ready = 'R';
    if (!send_all(fd, &ready, 1) || !recv_all(fd, &ready, 1)) {  // both QPs are in RTS
        return 1;
    }

    const unsigned warmup = std::min(a.iterations / 10, 100u);
    const unsigned total = warmup + a.iterations;
    std::vector<double> one_way_us;
    one_way_us.reserve(a.iterations);
    tbv::Wc wc[16];
    for (unsigned i = 0; i < total; ++i) {
        const auto v = static_cast<unsigned char>(i % 255 + 1);  // never the initial 0
        std::memset(out, v, a.size);
        const auto t0 = Clock::now();
        bool sent = false;
        bool completed = false;
        bool got = false;
        auto deadline = t0 + std::chrono::seconds(10);
        // The client writes first; the server writes once the client's write has arrived.
        while (!(completed && got)) {
            if (!sent && (!server || got)) {
                if (auto r = (*qp)->post_write(**mr, out, a.size, dst, i); !r) {
                    return fail("post_write", r.error());
                }
                sent = true;
            }
            const std::uint32_t n = (*cq)->poll(wc);  // also what makes data move
            for (std::uint32_t k = 0; k < n; ++k) {
                if (wc[k].status != tbv::WcStatus::success) {
                    std::fprintf(stderr, "embed_pingpong: write %llu failed with status %u\n",
                                 static_cast<unsigned long long>(wc[k].wr_id),
                                 static_cast<unsigned>(wc[k].status));
                    return 1;
                }
                completed = true;
            }
            got = got || arrived(in, a.size, v);
            if (Clock::now() > deadline) {
                std::fprintf(stderr, "embed_pingpong: round %u: the peer did not answer\n", i);
                return 1;
            }
        }
        const std::chrono::duration<double, std::micro> rtt = Clock::now() - t0;
        if (i >= warmup) {
            one_way_us.push_back(rtt.count() / 2);
        }
    }
    if (!finish(fd, d)) {
        std::fputs("embed_pingpong: the peer did not finish cleanly\n", stderr);
    }
    ::close(fd);

    std::sort(one_way_us.begin(), one_way_us.end());
    double sum = 0;
    for (const double x : one_way_us) {
        sum += x;
    }
    const auto pct = [&](double p) {
        return one_way_us[std::min(
            one_way_us.size() - 1,
            static_cast<std::size_t>(p * static_cast<double>(one_way_us.size())))];
    };
    std::printf("%8s %10s %10s %10s %10s %10s %10s   (one-way latency, us)\n", "bytes",
                "iterations", "min", "median", "average", "p99", "max");
    std::printf("%8u %10u %10.2f %10.2f %10.2f %10.2f %10.2f\n", a.size, a.iterations,
                one_way_us.front(), pct(0.5), sum / static_cast<double>(one_way_us.size()),
                pct(0.99), one_way_us.back());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i) {
        const std::string s = argv[i];
        const bool has_value = i + 1 < argc;
        if (s == "-p" && has_value) {
            a.port = argv[++i];
        } else if (s == "-n" && has_value) {
            a.iterations = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 0));
        } else if (s == "-u" && has_value) {
            a.timeout = static_cast<std::uint8_t>(std::strtoul(argv[++i], nullptr, 0));
        } else if (s == "-s" && has_value) {
            a.size = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 0));
        } else if (!s.empty() && s[0] == '-') {
            return usage();
        } else {
            pos.push_back(s);
        }
    }
    if (pos.empty() || pos.size() > 2 || a.iterations == 0 || a.size == 0) {
        return usage();
    }
    a.device = pos[0];
    if (pos.size() == 2) {
        a.server = pos[1];
    }
    return run(a);
}
