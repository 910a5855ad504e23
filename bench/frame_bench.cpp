// SPDX-License-Identifier: Apache-2.0
// tbv-bench-frames: frames per second and ns per frame between two emulated NHIs in one process,
// through the real ring driver (src/nhi) and the emulated DMA engine (src/emu): A's TX ring 1 →
// fabric → B's RX ring 1. Each round posts one batch (one doorbell), lets B poll and refill
// (one doorbell), and reaps A's completions. Prints a table; --json for machine-readable output.
//
// Fabrics (--fabrics): `pair` is the test fabric (emu::PairFabric, ring N to ring N, no router);
// `cable` is the full model: each NHI behind its host router (emu::Router), the two routers joined
// by an in-process emu::Cable, frames following DMA path entries programmed over ring 0 like a
// connection manager does (NHI adapter hop 1 → lane adapter 2 HopID 8 → peer lane adapter entry 8
// → peer NHI ring 1); `shm` is the same with the shared-memory cable (emu::ShmCable, both ends in
// this process, delivered when B polls).
//
// What it measures: the software cost per frame of descriptor writes, doorbells, DONE-bit polling
// and the emulator's DMA copy, plus (cable, shm) the router's data plane and the cable. It is not a
// hardware figure (a real NHI is limited by descriptor rate, ~12 Gb/s per ring at 4 KiB,
// DESIGN.md).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "emu/host.hpp"
#include "emu/nhi.hpp"
#include "hw/usb4_regs.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/frame_pool.hpp"
#include "nhi/nhi.hpp"
#include "nhi/ring.hpp"

using namespace tbv;

namespace {

struct Figures {
    std::string fabric;
    std::size_t frame_size;
    unsigned batch;
    std::uint64_t frames;
    double seconds;
    double doorbells_per_frame;
    bool verified;
};

constexpr unsigned kRingSize = 256;

template <typename T>
T must(Result<T> r, const char* what) {
    if (!r) {
        fmt::print(stderr, "tbv-bench-frames: {}: {}\n", what, r.error().message());
        std::exit(1);
    }
    return std::move(*r);
}

void must(Result<void> r, const char* what) {
    if (!r) {
        fmt::print(stderr, "tbv-bench-frames: {}: {}\n", what, r.error().message());
        std::exit(1);
    }
}

/// Two emulated NHIs and what joins them. Members are destroyed in reverse: cable ends and
/// fabrics before routers and NHIs.
struct Wiring {
    std::string fabric;
    std::unique_ptr<emu::EmuNhi> dev_a, dev_b;  ///< pair
    std::unique_ptr<emu::PairFabric> pair;
    std::unique_ptr<emu::EmuHost> host_a, host_b;  ///< cable, shm
    std::unique_ptr<emu::Cable> cable;
    emu::EmuNhi* a = nullptr;
    emu::EmuNhi* b = nullptr;

