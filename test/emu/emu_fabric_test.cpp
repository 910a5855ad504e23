// SPDX-License-Identifier: Apache-2.0
// Two emulated NHIs joined by PairFabric: traffic both ways with ring wrap-around, fault injection,
// and two threads driving one NHI each (the TSan build runs this suite).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "emu/dma_copy.hpp"
#include "emu_fixture.hpp"

using namespace tbv::emu_test;

namespace {

/// A minimal driver for one TX and one RX ring of the same number, written against the registers
/// (not src/nhi): a buffer per descriptor slot, one empty slot kept in each ring (ref §3).
class Endpoint {
public:
    struct Received {
        std::vector<std::byte> data;
        unsigned sof = 0;
        unsigned eof = 0;
        bool crc_error = false;
        bool overrun = false;
    };

    Endpoint(EmuNhi& nhi, unsigned ring, unsigned count, bool raw = false)
        : nhi_(nhi),
          ring_(ring),
          count_(count),
          tx_descs_(make_region(nhi, count * sizeof(RingDesc), DmaAccess::read_write)),
          tx_bufs_(make_region(nhi, count * kMaxFrameSize, DmaAccess::read)),
          rx_descs_(make_region(nhi, count * sizeof(RingDesc), DmaAccess::read_write)),
          rx_bufs_(make_region(nhi, count * kMaxFrameSize, DmaAccess::write)) {
        start_tx(nhi, ring, tx_descs_.iova(), count, raw);
        start_rx(nhi, ring, rx_descs_.iova(), count,
                 RxStart{.buf_size = raw ? 256u : 0u, .raw = raw});
        for (unsigned i = 0; i + 1 < count; ++i) {
            post_rx(i);
        }
        rx_head_ = count - 1;
        rx_publish(nhi, ring, rx_head_);
    }

    /// Posts one frame and rings the doorbell; false if the TX ring is full.
    bool send(std::span<const std::byte> data, unsigned sof, unsigned eof) {
        reap_tx();
        const unsigned next = (tx_head_ + 1) % count_;
        if (next == tx_tail_) {
            return false;
        }
        std::byte* buf = tx_bufs_.data() + std::size_t{tx_head_} * kMaxFrameSize;
        std::memcpy(buf, data.data(), data.size());
        post_desc(desc_at(tx_descs_, tx_head_),
                  tx_bufs_.iova_at(std::size_t{tx_head_} * kMaxFrameSize),
                  tx_ctl(static_cast<std::uint32_t>(data.size()), sof, eof));
        tx_head_ = next;
        tbv::hw::io_wmb();
        tx_doorbell(nhi_, ring_, tx_head_);
        return true;
    }

    /// The next completed RX frame, if any; its slot is reposted at once.
    std::optional<Received> receive() {
        RingDesc& d = desc_at(rx_descs_, rx_tail_);
        const std::uint32_t ctl = load_ctl(d);
        if (DESC_DONE::get(ctl) == 0) {
            return std::nullopt;
        }
        tbv::hw::dma_rmb();
        Received r;
        const std::size_t len = desc_length_bytes(ctl);
        const std::byte* buf = rx_bufs_.data() + std::size_t{rx_tail_} * kMaxFrameSize;
        r.data.resize(len);
        tbv::emu::dma_copy(r.data.data(), buf, len);  // a copy TSan sees (dma_copy.hpp)
        r.sof = DESC_SOF_PDF::get(ctl);
        r.eof = DESC_EOF_PDF::get(ctl);
        r.crc_error = DESC_CRC_ERROR::get(ctl) != 0;
        r.overrun = DESC_BUFFER_OVERRUN::get(ctl) != 0;
        rx_tail_ = (rx_tail_ + 1) % count_;
        post_rx(rx_head_);
        rx_head_ = (rx_head_ + 1) % count_;
        tbv::hw::io_wmb();
        rx_publish(nhi_, ring_, rx_head_);
        return r;
    }

private:
    void post_rx(unsigned slot) {
        post_desc(desc_at(rx_descs_, slot), rx_bufs_.iova_at(std::size_t{slot} * kMaxFrameSize),
                  rx_ctl());
    }
    void reap_tx() {
        while (tx_tail_ != tx_head_ &&
               DESC_DONE::get(load_ctl(desc_at(tx_descs_, tx_tail_))) != 0) {
            tx_tail_ = (tx_tail_ + 1) % count_;
        }
    }

