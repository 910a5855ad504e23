// SPDX-License-Identifier: Apache-2.0
// transport: the reliability engine and rail credits, unit cases and a deterministic lossy
// two-rail simulation (seeded RNG, manual clock, real frame encode/decode on the "wire").
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <vector>

#include "catch.hpp"
#include "transport/psn.hpp"
#include "transport/reliability.hpp"
#include "transport/wire.hpp"

using namespace tbv::transport;
using namespace std::chrono_literals;

namespace {

TimePoint t0() {
    return TimePoint{} + 1s;
}

std::unique_ptr<Sender> make_sender(SenderConfig c) {
    auto r = Sender::create(c);
    REQUIRE(r);
    return std::move(*r);
}
std::unique_ptr<Receiver> make_receiver(ReceiverConfig c) {
    auto r = Receiver::create(c);
    REQUIRE(r);
    return std::move(*r);
}

}  // namespace

TEST_CASE("IB timer encodings", "[unit][transport][reliability]") {
    CHECK(rnr_timer(0) == 655360us);
    CHECK(rnr_timer(1) == 10us);
    CHECK(rnr_timer(14) == 1280us);
    CHECK(rnr_timer(31) == 491520us);
    for (unsigned c = 2; c < 32; ++c) {
        CHECK(rnr_timer(static_cast<std::uint8_t>(c)) >
              rnr_timer(static_cast<std::uint8_t>(c - 1)));
    }
    CHECK(ib_timeout(0) == kInfinite);
    CHECK(ib_timeout(1) == 8192ns);
    CHECK(ib_timeout(14) == std::chrono::nanoseconds(67108864));
}

TEST_CASE("config validation", "[unit][transport][reliability]") {
    CHECK_FALSE(Sender::create(SenderConfig{.window = 0}));
    CHECK_FALSE(Sender::create(SenderConfig{.initial_psn = 1u << 24}));
    CHECK_FALSE(Sender::create(SenderConfig{.retry_cnt = 8}));
    CHECK_FALSE(Receiver::create(ReceiverConfig{.window = 100}));
    CHECK(Receiver::create(ReceiverConfig{.window = 128}));
}

TEST_CASE("sender: PSNs, window, cumulative ACK and in-order completions across the wrap",
          "[unit][transport][reliability]") {
    auto s = make_sender({.initial_psn = psn::kMask - 1, .window = 4});
    std::uint32_t p = 0;
    REQUIRE(s->push(10, 1, false, 1, &p) == Sender::Push::ok);
    CHECK(p == psn::kMask - 1);
    REQUIRE(s->push(11, 1, true, 1, &p) == Sender::Push::ok);
    CHECK(p == psn::kMask);
    REQUIRE(s->push(12, 2, true, 1, &p) == Sender::Push::ok);
    CHECK(p == 0);
    REQUIRE(s->push(13, 3, true, 3, &p) == Sender::Push::ok);  // a READ spanning 3 PSNs
    CHECK(s->push(14, 4, true, 1) == Sender::Push::window_full);
    CHECK(s->next_psn() == 4);
    TxFrame f;
    auto now = t0();
    for (int i = 0; i < 4; ++i) {
        REQUIRE(s->next_tx(now, f));
        CHECK_FALSE(f.retransmit);
    }
    CHECK(f.ack_request);  // queue drained
    CHECK_FALSE(s->next_tx(now, f));
    std::uint64_t id = 0;
    CHECK_FALSE(s->pop_completion(id));
    s->on_ack(psn::kMask - 1, now + 5us);  // first frame only: message 1 not complete
    CHECK_FALSE(s->pop_completion(id));
    s->on_ack(2, now + 6us);  // through the first PSN of the READ: READ not complete
    REQUIRE(s->pop_completion(id));
    CHECK(id == 1);
    REQUIRE(s->pop_completion(id));
    CHECK(id == 2);
    CHECK_FALSE(s->pop_completion(id));
    CHECK(s->unacked() == 1);
    s->on_ack(100, now);  // beyond anything sent: ignored
    CHECK(s->counters().bogus_acks == 1);
    s->on_ack(3, now + 7us);
    REQUIRE(s->pop_completion(id));
    CHECK(id == 3);
    CHECK(s->idle());
    CHECK(s->counters().rtt_samples == 3);
    CHECK(s->srtt() > 0ns);
}

