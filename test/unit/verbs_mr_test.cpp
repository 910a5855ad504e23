// SPDX-License-Identifier: Apache-2.0
// verbs MR: one IOMMU mapping per registration, removed before dereg returns; access-flag rules;
// remote and local access checks (key, PD, permission, overflow-safe bounds, length 0); EBUSY
// while referenced; PD accounting.
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>

#include "catch.hpp"
#include "fake_device.hpp"
#include "verbs/mr.hpp"

using namespace tbv;
using namespace tbv::verbs;

namespace {

constexpr std::uint64_t kMax64 = std::numeric_limits<std::uint64_t>::max();

KeySecret secret() {
    std::mt19937_64 rng(5);
    KeySecret s;
    for (auto& k : s.round_keys) {
        k = rng();
    }
    return s;
}

std::unique_ptr<MrTable> make_table(hw::Device& dev, DeviceLimits limits = kDefaultLimits) {
    limits.max_mr = limits.max_mr > 1024 ? 1024 : limits.max_mr;
    auto t = MrTable::create(dev, limits, secret());
    REQUIRE(t);
    return std::move(*t);
}

struct Buffer {
    explicit Buffer(std::size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(4096, n))) {}
    ~Buffer() { std::free(p); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    std::byte* p;
    std::uint64_t va(std::size_t off = 0) const {
        return reinterpret_cast<std::uintptr_t>(p) + off;
    }
};

/// A device whose map/unmap can be told to fail, over a FakeDevice.
class FlakyDevice final : public hw::Device {
public:
    const std::string& name() const noexcept override { return inner.name(); }
    hw::PciIdentity identity() const noexcept override { return inner.identity(); }
    std::size_t bar0_size() const noexcept override { return inner.bar0_size(); }
    std::uint32_t read32(std::uint32_t off) noexcept override { return inner.read32(off); }
    void write32(std::uint32_t off, std::uint32_t v) noexcept override { inner.write32(off, v); }
    Result<hw::Iova> dma_map(void* addr, std::size_t len, hw::DmaAccess access) override {
        if (fail_map) {
            return fail(std::errc::not_enough_memory);
        }
        return inner.dma_map(addr, len, access);
    }
    Result<void> dma_unmap(hw::Iova iova, std::size_t len) override {
        if (fail_unmap) {
            return fail(std::errc::io_error);
        }
        return inner.dma_unmap(iova, len);
    }
    Result<void> set_bus_master(bool on) override { return inner.set_bus_master(on); }
    bool bus_master() const noexcept override { return inner.bus_master(); }
    unsigned irq_vector_count() const noexcept override { return inner.irq_vector_count(); }
    Result<void> enable_irqs(unsigned n) override { return inner.enable_irqs(n); }
    void disable_irqs() noexcept override { inner.disable_irqs(); }
    int irq_eventfd(unsigned v) const noexcept override { return inner.irq_eventfd(v); }
    Result<void> reset() override { return inner.reset(); }

    test::FakeDevice inner;
    bool fail_map = false;
    bool fail_unmap = false;
};

}  // namespace

TEST_CASE("MR registration maps the covering pages once; dereg unmaps before it returns",
          "[unit][verbs][mr]") {
    test::FakeDevice dev;
    auto t = make_table(dev);
    Pd pd(1);
    Buffer buf(3 * 4096);
    // Unaligned start and end: [p+100, p+100+5000) spans pages 0 and 1.
    auto mr = t->reg_mr(pd, buf.p + 100, 5000, kAccessLocalWrite | kAccessRemoteWrite);
    REQUIRE(mr);
    CHECK(dev.mapping_count() == 1);
    Mr& m = **mr;
    CHECK(m.addr() == buf.va(100));
    CHECK(m.length() == 5000);
    CHECK(m.lkey() != m.rkey());
    // The IOVA of every byte of the MR reaches that byte; the page after the span is not mapped.
    CHECK(dev.translate(m.iova_at(buf.va(100))) == buf.p + 100);
    CHECK(dev.translate(m.iova_at(buf.va(5099))) == buf.p + 5099);
    CHECK(dev.translate(m.iova_at(buf.va(0))) == buf.p);
    CHECK(dev.translate(m.iova_at(buf.va(8191))) == buf.p + 8191);
    CHECK(dev.translate(m.iova_at(buf.va(8192))) == nullptr);
    CHECK(pd.users() == 1);
    CHECK(pd.check_dealloc().error() == std::errc::device_or_resource_busy);
    CHECK(t->count() == 1);

    // Access checks never map anything.
    for (int i = 0; i < 100; ++i) {
        CHECK(t->check_remote(m.rkey(), pd, buf.va(100), 8, kAccessRemoteWrite));
    }
    CHECK(dev.mapping_count() == 1);

    const std::uint32_t rkey = m.rkey();
    REQUIRE(t->dereg_mr(m));
    CHECK(dev.mapping_count() == 0);  // gone by the time dereg returned
    CHECK(pd.users() == 0);
    CHECK(pd.check_dealloc());
    CHECK(t->count() == 0);
    CHECK(t->check_remote(rkey, pd, buf.va(100), 8, kAccessRemoteWrite).fault ==
          AccessFault::bad_key);
}