    EmuNhi& nhi_;
    unsigned ring_;
    unsigned count_;
    DmaRegion tx_descs_, tx_bufs_, rx_descs_, rx_bufs_;
    unsigned tx_head_ = 0, tx_tail_ = 0;
    unsigned rx_head_ = 0, rx_tail_ = 0;
};

/// Frame i: its index in the first 4 bytes, then a pattern derived from it.
std::vector<std::byte> numbered(unsigned i, std::size_t len) {
    auto v = pattern(len, i);
    std::memcpy(v.data(), &i, sizeof i);
    return v;
}

unsigned number_of(const std::vector<std::byte>& v) {
    unsigned i = 0;
    std::memcpy(&i, v.data(), sizeof i);
    return i;
}

unsigned bit_differences(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    unsigned n = 0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        n += static_cast<unsigned>(__builtin_popcount(std::to_integer<unsigned>(a[i] ^ b[i])));
    }
    return n;
}

}  // namespace

TEST_CASE("PairFabric carries frames both ways across many ring wraps", "[emu][fabric]") {
    EmuNhi a(cfg_with(3));
    NhiConfig cb = cfg_with(3);
    cb.name = "emu1";
    EmuNhi b(cb);
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    constexpr unsigned kRing = 8;
    Endpoint ea(a, 1, kRing);
    Endpoint eb(b, 1, kRing);

    constexpr unsigned kFrames = 12 * kRing;
    for (unsigned i = 0; i < kFrames; ++i) {
        const std::size_t len = 1 + (i * 397) % kMaxFrameSize;  // includes full 4096-byte frames
        const auto fa = numbered(i, std::max<std::size_t>(len, 4));
        REQUIRE(ea.send(fa, 1, 2));
        auto rb = eb.receive();
        REQUIRE(rb);
        CHECK(rb->data == fa);
        CHECK(rb->sof == 1);
        CHECK(rb->eof == 2);
        CHECK_FALSE(rb->crc_error);
        CHECK_FALSE(rb->overrun);

        const auto fb = numbered(1000 + i, 64 + i);
        REQUIRE(eb.send(fb, 3, 3));
        auto ra = ea.receive();
        REQUIRE(ra);
        CHECK(ra->data == fb);
    }
    CHECK(a.counters().tx_frames == kFrames);
    CHECK(b.counters().rx_frames == kFrames);
    CHECK(a.counters().rx_frames == kFrames);
    CHECK(fabric.stats().delivered == 2 * kFrames);
    CHECK(a.counters().rx_overflow_drops == 0);
}

TEST_CASE("PairFabric of one NHI with itself loops TX ring N to RX ring N", "[emu][fabric]") {
    EmuNhi a;
    REQUIRE(a.set_bus_master(true));
    PairFabric loop(a, a);
    Endpoint ep(a, 2, 4);
    for (unsigned i = 0; i < 10; ++i) {
        const auto f = numbered(i, 200 + i);
        REQUIRE(ep.send(f, 0, 0));
        auto r = ep.receive();
        REQUIRE(r);
        CHECK(r->data == f);
    }
}

TEST_CASE("PairFabric attaches to both NHIs and detaches when destroyed", "[emu][fabric]") {
    EmuNhi a, b;
    {
        PairFabric f(a, b);
        CHECK(a.fabric() == &f);
        CHECK(b.fabric() == &f);
    }
    CHECK(a.fabric() == nullptr);
    CHECK(b.fabric() == nullptr);
}

TEST_CASE("corrupt_next flips a payload bit and sets CRC_ERROR in frame mode (ref §12.5)",
          "[emu][fabric][faults]") {
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    Endpoint ea(a, 1, 8);
    Endpoint eb(b, 1, 8);
    fabric.corrupt_next(1);
    const auto f0 = numbered(0, 1000);
    const auto f1 = numbered(1, 1000);
    REQUIRE(ea.send(f0, 0, 0));
    REQUIRE(ea.send(f1, 0, 0));
    auto r0 = eb.receive();
    auto r1 = eb.receive();
    REQUIRE(r0);
    REQUIRE(r1);
    CHECK(r0->crc_error);
    CHECK(bit_differences(r0->data, f0) == 1);
    CHECK_FALSE(r1->crc_error);
    CHECK(r1->data == f1);
    CHECK(b.counters().rx_crc_errors == 1);
    CHECK(fabric.stats().corrupted == 1);
    // The sender's memory is never touched by the corruption.
    CHECK(f0 == numbered(0, 1000));
}

TEST_CASE("corrupt_next in raw mode: bytes change, software's CRC must catch it",
          "[emu][fabric][faults][raw]") {
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    Endpoint ea(a, 0, 8, /*raw=*/true);
    Endpoint eb(b, 0, 8, /*raw=*/true);
    fabric.corrupt_next(1);
    const auto pkt = numbered(7, 64);
    REQUIRE(ea.send(pkt, 4, 4));
    auto r = eb.receive();
    REQUIRE(r);
    CHECK_FALSE(r->crc_error);  // no CRC_ERROR bit in raw mode (ref §3)
    CHECK(bit_differences(r->data, pkt) == 1);
    CHECK(r->sof == 0);
    CHECK(r->eof == 4);
}