TEST_CASE("sender: NAK goes back to the NAK'd PSN, not the whole message",
          "[unit][transport][reliability]") {
    auto s = make_sender({.initial_psn = 100, .window = 64});
    for (std::uint64_t i = 0; i < 10; ++i) {
        REQUIRE(s->push(i, 7, i == 9, 1) == Sender::Push::ok);
    }
    TxFrame f;
    auto now = t0();
    while (s->next_tx(now, f)) {
    }
    s->on_nak(104, now + 10us);
    CHECK(s->unacked() == 6);
    for (std::uint32_t want = 104; want < 110; ++want) {
        REQUIRE(s->next_tx(now + 11us, f));
        CHECK(f.psn == want);
        CHECK(f.retransmit);
    }
    CHECK_FALSE(s->next_tx(now, f));
    s->on_nak(104, now + 12us);  // duplicate NAK within the RTO: no second go-back
    CHECK_FALSE(s->next_tx(now + 12us, f));
    s->on_ack(109, now + 20us);
    std::uint64_t id = 0;
    REQUIRE(s->pop_completion(id));
    CHECK(id == 7);
    CHECK(s->counters().retransmits == 6);
    // Karn: retransmitted frames gave no sample; the four acked by the NAK had one... only the
    // newest of a batch is sampled.
    CHECK(s->counters().rtt_samples == 1);
}

TEST_CASE("sender: RTO from measured RTT, bounded by the IB timeout",
          "[unit][transport][reliability]") {
    // timeout 5 → 131 µs ceiling; a 10 µs RTT gives an RTO at the 50 µs floor.
    auto s = make_sender({.window = 8, .timeout = 5, .min_rto = 50us});
    CHECK(s->rto() == ib_timeout(5));  // initial 1 ms clamped to the ceiling
    TxFrame f;
    auto now = t0();
    for (int i = 0; i < 8; ++i) {
        REQUIRE(s->push(0, 0, true, 1) == Sender::Push::ok);
        REQUIRE(s->next_tx(now, f));
        now += 10us;
        s->on_ack(f.psn, now);
    }
    CHECK(s->srtt() == 10us);
    CHECK(s->rto() == 50us);
    // Large RTT samples are clamped to the IB timeout.
    auto s2 = make_sender({.window = 8, .timeout = 5, .min_rto = 50us});
    REQUIRE(s2->push(0, 0, true, 1) == Sender::Push::ok);
    REQUIRE(s2->next_tx(now, f));
    s2->on_ack(f.psn, now + 1ms);
    CHECK(s2->rto() == ib_timeout(5));
}

TEST_CASE("sender: retry_cnt exhaustion → retry exceeded", "[unit][transport][reliability]") {
    for (std::uint8_t retry : {0, 3, 7}) {
        auto s = make_sender({.window = 8, .timeout = 4, .retry_cnt = retry});
        REQUIRE(s->push(0, 1, true, 1) == Sender::Push::ok);
        auto now = t0();
        TxFrame f;
        int sends = 0;
        while (s->status() == SenderStatus::ok && sends < 100) {
            if (s->next_tx(now, f)) {
                ++sends;
            }
            now = s->next_deadline();
            s->poll(now);
        }
        CHECK(s->status() == SenderStatus::retry_exceeded);
        CHECK(sends == retry + 1);
        CHECK(s->push(0, 2, true, 1) == Sender::Push::failed);
    }
    // timeout 0 = infinite: never gives up.
    auto s = make_sender({.window = 8, .timeout = 0, .retry_cnt = 0});
    REQUIRE(s->push(0, 1, true, 1) == Sender::Push::ok);
    auto now = t0();
    TxFrame f;
    for (int i = 0; i < 50; ++i) {
        (void)s->next_tx(now, f);
        now = s->next_deadline();
        s->poll(now);
    }
    CHECK(s->status() == SenderStatus::ok);
    CHECK(s->counters().timeouts == 50);
}