TEST_CASE("MR access flags: remote write and atomic need local write; unknown bits refused",
          "[unit][verbs][mr]") {
    test::FakeDevice dev;
    auto t = make_table(dev);
    Pd pd(1);
    Buffer buf(4096);
    struct Case {
        std::uint32_t access;
        bool ok;
    };
    const Case cases[] = {
        {0, true},
        {kAccessLocalWrite, true},
        {kAccessRemoteRead, true},
        {kAccessRemoteWrite, false},
        {kAccessRemoteAtomic, false},
        {kAccessRemoteWrite | kAccessRemoteRead, false},
        {kAccessLocalWrite | kAccessRemoteWrite, true},
        {kAccessLocalWrite | kAccessRemoteAtomic, true},
        {kAccessAll, true},
        {1u << 4, false},               // IBV_ACCESS_MW_BIND
        {kAccessAll | 1u << 5, false},  // IBV_ACCESS_ZERO_BASED
        {1u << 20, false},              // IBV_ACCESS_RELAXED_ORDERING (glue strips optional bits)
    };
    for (const auto& c : cases) {
        INFO("access " << c.access);
        auto mr = t->reg_mr(pd, buf.p, 4096, c.access);
        CHECK(static_cast<bool>(mr) == c.ok);
        if (mr) {
            CHECK(dev.mapping_count() == 1);
            REQUIRE(t->dereg_mr(**mr));
        } else {
            CHECK(mr.error() == std::errc::invalid_argument);
        }
        CHECK(dev.mapping_count() == 0);
        CHECK(pd.users() == 0);
    }
}

