// SPDX-License-Identifier: Apache-2.0
// verbs CQ: sizing, FIFO order across index wrap, partial polls, overrun reported once as
// IBV_EVENT_CQ_ERR with earlier completions still delivered, and a two-thread producer/consumer
// run.
#include <cstdint>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "verbs/cq.hpp"

using namespace tbv;
using namespace tbv::verbs;

namespace {

struct Events {
    int count = 0;
    AsyncEventType type = AsyncEventType::device_fatal;
    std::uint32_t object = 0;
};

void record(void* ctx, AsyncEventType type, std::uint32_t object) noexcept {
    auto* e = static_cast<Events*>(ctx);
    ++e->count;
    e->type = type;
    e->object = object;
}

Wc wc(std::uint64_t id) {
    Wc w;
    w.wr_id = id;
    w.byte_len = static_cast<std::uint32_t>(id * 3);
    w.opcode = WcOpcode::recv;
    return w;
}

}  // namespace

TEST_CASE("CQ sizing follows ibv_create_cq", "[unit][verbs][cq]") {
    DeviceLimits lim;
    lim.max_cqe = 1000;
    CHECK(Cq::create(0, lim).error() == std::errc::invalid_argument);
    CHECK(Cq::create(1001, lim).error() == std::errc::invalid_argument);
    auto a = Cq::create(1, lim);
    REQUIRE(a);
    CHECK((*a)->capacity() == 1);
    auto b = Cq::create(100, lim, 42);
    REQUIRE(b);
    CHECK((*b)->capacity() == 128);
    CHECK((*b)->handle() == 42);
    CHECK((*b)->size() == 0);
    CHECK_FALSE((*b)->in_error());
}

TEST_CASE("CQ delivers in order across many wraps and partial polls", "[unit][verbs][cq]") {
    auto cq = std::move(*Cq::create(8, kDefaultLimits));
    std::vector<Wc> out(5);
    std::uint64_t next_push = 0, next_poll = 0;
    for (int round = 0; round < 1000; ++round) {
        const int burst = 1 + round % 8;
        for (int i = 0; i < burst && cq->size() < cq->capacity(); ++i) {
            REQUIRE(cq->push(wc(next_push++)));
        }
        const auto n = cq->poll(out);
        for (std::uint32_t i = 0; i < n; ++i) {
            CHECK(out[i].wr_id == next_poll);
            CHECK(out[i].byte_len == next_poll * 3);
            ++next_poll;
        }
    }
    while (const auto n = cq->poll(out)) {
        for (std::uint32_t i = 0; i < n; ++i) {
            CHECK(out[i].wr_id == next_poll++);
        }
    }
    CHECK(next_poll == next_push);
    CHECK(cq->poll(out) == 0);
    CHECK(cq->lost() == 0);
}

TEST_CASE("CQ overrun: CQ_ERR raised once, later pushes refused, earlier entries kept",
          "[unit][verbs][cq]") {
    Events ev;
    auto cq = std::move(*Cq::create(4, kDefaultLimits, 7, AsyncHandler{record, &ev}));
    for (std::uint64_t i = 0; i < 4; ++i) {
        REQUIRE(cq->push(wc(i)));
    }
    CHECK(ev.count == 0);
    CHECK_FALSE(cq->push(wc(4)));  // overrun
    CHECK(cq->in_error());
    CHECK(ev.count == 1);
    CHECK(ev.type == AsyncEventType::cq_err);
    CHECK(ev.object == 7);
    std::vector<Wc> out(8);
    CHECK(cq->poll(out) == 4);
    for (std::uint64_t i = 0; i < 4; ++i) {
        CHECK(out[i].wr_id == i);
    }
    CHECK_FALSE(cq->push(wc(5)));  // in error even with room
    CHECK(ev.count == 1);          // reported once
    CHECK(cq->lost() == 2);
    CHECK(cq->poll(out) == 0);
}

TEST_CASE("CQ with one producer and one consumer thread", "[unit][verbs][cq]") {
    auto cq = std::move(*Cq::create(64, kDefaultLimits));
    constexpr std::uint64_t kCount = 200000;
    std::thread producer([&] {
        for (std::uint64_t i = 0; i < kCount; ++i) {
            while (cq->size() >= cq->capacity()) {
                std::this_thread::yield();  // the transport bounds outstanding WRs the same way
            }
            if (!cq->push(wc(i))) {
                return;
            }
        }
    });
    std::vector<Wc> out(16);
    std::uint64_t expect = 0;
    bool ordered = true;
    while (expect < kCount && !cq->in_error()) {
        const auto n = cq->poll(out);
        for (std::uint32_t i = 0; i < n; ++i) {
            ordered = ordered && out[i].wr_id == expect && out[i].byte_len == expect * 3;
            ++expect;
        }
        if (n == 0) {
            std::this_thread::yield();
        }
    }
    producer.join();
    CHECK(ordered);
    CHECK(expect == kCount);
    CHECK_FALSE(cq->in_error());
}