TEST_CASE("sender/receiver: RNR with rnr_retry 7 keeps going, with 0 fails",
          "[unit][transport][reliability]") {
    for (std::uint8_t rnr_retry : {0, 2, 7}) {
        auto s = make_sender({.window = 8, .timeout = 10, .rnr_retry = rnr_retry});
        auto r = make_receiver({.window = 64, .min_rnr_timer = 3});
        REQUIRE(s->push(0, 1, true, 1) == Sender::Push::ok);
        auto now = t0();
        int rnrs = 0;
        bool buffer_posted = false;
        for (int round = 0; round < 40 && s->status() == SenderStatus::ok; ++round) {
            buffer_posted = round == 20;  // the application posts a receive late
            TxFrame f;
            if (s->next_tx(now, f)) {
                const RxVerdict v = r->on_frame({.psn = f.psn,
                                                 .last_of_message = true,
                                                 .ack_request = f.ack_request,
                                                 .no_rx_buffer = !buffer_posted},
                                                now);
                CHECK((v == RxVerdict::rnr || v == RxVerdict::accept));
            }
            Control c;
            if (r->take_control(c, now)) {
                if (c.kind == ControlKind::rnr_nak) {
                    ++rnrs;
                    CHECK(c.syndrome == 3);
                    s->on_rnr_nak(c.psn, c.syndrome, now);
                    TxFrame g;
                    CHECK_FALSE(s->next_tx(now + 20us, g));  // 30 µs wait not over
                } else if (c.kind == ControlKind::ack) {
                    s->on_ack(c.psn, now);
                }
            }
            now += 31us;
            s->poll(now);
        }
        std::uint64_t id = 0;
        if (rnr_retry == 7) {
            CHECK(s->status() == SenderStatus::ok);
            CHECK(rnrs == 20);
            REQUIRE(s->pop_completion(id));
            CHECK(id == 1);
        } else {
            CHECK(s->status() == SenderStatus::rnr_retry_exceeded);
            CHECK(rnrs == rnr_retry + 1);
        }
    }
}