TEST_CASE("check_remote: key, PD, permission and bounds", "[unit][verbs][mr]") {
    test::FakeDevice dev;
    auto t = make_table(dev);
    Pd pd(1), other(2);
    Buffer buf(2 * 4096);
    auto rw = t->reg_mr(pd, buf.p + 16, 4096, kAccessLocalWrite | kAccessRemoteWrite);
    auto ro = t->reg_mr(pd, buf.p, 2 * 4096, kAccessRemoteRead);
    REQUIRE(rw);
    REQUIRE(ro);
    Mr& w = **rw;
    Mr& r = **ro;
    const std::uint64_t base = w.addr();

    SECTION("valid access returns host pointer and IOVA") {
        auto c = t->check_remote(w.rkey(), pd, base + 10, 100, kAccessRemoteWrite);
        REQUIRE(c);
        CHECK(c.target.mr == &w);
        CHECK(c.target.host == buf.p + 26);
        CHECK(dev.translate(c.target.iova) == buf.p + 26);
        CHECK(t->check_remote(w.rkey(), pd, base, 4096, kAccessRemoteWrite));  // exact fit
        CHECK(t->check_remote(r.rkey(), pd, r.addr(), 8192, kAccessRemoteRead));
    }
    SECTION("missing access flag") {
        CHECK(t->check_remote(w.rkey(), pd, base, 8, kAccessRemoteRead).fault ==
              AccessFault::no_permission);
        CHECK(t->check_remote(w.rkey(), pd, base, 8, kAccessRemoteAtomic).fault ==
              AccessFault::no_permission);
        CHECK(t->check_remote(r.rkey(), pd, r.addr(), 8, kAccessRemoteWrite).fault ==
              AccessFault::no_permission);  // write to a read-only MR
    }
    SECTION("another PD's key") {
        CHECK(t->check_remote(w.rkey(), other, base, 8, kAccessRemoteWrite).fault ==
              AccessFault::wrong_pd);
        CHECK(t->check_local(w.lkey(), other, base, 8, 0).fault == AccessFault::wrong_pd);
    }
    SECTION("wrong or made-up keys") {
        CHECK(t->check_remote(w.lkey(), pd, base, 8, kAccessRemoteWrite).fault ==
              AccessFault::bad_key);
        CHECK(t->check_remote(w.rkey() + 1, pd, base, 8, kAccessRemoteWrite).fault ==
              AccessFault::bad_key);
        CHECK(t->check_remote(0, pd, base, 8, kAccessRemoteWrite).fault == AccessFault::bad_key);
        CHECK(t->check_local(w.rkey(), pd, base, 8, 0).fault == AccessFault::bad_key);
    }
    SECTION("bounds, including overflow at the top of the address space") {
        const auto oob = AccessFault::out_of_bounds;
        auto f = [&](std::uint64_t va, std::uint64_t len) {
            return t->check_remote(w.rkey(), pd, va, len, kAccessRemoteWrite).fault;
        };
        CHECK(f(base - 1, 8) == oob);
        CHECK(f(base, 4097) == oob);
        CHECK(f(base + 4089, 8) == oob);
        CHECK(f(base + 4088, 8) == AccessFault::none);
        CHECK(f(base + 4096, 1) == oob);
        CHECK(f(base + 1, kMax64) == oob);  // va + len wraps
        CHECK(f(kMax64 - 3, 8) == oob);     // va at the top, sum wraps to small
        CHECK(f(kMax64, 1) == oob);
        CHECK(f(base, kMax64 - base + 1) == oob);  // sum wraps to exactly 0
        CHECK(f(0, base + 8) == oob);
        CHECK(t->check_local(w.lkey(), pd, base + 8, kMax64 - 7, 0).fault == oob);
    }
    SECTION("zero-length remote access touches nothing and needs no valid key") {
        auto c = t->check_remote(0xdeadbeef, other, kMax64, 0, kAccessRemoteWrite);
        CHECK(c);
        CHECK(c.target.mr == nullptr);
        CHECK(c.target.host == nullptr);
    }
    SECTION("local checks: send source needs no flag, device writes need local write") {
        CHECK(t->check_local(r.lkey(), pd, r.addr(), 8192, 0));
        CHECK(t->check_local(r.lkey(), pd, r.addr(), 8, kAccessLocalWrite).fault ==
              AccessFault::no_permission);
        auto c = t->check_local(w.lkey(), pd, base + 4000, 96, kAccessLocalWrite);
        REQUIRE(c);
        CHECK(c.target.host == buf.p + 16 + 4000);
        CHECK(t->check_local(w.lkey(), pd, base + 4000, 97, kAccessLocalWrite).fault ==
              AccessFault::out_of_bounds);
        CHECK(t->check_local(w.lkey(), pd, base, 0, 0));
        CHECK(t->check_local(0x1234, pd, base, 0, 0).fault == AccessFault::bad_key);
    }
    REQUIRE(t->dereg_mr(w));
    REQUIRE(t->dereg_mr(r));
}

TEST_CASE("MR of length 0: keys but no mapping; only a zero-length access is inside",
          "[unit][verbs][mr]") {
    test::FakeDevice dev;
    auto t = make_table(dev);
    Pd pd(1);
    Buffer buf(4096);
    auto mr = t->reg_mr(pd, buf.p + 8, 0, kAccessLocalWrite | kAccessRemoteWrite);
    REQUIRE(mr);
    CHECK(dev.mapping_count() == 0);
    CHECK(t->check_local((*mr)->lkey(), pd, buf.va(8), 0, kAccessLocalWrite));
    CHECK(t->check_local((*mr)->lkey(), pd, buf.va(8), 1, kAccessLocalWrite).fault ==
          AccessFault::out_of_bounds);
    CHECK(t->check_remote((*mr)->rkey(), pd, buf.va(8), 1, kAccessRemoteWrite).fault ==
          AccessFault::out_of_bounds);
    CHECK(t->reg_mr(pd, nullptr, 0, 0));  // even at address 0
    REQUIRE(t->dereg_mr(**mr));
    CHECK(dev.mapping_count() == 0);
}

