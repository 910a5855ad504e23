// SPDX-License-Identifier: Apache-2.0
// verbs keys: the keyed permutation, uniqueness, staleness after release, and that keys carry no
// usable sequence structure (threat model in src/verbs/keys.hpp).
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <unordered_set>
#include <vector>

#include "catch.hpp"
#include "quiet.hpp"
#include "verbs/keys.hpp"

using namespace tbv;
using namespace tbv::verbs;

namespace {

KeySecret fixed_secret(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    KeySecret s;
    for (auto& k : s.round_keys) {
        k = rng();
    }
    return s;
}

KeyTable table(std::uint32_t capacity, std::uint64_t seed = 1) {
    auto t = KeyTable::create(capacity, fixed_secret(seed));
    REQUIRE(t);
    return std::move(*t);
}

}  // namespace

TEST_CASE("key cipher is a permutation that decrypts", "[unit][verbs][keys]") {
    const KeyCipher c(fixed_secret(7));
    std::mt19937 rng(3);
    for (int i = 0; i < 100000; ++i) {
        const std::uint32_t x = rng();
        TBV_CHECK_QUIET(c.decrypt(c.encrypt(x, KeyKind::remote), KeyKind::remote) == x);
        TBV_CHECK_QUIET(c.decrypt(c.encrypt(x, KeyKind::local), KeyKind::local) == x);
    }
    // Injective on a dense block of inputs (slot numbers with generation 0).
    std::unordered_set<std::uint32_t> seen;
    for (std::uint32_t x = 0; x < (1u << 17); ++x) {
        TBV_CHECK_QUIET(seen.insert(c.encrypt(x, KeyKind::remote)).second);
    }
}

TEST_CASE("key table: 1e5 registrations give distinct keys that look up their slot",
          "[unit][verbs][keys]") {
    auto t = table(1u << 17);
    std::unordered_set<std::uint32_t> lkeys;
    std::unordered_set<std::uint32_t> rkeys;
    std::vector<KeyPair> pairs;
    for (int i = 0; i < 100000; ++i) {
        auto k = t.allocate();
        TBV_REQUIRE_QUIET(k.has_value());
        TBV_CHECK_QUIET(lkeys.insert(k->lkey).second);
        TBV_CHECK_QUIET(rkeys.insert(k->rkey).second);
        pairs.push_back(*k);
    }
    CHECK(t.in_use() == 100000);
    std::size_t same = 0;
    for (const auto& p : pairs) {
        TBV_CHECK_QUIET(t.lookup(p.lkey, KeyKind::local) == p.slot);
        TBV_CHECK_QUIET(t.lookup(p.rkey, KeyKind::remote) == p.slot);
        same += p.lkey == p.rkey ? 1 : 0;
    }
    CHECK(same < 3);  // lkey and rkey come from different permutations
}

TEST_CASE("key table: a released key is stale, also after its slot is reused",
          "[unit][verbs][keys]") {
    auto t = table(1);
    auto a = t.allocate();
    REQUIRE(a);
    CHECK(t.lookup(a->rkey, KeyKind::remote) == a->slot);
    CHECK_FALSE(t.allocate());  // full: ENOMEM
    t.release(a->slot);
    CHECK(t.lookup(a->rkey, KeyKind::remote) == KeyTable::kNoSlot);
    CHECK(t.lookup(a->lkey, KeyKind::local) == KeyTable::kNoSlot);
    auto b = t.allocate();
    REQUIRE(b);
    CHECK(b->slot == a->slot);
    CHECK(b->rkey != a->rkey);
    CHECK(t.lookup(a->rkey, KeyKind::remote) == KeyTable::kNoSlot);
    CHECK(t.lookup(b->rkey, KeyKind::remote) == b->slot);
    t.release(b->slot);
    t.release(b->slot);  // double release is ignored
    CHECK(t.in_use() == 0);
}