TEST_CASE("receiver: in order, duplicates, reorder window, one NAK per gap",
          "[unit][transport][reliability]") {
    auto r = make_receiver({.initial_psn = psn::kMask - 2,
                            .window = 64,
                            .ack_every = 4,
                            .nak_after = 3,
                            .reorder_timeout = 100us});
    auto now = t0();
    auto in = [&](std::uint32_t p, bool last = false, bool replay = false) {
        return r->on_frame({.psn = p & psn::kMask, .last_of_message = last, .replayable = replay},
                           now);
    };
    Control c;
    CHECK(in(psn::kMask - 2) == RxVerdict::accept);
    CHECK(in(psn::kMask - 1, true) == RxVerdict::accept);
    CHECK_FALSE(r->take_control(c, now));  // 2 < ack_every, timer not expired
    now += 25us;
    REQUIRE(r->take_control(c, now));  // ack delay
    CHECK(c.kind == ControlKind::ack);
    CHECK(c.psn == psn::kMask - 1);
    CHECK(c.msn == 1);
    std::uint32_t last = 0;
    REQUIRE(r->pop_delivered(last));
    CHECK(last == psn::kMask - 1);
    // Duplicate of an old PSN: re-ACK; a READ duplicate asks for replay.
    CHECK(in(psn::kMask - 2) == RxVerdict::duplicate);
    CHECK(in(psn::kMask - 1, true, true) == RxVerdict::replay);
    REQUIRE(r->take_control(c, now));
    CHECK(c.kind == ControlKind::ack);
    CHECK_FALSE(r->take_control(c, now));
    // Expected is kMask; 0 and 1 arrive first (other rail): accepted, no NAK yet.
    CHECK(in(0) == RxVerdict::accept);
    CHECK(in(1) == RxVerdict::accept);
    CHECK(in(1) == RxVerdict::duplicate);
    CHECK_FALSE(r->take_control(c, now));
    CHECK(in(psn::kMask) == RxVerdict::accept);  // the hole fills: expected jumps to 2
    CHECK(r->expected_psn() == 2);
    // A real loss: 2 missing, 3..5 arrive → one NAK for 2, not three.
    CHECK(in(3) == RxVerdict::accept);
    CHECK(in(4) == RxVerdict::accept);
    CHECK(in(5) == RxVerdict::accept);
    REQUIRE(r->take_control(c, now));
    CHECK(c.kind == ControlKind::nak);
    CHECK(c.psn == 2);
    CHECK(in(6) == RxVerdict::accept);
    CHECK(in(7) == RxVerdict::accept);
    CHECK_FALSE(r->take_control(c, now));
    CHECK(r->counters().naks == 1);
    CHECK(in(2, true) == RxVerdict::accept);  // retransmission: 2..7 delivered
    CHECK(r->expected_psn() == 8);
    // Beyond the window: dropped, NAK'd once.
    CHECK(in(8 + 64) == RxVerdict::drop);
    REQUIRE(r->take_control(c, now));
    CHECK(c.kind == ControlKind::nak);
    CHECK(c.psn == 8);
    // A hole with too few frames behind it is NAK'd by the reorder timer.
    CHECK(in(8) == RxVerdict::accept);
    CHECK(in(10) == RxVerdict::accept);
    (void)r->take_control(c, now);  // drain the ACK for 8 if any
    CHECK_FALSE((r->take_control(c, now) && c.kind == ControlKind::nak));
    now += 101us;
    r->poll(now);
    REQUIRE(r->take_control(c, now));
    CHECK(c.kind == ControlKind::nak);
    CHECK(c.psn == 9);
}

TEST_CASE("credits: gate and grant, losses do not leak credits", "[unit][transport][credits]") {
    CreditGrant grant(16, 2);
    CreditGate gate(CreditGrant::initial_limit(16, 2), 2);
    CHECK(gate.data_credits() == 14);
    std::vector<std::uint16_t> seqs;
    while (gate.can_send_data()) {
        seqs.push_back(gate.on_sent());
    }
    CHECK(seqs.size() == 14);
    CHECK(gate.can_send_control());
    seqs.push_back(gate.on_sent());
    seqs.push_back(gate.on_sent());
    CHECK_FALSE(gate.can_send_control());
    // All 16 arrive except #3 (lost on the wire); the ring had 16 free: one stays free.
    for (std::size_t i = 0; i < seqs.size(); ++i) {
        if (i != 3) {
            grant.on_frame(seqs[i]);
        }
    }
    CHECK(grant.free() == 1);
    grant.on_reposted(15);
    gate.on_credit(grant.credit_field());
    // next = 16, free = 16, reserve 2 → limit 30: 14 new data frames, the lost one forgotten.
    CHECK(gate.limit() == 30);
    CHECK(gate.data_credits() == 14);
    gate.on_credit(static_cast<std::uint16_t>(20));  // stale value: ignored
    CHECK(gate.limit() == 30);
}