TEST_CASE("MR registration refuses ranges that wrap or exceed the limits", "[unit][verbs][mr]") {
    test::FakeDevice dev;
    DeviceLimits lim;
    lim.max_mr = 2;
    lim.max_mr_size = 1u << 20;
    auto t = make_table(dev, lim);
    Pd pd(1);
    const auto top = std::numeric_limits<std::uintptr_t>::max();
    auto* near_top = reinterpret_cast<void*>(top - 100);
    CHECK(t->reg_mr(pd, near_top, 200, 0).error() == std::errc::invalid_argument);  // wraps
    CHECK(t->reg_mr(pd, near_top, 50, 0).error() ==
          std::errc::invalid_argument);  // its page round-up wraps
    CHECK(t->reg_mr(pd, nullptr, 4096, 0).error() == std::errc::invalid_argument);
    Buffer buf(2 * 4096);
    CHECK(t->reg_mr(pd, buf.p, (1u << 20) + 1, 0).error() == std::errc::invalid_argument);
    CHECK(dev.mapping_count() == 0);
    CHECK(pd.users() == 0);
    auto a = t->reg_mr(pd, buf.p, 4096, 0);
    auto b = t->reg_mr(pd, buf.p + 4096, 4096, 0);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(t->reg_mr(pd, buf.p, 4096, 0).error() == std::errc::not_enough_memory);  // max_mr
    CHECK(dev.mapping_count() == 2);
    REQUIRE(t->dereg_mr(**a));
    CHECK(t->reg_mr(pd, buf.p, 4096, 0));
}

TEST_CASE("MR dereg: EBUSY while referenced, unmap failure keeps the MR", "[unit][verbs][mr]") {
    FlakyDevice dev;
    auto t = make_table(dev);
    Pd pd(1);
    Buffer buf(4096);

    SECTION("map failure leaves nothing behind") {
        dev.fail_map = true;
        CHECK(t->reg_mr(pd, buf.p, 4096, 0).error() == std::errc::not_enough_memory);
        CHECK(t->count() == 0);
        CHECK(pd.users() == 0);
    }
    SECTION("referenced MR") {
        auto mr = t->reg_mr(pd, buf.p, 4096, kAccessRemoteRead);
        REQUIRE(mr);
        Mr& m = **mr;
        m.acquire();
        CHECK(t->dereg_mr(m).error() == std::errc::device_or_resource_busy);
        CHECK(dev.inner.mapping_count() == 1);
        CHECK(t->check_remote(m.rkey(), pd, m.addr(), 8, kAccessRemoteRead));  // untouched
        m.release();
        CHECK(t->dereg_mr(m));
        CHECK(dev.inner.mapping_count() == 0);
    }
    SECTION("unmap failure") {
        auto mr = t->reg_mr(pd, buf.p, 4096, kAccessRemoteRead);
        REQUIRE(mr);
        dev.fail_unmap = true;
        CHECK(t->dereg_mr(**mr).error() == std::errc::io_error);
        CHECK(t->count() == 1);
        CHECK(t->check_remote((*mr)->rkey(), pd, buf.va(), 8, kAccessRemoteRead));
        dev.fail_unmap = false;
        CHECK(t->dereg_mr(**mr));
        CHECK(dev.inner.mapping_count() == 0);
    }
}

TEST_CASE("MR table teardown unmaps what is still registered", "[unit][verbs][mr]") {
    test::FakeDevice dev;
    Pd pd(1);
    Buffer buf(2 * 4096);
    {
        auto t = make_table(dev);
        CHECK(t->reg_mr(pd, buf.p, 4096, 0));
        CHECK(t->reg_mr(pd, buf.p + 4096, 4096, kAccessLocalWrite));
        CHECK(dev.mapping_count() == 2);
    }
    CHECK(dev.mapping_count() == 0);
}