    Wiring() = default;
    Wiring(Wiring&&) = default;
    Wiring& operator=(Wiring&&) = delete;
    ~Wiring() {
        cable.reset();
        if (host_a) {
            host_a->close_shm_cable(0);
        }
        if (host_b) {
            host_b->close_shm_cable(0);
        }
    }
};

Wiring wire(const std::string& fabric) {
    Wiring w;
    w.fabric = fabric;
    if (fabric == "pair") {
        emu::NhiConfig ca;
        ca.name = "bench-a";
        emu::NhiConfig cb;
        cb.name = "bench-b";
        w.dev_a = std::make_unique<emu::EmuNhi>(ca);
        w.dev_b = std::make_unique<emu::EmuNhi>(cb);
        w.pair = std::make_unique<emu::PairFabric>(*w.dev_a, *w.dev_b);
        w.a = w.dev_a.get();
        w.b = w.dev_b.get();
        return w;
    }
    emu::HostConfig ha;
    ha.name = "bench-a";
    ha.uid = 0xa;
    ha.router.training_delay = std::chrono::milliseconds(1);
    emu::HostConfig hb = ha;
    hb.name = "bench-b";
    hb.uid = 0xb;
    w.host_a = std::make_unique<emu::EmuHost>(ha);
    w.host_b = std::make_unique<emu::EmuHost>(hb);
    if (fabric == "cable") {
        w.cable = emu::EmuHost::connect(*w.host_a, 0, *w.host_b, 0);
    } else {
        const std::string name = fmt::format("bench-{}", ::getpid());
        must(w.host_a->open_shm_cable(0, name), "shm cable A");
        must(w.host_b->open_shm_cable(0, name), "shm cable B");
    }
    w.a = &w.host_a->nhi();
    w.b = &w.host_b->nhi();
    return w;
}

/// Plays the connection manager over ring 0 of both NHIs: waits for lane 0 of USB4 port 0 to
/// reach CL0 on both routers, then programs the DMA path A ring 1 → lane HopID 8 → B ring 1.
void program_path(Wiring& w, nhi::Nhi& nhi_a, nhi::Nhi& nhi_b) {
    using namespace hw::usb4;
    constexpr unsigned kLane0 = 2;
    constexpr unsigned kNhiAdapter = 1;
    constexpr unsigned kRing = 1;
    constexpr unsigned kHop = 8;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (w.host_a->router().lane_state(kLane0) != LaneState::cl0 ||
           w.host_b->router().lane_state(kLane0) != LaneState::cl0) {
        if (std::chrono::steady_clock::now() > deadline) {
            fmt::print(stderr, "tbv-bench-frames: the emulated link did not come up\n");
            std::exit(1);
        }
        w.host_a->router().poll();
        w.host_b->router().poll();
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    const auto entry = [](unsigned out_adapter, unsigned out_hop) {
        return std::vector<std::uint32_t>{PATH0_OUT_HOP::make(out_hop) |
                                              PATH0_OUT_ADAPTER::make(out_adapter) |
                                              PATH0_CREDITS::make(14) | PATH0_VALID::make(1),
                                          PATH1_WEIGHT::make(1) | PATH1_PRIORITY::make(5) |
                                              PATH1_COUNTER::make(0x7ff) | PATH1_IFC::make(1)};
    };
    // A route-0 config write on ring 0 (ref §5.4), waiting for the router's reply.
    const auto write = [&](nhi::Nhi& n, unsigned adapter, unsigned offset,
                           const std::vector<std::uint32_t>& data) {
        auto ring = must(nhi::ControlRing::create(n), "ring 0");
        const auto h = route_header(0);
        std::vector<std::uint32_t> dw{
            h[0], h[1],
            ADDR_OFFSET::make(offset) | ADDR_LENGTH::make(static_cast<std::uint32_t>(data.size())) |
                ADDR_PORT::make(adapter) |
                ADDR_SPACE::make(static_cast<std::uint32_t>(Space::path))};
        dw.insert(dw.end(), data.begin(), data.end());
        must(ring->send(static_cast<unsigned>(Pdf::write), dw), "path write");
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < until) {
            if (auto p = ring->receive()) {
                if (p->pdf == static_cast<unsigned>(Pdf::read)) {  // a write's reply
                    return;
                }
            }
        }
        fmt::print(stderr, "tbv-bench-frames: no reply to a path write\n");
        std::exit(1);
    };
    // Egress first on the receiver, as Linux does: no frame finds half a path.
    write(nhi_b, kLane0, kHop * kPathEntryDwords, entry(kNhiAdapter, kRing));
    write(nhi_a, kNhiAdapter, kRing * kPathEntryDwords, entry(kLane0, kHop));
}

Figures run(const std::string& fabric, std::size_t frame_size, unsigned batch, std::uint64_t total,
            unsigned threads) {
    Wiring w = wire(fabric);
    emu::EmuNhi& dev_a = *w.a;
    emu::EmuNhi& dev_b = *w.b;
    auto nhi_a = must(nhi::Nhi::open(dev_a), "open A");
    auto nhi_b = must(nhi::Nhi::open(dev_b), "open B");
    if (w.host_a) {
        program_path(w, *nhi_a, *nhi_b);
    }

    nhi::RingConfig cfg;
    cfg.ring = 1;
    cfg.size = kRingSize;
    auto tx = must(nhi::TxRing::create(*nhi_a, cfg), "TX ring");
    auto rx = must(nhi::RxRing::create(*nhi_b, cfg), "RX ring");
    auto tx_pool =
        must(nhi::FramePool::create(dev_a, kRingSize, 4096, hw::DmaAccess::read), "TX pool");
    auto rx_pool =
        must(nhi::FramePool::create(dev_b, kRingSize, 4096, hw::DmaAccess::write), "RX pool");

    for (unsigned i = 0; i < kRingSize; ++i) {
        std::memset(tx_pool.data(i), static_cast<int>(i & 0xff), frame_size);
    }
    std::vector<nhi::RxBuffer> refill(kRingSize);
    for (unsigned i = 0; i < kRingSize - 1; ++i) {
        refill[i] = {rx_pool.iova(i), i};
    }
    (void)rx->post(std::span(refill).first(kRingSize - 1));

    std::vector<nhi::TxFrame> frames(batch);
    std::vector<nhi::RxCompletion> done(batch);
    std::vector<std::uint64_t> reaped(batch);
    unsigned next_tx = 0;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    bool verified = true;
    const std::uint64_t doorbells_before = dev_a.counters().doorbells;
    const auto fill = [&](unsigned n) {
        for (unsigned i = 0; i < n; ++i) {
            frames[i] = {tx_pool.iova(next_tx),
                         static_cast<std::uint32_t>(frame_size),
                         1,
                         2,
                         false,
                         next_tx};
            next_tx = next_tx + 1 == kRingSize ? 0 : next_tx + 1;
        }
    };
    // Frames arrive in order, so the k-th received carries TX buffer k's pattern; check its
    // length and both ends (cheap enough not to distort the figure), and give the buffers back.
    const auto take = [&](unsigned got) {
        for (unsigned i = 0; i < got; ++i) {
            const auto buf = static_cast<unsigned>(done[i].cookie);
            const auto expect = static_cast<std::byte>((received + i) % kRingSize & 0xff);
            verified = verified && done[i].length == frame_size && rx_pool.data(buf)[0] == expect &&
                       rx_pool.data(buf)[frame_size - 1] == expect;
            refill[i] = {rx_pool.iova(buf), done[i].cookie};
        }
        if (got > 0) {
            (void)rx->post(std::span(refill).first(got));
        }
        received += got;
    };

    const auto t0 = std::chrono::steady_clock::now();
    if (threads == 2) {
        // A's thread sends, B's thread receives: the two hosts' threads meet in the model (B's RX
        // engine runs in A's thread for in-process fabrics, in B's poll for shm). A keeps at most
        // the RX ring's posted buffers in flight, so B's ring never runs dry.
        std::atomic<std::uint64_t> received_pub{0};
        std::atomic<bool> stop{false};
        const auto deadline = t0 + std::chrono::seconds(60);
        std::thread receiver([&] {
            while (received < total && !stop.load(std::memory_order_relaxed)) {
                take(rx->poll(done));
                received_pub.store(received, std::memory_order_release);
            }
        });
        while (sent < total && std::chrono::steady_clock::now() < deadline) {
            (void)tx->reap(reaped);
            const std::uint64_t in_flight = sent - received_pub.load(std::memory_order_acquire);
            const auto n = static_cast<unsigned>(
                std::min<std::uint64_t>({batch, total - sent, kRingSize - 1 - in_flight}));
            if (n > 0) {
                fill(n);
                sent += tx->post(std::span(frames).first(n)).posted;
            }
        }
        while (received_pub.load(std::memory_order_acquire) < total &&
               std::chrono::steady_clock::now() < deadline) {
            (void)tx->reap(reaped);
        }
        stop.store(true, std::memory_order_relaxed);
        receiver.join();
        verified = verified && received == total;
    }
    while (threads != 2 && received < total) {
        const unsigned n = static_cast<unsigned>(std::min<std::uint64_t>(batch, total - sent));
        fill(n);
        sent += tx->post(std::span(frames).first(n)).posted;
        const unsigned got = rx->poll(done);
        take(got);
        (void)tx->reap(reaped);
        if (got == 0 && sent == total && tx->in_flight() == 0) {
            verified = false;  // frames were lost: report instead of spinning forever
            break;
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    const std::uint64_t doorbells = dev_a.counters().doorbells - doorbells_before;
    return {fabric,
            frame_size,
            batch,
            received,
            std::chrono::duration<double>(t1 - t0).count(),
            static_cast<double>(doorbells) / static_cast<double>(received),
            verified};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Frame rate between two emulated NHIs through the ring driver"};
    std::uint64_t frames = 200'000;
    bool json = false;
    std::vector<std::string> fabrics{"pair", "cable", "shm"};
    std::vector<std::size_t> sizes{64, 1024, 4096};
    std::vector<unsigned> batches{1, 8, 32};
    unsigned threads = 1;
    app.add_option("-n,--frames", frames, "frames per configuration")->check(CLI::PositiveNumber);
    app.add_option("-f,--fabrics", fabrics,
                   "pair (test fabric), cable (routers + in-process cable), shm (routers + "
                   "shared-memory cable)")
        ->check(CLI::IsMember({"pair", "cable", "shm"}));
    app.add_option("-s,--sizes", sizes, "frame sizes in bytes (1..4096)")
        ->check(CLI::Range(1, 4096));
    app.add_option("-b,--batches", batches, "frames per doorbell")->check(CLI::Range(1, 128));
    app.add_option(
           "-t,--threads", threads,
           "1: one thread drives both NHIs; 2: A sends in one thread, B receives in another")
        ->check(CLI::Range(1, 2));
    app.add_flag("--json", json, "print JSON instead of a table");
    CLI11_PARSE(app, argc, argv);

    nlohmann::json out = nlohmann::json::array();
    if (!json) {
        fmt::print(
            "two emulated NHIs, TX ring 1 -> RX ring 1, ring size {}, {} frames each, {} "
            "thread(s)\n",
            kRingSize, frames, threads);
        fmt::print("{:>6} {:>8} {:>6} {:>12} {:>10} {:>10} {:>14}\n", "fabric", "bytes", "batch",
                   "frames/s", "ns/frame", "Gbit/s", "tx-doorbell/fr");
    }
    bool all_ok = true;
    for (const std::string& fab : fabrics) {
        for (std::size_t s : sizes) {
            for (unsigned b : batches) {
                const Figures f = run(fab, s, b, frames, threads);
                const double fps = static_cast<double>(f.frames) / f.seconds;
                const double ns = f.seconds * 1e9 / static_cast<double>(f.frames);
                const double gbps = fps * static_cast<double>(s) * 8 / 1e9;
                all_ok = all_ok && f.verified;
                if (json) {
                    out.push_back({{"fabric", f.fabric},
                                   {"threads", threads},
                                   {"bytes", s},
                                   {"batch", b},
                                   {"frames", f.frames},
                                   {"frames_per_s", fps},
                                   {"ns_per_frame", ns},
                                   {"gbit_per_s", gbps},
                                   {"tx_doorbells_per_frame", f.doorbells_per_frame},
                                   {"verified", f.verified}});
                } else {
                    fmt::print("{:>6} {:>8} {:>6} {:>12.0f} {:>10.1f} {:>10.2f} {:>14.3f}{}\n", fab,
                               s, b, fps, ns, gbps, f.doorbells_per_frame,
                               f.verified ? "" : "  NOT VERIFIED");
                }
            }
        }
    }
    if (json) {
        fmt::print("{}\n", out.dump(2));
    }
    return all_ok ? 0 : 1;
}