TEST_CASE("credits: a receive-only peer keeps the sender going with CREDIT updates alone",
          "[unit][transport][credits]") {
    // One rail, UD style: A only sends data, B only receives and answers with CREDIT frames when
    // update_due() says so (Fabric::flush). B consumes frames in bursts, as a process that polls
    // now and then does; every credit it returns must reach A, and A must never overrun B's ring.
    constexpr std::uint32_t kPosted = 255;
    constexpr std::uint32_t kRes = 16;
    CreditGate gate_a(CreditGrant::initial_limit(kPosted, kRes), kRes);  // A's view of B's ring
    CreditGrant grant_b(kPosted, kRes);
    const std::uint32_t threshold = kPosted / 4;
    std::deque<std::uint16_t> ring_b;  // frames waiting in B's RX ring
    std::uint64_t sent = 0, consumed = 0, credit_frames = 0;
    std::mt19937_64 rng(7);
    while (consumed < 100'000) {
        while (gate_a.can_send_data() && sent < 100'000) {
            ring_b.push_back(gate_a.on_sent());
            ++sent;
        }
        REQUIRE(ring_b.size() <= kPosted);  // never more than the descriptors posted
        // B polls: takes up to a batch, re-posts the buffers, maybe sends a CREDIT frame.
        const auto batch = static_cast<std::size_t>(rng() % 64);
        std::uint32_t n = 0;
        for (; n < batch && !ring_b.empty(); ++n) {
            grant_b.on_frame(ring_b.front());
            ring_b.pop_front();
        }
        grant_b.on_reposted(n);
        consumed += n;
        if (grant_b.update_due(threshold)) {
            gate_a.on_credit(grant_b.credit_field());
            ++credit_frames;
        }
        if (n == 0 && ring_b.empty() && !gate_a.can_send_data() && sent < 100'000) {
            FAIL("deadlock: A has no credit while B's ring is empty");
        }
    }
    CHECK(sent == consumed);
    // About one CREDIT frame per quarter ring consumed, not one per frame.
    CHECK(credit_frames <= consumed / threshold + 1);
}

// ---- deterministic simulation ------------------------------------------------------------------

namespace {

struct Packet {
    int to = 0;  // 0 = requester A, 1 = responder B
    int rail = 0;
    std::vector<std::byte> bytes;
};

struct SimParams {
    std::uint64_t seed = 1;
    double drop = 0.01;
    double dup = 0.005;
    bool drop_all = false;
    std::uint32_t initial_psn = psn::kMask - 2000;
};

struct SimResult {
    std::vector<std::uint64_t> completed;
    std::vector<std::uint64_t> delivered_msgs;
    SenderStatus status = SenderStatus::ok;
    std::uint64_t ring_overflows = 0;
    std::uint64_t max_in_ring = 0;
    std::uint64_t frames = 0;
    std::uint64_t retransmits = 0;
    std::uint64_t naks = 0;
    std::uint64_t decode_errors = 0;
    bool wrapped = false;
};

constexpr int kRails = 2;
constexpr std::uint32_t kRing = 64;
constexpr std::uint32_t kReserve = 8;

// A sends `sizes` messages (SENDs, segmented at wire::kSegment) to B over two rails.
SimResult simulate(const std::vector<std::uint64_t>& sizes, const SimParams& prm) {
    std::mt19937_64 rng(prm.seed);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    SimResult res;

    auto sender = make_sender({.initial_psn = prm.initial_psn,
                               .window = 256,
                               .timeout = 8,  // ≈ 1 ms ceiling
                               .retry_cnt = 7,
                               .min_rto = 50us,
                               .initial_rto = 200us});
    auto receiver = make_receiver({.initial_psn = prm.initial_psn, .window = 512});

    // Per rail: A's gate into B's ring and B's grant; B's gate into A's ring and A's grant.
    std::vector<CreditGate> gate_ab, gate_ba;
    std::vector<CreditGrant> grant_b, grant_a;
    std::vector<std::uint32_t> b_consumed(kRails, 0);
    for (int r = 0; r < kRails; ++r) {
        gate_ab.emplace_back(CreditGrant::initial_limit(kRing, kReserve), kReserve);
        gate_ba.emplace_back(CreditGrant::initial_limit(kRing, kReserve), kReserve);
        grant_b.emplace_back(kRing, kReserve);
        grant_a.emplace_back(kRing, kReserve);
    }

    // Frames of every message: (msg id, offset, len).
    struct FrameDesc {
        std::uint64_t msg;
        std::uint32_t offset, len, msg_len, index, count;
    };
    std::vector<FrameDesc> frames;
    for (std::uint64_t m = 0; m < sizes.size(); ++m) {
        const auto len = static_cast<std::uint32_t>(sizes[m]);
        const std::uint32_t count =
            len == 0 ? 1 : static_cast<std::uint32_t>((len + wire::kSegment - 1) / wire::kSegment);
        for (std::uint32_t i = 0; i < count; ++i) {
            const std::uint32_t off = i * static_cast<std::uint32_t>(wire::kSegment);
            frames.push_back(
                {m, off, std::min<std::uint32_t>(len - off, wire::kSegment), len, i, count});
        }
    }
    std::vector<std::uint32_t> frame_psn(frames.size());
    std::vector<std::uint32_t> msg_first_psn(sizes.size());
    std::map<std::uint32_t, std::uint64_t> last_psn_to_msg;
    std::size_t next_frame = 0;

    std::multimap<TimePoint, Packet> wire_q;
    std::vector<TimePoint> rail_free(2 * kRails, t0());  // FIFO per rail per direction
    TimePoint now = t0();
    std::vector<std::byte> payload(wire::kSegment, std::byte{0x5A});
    std::vector<std::byte> buf(wire::kMaxFrame);
    int rr = 0;
    std::vector<TimePoint> last_probe(kRails, t0());

    auto transmit = [&](int to, int rail, const wire::Header& h, std::span<const std::byte> pl) {
        const std::size_t n = wire::encode_frame(h, pl, buf);
        REQUIRE(n != 0);
        Packet p{to, rail, std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<long>(n))};
        if (prm.drop_all || uni(rng) < prm.drop) {
            return;
        }
        // Rail 0: 2 µs; rail 1: 2-10 µs (frames of one QP overtake each other across rails).
        const auto lat =
            rail == 0 ? 2us : 2us + std::chrono::nanoseconds(static_cast<long>(uni(rng) * 8000));
        TimePoint& fifo = rail_free[static_cast<std::size_t>(to * kRails + rail)];
        fifo = std::max(fifo, now + lat);
        if (uni(rng) < prm.dup) {
            wire_q.emplace(fifo + 1us, p);
        }
        wire_q.emplace(fifo, std::move(p));
    };