TEST_CASE("drop_next loses frames; the ring keeps going", "[emu][fabric][faults]") {
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    Endpoint ea(a, 2, 8);
    Endpoint eb(b, 2, 8);
    fabric.drop_next(2);
    for (unsigned i = 0; i < 3; ++i) {
        const auto f = numbered(i, 100);
        REQUIRE(ea.send(f, 0, 0));
    }
    auto r = eb.receive();
    REQUIRE(r);
    CHECK(number_of(r->data) == 2);
    CHECK_FALSE(eb.receive());
    CHECK(fabric.stats().dropped == 2);
    CHECK(a.counters().tx_frames == 3);  // the sender completed all three
}

TEST_CASE("frames to a ring the peer has not started are refused", "[emu][fabric]") {
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    Endpoint ea(a, 1, 8);
    const auto f = numbered(0, 100);
    REQUIRE(ea.send(f, 0, 0));
    CHECK(fabric.stats().refused == 1);
    CHECK(b.counters().rx_disabled_drops == 1);
}

TEST_CASE("one thread sends, another receives: data is visible once DONE is",
          "[emu][fabric][threads]") {
    // One frame in flight at a time: each frame is written after the receiver's last register
    // access, so the receiver's only ordering with the sender is the ctl word's release/acquire
    // (the credit runs the other way). Under TSan this pins the model's write-back order: a
    // relaxed DONE store makes the data read below a reported race.
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    constexpr unsigned kFrames = 3000;
    constexpr unsigned kRing = 16;
    Endpoint ea(a, 1, kRing);
    Endpoint eb(b, 1, kRing);
    std::atomic<unsigned> consumed{0};  // receiver → sender credit

    std::thread sender([&] {
        for (unsigned i = 0; i < kFrames;) {
            if (i != consumed.load(std::memory_order_acquire)) {
                std::this_thread::yield();
                continue;
            }
            const auto f = numbered(i, 16 + i % 4000);
            if (ea.send(f, 0, 0)) {
                ++i;
            }
        }
    });
    unsigned got = 0;
    bool intact = true;
    while (got < kFrames) {
        if (auto r = eb.receive()) {
            intact =
                intact && number_of(r->data) == got && r->data == numbered(got, 16 + got % 4000);
            ++got;
            consumed.store(got, std::memory_order_release);
        } else {
            std::this_thread::yield();
        }
    }
    sender.join();
    CHECK(intact);
    CHECK(b.counters().rx_overflow_drops == 0);
    CHECK(b.counters().rx_frames == kFrames);
}

TEST_CASE("two threads drive one NHI each, both directions at once", "[emu][fabric][threads]") {
    EmuNhi a, b;
    REQUIRE(a.set_bus_master(true));
    REQUIRE(b.set_bus_master(true));
    PairFabric fabric(a, b);
    constexpr unsigned kFrames = 3000;
    constexpr unsigned kRing = 16;

    struct Side {
        EmuNhi* nhi;
        std::unique_ptr<Endpoint> ep;
        std::atomic<bool> done_sending{false};
        unsigned received = 0;
        bool in_order = true;
        bool intact = true;
    };
    Side sa{&a, std::make_unique<Endpoint>(a, 1, kRing)};
    Side sb{&b, std::make_unique<Endpoint>(b, 1, kRing)};

    auto run = [&](Side& me, Side& peer) {
        unsigned sent = 0;
        int last = -1;
        auto drain = [&] {
            while (auto r = me.ep->receive()) {
                const unsigned n = number_of(r->data);
                me.in_order = me.in_order && static_cast<int>(n) > last;
                me.intact = me.intact && r->data == numbered(n, 16 + n % 2000);
                last = static_cast<int>(n);
                ++me.received;
            }
        };
        while (sent < kFrames || !peer.done_sending.load(std::memory_order_acquire)) {
            if (sent < kFrames) {
                const auto f = numbered(sent, 16 + sent % 2000);
                if (me.ep->send(f, 0, 0)) {
                    ++sent;
                    if (sent == kFrames) {
                        me.done_sending.store(true, std::memory_order_release);
                    }
                }
            }
            drain();
            std::this_thread::yield();
        }
        drain();  // everything the peer sent is in our ring or was dropped by now
    };
    std::thread ta([&] { run(sa, sb); });
    std::thread tb([&] { run(sb, sa); });
    ta.join();
    tb.join();

    // Every frame was either delivered or dropped for lack of a posted buffer (ref §4.5).
    CHECK(sa.received + a.counters().rx_overflow_drops == kFrames);
    CHECK(sb.received + b.counters().rx_overflow_drops == kFrames);
    CHECK(sa.received > 0);
    CHECK(sb.received > 0);
    CHECK(sa.in_order);
    CHECK(sb.in_order);
    CHECK(sa.intact);
    CHECK(sb.intact);
    CHECK(a.counters().dma_faults + b.counters().dma_faults == 0);
}
