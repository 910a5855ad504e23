// SPDX-License-Identifier: Apache-2.0
// tbv-bench-micro, second half: the verbs core's per-request checks (key lookup, MR access check
// on the emulated NHI), the completion queue, and CRC-32C. Same rules as micro_bench.cpp: set-up
// before the timed loop, no allocation inside it, results through DoNotOptimize.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include "emu/nhi.hpp"
#include "tbv/verbs_types.hpp"
#include "transport/wire.hpp"
#include "util/crc32c.hpp"
#include "verbs/cq.hpp"
#include "verbs/keys.hpp"
#include "verbs/mr.hpp"
#include "verbs/pd.hpp"

namespace {

using tbv::verbs::KeyKind;
using tbv::verbs::KeySecret;
using tbv::verbs::KeyTable;

/// A fixed key secret, so every run draws the same keys (getrandom is for real tables).
KeySecret fixed_secret() {
    std::mt19937_64 rng(42);
    KeySecret s;
    for (auto& k : s.round_keys) {
        k = rng();
    }
    return s;
}

constexpr std::uint32_t kLiveKeys = 4096;  ///< registered MRs in the key-table benchmarks

// ---- keys ---------------------------------------------------------------------------------------

/// R_Key lookups that hit: 4096 live MRs in a table of the default capacity (65536), looked up in
/// a shuffled order so consecutive lookups touch unrelated slots.
void key_lookup_hit(benchmark::State& state) {
    auto created = KeyTable::create(tbv::verbs::kDefaultLimits.max_mr, fixed_secret());
    if (!created) {
        state.SkipWithError("KeyTable::create failed");
        return;
    }
    KeyTable& table = *created;
    std::vector<std::uint32_t> keys;
    keys.reserve(kLiveKeys);
    for (std::uint32_t i = 0; i < kLiveKeys; ++i) {
        auto kp = table.allocate();
        if (!kp) {
            state.SkipWithError("KeyTable::allocate failed");
            return;
        }
        keys.push_back(kp->rkey);
    }
    std::shuffle(keys.begin(), keys.end(), std::mt19937(7));
    std::size_t i = 0;
    std::uint32_t misses = 0;
    for (auto _ : state) {
        const std::uint32_t slot = table.lookup(keys[i], KeyKind::remote);
        benchmark::DoNotOptimize(slot);
        misses += slot == KeyTable::kNoSlot ? 1u : 0u;
        i = (i + 1) % kLiveKeys;
    }
    if (misses != 0) {
        state.SkipWithError("a live key did not resolve");
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(key_lookup_hit);

/// R_Key lookups of random 32-bit values (a peer guessing): the same table, nearly all misses.
void key_lookup_miss(benchmark::State& state) {
    auto created = KeyTable::create(tbv::verbs::kDefaultLimits.max_mr, fixed_secret());
    if (!created) {
        state.SkipWithError("KeyTable::create failed");
        return;
    }
    KeyTable& table = *created;
    for (std::uint32_t i = 0; i < kLiveKeys; ++i) {
        if (!table.allocate()) {
            state.SkipWithError("KeyTable::allocate failed");
            return;
        }
    }
    std::vector<std::uint32_t> guesses(kLiveKeys);
    std::mt19937 rng(9);
    for (auto& g : guesses) {
        g = static_cast<std::uint32_t>(rng());
    }
    std::size_t i = 0;
    for (auto _ : state) {
        const std::uint32_t slot = table.lookup(guesses[i], KeyKind::remote);
        benchmark::DoNotOptimize(slot);
        i = (i + 1) % kLiveKeys;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(key_lookup_miss);

// ---- MR access check ----------------------------------------------------------------------------

constexpr std::size_t kMrs = 64;
constexpr std::size_t kMrLen = std::size_t{64} * 1024;
constexpr std::uint64_t kLen = tbv::transport::wire::kSegment;  ///< one RDMA WRITE frame
constexpr std::size_t kRequests = 1024;

/// MrTable::check_remote for an incoming RDMA WRITE segment (wire::kSegment bytes): 64 MRs of
/// 64 KiB each, registered on an emulated NHI (registration maps through its IOMMU model; the
/// check itself never touches the device). Requests cycle over the MRs and offsets inside each.
void mr_check_remote(benchmark::State& state) {
    struct Free {
        void operator()(std::byte* p) const noexcept { std::free(p); }
    };
    // Declared before the table: destroyed after it, once every MR is unmapped.
    std::unique_ptr<std::byte, Free> memory(
        static_cast<std::byte*>(std::aligned_alloc(4096, kMrs * kMrLen)));
    tbv::emu::EmuNhi dev;
    tbv::verbs::Pd pd(1);
    auto created = tbv::verbs::MrTable::create(dev, tbv::verbs::kDefaultLimits, fixed_secret());
    if (!memory || !created) {
        state.SkipWithError("set-up failed");
        return;
    }
    tbv::verbs::MrTable& table = **created;
    const std::uint32_t access = tbv::verbs::kAccessLocalWrite | tbv::verbs::kAccessRemoteWrite |
                                 tbv::verbs::kAccessRemoteRead;
    struct Request {
        std::uint32_t rkey;
        std::uint64_t va;
    };
    std::vector<Request> requests(kRequests);
    std::vector<std::uint32_t> rkeys(kMrs);
    for (std::size_t m = 0; m < kMrs; ++m) {
        auto mr = table.reg_mr(pd, memory.get() + m * kMrLen, kMrLen, access);
        if (!mr) {
            state.SkipWithError("reg_mr failed");
            return;
        }
        rkeys[m] = (*mr)->rkey();
    }
    for (std::size_t r = 0; r < kRequests; ++r) {
        const std::size_t m = r % kMrs;
        const std::size_t segment = (r / kMrs) % (kMrLen / kLen);
        requests[r] = {
            rkeys[m], reinterpret_cast<std::uintptr_t>(memory.get() + m * kMrLen) + segment * kLen};
    }
    std::size_t i = 0;
    std::uint64_t faults = 0;
    for (auto _ : state) {
        const Request& rq = requests[i];
        const tbv::verbs::AccessCheck c =
            table.check_remote(rq.rkey, pd, rq.va, kLen, tbv::verbs::kAccessRemoteWrite);
        benchmark::DoNotOptimize(c);
        faults += c ? 0u : 1u;
        i = (i + 1) % kRequests;
    }
    if (faults != 0) {
        state.SkipWithError("a valid request was refused");
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(mr_check_remote);

// ---- completion queue ---------------------------------------------------------------------------

constexpr std::uint32_t kMaxCqBatch = 64;

/// Per round: the producer pushes range(0) completions, the consumer polls them all with one
/// poll() call (CQ of 4096 entries, single thread: the cost of the ring and its atomics).
void cq_push_poll(benchmark::State& state) {
    const auto batch = static_cast<std::uint32_t>(state.range(0));
    auto created = tbv::verbs::Cq::create(4096, tbv::verbs::kDefaultLimits);
    if (!created || batch > kMaxCqBatch) {
        state.SkipWithError("Cq::create failed");
        return;
    }
    tbv::verbs::Cq& cq = **created;
    std::array<tbv::verbs::Wc, kMaxCqBatch> out{};
    const auto out_span = std::span<tbv::verbs::Wc>(out).first(batch);
    tbv::verbs::Wc wc;
    wc.opcode = tbv::verbs::WcOpcode::rdma_write;
    wc.byte_len = static_cast<std::uint32_t>(tbv::transport::wire::kSegment);
    wc.qp_num = 0x12;
    std::uint64_t lost = 0;
    for (auto _ : state) {
        for (std::uint32_t k = 0; k < batch; ++k) {
            ++wc.wr_id;
            lost += cq.push(wc) ? 0u : 1u;
        }
        const std::uint32_t n = cq.poll(out_span);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        lost += batch - n;
    }
    if (lost != 0) {
        state.SkipWithError("completions lost");
    }
    state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(cq_push_poll)->Arg(1)->Arg(16);

// ---- CRC-32C ------------------------------------------------------------------------------------

/// tbv::util::crc32c over range(0) bytes (64: a control packet's size class; 4096: a full frame).
void util_crc32c(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    std::vector<std::byte> data(n);
    for (std::size_t i = 0; i < n; ++i) {
        data[i] = static_cast<std::byte>(i * 13u + 1u);
    }
    const std::span<const std::byte> in(data);
    for (auto _ : state) {
        benchmark::DoNotOptimize(data.data());
        std::uint32_t c = tbv::util::crc32c(in);
        benchmark::DoNotOptimize(c);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}
BENCHMARK(util_crc32c)->Arg(64)->Arg(4096);

}  // namespace