    auto b_send_control = [&](const Control& c, int rail) {
        wire::Header h{};
        h.opcode = c.kind == ControlKind::ack   ? wire::Opcode::ack
                   : c.kind == ControlKind::nak ? wire::Opcode::nak
                                                : wire::Opcode::rnr_nak;
        h.dest_qpn = 0x11;
        h.src_qpn = 0x22;
        h.psn = c.psn;
        h.aeth = {c.syndrome, c.msn};
        h.rail_seq = gate_ba[static_cast<std::size_t>(rail)].on_sent();
        h.credit = grant_b[static_cast<std::size_t>(rail)].credit_field();
        transmit(0, rail, h, {});
    };

    const auto deadline = t0() + 20s;
    while (now < deadline) {
        if (res.completed.size() == sizes.size() || sender->status() != SenderStatus::ok) {
            break;
        }
        // A: queue frames into the window, then transmit while rail credits allow.
        while (next_frame < frames.size()) {
            const FrameDesc& fd = frames[next_frame];
            std::uint32_t p = 0;
            if (sender->push(next_frame, fd.msg, fd.index + 1 == fd.count, 1, &p) !=
                Sender::Push::ok) {
                break;
            }
            frame_psn[next_frame] = p;
            if (fd.index == 0) {
                msg_first_psn[fd.msg] = p;
            }
            if (fd.index + 1 == fd.count) {
                last_psn_to_msg[p] = fd.msg;
            }
            if (p == 0) {
                res.wrapped = true;
            }
            ++next_frame;
        }
        for (int tries = 0; tries < 64; ++tries) {
            const int rail = rr;
            auto& g = gate_ab[static_cast<std::size_t>(rail)];
            if (!g.can_send_data()) {
                const int other = (rail + 1) % kRails;
                if (!gate_ab[static_cast<std::size_t>(other)].can_send_data()) {
                    break;
                }
                rr = other;
                continue;
            }
            TxFrame tf;
            if (!sender->next_tx(now, tf)) {
                break;
            }
            const FrameDesc& fd = frames[tf.cookie];
            wire::Header h{};
            h.opcode = fd.count == 1              ? wire::Opcode::send_only
                       : fd.index == 0            ? wire::Opcode::send_first
                       : fd.index + 1 == fd.count ? wire::Opcode::send_last
                                                  : wire::Opcode::send_middle;
            h.flags = tf.ack_request ? wire::kFlagAckRequest : 0;
            h.dest_qpn = 0x22;
            h.src_qpn = 0x11;
            h.psn = tf.psn;
            h.msg_psn = msg_first_psn[fd.msg];
            h.msg_offset = fd.offset;
            h.msg_len = fd.msg_len;
            h.payload_len = static_cast<std::uint16_t>(fd.len);
            h.rail_seq = g.on_sent();
            h.credit = grant_a[static_cast<std::size_t>(rail)].credit_field();
            transmit(1, rail, h, std::span(payload).first(fd.len));
            ++res.frames;
            rr = (rr + 1) % kRails;
        }
        // A probes a rail whose credits are exhausted (lost frames are forgotten by the
        // receiver only when a later frame arrives).
        for (int rail = 0; rail < kRails; ++rail) {
            auto& g = gate_ab[static_cast<std::size_t>(rail)];
            if (!g.can_send_data() && g.can_send_control() &&
                now - last_probe[static_cast<std::size_t>(rail)] >= 100us) {
                wire::Header h{};
                h.opcode = wire::Opcode::credit;
                h.rail_seq = g.on_sent();
                h.credit = grant_a[static_cast<std::size_t>(rail)].credit_field();
                transmit(1, rail, h, {});
                last_probe[static_cast<std::size_t>(rail)] = now;
            }
        }

        // B: control frames out (on the rail with the most credit).
        for (;;) {
            int best = -1;
            for (int rail = 0; rail < kRails; ++rail) {
                if (gate_ba[static_cast<std::size_t>(rail)].can_send_control()) {
                    best = rail;
                }
            }
            if (best < 0) {
                break;
            }
            Control c;
            if (!receiver->take_control(c, now)) {
                break;
            }
            b_send_control(c, best);
        }
        // B: repost consumed descriptors in batches of 8 and tell A when it matters.
        for (int rail = 0; rail < kRails; ++rail) {
            const auto r = static_cast<std::size_t>(rail);
            if (b_consumed[r] >= 8) {
                grant_b[r].on_reposted(b_consumed[r]);
                b_consumed[r] = 0;
            }
            if (grant_b[r].update_due(16) && gate_ba[r].can_send_control()) {
                wire::Header h{};
                h.opcode = wire::Opcode::credit;
                h.rail_seq = gate_ba[r].on_sent();
                h.credit = grant_b[r].credit_field();
                transmit(0, rail, h, {});
            }
        }

        // Advance the clock to the next event: a frame arrival or a timer.
        TimePoint next = deadline;
        if (!wire_q.empty()) {
            next = std::min(next, wire_q.begin()->first);
        }
        next = std::min(next, sender->next_deadline());
        const TimePoint rd = receiver->next_deadline();
        next = std::min(next, std::max(rd, now + 1ns));
        next = std::min(next, now + 50us);  // B's lazy repost tick / A's probe tick
        if (next > now) {
            now = next;
        }
        if (now >= t0() + 1ms && (now - t0()) % 50us < 1us) {
            // periodic: B reposts leftovers
        }
        for (int rail = 0; rail < kRails; ++rail) {
            const auto r = static_cast<std::size_t>(rail);
            if (b_consumed[r] > 0 && wire_q.empty()) {
                grant_b[r].on_reposted(b_consumed[r]);
                b_consumed[r] = 0;
            }
        }
        sender->poll(now);
        receiver->poll(now);

        // Deliver every frame due by now.
        while (!wire_q.empty() && wire_q.begin()->first <= now) {
            Packet p = std::move(wire_q.begin()->second);
            wire_q.erase(wire_q.begin());
            const auto r = static_cast<std::size_t>(p.rail);
            wire::Frame f{};
            const wire::Status st = wire::decode(p.bytes, f);
            if (p.to == 1) {
                if (grant_b[r].free() == 0) {
                    ++res.ring_overflows;
                    continue;
                }
                grant_b[r].on_frame(f.header.rail_seq);
                ++b_consumed[r];
                res.max_in_ring =
                    std::max<std::uint64_t>(res.max_in_ring, kRing - grant_b[r].free());
                if (st != wire::Status::ok) {
                    ++res.decode_errors;
                    continue;
                }
                gate_ba[r].on_credit(f.header.credit);
                if (f.header.opcode == wire::Opcode::credit) {
                    continue;
                }
                const wire::OpcodeInfo oi =
                    wire::opcode_info(static_cast<std::uint8_t>(f.header.opcode));
                const bool last =
                    oi.position == wire::Position::last || oi.position == wire::Position::only;
                (void)receiver->on_frame(
                    {.psn = f.header.psn,
                     .last_of_message = last,
                     .ack_request = (f.header.flags & wire::kFlagAckRequest) != 0},
                    now);
                std::uint32_t lp = 0;
                while (receiver->pop_delivered(lp)) {
                    auto it = last_psn_to_msg.find(lp);
                    REQUIRE(it != last_psn_to_msg.end());
                    res.delivered_msgs.push_back(it->second);
                }
            } else {
                // A's ring: reposted at once.
                if (grant_a[r].free() == 0) {
                    ++res.ring_overflows;
                    continue;
                }
                grant_a[r].on_frame(f.header.rail_seq);
                grant_a[r].on_reposted(1);
                if (st != wire::Status::ok) {
                    ++res.decode_errors;
                    continue;
                }
                gate_ab[r].on_credit(f.header.credit);
                switch (f.header.opcode) {
                    case wire::Opcode::ack: sender->on_ack(f.header.psn, now); break;
                    case wire::Opcode::nak: sender->on_nak(f.header.psn, now); break;
                    case wire::Opcode::rnr_nak:
                        sender->on_rnr_nak(f.header.psn, f.header.aeth.syndrome, now);
                        break;
                    default: break;
                }
                std::uint64_t id = 0;
                while (sender->pop_completion(id)) {
                    res.completed.push_back(id);
                }
            }
        }
    }
    res.status = sender->status();
    res.retransmits = sender->counters().retransmits;
    res.naks = sender->counters().naks;
    return res;
}

}  // namespace