TEST_CASE("key table: churn through few slots never reissues a key", "[unit][verbs][keys]") {
    auto t = table(16);
    std::unordered_set<std::uint32_t> issued;
    std::vector<KeyPair> live;
    for (int i = 0; i < 100000; ++i) {
        if (live.size() == 16 || (i % 3 == 2 && !live.empty())) {
            const KeyPair old = live.front();
            live.erase(live.begin());
            t.release(old.slot);
            TBV_CHECK_QUIET(t.lookup(old.rkey, KeyKind::remote) == KeyTable::kNoSlot);
        }
        auto k = t.allocate();
        TBV_REQUIRE_QUIET(k.has_value());
        TBV_CHECK_QUIET(issued.insert(k->rkey).second);
        live.push_back(*k);
    }
}

TEST_CASE("key table: wrong kind and random guesses are refused", "[unit][verbs][keys]") {
    auto t = table(4096);
    std::vector<KeyPair> live;
    for (int i = 0; i < 1000; ++i) {
        live.push_back(*t.allocate());
    }
    std::size_t cross = 0;
    for (const auto& k : live) {
        cross += t.lookup(k.lkey, KeyKind::remote) != KeyTable::kNoSlot ? 1 : 0;
    }
    CHECK(cross <= 2);  // an lkey used as an rkey hits only by chance (1000 / 2^32 each)
    // A blind guess hits with probability live / 2^32: 1e6 guesses expect ~0.23 hits.
    std::mt19937 rng(11);
    std::size_t hits = 0;
    for (int i = 0; i < 1000000; ++i) {
        hits += t.lookup(rng(), KeyKind::remote) != KeyTable::kNoSlot ? 1 : 0;
    }
    CHECK(hits <= 5);
}

TEST_CASE("keys are not sequential and successive keys are uncorrelated", "[unit][verbs][keys]") {
    auto t = table(1u << 17, 99);
    std::vector<std::uint32_t> keys;
    for (int i = 0; i < 100000; ++i) {
        keys.push_back(t.allocate()->rkey);
    }
    // No common stride: almost every difference between successive keys is distinct.
    std::unordered_set<std::uint32_t> diffs;
    for (std::size_t i = 1; i < keys.size(); ++i) {
        diffs.insert(keys[i] - keys[i - 1]);
    }
    CHECK(diffs.size() > keys.size() * 99 / 100);
    // Every bit is set about half the time (no fixed index or generation bits show through).
    for (unsigned b = 0; b < 32; ++b) {
        std::size_t ones = 0;
        for (auto k : keys) {
            ones += (k >> b) & 1u;
        }
        const double f = static_cast<double>(ones) / static_cast<double>(keys.size());
        INFO("bit " << b);
        CHECK(f > 0.48);
        CHECK(f < 0.52);
    }
    // Successive keys differ in ~16 bits and their values are uncorrelated.
    double hamming = 0;
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    const auto n = static_cast<double>(keys.size() - 1);
    for (std::size_t i = 1; i < keys.size(); ++i) {
        hamming += std::popcount(keys[i] ^ keys[i - 1]);
        const double x = keys[i - 1], y = keys[i];
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    CHECK(std::abs(hamming / n - 16.0) < 0.2);
    const double r = (n * sxy - sx * sy) / std::sqrt((n * sxx - sx * sx) * (n * syy - sy * sy));
    CHECK(std::abs(r) < 0.02);
}

TEST_CASE("key tables with fresh secrets issue different keys", "[unit][verbs][keys]") {
    auto a = KeyTable::create(64);
    auto b = KeyTable::create(64);
    REQUIRE(a);
    REQUIRE(b);
    std::size_t equal = 0;
    for (int i = 0; i < 64; ++i) {
        equal += a->allocate()->rkey == b->allocate()->rkey ? 1 : 0;
    }
    CHECK(equal <= 1);
}

TEST_CASE("key table capacity limits", "[unit][verbs][keys]") {
    CHECK(KeyTable::create(0, fixed_secret(1)).error() == std::errc::invalid_argument);
    CHECK(KeyTable::create((1u << 24) + 1, fixed_secret(1)).error() == std::errc::invalid_argument);
    auto t = table(3);
    CHECK(t.index_bits() == 2);
    for (int i = 0; i < 3; ++i) {
        CHECK(t.allocate());
    }
    CHECK(t.allocate().error() == std::errc::not_enough_memory);
}
