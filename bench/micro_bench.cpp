// SPDX-License-Identifier: Apache-2.0
// tbv-bench-micro: Google Benchmark micro benchmarks of the hot-path pieces, one call at a time,
// single thread. This file: the transport (frame encode/decode, the reliability engine, rail
// credits) and main(); micro_bench_verbs.cpp: keys, MR checks, CQ and CRC-32C.
//
// Rules every benchmark here keeps: all set-up (create(), buffers, registrations) happens before
// the timed loop, and nothing in the loop allocates (the APIs under test promise that too); the
// reliability engine gets a synthetic clock (a TimePoint advanced by hand) so that no clock read
// is timed; results go through benchmark::DoNotOptimize and written buffers are followed by
// benchmark::ClobberMemory; each benchmark reports items (frames, calls) and, where bytes flow,
// bytes per second. Results: docs/benchmarks.md "Micro benchmarks (tbv-bench-micro)".
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include <benchmark/benchmark.h>

#include "transport/reliability.hpp"
#include "transport/wire.hpp"

namespace {

namespace wire = tbv::transport::wire;
using tbv::transport::Control;
using tbv::transport::CreditGate;
using tbv::transport::CreditGrant;
using tbv::transport::Receiver;
using tbv::transport::ReceiverConfig;
using tbv::transport::RxFrameInfo;
using tbv::transport::RxVerdict;
using tbv::transport::Sender;
using tbv::transport::SenderConfig;
using tbv::transport::TimePoint;
using tbv::transport::TxFrame;

// ---- wire: encode_frame / decode ----------------------------------------------------------------

/// SEND ONLY with 64 bytes: a small two-sided message.
wire::Header send_only_64() {
    wire::Header h;
    h.opcode = wire::Opcode::send_only;
    h.rail_seq = 7;
    h.dest_qpn = 0x000012;
    h.src_qpn = 0x000034;
    h.psn = 1000;
    h.msg_psn = 1000;
    h.msg_len = 64;
    h.payload_len = 64;
    h.credit = 200;
    return h;
}

/// RDMA WRITE MIDDLE with a full segment (wire::kSegment bytes, 4044 since SETH; 4048 before):
/// frame 5 of a 32-frame (~126 KiB) write, the bulk of any large transfer.
wire::Header write_middle_segment() {
    wire::Header h;
    h.opcode = wire::Opcode::write_middle;
    h.rail_seq = 7;
    h.dest_qpn = 0x000012;
    h.src_qpn = 0x000034;
    h.msg_psn = 1000;
    h.psn = 1005;
    h.msg_offset = static_cast<std::uint32_t>(5 * wire::kSegment);
    h.msg_len = static_cast<std::uint32_t>(32 * wire::kSegment);
    h.payload_len = static_cast<std::uint16_t>(wire::kSegment);
    h.credit = 200;
    h.reth = {0x7f00'1234'0000ull, 0x5a5a1234u};
    return h;
}

/// ACK (cumulative, coalesced): no payload.
wire::Header ack() {
    wire::Header h;
    h.opcode = wire::Opcode::ack;
    h.rail_seq = 9;
    h.dest_qpn = 0x000034;
    h.src_qpn = 0x000012;
    h.psn = 1031;
    h.credit = 300;
    h.aeth = {0, 17};
    return h;
}

void wire_encode_frame(benchmark::State& state, wire::Header h) {
    alignas(64) std::array<std::byte, wire::kMaxFrame> payload{};
    alignas(64) std::array<std::byte, wire::kMaxFrame> out{};
    for (std::size_t i = 0; i < payload.size(); ++i) {
        payload[i] = static_cast<std::byte>(i * 7u);
    }
    const auto body = std::span<const std::byte>(payload).first(h.payload_len);
    const std::size_t len = wire::encode_frame(h, body, out);
    if (len == 0) {
        state.SkipWithError("encode_frame rejected the header");
        return;
    }
    for (auto _ : state) {
        std::size_t n = wire::encode_frame(h, body, out);
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(len));
    state.counters["frame_bytes"] = static_cast<double>(len);
    state.counters["payload_bytes"] = h.payload_len;
}

void wire_decode(benchmark::State& state, wire::Header h) {
    alignas(64) std::array<std::byte, wire::kMaxFrame> payload{};
    alignas(64) std::array<std::byte, wire::kMaxFrame> buf{};
    const auto body = std::span<const std::byte>(payload).first(h.payload_len);
    const std::size_t len = wire::encode_frame(h, body, buf);
    const auto frame = std::span<const std::byte>(buf).first(len);
    wire::Frame f;
    if (len == 0 || wire::decode(frame, f) != wire::Status::ok) {
        state.SkipWithError("frame does not round-trip");
        return;
    }
    for (auto _ : state) {
        wire::Status s = wire::decode(frame, f);
        benchmark::DoNotOptimize(s);
        benchmark::DoNotOptimize(f);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(len));
    state.counters["frame_bytes"] = static_cast<double>(len);
    state.counters["payload_bytes"] = h.payload_len;
}

BENCHMARK_CAPTURE(wire_encode_frame, send_only_64, send_only_64());
BENCHMARK_CAPTURE(wire_encode_frame, write_middle_segment, write_middle_segment());
BENCHMARK_CAPTURE(wire_encode_frame, ack, ack());
BENCHMARK_CAPTURE(wire_decode, send_only_64, send_only_64());
BENCHMARK_CAPTURE(wire_decode, write_middle_segment, write_middle_segment());
BENCHMARK_CAPTURE(wire_decode, ack, ack());

// ---- reliability: Sender, Receiver --------------------------------------------------------------

constexpr std::uint32_t kBatch = 32;  ///< frames per round: one TX batch, one cumulative ACK
constexpr auto kRtt = std::chrono::microseconds(2);

/// A fixed start for the synthetic clock (not 0, so no timer sits at the epoch).
TimePoint bench_epoch() {
    return TimePoint{} + std::chrono::hours(1);
}

/// Per round: push 32 frames, take them with next_tx, one cumulative ACK for the last PSN, pop
/// the completed messages. range(0) is frames per message: 1 (32 small sends) or 32 (one write
/// of 32 segments).
void sender_round_trip(benchmark::State& state) {
    const auto per_msg = static_cast<std::uint32_t>(state.range(0));
    SenderConfig cfg;
    cfg.initial_psn = 0xFFFF00;  // wraps the 24-bit PSN space early in the run
    auto created = Sender::create(cfg);
    if (!created) {
        state.SkipWithError("Sender::create failed");
        return;
    }
    Sender& s = **created;
    TimePoint now = bench_epoch();
    std::uint64_t cookie = 0;
    std::uint64_t msg = 0;
    std::uint64_t completed = 0;
    bool stalled = false;
    for (auto _ : state) {
        std::uint32_t last_psn = 0;
        for (std::uint32_t i = 0; i < kBatch; ++i) {
            const bool last = (i + 1) % per_msg == 0;
            stalled |= s.push(cookie++, msg, last, 1, &last_psn) != Sender::Push::ok;
            msg += last ? 1 : 0;
        }
        TxFrame tx;
        for (std::uint32_t i = 0; i < kBatch; ++i) {
            stalled |= !s.next_tx(now, tx);
            benchmark::DoNotOptimize(tx);
        }
        now += kRtt;
        s.on_ack(last_psn, now);
        std::uint64_t id = 0;
        while (s.pop_completion(id)) {
            benchmark::DoNotOptimize(id);
            ++completed;
        }
    }
    if (stalled || !s.idle() || completed != msg) {
        state.SkipWithError("sender did not complete every frame");
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
    state.counters["frames_per_msg"] = per_msg;
}
BENCHMARK(sender_round_trip)->Arg(1)->Arg(32);

/// Per round: 32 in-order frames into on_frame, then take_control (one coalesced ACK: the
/// default ack_every is 16) and pop the delivered messages. range(0) as for the sender.
void receiver_in_order(benchmark::State& state) {
    const auto per_msg = static_cast<std::uint32_t>(state.range(0));
    ReceiverConfig cfg;
    cfg.initial_psn = 0xFFFF00;
    auto created = Receiver::create(cfg);
    if (!created) {
        state.SkipWithError("Receiver::create failed");
        return;
    }
    Receiver& r = **created;
    TimePoint now = bench_epoch();
    std::uint32_t psn = cfg.initial_psn;
    std::uint64_t acks = 0;
    bool rejected = false;
    for (auto _ : state) {
        for (std::uint32_t i = 0; i < kBatch; ++i) {
            RxFrameInfo f;
            f.psn = psn;
            f.last_of_message = (i + 1) % per_msg == 0;
            rejected |= r.on_frame(f, now) != RxVerdict::accept;
            psn = tbv::transport::psn::add(psn, 1);
        }
        Control c;
        while (r.take_control(c, now)) {
            benchmark::DoNotOptimize(c);
            ++acks;
        }
        std::uint32_t last = 0;
        while (r.pop_delivered(last)) {
            benchmark::DoNotOptimize(last);
        }
        now += kRtt;
    }
    if (rejected || r.expected_psn() != psn) {
        state.SkipWithError("receiver did not accept every frame in order");
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
    state.counters["acks_per_round"] =
        benchmark::Counter(static_cast<double>(acks), benchmark::Counter::kAvgIterations);
    state.counters["frames_per_msg"] = per_msg;
}
BENCHMARK(receiver_in_order)->Arg(1)->Arg(32);

// ---- rail credits -------------------------------------------------------------------------------

constexpr std::uint32_t kPosted = 256;          ///< RX descriptors on the rail's ring
constexpr std::uint32_t kReserve = 8;           ///< of them kept for control frames
constexpr std::uint32_t kUpdateThreshold = 16;  ///< credits the peer may lag before an update

/// Per frame, both ends of one rail: the sender's gate check and sequence number, the receiver's
/// grant (frame arrives, descriptor re-posted), and a credit update back through the gate when
/// update_due says so.
void credit_gate_grant(benchmark::State& state) {
    CreditGrant grant(kPosted, kReserve);
    CreditGate gate(CreditGrant::initial_limit(kPosted, kReserve), kReserve);
    std::uint64_t blocked = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(gate);
        benchmark::DoNotOptimize(grant);
        if (!gate.can_send_data()) {
            ++blocked;
            continue;
        }
        const std::uint16_t seq = gate.on_sent();
        grant.on_frame(seq);
        grant.on_reposted(1);
        if (grant.update_due(kUpdateThreshold)) {
            gate.on_credit(grant.credit_field());
        }
    }
    if (blocked != 0) {
        state.SkipWithError("credit gate ran dry");
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(credit_gate_grant);

}  // namespace

BENCHMARK_MAIN();