TEST_CASE("simulation: lossy, duplicating, reordering two-rail channel; 1 B ... 16 MiB",
          "[unit][transport][reliability][sim]") {
    std::vector<std::uint64_t> sizes = {1,    0,    64,    4047,     4048,
                                        4049, 8096, 65536, 1u << 20, 16u << 20};
    std::mt19937_64 rng(7);
    for (int i = 0; i < 300; ++i) {
        sizes.push_back(rng() % 20000);
    }
    sizes.push_back(1);
    for (std::uint64_t seed : {1u, 2u, 3u}) {
        INFO("seed " << seed);
        const SimResult r = simulate(sizes, {.seed = seed});
        CHECK(r.status == SenderStatus::ok);
        CHECK(r.ring_overflows == 0);
        CHECK(r.max_in_ring <= kRing);
        CHECK(r.decode_errors == 0);
        CHECK(r.wrapped);
        CHECK(r.retransmits > 0);
        CHECK(r.naks > 0);
        // Every message completes exactly once, in order, at both ends.
        REQUIRE(r.completed.size() == sizes.size());
        REQUIRE(r.delivered_msgs.size() == sizes.size());
        for (std::uint64_t i = 0; i < sizes.size(); ++i) {
            REQUIRE(r.completed[i] == i);
            REQUIRE(r.delivered_msgs[i] == i);
        }
    }
}

TEST_CASE("simulation: a channel that drops everything ends in retry exceeded",
          "[unit][transport][reliability][sim]") {
    const SimResult r = simulate({100, 200}, {.seed = 5, .drop_all = true});
    CHECK(r.status == SenderStatus::retry_exceeded);
    CHECK(r.completed.empty());
    CHECK(r.ring_overflows == 0);
}
